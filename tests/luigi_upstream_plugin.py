"""pytest plugin for luigi's own scheduler tests (the ``test/`` directory of the luigi sdist).

tests/system/test_luigi_upstream.py runs those tests twice in subprocesses, with
``-p luigi_upstream_plugin --scheduler-under-test stock|appliance``:

- both: luigi's tests import the ``mock`` backport, which is not among our test dependencies;
  the standard library's ``unittest.mock`` is the same API and stands in for it. And the two
  runs go side by side, but scheduler_test.StableDoneCooldownSecsTest starts ``luigi.server.run``
  on luigi's fixed default port 8082 and points its workers there: each run gets a free port of
  its own instead (the server's default and ``[core] scheduler_port``).
- ``appliance``: ``luigi.scheduler.Scheduler`` is replaced by ``luigi_appliance.scheduler.Scheduler``
  before any test module is imported, so both ``from luigi.scheduler import Scheduler`` and
  ``luigi.scheduler.Scheduler(...)`` build ours. The tests that serve a scheduler over HTTP
  (server_test.ServerTestBase, so rpc_test.RPCTest: scheduler_api_test again through luigi's
  RemoteScheduler) get the appliance's guarded app (server/app.py build_app, with the credential
  schemes, the access policy, argument checks, worker bindings and audit composed as
  server/serve.py does) instead of luigi's bare ``luigi.server.app``, and every request they send
  carries HTTP Basic credentials of a local admin account (users file made like ``serve --dev``).
  Basic rather than a bearer token: luigi's tests set ``time.time`` to fixed instants, and tokens
  expire by the wall clock.
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import sys
import tempfile
import unittest.mock
from pathlib import Path
from typing import Any

import luigi.configuration
import luigi.scheduler
import luigi.server
import pytest

# The appliance's modules are imported in the appliance run only: the stock run is luigi alone.

sys.modules.setdefault("mock", unittest.mock)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--scheduler-under-test", choices=("stock", "appliance"), default="stock",
                     help="which Scheduler class luigi's tests get")


def pytest_configure(config: pytest.Config) -> None:
    _own_default_port()
    # Collection (which imports the test modules) comes after configure.
    if config.getoption("--scheduler-under-test") == "appliance":
        from luigi_appliance.scheduler import Scheduler

        luigi.scheduler.Scheduler = Scheduler  # type: ignore[misc]


def _own_default_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    real_run = luigi.server.run
    luigi.server.run = functools.partial(real_run, api_port=port)
    config = luigi.configuration.get_config()
    if not config.has_section("core"):
        config.add_section("core")
    config.set("core", "scheduler_port", str(port))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--scheduler-under-test") != "appliance":
        return
    for cls in {item.cls for item in items if item.cls is not None}:
        if any(base.__name__ == "ServerTestBase" for base in cls.__mro__):
            _serve_guarded(cls)


@functools.cache
def _admin() -> tuple[Any, str]:
    """Settings like ``serve --dev --insecure-http`` in a temporary directory, and the admin's
    Authorization header."""
    from luigi_appliance import devmode
    from luigi_appliance.config_loader import load_settings

    # The outer test gives a directory it cleans up; run by hand, a temporary one.
    state_dir = Path(os.environ.get("LUIGI_UPSTREAM_STATE_DIR") or tempfile.mkdtemp(prefix="luigi-upstream-"))
    files = devmode.bootstrap(state_dir)
    settings = load_settings([], overrides={
        ("state", "dir"): str(state_dir),
        ("server", "listen"): "127.0.0.1:8082",  # never bound: the tests serve the app themselves
        ("server", "insecure_http"): "true",
        ("auth", "users_file"): str(files.users_file),
        ("secrets", "key_file"): str(state_dir / "secret.key"),
        ("audit", "file"): str(state_dir / "audit.log"),
    })
    password = files.password_file.read_text().strip()
    return settings, "Basic " + base64.b64encode(f"{devmode.ADMIN}:{password}".encode()).decode()


@functools.cache
def _schemes() -> tuple[Any, list[Any]]:
    """The audit log and credential schemes, built once: one scrypt check for the whole run."""
    from luigi_appliance.audit import AuditLog
    from luigi_appliance.auth.basic import password_authenticator
    from luigi_appliance.auth.registry import SchemeContext, credential_schemes

    settings, _ = _admin()
    audit = AuditLog(settings.audit)
    accounts = password_authenticator(settings, audit)
    return audit, list(credential_schemes(SchemeContext(settings, accounts, secure=False)).values())


def guarded_app(scheduler: Any) -> Any:
    """The appliance's app for ``scheduler``, composed as server/serve.py composes it."""
    from luigi_appliance.luigi_internals.scheduler import is_live_worker
    from luigi_appliance.server.app import build_app
    from luigi_appliance.server.rpc_access import RpcAccess
    from luigi_appliance.server.worker_bindings import WorkerBindings

    settings, _ = _admin()
    audit, schemes = _schemes()
    bindings = WorkerBindings(functools.partial(is_live_worker, scheduler))
    return build_app(scheduler, schemes, tls=False, hsts_max_age=settings.server.hsts_max_age,
                     rpc_access=RpcAccess(audit, bindings))


def _serve_guarded(cls: type) -> None:
    """Make a ServerTestBase subclass serve its scheduler through the guarded app, as admin."""
    luigi_get_app, luigi_fetch = cls.get_app, cls.fetch

    def get_app(self: Any) -> Any:
        # The test builds its scheduler (with its own config) and hands it to luigi.server.app:
        # take that scheduler, serve it guarded.
        served: list[Any] = []
        real = luigi.server.app
        luigi.server.app = lambda scheduler, *args, **kwargs: served.append(scheduler) or real(scheduler)
        try:
            luigi_get_app(self)
        finally:
            luigi.server.app = real
        return guarded_app(served[0])

    def fetch(self: Any, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": _admin()[1]}
        return luigi_fetch(self, path, **kwargs)

    cls.get_app, cls.fetch = get_app, fetch
