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
    Seam("luigi.scheduler:Scheduler", "_resources", "instance attribute",
         "HA snapshot: resource capacities update_resource(s) changed"),
    Seam("luigi.scheduler:Scheduler", "_schedulable", "method", "get_work's per-task check: families"),
    Seam("luigi.scheduler:Scheduler", "_update_task_history", "method", "a status change reaches the history"),
    Seam("luigi.scheduler:Scheduler", "_make_task", "instance attribute", "tasks are made as IndexedTask"),
    Seam("luigi.scheduler:Scheduler", "_paused", "instance attribute", "get_work hands out nothing when paused"),
    Seam("luigi.scheduler:Scheduler", "_update_worker", "method", "get_work marks its worker active"),
    Seam("luigi.scheduler:Scheduler", "_reset_orphaned_batch_running_tasks", "method", "get_work's first step"),
    Seam("luigi.scheduler:Scheduler", "_used_resources", "method", "get_work's resources held by RUNNING tasks"),
    Seam("luigi.scheduler:Scheduler", "_has_resources", "method", "get_work's resource check"),
    Seam("luigi.scheduler:scheduler", "_get_retry_policy", "method", "the retry policy tasks are made with"),
    Seam("luigi.scheduler:Scheduler", "_generate_retry_policy", "method", "add_task's retry policy"),
    Seam("luigi.scheduler:Scheduler", "_update_priority", "method", "add_task raises dependencies' priority"),
    Seam("luigi.scheduler:Scheduler", "_email_batcher", "instance attribute", "add_task's batched failure e-mails"),
    Seam("luigi.scheduler:Scheduler", "_prune_tasks", "method", "overridden: prune visits the tasks it may change"),
    Seam("luigi.scheduler:Scheduler", "_first_task_display_name", "method", "worker_list's display name"),
    Seam("luigi.scheduler:Scheduler", "_serialize_task", "method", "worker_list's running tasks"),
    Seam("luigi.scheduler:Scheduler", "_traverse_graph", "method", "inverse_dep_graph's walk"),
    Seam("luigi.scheduler:SimpleTaskState", "_remove_workers_from_tasks", "method",
         "overridden: only the tasks naming the workers"),
    Seam("luigi.scheduler:SimpleTaskState", "_metrics_collector", "instance attribute",
         "kept in the indexed state; its prometheus registry is served on /metrics"),
    Seam("luigi.contrib.prometheus_metric:PrometheusMetricsCollector", "registry", "instance attribute",
         "luigi's own task metrics, served on /metrics with the appliance's"),
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


# luigi functions whose logic luigi_internals/scheduler.py and scheduler/ carry in their own form
# (add_task and worker_list statement for statement; get_work, count_pending, prune, the worker-task
# queries, worker_list's pending counts and inverse_dep_graph's dependants answered from indexes).
# tests/unit/test_luigi_boundary.py pins their source: a luigi upgrade that changes one fails there,
# naming it, so the re-implementation is re-derived before it ships (the differential test,
# tests/system/test_scheduler_differential.py, then says whether they agree).
REIMPLEMENTED: dict[str, str] = {
    "luigi.scheduler:Scheduler.add_task": "9962e9023694a821e501af069713ee17558e8353f0e4a2ca4aa1139794b161ab",
    "luigi.scheduler:Scheduler.get_work": "a5887ca1429e7cf0ea6085e8c6363fa5c17a64aca017c05011913bada02d5ffb",
    "luigi.scheduler:Scheduler.count_pending": "39ec270b99aec296584b4ab33b30a76d128714c636d69f6c8f68677e3bf067e3",
    "luigi.scheduler:Scheduler._prune_tasks": "6cbb914717f5b488d8e42d8a9fb6ea985389dfc7e5a6b644320e067d295aaa32",
    "luigi.scheduler:SimpleTaskState._remove_workers_from_tasks":
        "706a89ffa0144d5348f57ca48022126c38931563a2678706da576d4c63ab8306",
    "luigi.scheduler:SimpleTaskState.get_worker": "678da5a61f2555edd92d154f5aed8d13487472ba262553ea4816ba22ea6a88d2",
    "luigi.scheduler:Worker.is_trivial_worker": "d9c5a9c03e4df4ed2cf019f9c35b43f5ff1078490c41387c5aff93dd68bc8a66",
    "luigi.scheduler:Worker.get_tasks": "e8f4771b0a38bfcc6387e0133f835c018d4634b003d4161bb3beaccdcd29eb89",
    "luigi.scheduler:Scheduler.worker_list": "db197dd601ee68e68dc6b62544165809ad112621666c064004e082360f485594",
    "luigi.scheduler:Scheduler.inverse_dep_graph": "d280caf2ac3596ae6f359b94ad0bb67f214a49d80119243093be8cf3f56880bc",
}
