"""The one authentication and authorization layer in front of every route.

Every handler class of Luigi's app (API, visualiser, static files, history pages, metrics) is
subclassed with ``GuardMixin`` first in its MRO, so ``prepare()`` here runs before any of Luigi's
code sees the request. Decisions come from ``luigi_appliance.policy``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import tornado.web
from luigi.scheduler import RPC_METHODS as LUIGI_RPC_METHODS

from luigi_appliance import policy
from luigi_appliance.auth import Authenticator, AuthUnavailable, Principal
from luigi_appliance.auth.context import Caller, current_caller
from luigi_appliance.policy import RouteRule

log = logging.getLogger(__name__)

REALM = 'Basic realm="luigi-appliance", charset="UTF-8"'
_MUTATING_HTTP = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class GuardContext:
    """What every guarded handler needs; kept in the Application's settings."""

    # Tried in order; the first that returns a principal wins.
    authenticators: list[Authenticator]
    hsts_max_age: int
    content_security_policy: str
    tls: bool
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # Fixed for the life of the app: built once, set on every response.
        self.headers = security_headers(self)


def security_headers(ctx: GuardContext) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": ctx.content_security_policy,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    if ctx.tls and ctx.hsts_max_age > 0:
        headers["Strict-Transport-Security"] = f"max-age={ctx.hsts_max_age}"
    return headers


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class GuardMixin(tornado.web.RequestHandler):
    """Mixed in front of a Luigi handler class by ``guarded()``."""

    route_rule: RouteRule = policy.FALLBACK
    principal: Principal | None = None

    @property
    def guard(self) -> GuardContext:
        return self.application.settings["appliance_guard"]

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version leakage
        for name, value in self.guard.headers.items():
            self.set_header(name, value)

    async def prepare(self) -> None:
        try:
            await self._check()
        except Refused as refusal:
            # send_error() clears headers first, so write_error() sets the refusal's own.
            self.send_error(refusal.status, reason_text=refusal.reason, extra_headers=refusal.headers)

    async def _check(self) -> None:
        rule = self.route_rule
        method = self.request.method or ""
        if method not in rule.methods:
            raise Refused(405, "method not allowed", {"Allow": ", ".join(sorted(rule.methods))})
        if rule.role is None:
            return
        if method in _MUTATING_HTTP and self._cross_site():
            raise Refused(403, "cross-site request refused")
        principal = await self._authenticate()
        if principal is None:
            raise Refused(401, "authentication required", {"WWW-Authenticate": REALM})
        self.principal = principal
        self.current_user = principal
        current_caller.set(Caller(principal, self.request.remote_ip or ""))
        if principal.role < rule.role:
            raise Refused(403, f"role {principal.role} may not use this page")
        if rule.api:
            self._check_rpc(principal)

    async def _authenticate(self) -> Principal | None:
        for authenticator in self.guard.authenticators:
            try:
                principal = await authenticator.authenticate(self.request)
            except AuthUnavailable as exc:
                log.error("Authentication backend unavailable: %s", exc)
                raise Refused(503, "authentication backend unavailable") from None
            if principal is not None:
                return principal
        return None

    def _check_rpc(self, principal: Principal) -> None:
        name = self.path_args[0] if self.path_args else ""
        if name not in LUIGI_RPC_METHODS:
            raise Refused(404, "no such method")
        method_rule = policy.RPC_METHODS.get(name)
        if method_rule is None:
            log.error("Refused RPC %r: luigi defines it but the appliance's policy table does not "
                      "classify it (fail closed; see luigi_appliance/policy.py)", name)
            raise Refused(403, "method not classified by the access policy")
        if method_rule.mutates and self.request.method != "POST":
            raise Refused(405, "state-changing method: use POST", {"Allow": "POST"})
        if principal.role < method_rule.role:
            log.warning("Refused RPC %s for %s (role %s, needs %s)", name, principal.name,
                        principal.role, method_rule.role)
            raise Refused(403, f"method {name} needs role {method_rule.role}")

    def _cross_site(self) -> bool:
        """A browser POST from another origin (CSRF): browsers resend Basic credentials by themselves."""
        if self.request.headers.get("Sec-Fetch-Site", "") == "cross-site":
            return True
        origin = self.request.headers.get("Origin")
        if origin is None:
            return False  # not a browser (luigi workers, curl)
        parts = urlsplit(origin)
        return parts.scheme != self.request.protocol or parts.netloc != self.request.host

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A short JSON error; never a traceback (luigi's code may put arguments in exceptions)."""
        reason = kwargs.get("reason_text") or self._reason
        for name, value in kwargs.get("extra_headers", {}).items():
            self.set_header(name, value)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": status_code, "reason": reason}))


class HealthHandler(GuardMixin):
    """``/healthz``: unauthenticated, says only ok or degraded."""

    def initialize(self, checks: list) -> None:
        self._checks = checks

    def get(self) -> None:
        healthy = all(check() for check in self._checks)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("ok\n" if healthy else "degraded\n")

    head = get


class NotFoundHandler(GuardMixin):
    """Unknown paths: authenticated first, so anonymous clients learn nothing about the app."""

    def prepare(self):  # type: ignore[override]
        return self._prepare_then_404()

    async def _prepare_then_404(self) -> None:
        await GuardMixin.prepare(self)
        if not self._finished:
            self.send_error(404, reason_text="not found")


def guarded(handler_class: type, rule: RouteRule) -> type:
    """``handler_class`` with the guard in front of it."""
    bases = (handler_class,) if issubclass(handler_class, GuardMixin) else (GuardMixin, handler_class)
    return type(f"Guarded{handler_class.__name__}", bases, {"route_rule": rule})
