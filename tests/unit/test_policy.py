"""The access tables cover exactly what luigi defines, so an upgrade that adds a method fails closed."""

from __future__ import annotations

import luigi.scheduler
import luigi.server
import pytest

from luigi_appliance import policy
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server import app as app_module


def test_rpc_table_covers_luigi_rpc_methods_exactly() -> None:
    assert set(policy.RPC_METHODS) == set(luigi.scheduler.RPC_METHODS) | policy.APPLIANCE_RPC_METHODS


def test_every_luigi_route_is_classified() -> None:
    stock = luigi.server.app(luigi.scheduler.Scheduler())
    patterns = {rule.matcher.regex.pattern for rule in stock.wildcard_router.rules}
    assert patterns <= set(policy.ROUTES)


@pytest.mark.doc_rule("unclassified-route")
def test_an_unclassified_luigi_route_stops_the_server_from_starting(monkeypatch) -> None:
    # A luigi upgrade that adds a route is simulated by adding one to luigi's own app();
    # nothing else here is faked: the real build_app() must refuse it.
    real_app = luigi.server.app

    def app_with_new_route(scheduler):
        app = real_app(scheduler)
        app.wildcard_router.add_rules([(r"/new_admin_page", luigi.server.MetricsHandler, {"scheduler": scheduler})])
        return app

    monkeypatch.setattr(luigi.server, "app", app_with_new_route)
    with pytest.raises(ApplianceError, match="/new_admin_page"):
        app_module.build_app(luigi.scheduler.Scheduler(), [], tls=True, hsts_max_age=1)


def test_only_reads_are_open_to_viewers() -> None:
    """Except the approval decisions: open to any role because the request's own rule names who
    may decide, and only with a fresh login (a viewer may be the data owner who approves)."""
    for name, rule in policy.RPC_METHODS.items():
        if rule.fresh:
            assert name in ("approve", "deny") and rule.mutates and rule.role == policy.Role.VIEWER, name
            continue
        assert rule.mutates == (rule.role > policy.Role.VIEWER), name


@pytest.mark.doc_rule("api-unclassified-403", "unclassified-method")
def test_a_luigi_method_missing_from_the_table_is_refused(monkeypatch) -> None:
    """A luigi upgrade that adds an RPC method is simulated by removing one from our table;
    the real guard, app and HTTP server (in-process, on a loopback socket) must refuse it."""
    import asyncio
    import base64

    import tornado.httpclient
    import tornado.httpserver
    import tornado.netutil

    from luigi_appliance.auth import Principal, Role

    class Admin:
        async def authenticate(self, request):
            return Principal("root", Role.ADMIN, "test") if request.headers.get("Authorization") else None

        def reload(self):
            pass

    monkeypatch.delitem(policy.RPC_METHODS, "task_list")

    async def scenario() -> tuple[int, int]:
        app = app_module.build_app(luigi.scheduler.Scheduler(), [Admin()], tls=False, hsts_max_age=0)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        client = tornado.httpclient.AsyncHTTPClient()
        auth = {"Authorization": "Basic " + base64.b64encode(b"root:x").decode()}
        base = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        try:
            refused = await client.fetch(f"{base}/task_list?data=%7B%7D", headers=auth, raise_error=False)
            allowed = await client.fetch(f"{base}/worker_list?data=%7B%7D", headers=auth, raise_error=False)
        finally:
            server.stop()
        return refused.code, allowed.code

    assert asyncio.run(scenario()) == (403, 200)
