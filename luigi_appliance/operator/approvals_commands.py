"""``luigi-appliance approvals list|show|approve|deny``: the approval requests on the running scheduler.

``list`` and ``show`` are reads, with the account of client.conf as every operator command
(operator/api_client.py). ``approve`` and ``deny`` are decisions: the scheduler takes them only
from a fresh login (server/fresh_login.py), so they never use the stored credentials or a token.
The operator signs in as themselves for this one call, HTTP Basic with ``--user`` (default
$USER) and the password typed at the terminal (or, for scripts, one line on standard input with
``--password-stdin``). Errors are one line and exit 1, as the other operator commands'.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luigi_appliance.errors import ApplianceError, UsageError
from luigi_appliance.operator.records import iso_time
from luigi_appliance.operator.table import columns

if TYPE_CHECKING:
    import requests

    from luigi_appliance.operator.api_client import ApiClient

# The request states of approvals/book.py, spelt out: the parser must not import the book's
# dependencies (luigi's auth types) for --help.
STATES = ("pending", "approved", "denied", "expired", "done")
_EXIT_OK = 0


# ---- records -----------------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class DecisionRecord:
    """One approval or the denial: who, when, what they wrote."""

    principal: str
    at: str | None
    comment: str
    break_glass: bool = False

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DecisionRecord:
        return cls(str(data.get("principal", "")), iso_time(data.get("at")), str(data.get("comment") or ""),
                   bool(data.get("break_glass")))


@dataclass(frozen=True)
class ApprovalRecord:
    """One request as ``--json`` prints it (docs/operator-cli.md): the scheduler's record with
    its epoch times as ISO 8601 UTC."""

    id: str
    state: str
    task_id: str
    family: str
    params: dict[str, str]
    action: str
    requester: str
    requester_kind: str
    created: str | None
    expires: str | None
    decided: str | None
    requirements: list[dict[str, Any]]
    missing: list[str]
    approvals: list[DecisionRecord]
    denial: DecisionRecord | None
    reason: str | None
    outcome: str | None
    summary: str
    valid_until: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ApprovalRecord:
        denial = data.get("denial")
        return cls(id=str(data.get("id", "")), state=str(data.get("state", "")),
                   task_id=str(data.get("task_id", "")), family=str(data.get("family", "")),
                   params={str(k): str(v) for k, v in (data.get("params") or {}).items()},
                   action=str(data.get("action", "")), requester=str(data.get("requester", "")),
                   requester_kind=str(data.get("requester_kind", "")), created=iso_time(data.get("created")),
                   expires=iso_time(data.get("expires")), decided=iso_time(data.get("decided")),
                   requirements=list(data.get("requirements") or []),
                   missing=[str(m) for m in data.get("missing") or []],
                   approvals=[DecisionRecord.from_api(d) for d in data.get("approvals") or []],
                   denial=DecisionRecord.from_api(denial) if isinstance(denial, dict) else None,
                   reason=_text(data.get("reason")), outcome=_text(data.get("outcome")),
                   summary=str(data.get("summary", "")), valid_until=iso_time(data.get("valid_until")))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _request_of(answer: Any, method: str) -> dict[str, Any]:
    request = answer.get("request") if isinstance(answer, dict) else None
    if not isinstance(request, dict):
        raise ApplianceError(f"scheduler's answer to {method} holds no request: {str(answer)[:200]}")
    return request


# ---- approvals list, approvals show ------------------------------------------------------------

def _client(args: argparse.Namespace) -> ApiClient:
    from luigi_appliance.operator.api_client import ApiClient, ConnectionOptions

    return ApiClient(ConnectionOptions(args.scheduler_url, args.ca_file, args.credentials_file, args.client_config))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def list_requests(client: ApiClient, state: str | None) -> list[ApprovalRecord]:
    """The scheduler's requests (in ``state``), newest first as it lists them."""
    answer = client.rpc("approvals_list", state=state)
    requests_ = answer.get("requests") if isinstance(answer, dict) else None
    if not isinstance(requests_, list):
        raise ApplianceError(f"scheduler's answer to approvals_list holds no requests: {str(answer)[:200]}")
    return [ApprovalRecord.from_api(r) for r in requests_ if isinstance(r, dict)]


def _waiting_for(record: ApprovalRecord) -> str:
    """What the list shows of a request's state: what is missing, or how it ended."""
    if record.state == "pending":
        return "needs " + "; ".join(record.missing) if record.missing else "pending"
    if record.state in ("approved", "done"):
        return "by " + ", ".join(d.principal for d in record.approvals)
    return record.reason or record.state


def cmd_approvals_list(args: argparse.Namespace) -> int:
    records = list_requests(_client(args), args.state)
    if args.json:
        _print_json({"requests": [r.as_json() for r in records]})
    else:
        print(columns(["ID", "STATE", "ACTION", "REQUESTER", "CREATED", "DECISION", "TASK ID"],
                      [(r.id, r.state, r.action, f"{r.requester} ({r.requester_kind})", r.created, _waiting_for(r),
                        r.task_id) for r in records]))
    return _EXIT_OK


@dataclass(frozen=True)
class TaskState:
    """The task a request is about, as the scheduler holds it now."""

    status: str | None
    status_message: str | None
    error: str | None
    deps: list[dict[str, str]]

    @classmethod
    def from_api(cls, data: Any) -> TaskState | None:
        if not isinstance(data, dict):
            return None
        deps = [{"task_id": str(d.get("task_id", "")), "status": str(d.get("status", ""))}
                for d in data.get("deps") or [] if isinstance(d, dict)]
        return cls(_text(data.get("status")), _text(data.get("status_message")), _text(data.get("error")),
                   sorted(deps, key=lambda d: d["task_id"]))


def _render_request(record: ApprovalRecord, task: TaskState | None) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(record.params.items()))
    needs = "; ".join(f"{r.get('approvals')} from {' '.join(r.get('approvers') or [])} ({r.get('rule')})"
                      for r in record.requirements)
    rows: list[tuple[str, object]] = [
        ("state", record.state), ("summary", record.summary), ("action", record.action),
        ("task", record.task_id), ("family", record.family), ("params", params or None),
        ("requested by", f"{record.requester} ({record.requester_kind})"), ("created", record.created),
        ("expires", record.expires), ("needs", needs or None),
        ("missing", "; ".join(record.missing) or None), ("decided", record.decided),
        ("reason", record.reason), ("run", record.outcome),
    ]
    if task is not None:
        rows += [("task status", task.status), ("task message", task.status_message)]
    lines = [columns(["request", record.id], rows)]
    lines.append(f"approvals: {len(record.approvals)}")
    if record.approvals:
        lines.append(_indent(columns(["AT", "BY", "COMMENT"], [
            (d.at, d.principal + (" (break-glass)" if d.break_glass else ""), d.comment or None)
            for d in record.approvals])))
    if record.denial is not None:
        lines.append(f"denied by {record.denial.principal} at {record.denial.at}: {record.denial.comment}")
    if task is not None:
        lines.append(f"dependencies: {len(task.deps)}")
        if task.deps:
            lines.append(_indent(columns(["STATUS", "TASK ID"], [(d["status"], d["task_id"]) for d in task.deps])))
        if task.error:
            lines += ["error:", _indent(task.error.rstrip())]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def cmd_approvals_show(args: argparse.Namespace) -> int:
    answer = _client(args).rpc("approval_show", request_id=args.request_id)
    record = ApprovalRecord.from_api(_request_of(answer, "approval_show"))
    task = TaskState.from_api(answer.get("task"))
    if args.json:
        _print_json({"request": record.as_json(), "task": asdict(task) if task is not None else None})
    else:
        print(_render_request(record, task))
    return _EXIT_OK


# ---- approvals approve, approvals deny: a fresh login ------------------------------------------

@dataclass(frozen=True)
class FreshLogin:
    """The operator's own name and password, for one decision; never stored."""

    user: str
    password: str = field(repr=False)
    typed_where: str  # for the refusal's hint: "the terminal" or "standard input"


def read_login(args: argparse.Namespace) -> FreshLogin:
    """``--user`` (default $USER) and the password from the terminal, or with
    ``--password-stdin`` the first line of standard input."""
    user = args.user or os.environ.get("USER") or getpass.getuser()
    if args.password_stdin:
        password, where = sys.stdin.readline().rstrip("\r\n"), "standard input"
    elif sys.stdin.isatty():
        password, where = getpass.getpass(f"Password for {user}: "), "the terminal"
    else:
        raise ApplianceError("no terminal to ask the password at: give it on standard input with --password-stdin")
    if not password:
        raise ApplianceError(f"empty password for {user} (read from {where})")
    return FreshLogin(user, password, where)


class DecisionClient:
    """The scheduler's ``approve`` and ``deny`` RPCs with HTTP Basic: a password in the very
    request is what the scheduler counts as a fresh login. No token, no retry (a wrong password
    counts towards the account's lockout)."""

    def __init__(self, args: argparse.Namespace, login: FreshLogin):
        from luigi_appliance.client.settings import load_client_settings

        overrides = {k: str(v) for k, v in (("scheduler_url", args.scheduler_url), ("ca_file", args.ca_file))
                     if v is not None}
        settings = load_client_settings(args.client_config, overrides)
        self.url = settings.scheduler_url
        self._urls = list(settings.scheduler_urls)
        self._verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        self._timeout = settings.connect_timeout
        self._login = login

    def call(self, method: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``method``'s answer; ApplianceError with one line for anything else."""
        import requests

        from luigi_appliance.client.scheduler_errors import certificate_failure, describe, untrusted

        session = requests.Session()
        session.trust_env = False  # $REQUESTS_CA_BUNDLE would override the CA; no .netrc either
        try:
            resp = self._post_to_leader(session, method, arguments)
        except requests.RequestException as exc:
            if certificate_failure(exc) is not None:
                raise untrusted(self.url, self._verify, exc) from None
            raise ApplianceError(f"cannot reach the scheduler at {self.url}: {describe(exc)}") from None
        finally:
            session.close()
        if resp.status_code != 200:
            raise self._refusal(method, resp)
        try:
            return _request_of(resp.json()["response"], method)
        except (ValueError, KeyError, TypeError):
            raise ApplianceError(f"scheduler's answer to {method} is not an RPC answer: {resp.text[:200]}") from None

    def _post_to_leader(self, session: requests.Session, method: str, arguments: dict[str, Any]) -> requests.Response:
        """POST to the leader among the configured nodes (client/leader.py): a standby's 503 sends
        it to the node named, if configured, else to the next; the password goes to configured
        nodes only. No quick retries: one attempt per node, so a decision whose answer was lost
        is not sent again."""
        from luigi_appliance.client.leader import Leader

        leader = Leader(self._urls, quick_retries=0)

        def attempt(url: str) -> requests.Response:
            self.url = url.removesuffix(f"api/{method}")
            return session.post(url, data={"data": json.dumps(arguments)},
                                auth=(self._login.user, self._login.password), verify=self._verify,
                                timeout=self._timeout, allow_redirects=False)

        return leader.call(attempt, f"{leader.current}api/{method}")

    def _refusal(self, method: str, resp: requests.Response) -> ApplianceError:
        from luigi_appliance.client.scheduler_errors import reason

        why = reason(resp) or resp.text[:200].strip() or resp.reason
        user = self._login.user
        if resp.status_code == 401:
            return ApplianceError(f"scheduler refused {method} for user {user!r}: 401 authentication failed "
                                  f"({why}); check the name (--user) and the password given on "
                                  f"{self._login.typed_where}")
        if resp.status_code == 403:
            return ApplianceError(f"scheduler refused {method} for user {user!r}: 403 {why}")
        if resp.status_code == 404:
            return ApplianceError(f"scheduler answered 404 to {method}: {why}")
        if resp.status_code == 409:
            return ApplianceError(f"scheduler refused {method}: 409 {why}")
        return ApplianceError(f"scheduler answered {resp.status_code} to {method}: {why}")


def cmd_approvals_approve(args: argparse.Namespace) -> int:
    if args.break_glass and not (args.reason or "").strip():
        raise _usage("--break-glass needs --reason TEXT (why the rule's approvers cannot decide)")
    if args.reason and not args.break_glass:
        raise _usage("--reason goes with --break-glass; an ordinary approval takes --comment")
    if args.break_glass and args.comment is not None:
        raise _usage("--break-glass takes its reason with --reason, not --comment")
    arguments: dict[str, Any] = {"request_id": args.request_id}
    if args.break_glass:
        arguments.update(break_glass=True, comment=args.reason)
    elif args.comment is not None:
        arguments["comment"] = args.comment
    login = read_login(args)
    request = DecisionClient(args, login).call("approve", arguments)
    print(ApprovalRecord.from_api(request).summary)
    return _EXIT_OK


def cmd_approvals_deny(args: argparse.Namespace) -> int:
    if not args.comment.strip():
        raise _usage("deny needs --comment TEXT saying why (it becomes the task's error)")
    login = read_login(args)
    request = DecisionClient(args, login).call("deny", {"request_id": args.request_id, "comment": args.comment})
    print(ApprovalRecord.from_api(request).summary)
    return _EXIT_OK


def _usage(message: str) -> ApplianceError:
    return UsageError(message)


# ---- parsers -----------------------------------------------------------------------------------

def _login_parser() -> argparse.ArgumentParser:
    """Who decides: the operator's own fresh login, never client.conf's account."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--scheduler-url", help="https://HOST:PORT/ (default from client.conf)")
    parent.add_argument("--ca-file", type=Path, help="CA certificate(s) to verify the scheduler with")
    parent.add_argument("--client-config", type=Path, help="client.conf (default /etc/luigi-appliance/client.conf)")
    parent.add_argument("--user", help="your account name (default: $USER)")
    parent.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input instead of the terminal")
    return parent


def add_parsers(sub: Any, conn: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    """``approvals`` into the top-level subparsers ``sub`` (``conn`` and ``as_json``: the operator
    commands' shared options)."""
    login = _login_parser()
    approvals = sub.add_parser("approvals", help="approval requests on the running scheduler "
                               "(list, show, approve, deny)")
    approvals_sub = approvals.add_subparsers(dest="approvals_command", required=True)

    listing = approvals_sub.add_parser("list", parents=[conn, as_json], help="requests, newest first (viewer)")
    listing.add_argument("--state", type=str.lower, choices=STATES, help="only requests in this state")
    listing.set_defaults(func=cmd_approvals_list)

    show = approvals_sub.add_parser("show", parents=[conn, as_json],
                                    help="a request, its approvals and its task's dependencies (viewer)")
    show.add_argument("request_id", metavar="ID", help="the request id (apr-...), as approvals list shows it")
    show.set_defaults(func=cmd_approvals_show)

    approve = approvals_sub.add_parser("approve", parents=[login],
                                       help="approve a request as yourself (fresh login: your password; audited)")
    approve.add_argument("request_id", metavar="ID", help="the request id (apr-...)")
    approve.add_argument("--comment", help="why, for the audit trail")
    approve.add_argument("--break-glass", action="store_true",
                         help="approve alone, whatever the rule needs (admin; logged at WARNING and audited)")
    approve.add_argument("--reason", help="with --break-glass: why (required)")
    approve.set_defaults(func=cmd_approvals_approve)

    deny = approvals_sub.add_parser("deny", parents=[login],
                                    help="deny a request as yourself; its task fails (fresh login; audited)")
    deny.add_argument("request_id", metavar="ID", help="the request id (apr-...)")
    deny.add_argument("--comment", required=True, help="why (required; it becomes the task's error)")
    deny.set_defaults(func=cmd_approvals_deny)
