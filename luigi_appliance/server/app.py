"""Builds the Tornado application: Luigi's routes, each behind the guard, plus our own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.routing import PathMatches, Rule

from luigi_appliance import policy
from luigi_appliance.auth.bearer import BearerAuthenticator
from luigi_appliance.auth.oidc import OidcVerifier
from luigi_appliance.auth.registry import scheme_of
from luigi_appliance.auth.session import SessionAuthenticator
from luigi_appliance.errors import ApplianceError
from luigi_appliance.luigi_internals.server import luigi_app, route_pattern
from luigi_appliance.metrics import handler as metrics_handler
from luigi_appliance.metrics.registry import SchedulerMetrics
from luigi_appliance.server import (
    add_tasks,
    approvals_api,
    approvals_page,
    fresh_login,
    login,
    oidc_login,
    task_failures,
    token,
    unlock,
    visualiser,
    workers,
)
from luigi_appliance.server.client_address import ClientAddresses
from luigi_appliance.server.guard import GuardContext, HealthHandler, LeaderHealthHandler, NotFoundHandler, guarded
from luigi_appliance.server.leadership import Leadership, Solo
from luigi_appliance.server.page_header import SETTING as PAGE_HEADER
from luigi_appliance.server.page_header import Banner, PageHeader
from luigi_appliance.server.rpc_access import RpcAccess

log = logging.getLogger(__name__)


def rule_for(pattern: str) -> policy.RouteRule:
    rule = policy.ROUTES.get(pattern)
    if rule is None:
        raise ApplianceError(f"route {pattern!r} of luigi's app is not in the access policy "
                             "(luigi_appliance/policy.py ROUTES); refusing to serve it unclassified")
    return rule


def build_app(scheduler: Any, authenticators: list[Any], *, tls: bool, hsts_max_age: int,
              health_checks: list[Callable[[], bool]] | None = None,
              rpc_access: RpcAccess | None = None,
              history_routes: list[tuple[str, type, dict]] | None = None,
              client_addresses: ClientAddresses | None = None,
              banner: Banner | None = None,
              metrics: SchedulerMetrics | None = None,
              oidc: OidcVerifier | None = None,
              fresh_login_window: float = 900.0,
              leadership: Leadership | None = None) -> tornado.web.Application:
    """Luigi's Tornado app with every route guarded. Fails if luigi has a route we do not classify.

    With ``metrics``, /metrics serves its registry (instead of luigi's collector) and the guard
    counts and times every RPC in it. ``fresh_login_window``: how old a browser login may be to
    decide an approval ([approvals] fresh_login). ``leadership``: the [ha] node deciding whether
    this scheduler serves (None: it always does)."""
    stock = luigi_app(scheduler)
    # The credential schemes bring their routes: browser login (/login, /logout) with the session
    # scheme, the token exchange (/auth/token) with the bearer scheme.
    sessions = scheme_of(authenticators, SessionAuthenticator)
    # With the session scheme, also the issuers' browser login (/login/oidc/NAME...).
    pages = login.pages_for(sessions, oidc)
    csp, own_routes = visualiser.routes()
    own_routes = [*own_routes, *login.routes(pages), *oidc_login.routes(pages, oidc),
                  *token.routes(scheme_of(authenticators, BearerAuthenticator), oidc),
                  *workers.routes(), *add_tasks.routes(), *approvals_api.routes(), *approvals_page.routes(),
                  *unlock.routes(authenticators),
                  *metrics_handler.routes(metrics.registry if metrics is not None else None)]
    front = [(pattern, guarded(handler, rule_for(pattern + "$")), kwargs) for pattern, handler, kwargs in own_routes]
    front.append((r"/healthz", guarded(HealthHandler, rule_for("/healthz$")), {"checks": list(health_checks or [])}))
    front.append((r"/healthz/leader", guarded(LeaderHealthHandler, rule_for("/healthz/leader$")), {}))
    # The appliance's history pages take over luigi's URLs (front rules are matched first).
    front += [(pattern, guarded(handler, rule_for(pattern + "$")), kwargs)
              for pattern, handler, kwargs in history_routes or []]
    handlers = [(pattern, guarded(target, rule_for(pattern)), kwargs) for pattern, target, kwargs in stock.handlers]
    settings = dict(stock.settings)
    settings.update(
        static_handler_class=guarded(tornado.web.StaticFileHandler, rule_for("/static/(.*)$")),
        default_handler_class=guarded(NotFoundHandler, policy.FALLBACK),
        appliance_guard=GuardContext(list(authenticators), hsts_max_age, csp, tls,
                                     (rpc_access or RpcAccess()).attach(scheduler),
                                     client_addresses or ClientAddresses(), metrics, leadership or Solo()),
        serve_traceback=False,
        # What the HTML pages show around their content (server/page_header.py, task_failures.py).
        **{PAGE_HEADER: PageHeader(banner, sessions), task_failures.SETTING: task_failures.lookup_for(scheduler),
           fresh_login.SETTING: fresh_login_window},
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
    return [route_pattern(rule) for rule in app.wildcard_router.rules]
