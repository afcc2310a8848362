"""Every name inside luigi the appliance relies on, for tests/unit/test_luigi_boundary.py to check
against the installed luigi: a luigi upgrade that moves one fails there, by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["class", "function", "method", "instance attribute", "file"]


@dataclass(frozen=True)
class Seam:
    """``name`` in ``owner`` (``module`` or ``module:Class``; for a file, luigi's package directory)."""

    owner: str
    name: str
    kind: Kind
    why: str


SEAMS: tuple[Seam, ...] = (
    # scheduler.py: the scheduler's records, its state tuple, its scheduling hook, its status change.
    Seam("luigi.scheduler:Scheduler", "_state", "instance attribute", "the task records (SimpleTaskState)"),
    Seam("luigi.scheduler:Scheduler", "_config", "instance attribute", "set_status needs the scheduler config"),
    Seam("luigi.scheduler:Scheduler", "_schedulable", "method", "get_work's per-task check: families"),
    Seam("luigi.scheduler:Scheduler", "_update_task_history", "method", "a status change reaches the history"),
    Seam("luigi.scheduler:SimpleTaskState", "get_task", "method", "a task's record by id"),
    Seam("luigi.scheduler:SimpleTaskState", "set_status", "method", "fail a task caught in a cycle"),
    Seam("luigi.scheduler:SimpleTaskState", "get_state", "method", "the state a snapshot holds"),
    Seam("luigi.scheduler:SimpleTaskState", "set_state", "method", "restore a snapshot"),
    Seam("luigi.scheduler:SimpleTaskState", "_tasks", "instance attribute", "restore: rebuild the status index"),
    Seam("luigi.scheduler:SimpleTaskState", "_status_tasks", "instance attribute", "restore: the status index"),
    Seam("luigi.scheduler:SimpleTaskState", "_active_workers", "instance attribute", "is a worker still known"),
    # server.py: luigi's app, taken apart route by route.
    Seam("luigi.server", "app", "function", "luigi's Tornado app, whose routes are guarded one by one"),
    Seam("luigi.server", "cors", "class", "luigi's [cors] settings, read once"),
    Seam("luigi.server:RPCHandler", "initialize", "method", "the RPC handler's scheduler argument"),
    Seam("luigi.server:RPCHandler", "_cors_config", "instance attribute", "set once instead of per request"),
    Seam("luigi", "static/visualiser/index.html", "file", "the visualiser page, served patched"),
    # worker.py: the RPC client and the worker's command line.
    Seam("luigi.rpc:RemoteScheduler", "_fetcher", "instance attribute", "credentials and CA on every RPC"),
    Seam("luigi.rpc:RemoteScheduler", "_rpc_retry_attempts", "instance attribute", "retries from our settings"),
    Seam("luigi.rpc:RemoteScheduler", "_rpc_retry_wait", "instance attribute", "retries from our settings"),
    Seam("luigi.rpc:RemoteScheduler", "_get_retryer", "method", "never retry a refusal"),
    Seam("luigi.interface", "_WorkerSchedulerFactory", "class", "run's scheduler client"),
    Seam("luigi.interface", "_run", "function", "luigi's command line with our scheduler client"),
    Seam("luigi.cmdline_parser:CmdlineParser", "_get_task_cls", "method", "the root task's class for the preflight"),
)
