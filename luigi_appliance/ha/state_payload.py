"""The [ha] snapshot: the whole scheduler state, signed, installed in place on a live scheduler.

It is the state file's payload (state.capture: luigi's state, the worker bindings, the approval
requests) plus what a replay needs to go on exactly where the leader was, under ``"ha"``:
whether the scheduler is paused, the resources' capacities, the order tasks entered their
current status (get_work breaks ties of equal priority and creation time by it, and tasks made in
one add_task share their creation time), and the tasks whose new dependencies the next get_work
searches for cycles. Signed and verified with the [state] key (state.SignedSnapshotFile), which
both nodes share.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from luigi_appliance import state
from luigi_appliance.approvals.book import ApprovalBook
from luigi_appliance.errors import StateError
from luigi_appliance.luigi_internals.scheduler import install_state
from luigi_appliance.server.worker_bindings import WorkerBindings

# Never written: SignedSnapshotFile signs and verifies bytes here, the blob lives in PostgreSQL.
_NO_FILE = Path("/nonexistent/ha-snapshot")


def capture(scheduler: Any, bindings: WorkerBindings) -> dict[str, Any]:
    """The state to snapshot, from one instant (the loop, or a child forked from it)."""
    payload = state.capture(scheduler, bindings.export(), generation=0)
    tasks = scheduler.task_records()
    resources = scheduler.resource_capacities
    payload["ha"] = {
        "paused": scheduler.paused,
        "resources": dict(resources) if resources is not None else None,
        "entry_order": [task.id for task in sorted(tasks.values(), key=_entry)],
        "cycle_marks": sorted(scheduler._new_edges),
    }
    return payload


def encode(payload: dict[str, Any], key: bytes) -> bytes:
    """``payload`` pickled and signed with ``key``."""
    return state.SignedSnapshotFile(_NO_FILE, key).encode(payload)


def decode(blob: bytes, key: bytes) -> dict[str, Any] | None:
    """The payload in ``blob``, or None when it does not verify with ``key`` (logged)."""
    payload = state.SignedSnapshotFile(_NO_FILE, key).decode_blob(blob)
    if payload is not None and not isinstance(payload, dict):
        raise StateError("the [ha] state snapshot holds no payload this version reads")
    return payload


def install(scheduler: Any, bindings: WorkerBindings, payload: dict[str, Any] | None) -> None:
    """Replace the live state with ``payload``'s (None: the empty state), in place: tasks,
    workers and indexes, approval requests, worker bindings, pause and resources, as a fresh
    scheduler restored from it would have them. StateError when it cannot be used."""
    if payload is None:
        snapshot = state.Snapshot(0, ({}, {}, {}), {})  # fresh dicts: the state takes them over
        extras: dict[str, Any] = {}
    else:
        decoded = state.decode(payload)
        if isinstance(decoded, str):
            raise StateError(f"the [ha] state snapshot cannot be used: {decoded}")
        snapshot, extras = decoded, payload.get("ha") or {}
    if scheduler.approvals is not None or snapshot.approvals is not None:
        try:
            # None clears the book: a request of the state being replaced must not stay
            scheduler.load_approvals(snapshot.approvals if snapshot.approvals is not None
                                     else ApprovalBook().export())
        except ValueError as exc:
            raise StateError(f"cannot install the approval requests of the [ha] state snapshot: {exc}; "
                             "see docs/approvals.md") from None
    _install_tasks(scheduler, snapshot.luigi_state, extras.get("entry_order", []))
    scheduler.paused = bool(extras.get("paused", False))
    resources = extras.get("resources", scheduler.configured_resources)
    scheduler.resource_capacities = dict(resources) if resources is not None else None
    scheduler._new_edges = set(extras.get("cycle_marks", ()))
    bindings.load(snapshot.worker_bindings)


def _install_tasks(scheduler: Any, luigi_state: Any, entry_order: list[str]) -> None:
    """Install luigi's state with each task's entry into its status in the leader's order.

    The index numbers tasks in the order of the dict it is given (its ``_sq``: get_work's order
    among equals) and so does luigi's by-status index; prune goes by the state's own order
    (``_in``). So the tasks are installed in entry order, then the dict is put back in the
    state's order in place (the index holds that same dict) and the state's order renumbered."""
    tasks = luigi_state[0]
    ordered = {task_id: tasks[task_id] for task_id in entry_order if task_id in tasks}
    ordered.update(tasks)
    install_state(scheduler, (ordered, *luigi_state[1:]))
    ordered.clear()
    ordered.update(tasks)
    for number, task in enumerate(ordered.values(), 1):
        task._in = number
    scheduler.index._joined = itertools.count(len(ordered) + 1)


def _entry(task: Any) -> int:
    return task._sq
