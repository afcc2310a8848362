"""The one authentication and authorization layer in front of every route.

Every handler class of Luigi's app (API, visualiser, static files, history pages, metrics) is
subclassed with ``GuardMixin`` first in its MRO, so ``prepare()`` here runs before any of Luigi's
code sees the request. Decisions come from ``luigi_appliance.policy``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import tornado.web
from luigi.scheduler import RPC_METHODS as LUIGI_RPC_METHODS
from tornado.httputil import HTTPServerRequest

from luigi_appliance import policy
from luigi_appliance.audit import AuditLog
from luigi_appliance.auth import Authenticator, AuthError, CsrfRefused, LockedOut, Principal
from luigi_appliance.auth.context import Caller, current_caller
from luigi_appliance.metrics.registry import API_PREFIX, SchedulerMetrics
from luigi_appliance.policy import MethodRule, RouteRule
from luigi_appliance.server.client_address import ClientAddresses
from luigi_appliance.server.leadership import Leadership, NotLeader, Solo, standby_refusal
from luigi_appliance.server.rpc_access import BadArguments, RpcAccess, parse_arguments

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
    # Task-family allowlists, worker binding and the audit of state-changing calls.
    rpc_access: RpcAccess = field(default_factory=RpcAccess)
    # Whose X-Forwarded-For / X-Real-IP names the client ([server] trusted_proxies).
    client_addresses: ClientAddresses = field(default_factory=ClientAddresses)
    # Counts and times every RPC, and the tokens issued (metrics/registry.py); None: not counted.
    metrics: SchedulerMetrics | None = None
    # Whether this node serves, and when its changes are journalled ([ha]; server/leadership.py).
    leadership: Leadership = field(default_factory=Solo)
    headers: dict[str, str] = field(init=False)

    @property
    def audit(self) -> AuditLog | None:
        return self.rpc_access.audit

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


def from_browser(request: HTTPServerRequest) -> bool:
    """Headers only browsers send: Fetch metadata, jQuery's X-Requested-With, or asking for HTML."""
    headers = request.headers
    return (any(name in headers for name in ("Sec-Fetch-Mode", "Sec-Fetch-Dest", "X-Requested-With"))
            or "text/html" in headers.get("Accept", ""))


def page_navigation(request: HTTPServerRequest) -> bool:
    """The browser is loading a page (not a script's call, an image or a stylesheet)."""
    headers = request.headers
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    # Browsers without Fetch metadata: a page load asks for HTML and is not jQuery's.
    return "X-Requested-With" not in headers and "text/html" in headers.get("Accept", "")


def cross_site(request: HTTPServerRequest) -> bool:
    """A browser request from another origin (CSRF): browsers resend credentials by themselves."""
    site = request.headers.get("Sec-Fetch-Site")
    # same-site is refused too: another port of this host is the same site, and gets the cookie.
    if site in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False  # not a browser (luigi workers, curl)
    if origin == "null":
        # Our Referrer-Policy (no-referrer) makes browsers send "null" with their own form
        # POSTs; Sec-Fetch-Site, which no page can set, then says where the form was.
        return site != "same-origin"
    parts = urlsplit(origin)
    return parts.scheme != request.protocol or parts.netloc != request.host


class Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def auth_refusal(exc: AuthError) -> Refused:
    """The HTTP answer to an authentication that raised instead of answering yes or no."""
    if isinstance(exc, LockedOut):
        return Refused(429, "too many failed logins", {"Retry-After": str(int(exc.retry_after) + 1)})
    if isinstance(exc, CsrfRefused):
        return Refused(403, str(exc))
    # AuthUnavailable, and fail closed for any other: nobody can tell who is calling right now.
    log.error("Authentication backend unavailable: %s", exc)
    return Refused(503, "authentication backend unavailable")


class GuardMixin(tornado.web.RequestHandler):
    """Mixed in front of a Luigi handler class by ``guarded()``."""

    route_rule: RouteRule = policy.FALLBACK
    principal: Principal | None = None
    # Set for an RPC once its method is known: audited in on_finish when it mutates.
    rpc_call: tuple[str, MethodRule, dict[str, Any]] | None = None
    # The journal's count when the request arrived, and the reply held until its changes commit.
    _journal_mark = 0
    _held_reply: asyncio.Future | None = None
    _reply_released = False

    @property
    def guard(self) -> GuardContext:
        return self.application.settings["appliance_guard"]

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version leakage
        for name, value in self.guard.headers.items():
            self.set_header(name, value)

    async def prepare(self) -> None:
        # First of all: the throttle, the audit, the log and every handler after us see the
        # client's address (or a label when it is unknown), not the proxy's or 0.0.0.0.
        self.request.remote_ip = self.guard.client_addresses.source(self.request)
        try:
            await self._check()
        except AuthError as exc:
            self._refuse(auth_refusal(exc))
        except Refused as refusal:
            self._refuse(refusal)
        # Last, with no await before the handler runs: what is appended from here on is this
        # request's own doing (a read appends nothing and is never held).
        self._journal_mark = self.guard.leadership.appended()

    def _refuse(self, refusal: Refused) -> None:
        # send_error() clears headers first, so write_error() sets the refusal's own.
        self.send_error(refusal.status, reason_text=refusal.reason, extra_headers=refusal.headers)

    async def _check(self) -> None:
        rule = self.route_rule
        method = self.request.method or ""
        leadership = self.guard.leadership
        # Before authentication: a standby neither loads its directory nor answers from a state
        # that may be behind; it names the leader (clients follow it, keepalived moves the VIP).
        if not rule.standby and not leadership.serving():
            reason, headers = standby_refusal(leadership.status())
            raise Refused(503, reason, headers)
        if method not in rule.methods:
            raise Refused(405, "method not allowed", {"Allow": ", ".join(sorted(rule.methods))})
        # Before the role test: the unauthenticated login and logout forms are POSTed too.
        if method in _MUTATING_HTTP and cross_site(self.request):
            raise Refused(403, "cross-site request refused")
        if rule.role is None:
            return
        principal = await self._authenticate()
        if principal is None:
            raise self._unauthenticated(rule)
        self.principal = principal
        self.current_user = principal
        current_caller.set(Caller(principal, self.request.remote_ip or ""))
        if principal.role < rule.role:
            raise Refused(403, f"role {principal.role} may not use this page")
        if rule.api:
            self._check_rpc(principal)

    async def _authenticate(self) -> Principal | None:
        """The first principal a credential scheme finds; an AuthError ends the search."""
        for authenticator in self.guard.authenticators:
            principal = await authenticator.authenticate(self.request)
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
        try:
            arguments = parse_arguments(self.get_argument("data", default="{}"))
        except BadArguments as exc:
            raise Refused(exc.status, str(exc)) from None
        self.rpc_call = (name, method_rule, arguments)
        if principal.role < method_rule.role:
            log.warning("Refused RPC %s for %s (role %s, needs %s)", name, principal.name,
                        principal.role, method_rule.role)
            raise Refused(403, f"method {name} needs role {method_rule.role}")
        try:
            self.guard.rpc_access.check_arguments(name, arguments)
        except BadArguments as exc:
            log.warning("Refused RPC %s for %s: %s", name, principal.name, exc)
            raise Refused(exc.status, str(exc)) from None
        refusal = self.guard.rpc_access.refusal(principal, name, method_rule, arguments)
        if refusal is not None:
            log.warning("Refused RPC %s for %s: %s", name, principal.name, refusal)
            raise Refused(403, refusal)

    def finish(self, chunk: str | bytes | dict | None = None) -> asyncio.Future:
        """Send the reply, but only once the journal holds the state changes made while serving
        it ([ha]): an acknowledged change survives the loss of this node. Reads append nothing
        and go out at once; so does everything without [ha]."""
        if self._held_reply is not None and not self._reply_released:
            return self._held_reply  # Tornado's own finish() after the handler returned
        if (not self._reply_released and self._acknowledges_changes()
                and self.guard.leadership.appended() > self._journal_mark):
            if chunk is not None:
                self.write(chunk)
            self._held_reply = asyncio.ensure_future(self._finish_when_committed())
            return self._held_reply
        return super().finish(chunk)

    def _acknowledges_changes(self) -> bool:
        """Whether the reply acknowledges state changes. A read may append too (luigi's reads
        prune, the approvals page expires requests), but nobody was promised those: a read's
        reply never waits for the journal."""
        if self.request.method in ("GET", "HEAD"):
            return False
        return self.rpc_call is None or self.rpc_call[1].mutates

    async def _finish_when_committed(self) -> None:
        try:
            await self.guard.leadership.committed()
        except NotLeader as exc:
            # Nothing was acknowledged: the client retries on the leader (luigi retries a 503).
            log.warning("Not acknowledging %s %s: %s", self.request.method, self.request.path, exc)
            self._reply_released = True
            reason, headers = standby_refusal(self.guard.leadership.status())
            self.clear()
            self.send_error(503, reason_text=f"{exc}; {reason}", extra_headers=headers)
            return
        self._reply_released = True
        await super().finish()

    def on_finish(self) -> None:
        metrics = self.guard.metrics
        if metrics is not None and self.request.path.startswith(API_PREFIX):
            # Every answer, refusals included: a 401 flood is what the alerts look for.
            metrics.rpc_answered(self.request.path, self.get_status(), self.request.request_time())
        if self.rpc_call is not None and self.rpc_call[1].mutates:
            name, _, arguments = self.rpc_call
            status = self.get_status()
            audit = self.guard.audit
            # Workers' heartbeats only when configured (audit.py); refused calls always.
            if audit is not None and audit.audits_rpc(name, status):
                self.guard.rpc_access.record(self.principal, self.request.remote_ip or "", name, arguments,
                                             status)

    def _unauthenticated(self, rule: RouteRule) -> Refused:
        """Programs get the Basic challenge. Browsers never do: it would make them show their own
        password dialog and then resend the password by themselves with every request (also with
        the ones other sites make them send), with no way to log out. Pages send them to the login
        form; their scripts' calls get a bare 401 (the visualiser's shim then opens the form)."""
        if not from_browser(self.request):
            return Refused(401, "authentication required", {"WWW-Authenticate": REALM})
        if not rule.api and self.request.method in ("GET", "HEAD") and page_navigation(self.request):
            target = "/login?" + urlencode({"next": self.request.uri or "/"})
            return Refused(303, "login required", {"Location": target})
        return Refused(401, "authentication required")

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


class LeaderHealthHandler(GuardMixin):
    """``/healthz/leader``: 200 on the leader, 503 on every other node, with the node's role,
    epoch, leader and journal lag as JSON (no task data: it is unauthenticated)."""

    def get(self) -> None:
        status = self.guard.leadership.status()
        self.set_status(200 if status.leading and self.guard.leadership.serving() else 503)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(status.as_json()))

    head = get


class NotFoundHandler(GuardMixin):
    """Unknown paths: authenticated first, so anonymous clients learn nothing about the app."""

    def prepare(self):
        return self._prepare_then_404()

    async def _prepare_then_404(self) -> None:
        await GuardMixin.prepare(self)
        if not self._finished:
            self.send_error(404, reason_text="not found")


def guarded(handler_class: type, rule: RouteRule) -> type:
    """``handler_class`` with the guard in front of it."""
    bases = (handler_class,) if issubclass(handler_class, GuardMixin) else (GuardMixin, handler_class)
    return type(f"Guarded{handler_class.__name__}", bases, {"route_rule": rule})
