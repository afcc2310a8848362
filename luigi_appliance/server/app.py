"""Builds the Tornado application: Luigi's routes, each behind the guard, plus our own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import luigi.server
import tornado.web
from tornado.routing import PathMatches, Rule

from luigi_appliance import policy
from luigi_appliance.auth.basic import BasicAuthenticator
from luigi_appliance.auth.tokens import TokenService
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server import login, visualiser, workers
from luigi_appliance.server.client_address import ClientAddresses
from luigi_appliance.server.guard import GuardContext, HealthHandler, NotFoundHandler, guarded
from luigi_appliance.server.rpc_access import RpcAccess
from luigi_appliance.server.session import SessionAuthenticator
from luigi_appliance.server.token import TokenHandler

log = logging.getLogger(__name__)

# Tornado adds these itself from the static_path setting, with static_handler_class.
_STATIC_PATTERNS = {"/static/(.*)$", "/(favicon\\.ico)$", "/(robots\\.txt)$"}


class _RPCHandler(luigi.server.RPCHandler):
    """Luigi's RPC handler without its per-request ``cors()`` lookup.

    luigi.server.RPCHandler.__init__ builds its [cors] Config on every request, which re-reads
    luigi's configuration parameter by parameter: about a fifth of the scheduler thread's time
    under load. The appliance ignores luigi's configuration files, so it is read once here.
    """

    def __init__(self, application: tornado.web.Application, request: Any, **kwargs: Any):
        tornado.web.RequestHandler.__init__(self, application, request, **kwargs)

    def initialize(self, scheduler: Any, cors_config: Any = None) -> None:  # type: ignore[override]
        super().initialize(scheduler)
        self._cors_config = cors_config


def _pattern(rule: Rule) -> str:
    return rule.matcher.regex.pattern  # type: ignore[attr-defined]


def rule_for(pattern: str) -> policy.RouteRule:
    rule = policy.ROUTES.get(pattern)
    if rule is None:
        raise ApplianceError(f"route {pattern!r} of luigi's app is not in the access policy "
                             "(luigi_appliance/policy.py ROUTES); refusing to serve it unclassified")
    return rule


def build_app(scheduler: Any, authenticators: list[Any], *, tls: bool, hsts_max_age: int,
              health_checks: list[Callable[[], bool]] | None = None,
              tokens: TokenService | None = None, passwords: BasicAuthenticator | None = None,
              rpc_access: RpcAccess | None = None,
              history_routes: list[tuple[str, type, dict]] | None = None,
              client_addresses: ClientAddresses | None = None) -> tornado.web.Application:
    """Luigi's Tornado app with every route guarded. Fails if luigi has a route we do not classify."""
    stock = luigi.server.app(scheduler)
    # Browser login is on when a session authenticator is among the authenticators (serve.py);
    # without one, /login and /logout still exist (every route is classified) but answer 404.
    sessions = next((a for a in authenticators if isinstance(a, SessionAuthenticator)), None)
    csp, own_routes = visualiser.routes(sessions)
    own_routes = [*own_routes, *login.routes(sessions), *workers.routes()]
    front = [(pattern, guarded(handler, rule_for(pattern + "$")), kwargs) for pattern, handler, kwargs in own_routes]
    front.append((r"/healthz", guarded(HealthHandler, rule_for("/healthz$")), {"checks": list(health_checks or [])}))
    # The appliance's history pages take over luigi's URLs (front rules are matched first).
    front += [(pattern, guarded(handler, rule_for(pattern + "$")), kwargs)
              for pattern, handler, kwargs in history_routes or []]
    if tokens is not None and passwords is not None:
        front.append((r"/auth/token", guarded(TokenHandler, rule_for("/auth/token$")),
                      {"tokens": tokens, "passwords": passwords}))
    handlers: list[tuple[str, type, dict]] = []
    cors_config = luigi.server.cors()
    for rule in stock.wildcard_router.rules:
        pattern = _pattern(rule)
        if pattern in _STATIC_PATTERNS:
            continue
        target, kwargs = rule.target, rule.target_kwargs
        if target is luigi.server.RPCHandler:
            target, kwargs = _RPCHandler, {**kwargs, "cors_config": cors_config}
        handlers.append((pattern, guarded(target, rule_for(pattern)), kwargs))
    settings = dict(stock.settings)
    settings.update(
        static_handler_class=guarded(tornado.web.StaticFileHandler, rule_for("/static/(.*)$")),
        default_handler_class=guarded(NotFoundHandler, policy.FALLBACK),
        appliance_guard=GuardContext(list(authenticators), hsts_max_age, csp, tls,
                                     (rpc_access or RpcAccess()).attach(scheduler),
                                     client_addresses or ClientAddresses()),
        serve_traceback=False,
        debug=False,
    )
    app = tornado.web.Application(handlers, **settings)
    # Tornado puts the static handlers first; our index.html must win over the static file.
    for spec in reversed(front):
        pattern, handler, kwargs = spec
        rule = app.wildcard_router.process_rule(Rule(PathMatches(pattern), handler, kwargs))
        app.wildcard_router.rules.insert(0, rule)
    return app


def route_patterns(app: tornado.web.Application) -> list[str]:
    """Every route pattern the app serves (used by tests to prove each is guarded)."""
    return [_pattern(rule) for rule in app.wildcard_router.rules]
