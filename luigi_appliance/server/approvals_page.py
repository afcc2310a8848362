"""/approvals and /approvals/ID: the approval requests in the browser, and the decision form.

The list shows the pending requests first, then the most recent decided ones. A request's page
shows what would run (family, parameters, the task's dependencies as the scheduler holds them,
a link to the visualiser's graph), who asked and what each rule still lacks, the approvals so
far with their comments, and a form to approve or deny with a comment (administrators may also
approve alone, "break-glass", with a mandatory reason). The book (approvals/book.py) decides who
may: the page offers the form to everyone and shows the refusal as the scheduler words it.

The form is POSTed to /approvals/ID/decision and carries the session's CSRF token as field
``csrf_token``. The session scheme itself wants that token in the ``X-CSRF-Token`` header of
every state-changing request (auth/session.py), which a plain HTML form cannot send: the
decision handler hands the field to it as that header, so the token is checked exactly where
every other session POST's is (and again here, against the session, like /logout does). Then
the login must be fresh (server/fresh_login.py) before the scheduler counts the decision.

Every value shown is escaped text (Tornado's template autoescaping): parameters, comments and
names come from clients. The templates live here (a DictLoader) rather than in files, so the
package needs no data files for them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import tornado.template

from luigi_appliance.approvals.book import PENDING, ApprovalRefused, ApprovalRequest
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.session import CSRF_HEADER, tokens_match
from luigi_appliance.luigi_internals.scheduler import task_record
from luigi_appliance.server.fresh_login import fresh_refusal, principals_session
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.page_header import STYLE, page_header

log = logging.getLogger(__name__)

# How many decided requests the list shows below the pending ones (newest first).
RECENT_DECIDED = 50
MAX_PENDING_SHOWN = 500
# The dependency tree on a request's page: how deep and how many tasks at most.
TREE_DEPTH = 4
TREE_NODES = 200
MAX_ERROR_SHOWN = 4000

# The message after a decision: only these words, chosen by a fixed key in the redirect's
# query (nothing a link could inject).
FLASHES = {
    "approved": "Your approval was recorded.",
    "denied": "The request was denied; its task fails with your comment.",
}

STATE_STYLES = {"pending": "warning", "approved": "success", "done": "success", "denied": "danger",
                "expired": "default"}
TASK_STATUS_STYLES = {"DONE": "success", "FAILED": "danger", "RUNNING": "primary", "PENDING": "warning",
                      "DISABLED": "default", "UNKNOWN": "default"}


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def state_style(state: str) -> str:
    return "label-" + STATE_STYLES.get(state, "default")


def task_status_style(status: str | None) -> str:
    return "label-" + TASK_STATUS_STYLES.get(status or "", "default")


def graph_url(task_id: str) -> str:
    """The visualiser's dependency graph of ``task_id``."""
    return "/static/visualiser/index.html#" + urlencode({"tab": "graph", "taskId": task_id}, quote_via=quote)


def request_url(request_id: str) -> str:
    return "/approvals/" + quote(request_id, safe="")


@dataclass
class Node:
    """One task of a request's dependency tree, as the scheduler holds it."""

    task_id: str
    status: str | None  # None: the scheduler does not know the task
    family: str = ""
    held_by: str | None = None  # a pending request of its own holds it
    repeated: bool = False  # already shown higher up: not expanded again
    deps: list[Node] = field(default_factory=list)


@dataclass
class TaskView:
    status: str
    status_message: str
    error: str
    tree: list[Node]
    truncated: bool


def dependency_tree(scheduler: Any, approvals: Any, task_id: str) -> TaskView | None:
    """The task's record and its dependencies (breadth-bounded, depth-bounded), or None when
    the scheduler no longer holds the task."""
    task = task_record(scheduler, task_id)
    if task is None:
        return None
    seen = {task_id}
    budget = [TREE_NODES]

    def children(record: Any, depth: int) -> list[Node]:
        out = []
        for dep_id in sorted(record.deps or ()):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            dep = task_record(scheduler, dep_id)
            held = approvals.book.current(dep_id) if approvals is not None else None
            node = Node(dep_id, dep.status if dep is not None else None,
                        (dep.family or "") if dep is not None else "",
                        held.id if held is not None and held.state == PENDING else None)
            if dep_id in seen:
                node.repeated = True
            elif dep is not None and depth < TREE_DEPTH:
                seen.add(dep_id)
                node.deps = children(dep, depth + 1)
            out.append(node)
        return out

    tree = children(task, 1)
    error = str(task.expl) if task.status == "FAILED" and task.expl else ""
    if len(error) > MAX_ERROR_SHOWN:
        error = error[:MAX_ERROR_SHOWN] + " ..."
    return TaskView(task.status, str(task.status_message or ""), error, tree, budget[0] <= 0)


def walk(nodes: list[Node], depth: int = 0) -> Iterator[tuple[int, Node]]:
    """(depth, node) in display order."""
    for node in nodes:
        yield depth, node
        yield from walk(node.deps, depth + 1)


_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Approvals{% end %} - luigi-appliance</title>
<link href="{{ static_url("visualiser/lib/bootstrap3/css/bootstrap.min.css") }}" rel="stylesheet">
<style>
.container { width: auto; max-width: 1200px; margin-bottom: 20px; }
.approvals-nav { margin: 10px 0 20px 0; }
.appliance-bar { background: #00a65a; margin-bottom: 10px; }
.missing { color: #8a6d3b; }
.tree { list-style: none; padding-left: 0; }
.tree li { padding: 2px 0; }
.task-id { font-family: monospace; word-break: break-all; }
pre.wrap { white-space: pre-wrap; word-break: break-word; }
td.params { font-family: monospace; word-break: break-all; }
/* luigi's copy of bootstrap 3 has an invalid .btn-success background: a white button otherwise. */
.btn-success { background-color: #5cb85c; }
.btn-success:hover, .btn-success:focus { background-color: #449d44; }
{% raw header_style %}
</style>
</head>
<body>
<div class="appliance-bar">{% raw header %}</div>
<div class="container">
<ul class="nav nav-pills approvals-nav">
  <li><a href="/approvals">Approvals</a></li>
  <li><a href="/static/visualiser/index.html">Visualiser</a></li>
  <li><a href="/history">History</a></li>
</ul>
{% block content %}{% end %}
</div>
</body>
</html>
"""

_MESSAGE = """{% extends "layout.html" %}
{% block title %}{{ title }}{% end %}
{% block content %}
<h2>{{ title }}</h2>
<p id="approvals-message">{{ message }}</p>
{% if link %}<p><a id="approvals-message-link" href="{{ link[0] }}">{{ link[1] }}</a></p>{% end %}
{% end %}
"""

_LIST = """{% extends "layout.html" %}
{% block content %}
<h2>Approval requests</h2>
{% if not configured %}
<div class="alert alert-info" id="approvals-none">No approval rules are configured on this scheduler
  ([approval.NAME] sections or [approvals] propose_only in scheduler.conf, see docs/approvals.md):
  no task waits for approval.</div>
{% else %}
{% for title, requests, table_id, empty in sections %}
<h3>{{ title }}</h3>
{% if not requests %}<p id="{{ table_id }}-none">{{ empty }}</p>{% else %}
<table class="table table-striped table-bordered" id="{{ table_id }}">
<thead><tr><th>Request</th><th>Task family</th><th>Task id</th><th>Requested by</th><th>Created</th>
<th>State</th><th>What is missing</th></tr></thead>
<tbody>
{% for r in requests %}
<tr class="approval-request" data-request-id="{{ r.id }}" data-state="{{ r.state }}">
  <td><a href="{{ request_url(r.id) }}">{{ r.id }}</a>
    {% if r.action != "add_task" %}<br><small>{{ r.action }}</small>{% end %}</td>
  <td>{{ r.family }}</td>
  <td class="task-id">{{ r.task_id }}</td>
  <td>{{ r.requester }} <span class="text-muted">({{ r.requester_kind }})</span></td>
  <td>{{ fmt_time(r.created) }}</td>
  <td><span class="label {{ state_style(r.state) }}">{{ r.state }}</span></td>
  <td>{% if r.state == "pending" %}<span class="missing">{{ "; ".join(r.missing()) }}</span>
    {% else %}{{ r.summary() }}{% end %}</td>
</tr>
{% end %}
</tbody>
</table>
{% end %}
{% end %}
{% end %}
{% end %}
"""

_SHOW = """{% extends "layout.html" %}
{% block title %}{{ r.id }}{% end %}
{% block content %}
<h2>Approval request <span id="request-id">{{ r.id }}</span>
  <span class="label {{ state_style(r.state) }}" id="request-state">{{ r.state }}</span></h2>
{% if flash %}<div class="alert alert-success" id="approval-flash" role="status">{{ flash }}</div>{% end %}
{% if refusal %}<div class="alert alert-danger" id="approval-refusal" role="alert">The scheduler refused
  this decision: {{ refusal }}</div>{% end %}
<p id="request-summary">{{ r.summary() }}</p>
<div class="row">
<div class="col-md-7">
<h3>Request</h3>
<table class="table table-bordered" id="request-info">
<tbody>
<tr><th>Action</th><td>{{ r.action }}{% if r.action != "add_task" %} (run again an existing task){% end %}</td></tr>
<tr><th>Task family</th><td id="request-family">{{ r.family }}</td></tr>
<tr><th>Task id</th><td class="task-id" id="request-task-id">{{ r.task_id }}</td></tr>
<tr><th>Requested by</th><td id="request-requester">{{ r.requester }} ({{ r.requester_kind }})</td></tr>
<tr><th>Created</th><td>{{ fmt_time(r.created) }}</td></tr>
{% if r.expires %}<tr><th>Expires</th><td>{{ fmt_time(r.expires) }} unless decided</td></tr>{% end %}
{% if r.decided %}<tr><th>Decided</th><td>{{ fmt_time(r.decided) }}</td></tr>{% end %}
{% if r.valid_until and r.state == "approved" %}
<tr><th>Start before</th><td>{{ fmt_time(r.valid_until) }}</td></tr>{% end %}
{% if r.reason %}<tr><th>Reason</th><td id="request-reason">{{ r.reason }}</td></tr>{% end %}
{% if r.outcome %}<tr><th>Run</th><td>{{ r.outcome }}</td></tr>{% end %}
</tbody>
</table>
<h3>Parameters</h3>
{% if r.params %}
<table class="table table-striped table-bordered" id="request-params">
<thead><tr><th>Name</th><th>Value</th></tr></thead>
<tbody>
{% for name, value in sorted(r.params.items()) %}
<tr><td>{{ name }}</td><td class="params">{{ value }}</td></tr>{% end %}
</tbody>
</table>
{% else %}<p id="request-params">No parameters.</p>{% end %}
</div>
<div class="col-md-5">
<h3>Rules</h3>
<ul id="request-rules">
{% for req in r.requirements %}<li>{{ req.describe() }}</li>{% end %}
</ul>
{% if r.missing() %}
<p><strong>Still missing:</strong></p>
<ul id="request-missing" class="missing">{% for item in r.missing() %}<li>{{ item }}</li>{% end %}</ul>
{% end %}
<h3>Decisions</h3>
{% if not r.approvals and not r.denial %}<p id="no-decisions">None yet.</p>{% end %}
<ul id="request-decisions">
{% for d in r.approvals %}
<li class="approval"><strong>{{ "Break-glass approval" if d.break_glass else "Approved" }}</strong> by
  <span class="decider">{{ d.principal }}</span> at {{ fmt_time(d.at) }}{% if d.counted_for %}
  <span class="text-muted">(for {{ ", ".join(d.counted_for) }})</span>{% end %}
  {% if d.comment %}<pre class="wrap comment">{{ d.comment }}</pre>{% end %}</li>
{% end %}
{% if r.denial %}
<li class="denial"><strong>Denied</strong> by <span class="decider">{{ r.denial.principal }}</span>
  at {{ fmt_time(r.denial.at) }}<pre class="wrap comment">{{ r.denial.comment }}</pre></li>
{% end %}
</ul>
</div>
</div>
<h3>Task and its dependencies</h3>
{% if task is None %}
<p id="task-gone">The scheduler no longer holds this task.</p>
{% else %}
<p id="task-status">Status in the scheduler:
  <span class="label {{ task_status_style(task.status) }}">{{ task.status }}</span>
  <a id="graph-link" href="{{ graph_url(r.task_id) }}">Dependency graph in the visualiser</a></p>
{% if task.error %}<pre class="wrap" id="task-error">{{ task.error }}</pre>{% end %}
{% if not task.tree %}<p id="task-deps">No dependencies.</p>{% else %}
<ul class="tree" id="task-deps">
{% for depth, node in walk(task.tree) %}
<li class="dep" data-task-id="{{ node.task_id }}" data-status="{{ node.status or "" }}"
    style="padding-left: {{ depth * 24 }}px">
  {% if depth %}&#x2514; {% end %}<span class="label {{ task_status_style(node.status) }}"
    >{{ node.status or "not in the scheduler" }}</span>
  <a class="task-id" href="{{ graph_url(node.task_id) }}">{{ node.task_id }}</a>
  {% if node.held_by %}
  <a class="held" href="{{ request_url(node.held_by) }}">awaits approval ({{ node.held_by }})</a>{% end %}
  {% if node.repeated %} <span class="text-muted">(shown above)</span>{% end %}
</li>
{% end %}
</ul>
{% if task.truncated %}<p class="text-muted">Only the first {{ tree_nodes }} dependencies are shown;
  the graph shows them all.</p>{% end %}
{% end %}
{% end %}
{% if r.state == "pending" %}
<h3>Decide</h3>
{% if r.requester == visitor_name %}<p class="text-muted" id="own-request">You asked for this request: you
  may not approve it (Deny withdraws it).</p>{% end %}
<form method="post" action="{{ request_url(r.id) }}/decision" id="decision-form">
  <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
  <div class="form-group">
    <label for="comment">Comment (required to deny{% if may_break_glass %},
      and as the reason of a break-glass approval{% end %})</label>
    <textarea class="form-control" id="comment" name="comment" rows="3" maxlength="2000">{{ comment }}</textarea>
  </div>
  {% if may_break_glass %}
  <div class="checkbox"><label><input type="checkbox" name="break_glass" value="yes" id="break-glass">
    Break-glass: approve alone as administrator (logged and audited as break-glass; the comment is the
    mandatory reason)</label></div>
  {% end %}
  <button type="submit" class="btn btn-success" name="decision" value="approve" id="approve">Approve</button>
  <button type="submit" class="btn btn-danger" name="decision" value="deny" id="deny">Deny</button>
</form>
{% end %}
{% end %}
"""

TEMPLATES = tornado.template.DictLoader({"layout.html": _LAYOUT, "message.html": _MESSAGE, "list.html": _LIST,
                                         "show.html": _SHOW})


class _ApprovalsPage(GuardMixin):
    """Common parts: the scheduler's approvals, the session, rendering, errors as pages."""

    @property
    def scheduler(self) -> Any:
        return self.guard.rpc_access.scheduler

    @property
    def approvals(self) -> Any:
        return getattr(self.scheduler, "approvals", None)

    def get_template_path(self) -> str:
        # Tornado caches loaders by this key for every handler class: a key of our own.
        return __name__

    def create_template_loader(self, template_path: str) -> tornado.template.BaseLoader:
        return TEMPLATES

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        header = page_header(self)
        namespace.update(fmt_time=fmt_time, state_style=state_style, task_status_style=task_status_style,
                         graph_url=graph_url, request_url=request_url, walk=walk, header_style=STYLE,
                         header=header.html(header.visitor(self, self.principal)))
        return namespace

    def session_token(self) -> str | None:
        """The CSRF token of the session the request came with (when the principal is its)."""
        session = principals_session(self, self.principal)
        return session.csrf_token if session is not None else None

    def message(self, status: int, title: str, message: str, link: tuple[str, str] | None = None) -> None:
        self.set_status(status)
        self.render("message.html", title=title, message=message, link=link)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The guard's refusals as a page a person reads (a redirect keeps its Location)."""
        reason = kwargs.get("reason_text") or self._reason
        for name, value in kwargs.get("extra_headers", {}).items():
            self.set_header(name, value)
        if 300 <= status_code < 400:
            self.finish()
            return
        link = None
        if status_code == 401:
            link = ("/login?" + urlencode({"next": self.request.path}), "Log in")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        try:
            self.render("message.html", title=f"Refused (HTTP {status_code})", message=str(reason), link=link)
        except Exception:  # an error page must never fail into a traceback
            log.exception("Rendering the approvals error page failed")
            self.finish(f"{status_code}")


class ApprovalsListHandler(_ApprovalsPage):
    """GET /approvals: pending requests first, then the recently decided ones."""

    def get(self) -> None:
        approvals = self.approvals
        if approvals is None:
            self.render("list.html", configured=False, sections=[])
            return
        self.scheduler.expire_due()  # a request past its deadline is shown as what it is now
        pending = approvals.book.requests(PENDING)[:MAX_PENDING_SHOWN]
        decided = [r for r in approvals.book.requests() if r.state != PENDING][:RECENT_DECIDED]
        self.render("list.html", configured=True, sections=[
            ("Pending", pending, "pending-requests", "No request awaits a decision."),
            ("Recently decided", decided, "decided-requests", "No request was decided yet.")])

    head = get


class ApprovalHandler(_ApprovalsPage):
    """GET /approvals/ID: one request, its task and the decision form."""

    def get(self, request_id: str) -> None:
        flash = FLASHES.get(self.get_query_argument("done", ""), "")
        self.show(request_id, flash=flash)

    head = get

    def show(self, request_id: str, *, flash: str = "", refusal: str = "", comment: str = "",
             status: int = 200) -> None:
        approvals = self.approvals
        if approvals is None:
            self.message(404, "No approval rules",
                         "No approval rules are configured on this scheduler, so there are no requests.",
                         ("/approvals", "Approvals"))
            return
        self.scheduler.expire_due()
        request: ApprovalRequest | None = approvals.book.get(request_id)
        if request is None:
            self.message(404, "No such request", f"This scheduler holds no approval request {request_id}.",
                         ("/approvals", "All approval requests"))
            return
        task = dependency_tree(self.scheduler, approvals, request.task_id)
        principal = self.principal
        self.set_status(status)
        self.render("show.html", r=request, task=task, flash=flash, refusal=refusal, comment=comment,
                    csrf_token=self.session_token() or "", tree_nodes=TREE_NODES,
                    visitor_name=principal.name if principal else "",
                    may_break_glass=principal is not None and principal.role >= Role.ADMIN)


class DecisionHandler(ApprovalHandler):
    """POST /approvals/ID/decision: approve or deny, then back to the request's page."""

    async def prepare(self) -> None:
        # A form cannot send headers: its csrf_token field goes to the session scheme as the
        # header it checks (never overriding one a script sent).
        if CSRF_HEADER not in self.request.headers:
            token = self.get_body_argument("csrf_token", None)
            if token is not None:
                self.request.headers[CSRF_HEADER] = token
        await super().prepare()

    def post(self, request_id: str) -> None:
        principal = self.principal
        assert principal is not None  # the guard authenticated the request
        comment = self.get_body_argument("comment", "")
        decision = self.get_body_argument("decision", "")
        if decision not in ("approve", "deny"):
            self.show(request_id, refusal="choose Approve or Deny", comment=comment, status=400)
            return
        refusal = self._csrf_refusal(principal) or fresh_refusal(self, principal)
        if refusal is not None:
            self.show(request_id, refusal=refusal, comment=comment, status=403)
            return
        break_glass = decision == "approve" and self.get_body_argument("break_glass", "") == "yes"
        try:
            self._decide(request_id, principal, decision, comment, break_glass)
        except ApprovalRefused as exc:
            log.info("Approval page: %s of %s by %s refused: %s", decision, request_id, principal.name, exc)
            self.show(request_id, refusal=str(exc), comment=comment, status=exc.status)
            return
        self.redirect(f"{request_url(request_id)}?done={'approved' if decision == 'approve' else 'denied'}",
                      status=303)

    def _csrf_refusal(self, principal: Principal) -> str | None:
        """A session's form must carry its token. A request with HTTP Basic needs none here: the
        appliance never sends browsers a Basic challenge (server/guard.py), so a browser holds no
        Basic password to resend, and a cross-site POST is refused by the guard before any of this
        (its Sec-Fetch-Site/Origin check)."""
        expected = self.session_token()
        if expected is None:
            return None
        if not tokens_match(self.get_body_argument("csrf_token", None), expected):
            return "the form's CSRF token is missing or wrong: reload the page and try again"
        return None

    def _decide(self, request_id: str, principal: Principal, decision: str, comment: str,
                break_glass: bool) -> None:
        scheduler = self.scheduler
        if self.approvals is None:
            raise ApprovalRefused("this scheduler has no approval rules ([approval.NAME])", 404)
        source = self.request.remote_ip or ""
        if decision == "approve":
            scheduler.approve_request(request_id, principal, comment, break_glass=break_glass, source=source)
        else:
            scheduler.deny_request(request_id, principal, comment, source=source)


def routes() -> list[tuple[str, type, dict]]:
    """The pages (policy.ROUTES classifies them: viewer may look and try; the book decides)."""
    return [
        (r"/approvals", ApprovalsListHandler, {}),
        (r"/approvals/(apr-[0-9a-f]+)", ApprovalHandler, {}),
        (r"/approvals/(apr-[0-9a-f]+)/decision", DecisionHandler, {}),
    ]
