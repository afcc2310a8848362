"""``luigi-appliance task|scheduler ...``, ``worker list`` and ``user unlock``: the operator CLI.

Each command is one or a few calls of the scheduler's API (operator/api_client.py), so it is
refused exactly as the API refuses it (a 403 is one line naming the account and the method,
exit 1) and the scheduler audits every state-changing call. Listings take ``--json``: the
records of operator/records.py, documented in docs/operator-cli.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luigi_appliance.errors import ApplianceError
from luigi_appliance.operator.records import DepRecord, HistoryEvent, TaskDetail, TaskRecord, WorkerRecord
from luigi_appliance.operator.table import columns

if TYPE_CHECKING:
    from luigi_appliance.operator.api_client import ApiClient

# luigi.task_status's values, spelt out: importing luigi (and requests) for the parser would slow
# down every luigi-appliance command, --help included; the API client is imported when used.
PENDING, RUNNING, BATCH_RUNNING, DONE, FAILED, DISABLED, UNKNOWN = (
    "PENDING", "RUNNING", "BATCH_RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN")
STATUSES = (PENDING, RUNNING, BATCH_RUNNING, DONE, FAILED, DISABLED, UNKNOWN)
UNLOCK_PATH = "appliance/users/unlock"
HISTORY_EVENTS_PATH = "history/api/events"
HISTORY_SHOWN = 20
# The history API's ``since``: from the first event on, newest first up to ``limit``.
_ALL_HISTORY = "1970-01-01T00:00:00+00:00"
_EXIT_OK = 0
_EXIT_UNKNOWN_TASK = 1


def _client(args: argparse.Namespace) -> ApiClient:
    from luigi_appliance.operator.api_client import ApiClient, ConnectionOptions

    return ApiClient(ConnectionOptions(args.scheduler_url, args.ca_file, args.credentials_file, args.client_config))


def _unexpected(resp: Any, what: str) -> ApplianceError:
    from luigi_appliance.operator.api_client import answer_error

    return answer_error(resp, what)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ---- task list, task show ----------------------------------------------------------------------

def list_tasks(client: ApiClient, status: str | None, family: str | None) -> list[TaskRecord]:
    """The tasks with ``status`` (filtered by the scheduler) of ``family``: luigi's task_list
    only narrows to the tasks whose name and parameters contain it (its ``search``), so the
    exact family is matched here."""
    answer = client.rpc("task_list", status=status or "", upstream_status="", limit=True, search=family)
    if set(answer) == {"num_tasks"} and not isinstance(answer["num_tasks"], dict):
        where = f" with status {status}" if status else ""
        raise ApplianceError(f"the scheduler has {answer['num_tasks']} tasks{where}, more than it lists at once "
                             "(luigi's max_shown_tasks): narrow the list with --status or --family")
    tasks = [TaskRecord.from_luigi(task_id, task) for task_id, task in answer.items()]
    return sorted((t for t in tasks if family is None or t.family == family), key=lambda t: t.task_id)


def cmd_task_list(args: argparse.Namespace) -> int:
    tasks = list_tasks(_client(args), args.status, args.family)
    if args.json:
        _print_json({"tasks": [dataclasses.asdict(t) for t in tasks]})
    else:
        print(columns(["STATUS", "FAMILY", "LAST UPDATED", "TASK ID"],
                      [(t.status, t.family, t.last_updated, t.task_id) for t in tasks]))
    return _EXIT_OK


def _history(client: ApiClient, task_id: str) -> tuple[list[HistoryEvent] | None, str | None]:
    resp = client.get(HISTORY_EVENTS_PATH, {"task_id": task_id, "since": _ALL_HISTORY, "limit": HISTORY_SHOWN})
    if resp.status_code != 200:
        return None, str(_unexpected(resp, "the history request"))
    return [HistoryEvent.from_api(e) for e in resp.json().get("events", [])], None


def show_task(client: ApiClient, task_id: str) -> TaskDetail:
    """The task, its direct dependencies (from luigi's dep_graph), its error (fetch_error) and
    its latest HISTORY_SHOWN history events. ApplianceError for a task the scheduler does not know."""
    graph = client.rpc("dep_graph", task_id=task_id, include_done=True)
    if task_id not in graph:
        raise ApplianceError(f"task {task_id!r} is not known to the scheduler (task list shows the ids)")
    task = graph[task_id]
    deps = [DepRecord(dep, str(graph.get(dep, {}).get("name", "")), str(graph.get(dep, {}).get("status", UNKNOWN)))
            for dep in sorted(task.get("deps") or [])]
    error = client.rpc("fetch_error", task_id=task_id).get("error") or None
    history, unavailable = _history(client, task_id)
    return TaskDetail(TaskRecord.from_luigi(task_id, task), deps, error, history, unavailable)


def _render_detail(detail: TaskDetail) -> str:
    task = detail.task
    params = ", ".join(f"{k}={v}" for k, v in sorted(task.params.items()))
    lines = [columns(["task", task.task_id], [
        ("name", task.display_name), ("family", task.family), ("status", task.status), ("params", params or None),
        ("workers", ", ".join(task.workers) or None), ("running on", task.worker_running),
        ("started", task.start_time), ("last updated", task.last_updated), ("message", task.status_message),
    ])]
    lines.append(f"dependencies: {len(detail.deps)}")
    if detail.deps:
        lines.append(_indent(columns(["STATUS", "FAMILY", "TASK ID"],
                                     [(d.status, d.family, d.task_id) for d in detail.deps])))
    if detail.error:
        lines += ["error:", _indent(detail.error.rstrip())]
    if detail.history is None:
        lines.append(f"history: not available ({detail.history_unavailable})")
    else:
        lines.append(f"history: {len(detail.history)} latest event(s), newest first")
        if detail.history:
            lines.append(_indent(columns(["TIME", "EVENT", "PRINCIPAL", "WORKER HOST"],
                                         [(e.time, e.event, e.principal, e.worker_host) for e in detail.history])))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def cmd_task_show(args: argparse.Namespace) -> int:
    detail = show_task(_client(args), args.task_id)
    if args.json:
        _print_json(dataclasses.asdict(detail))
    else:
        print(_render_detail(detail))
    return _EXIT_OK


# ---- task forgive, re-enable, mark-done --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskAction:
    """A luigi RPC acting on one task, and the status it leaves a task in when it changed it."""

    method: str
    target: str
    unchanged: str  # why a task that did not reach ``target`` was left as it was


ACTIONS = {
    "forgive": TaskAction("forgive_failures", PENDING, "only FAILED tasks are forgiven"),
    "re-enable": TaskAction("re_enable_task", FAILED, "only tasks the scheduler disabled are re-enabled"),
    "mark-done": TaskAction("mark_as_done", DONE, "only RUNNING, FAILED or DISABLED tasks are marked done"),
}


def cmd_task_action(args: argparse.Namespace) -> int:
    """Apply the action to each task in turn; a refusal stops at once (nothing after it is sent)."""
    action = ACTIONS[args.task_command]
    client = _client(args)
    rows, exit_code = [], _EXIT_OK
    for task_id in args.task_ids:
        answer = client.rpc(action.method, task_id=task_id) or {}
        status = answer.get("status")
        changed = status == action.target
        if action.method == "re_enable_task":
            # luigi answers the task for one it re-enabled, {} for any other, known or not.
            changed = bool(answer)
            status = status if changed else _current_status(client, task_id)
        if status is None:
            rows.append((task_id, None, "not known to the scheduler"))
            exit_code = _EXIT_UNKNOWN_TASK
        else:
            rows.append((task_id, status, "" if changed else f"unchanged: {action.unchanged}"))
    print(columns(["TASK ID", "STATUS", ""], rows))
    return exit_code


def _current_status(client: ApiClient, task_id: str) -> str | None:
    graph = client.rpc("dep_graph", task_id=task_id, include_done=False)
    return graph[task_id].get("status") if task_id in graph else None


# ---- worker list -------------------------------------------------------------------------------

def cmd_worker_list(args: argparse.Namespace) -> int:
    workers = [WorkerRecord.from_luigi(w) for w in _client(args).rpc("worker_list", include_running=True)]
    if args.json:
        _print_json({"workers": [dataclasses.asdict(w) for w in workers]})
    else:
        print(columns(["STATE", "RUNNING", "PENDING", "UNIQUE", "LAST ACTIVE", "WORKER"],
                      [(w.state, w.running, w.pending, w.unique_pending, w.last_active, w.worker) for w in workers]))
    return _EXIT_OK


# ---- scheduler pause, unpause, status ----------------------------------------------------------

def scheduler_state(client: ApiClient) -> dict[str, bool]:
    return {"paused": bool(client.rpc("is_paused").get("paused")),
            "pause_enabled": bool(client.rpc("is_pause_enabled").get("enabled"))}


def _render_state(state: dict[str, bool]) -> str:
    if not state["pause_enabled"]:
        return "scheduler: running (pausing is disabled on this scheduler)"
    return "scheduler: paused (no new work is handed out)" if state["paused"] else "scheduler: running"


def cmd_scheduler(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.scheduler_command in ("pause", "unpause"):
        if not scheduler_state(client)["pause_enabled"]:
            raise ApplianceError("pausing is disabled on this scheduler: it cannot be paused or unpaused")
        client.rpc(args.scheduler_command)
    state = scheduler_state(client)
    if getattr(args, "json", False):
        _print_json(state)
    else:
        print(_render_state(state))
    return _EXIT_OK


# ---- user unlock -------------------------------------------------------------------------------

def cmd_user_unlock(args: argparse.Namespace) -> int:
    resp = _client(args).post(UNLOCK_PATH, {"user": args.name})
    if resp.status_code != 200:
        raise _unexpected(resp, "the unlock")
    answer = resp.json()
    if answer["was_locked"]:
        freed = ", ".join(answer["addresses_unlocked"])
        print(f"unlocked {args.name}" + (f" (and the address(es) {freed})" if freed else ""))
    else:
        print(f"{args.name} was not locked out")
    if answer["addresses_still_locked"]:
        print(f"still locked, by failed logins of other names too: {', '.join(answer['addresses_still_locked'])}")
    return _EXIT_OK


# ---- parsers -----------------------------------------------------------------------------------

def _connection_parser() -> argparse.ArgumentParser:
    """The options of every command that talks to the running scheduler (as ``run``'s)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--scheduler-url", help="https://HOST:PORT/ (default from client.conf)")
    parent.add_argument("--ca-file", type=Path, help="CA certificate(s) to verify the scheduler with")
    parent.add_argument("--credentials-file", type=Path, help="file holding username:password")
    parent.add_argument("--client-config", type=Path, help="client.conf (default /etc/luigi-appliance/client.conf)")
    return parent


def _json_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON (shape: docs/operator-cli.md)")
    return parent


def add_parsers(sub: Any, worker_sub: Any, user_sub: Any) -> None:
    """``task`` and ``scheduler`` into the top-level subparsers ``sub``; ``list`` into the
    existing ``worker`` group and ``unlock`` into ``user``."""
    conn, as_json = _connection_parser(), _json_parser()

    task = sub.add_parser("task", help="tasks on the running scheduler (list, show, forgive, re-enable, mark-done)")
    task_sub = task.add_subparsers(dest="task_command", required=True)
    task_list = task_sub.add_parser("list", parents=[conn, as_json], help="list tasks (viewer)")
    task_list.add_argument("--status", type=str.upper, choices=STATUSES, help="only tasks with this status")
    task_list.add_argument("--family", help="only tasks of this family")
    task_list.set_defaults(func=cmd_task_list)
    show = task_sub.add_parser("show", parents=[conn, as_json],
                               help="a task's status, dependencies, error and history (viewer)")
    show.add_argument("task_id", help="the task id, as task list shows it")
    show.set_defaults(func=cmd_task_show)
    for name, action in ACTIONS.items():
        acting = task_sub.add_parser(name, parents=[conn], help=f"{action.method} on each task (operator; audited)")
        acting.add_argument("task_ids", nargs="+", metavar="TASK_ID")
        acting.set_defaults(func=cmd_task_action)

    scheduler = sub.add_parser("scheduler", help="pause or unpause the running scheduler, or show its state")
    scheduler_sub = scheduler.add_subparsers(dest="scheduler_command", required=True)
    scheduler_sub.add_parser("status", parents=[conn, as_json], help="paused or running (viewer)")
    scheduler_sub.add_parser("pause", parents=[conn], help="stop handing out work (operator; audited)")
    scheduler_sub.add_parser("unpause", parents=[conn], help="hand out work again (operator; audited)")
    scheduler.set_defaults(func=cmd_scheduler)

    worker_list = worker_sub.add_parser("list", parents=[conn, as_json], help="workers the scheduler knows (viewer)")
    worker_list.set_defaults(func=cmd_worker_list)

    unlock = user_sub.add_parser("unlock", parents=[conn], help="lift a name's login lockout on the running "
                                 "scheduler, without a restart (admin; audited)")
    unlock.add_argument("name", help="the user name (any spelling: the lockout is per name, case-folded)")
    unlock.set_defaults(func=cmd_user_unlock)

    from luigi_appliance.operator.approvals_commands import add_parsers as add_approvals_parsers

    add_approvals_parsers(sub, conn, as_json)  # approvals list|show|approve|deny
