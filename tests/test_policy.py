"""The access tables cover exactly what luigi defines, so an upgrade that adds a method fails closed."""

from __future__ import annotations

import luigi.scheduler
import luigi.server
import pytest

from luigi_appliance import policy
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server import app as app_module


def test_rpc_table_covers_luigi_rpc_methods_exactly() -> None:
    assert set(policy.RPC_METHODS) == set(luigi.scheduler.RPC_METHODS)


def test_every_luigi_route_is_classified() -> None:
    stock = luigi.server.app(luigi.scheduler.Scheduler())
    patterns = {rule.matcher.regex.pattern for rule in stock.wildcard_router.rules}
    assert patterns <= set(policy.ROUTES)


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
        app_module.build_app(luigi.scheduler.Scheduler(), None, tls=True, hsts_max_age=1)


def test_only_reads_are_open_to_viewers() -> None:
    for name, rule in policy.RPC_METHODS.items():
        assert rule.mutates == (rule.role > policy.Role.VIEWER), name
