"""Who may call what: every Luigi RPC method (and the appliance's add_tasks) and every HTTP route.

Both tables fail closed. An RPC method luigi defines but this table does not classify is refused
(a luigi upgrade that adds a method stays locked until someone decides what it is), and so is any
route of luigi's Tornado app missing from ``ROUTES``. docs/access-control.md explains the choices.
"""

from __future__ import annotations

from dataclasses import dataclass

from luigi_appliance.auth import Role


@dataclass(frozen=True)
class MethodRule:
    """``mutates``: changes scheduler state, so POST only (a GET is refused with 405).
    ``fresh``: the caller must have just proved who they are (server/fresh_login.py)."""

    mutates: bool
    role: Role
    fresh: bool = False


def _read(role: Role = Role.VIEWER) -> MethodRule:
    return MethodRule(mutates=False, role=role)


def _write(role: Role) -> MethodRule:
    return MethodRule(mutates=True, role=role)


# RPC methods the appliance serves on top of luigi's (luigi's own RPCHandler does not know them).
APPLIANCE_RPC_METHODS = frozenset({"add_tasks", "approvals_list", "approval_show", "approve", "deny"})

RPC_METHODS: dict[str, MethodRule] = {
    # Reads, used by the visualiser and by workers.
    "count_pending": _read(),
    "dep_graph": _read(),
    "fetch_error": _read(),
    "get_running_task_resources": _read(),
    "get_scheduler_message_response": _read(),
    "get_task_progress_percentage": _read(),
    "get_task_status_message": _read(),
    "graph": _read(),
    "has_task_history": _read(),
    "inverse_dep_graph": _read(),
    "is_pause_enabled": _read(),
    "is_paused": _read(),
    "resource_list": _read(),
    "task_list": _read(),
    "task_search": _read(),
    "worker_list": _read(),
    # What a worker does while running a pipeline. get_work assigns tasks and ping refreshes the
    # worker's liveness: both change state.
    "add_scheduler_message_response": _write(Role.WORKER),
    "add_task": _write(Role.WORKER),
    # The appliance's own: many add_task calls in one, each checked as add_task (server/add_tasks.py).
    "add_tasks": _write(Role.WORKER),
    "add_task_batcher": _write(Role.WORKER),
    "add_worker": _write(Role.WORKER),
    "announce_scheduling_failure": _write(Role.WORKER),
    "decrease_running_task_resources": _write(Role.WORKER),
    "get_work": _write(Role.WORKER),
    "ping": _write(Role.WORKER),
    "report_task_statistics": _write(Role.WORKER),
    "set_task_progress_percentage": _write(Role.WORKER),
    "set_task_status_message": _write(Role.WORKER),
    "update_metrics_task_started": _write(Role.WORKER),
    # Operator actions from the visualiser or scripts.
    "disable_worker": _write(Role.OPERATOR),
    "forgive_failures": _write(Role.OPERATOR),
    "mark_as_done": _write(Role.OPERATOR),
    "pause": _write(Role.OPERATOR),
    "re_enable_task": _write(Role.OPERATOR),
    "send_scheduler_message": _write(Role.OPERATOR),
    "set_worker_processes": _write(Role.OPERATOR),
    "unpause": _write(Role.OPERATOR),
    "update_resource": _write(Role.OPERATOR),
    "update_resources": _write(Role.OPERATOR),
    # Drops done and stale tasks at once; the server already runs it every minute.
    "prune": _write(Role.ADMIN),
    # Approval gates (server/approvals_api.py). Anyone signed in may look; who may decide is the
    # request's own rule (its approvers, never the requester), so the role here is the lowest
    # that sees tasks, and the login must be fresh: a stored token cannot approve anything.
    "approvals_list": _read(),
    "approval_show": _read(),
    "approve": MethodRule(mutates=True, role=Role.VIEWER, fresh=True),
    "deny": MethodRule(mutates=True, role=Role.VIEWER, fresh=True),
}


@dataclass(frozen=True)
class RouteRule:
    """``role`` None: no authentication (the health check, the login and logout forms).
    ``api``: per-method rules apply. ``standby``: also answered by an [ha] standby (health and
    metrics); every other route answers 503 there, naming the leader."""

    role: Role | None
    methods: frozenset[str]
    api: bool = False
    standby: bool = False


_READ_ONLY = frozenset({"GET", "HEAD"})

# Keyed by the regular expression Tornado compiled for each route.
ROUTES: dict[str, RouteRule] = {
    "/api/(.*)$": RouteRule(Role.VIEWER, frozenset({"GET", "POST"}), api=True),
    # add_tasks, matched before luigi's /api/(.*): its handler applies RPC_METHODS' rule itself.
    "/api/add_tasks$": RouteRule(Role.VIEWER, frozenset({"POST"})),
    # The approval RPCs, also before /api/(.*): their handler applies RPC_METHODS' rules itself.
    "/api/(approvals_list|approval_show|approve|deny)$": RouteRule(Role.VIEWER, frozenset({"GET", "POST"})),
    # The approvals pages (server/approvals_page.py): the list, one request, and its decision
    # form (CSRF-checked, fresh login, the request's own rule decides who may).
    "/approvals$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/approvals/(apr-[0-9a-f]+)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/approvals/(apr-[0-9a-f]+)/decision$": RouteRule(Role.VIEWER, frozenset({"POST"})),
    "/$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/tasklist$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/tasklist/(.*?)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/by_name/(.*?)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/by_id/(.*?)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/by_task_id/(.*?)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/by_params/(.*?)$": RouteRule(Role.VIEWER, _READ_ONLY),
    # The appliance's history API for scripts, the writer's status and its metrics.
    "/history/api/events$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/api/status$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/history/metrics$": RouteRule(Role.METRICS, _READ_ONLY, standby=True),
    # The scheduler's metrics (metrics/): counts and timings only, so a scrape account may read them.
    "/metrics$": RouteRule(Role.METRICS, _READ_ONLY, standby=True),
    "/static/(.*)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/(favicon\\.ico)$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/(robots\\.txt)$": RouteRule(Role.VIEWER, _READ_ONLY),
    # The appliance's own routes.
    "/static/visualiser/index\\.html$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/appliance/visualiser-post\\.js$": RouteRule(Role.VIEWER, _READ_ONLY),
    # Luigi's scripts with task fields rendered as text (server/visualiser.py SCRIPT_PATCHES).
    "/static/visualiser/js/visualiserApp\\.js$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/static/visualiser/js/graph\\.js$": RouteRule(Role.VIEWER, _READ_ONLY),
    "/healthz$": RouteRule(None, _READ_ONLY, standby=True),
    # 200 on the [ha] leader (a lone scheduler leads), 503 elsewhere: for keepalived's track
    # script, Pacemaker and load balancers. Role, epoch and journal lag only; no task data.
    "/healthz/leader$": RouteRule(None, _READ_ONLY, standby=True),
    # Bearer tokens for workers and scrape accounts (any role: a token carries the role). No
    # authentication here because a token exchange (RFC 8693) carries no credential the guard
    # knows: the handler (server/token.py) authenticates each grant itself, the name and password
    # through the guard's own schemes as before, and refuses everything else.
    "/auth/token$": RouteRule(None, frozenset({"POST"})),
    # An operator frees a worker id bound to a principal (server/workers.py; audited).
    "/appliance/workers/release$": RouteRule(Role.OPERATOR, frozenset({"POST"})),
    # An administrator lifts a name's login lockout (server/unlock.py; audited). Admin, not
    # operator: it re-opens password guessing against that name, a decision about accounts.
    "/appliance/users/unlock$": RouteRule(Role.ADMIN, frozenset({"POST"})),
    # Browser login: the form must be reachable without a session. The guard still applies its
    # method and cross-origin checks; the handlers check the form token and the CSRF token.
    "/login$": RouteRule(None, frozenset({"GET", "HEAD", "POST"})),
    "/logout$": RouteRule(None, frozenset({"POST"})),
    # Single sign-on with an [oidc.NAME] issuer (server/oidc_login.py): the start and the IdP's
    # redirect back need no session (the flow cookie, state, PKCE and nonce are checked there);
    # the back-channel logout is the IdP's own POST, authenticated by its signed logout token.
    # GET only: a HEAD must not start a flow or use one up.
    "/login/oidc/([a-z][a-z0-9_-]*)$": RouteRule(None, frozenset({"GET"})),
    "/login/oidc/([a-z][a-z0-9_-]*)/callback$": RouteRule(None, frozenset({"GET"})),
    "/login/oidc/([a-z][a-z0-9_-]*)/backchannel-logout$": RouteRule(None, frozenset({"POST"})),
}

# Routes nobody matched (Tornado's default handler): still authenticated, so an anonymous
# client cannot probe which paths exist.
FALLBACK = RouteRule(Role.VIEWER, _READ_ONLY)
