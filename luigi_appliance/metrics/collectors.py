"""The gauges and the counters others keep, read when Prometheus scrapes: the scheduler's tasks
and workers, the history, the snapshots, the audit trail, the login throttle, the build.

Each read is cheap on the scheduler's loop: task counts come from luigi's by-status index (one
``len`` per status, no walk over the tasks); only the workers (a few dozen) are visited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import luigi
from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, UNKNOWN
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import luigi_appliance
from luigi_appliance.audit.trail import AuditStats
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.ha.status import ROLES, NodeStatus
from luigi_appliance.history.metrics import HistoryCollector
from luigi_appliance.history.status import HistoryStatus
from luigi_appliance.metrics.catalog import BY_NAME, PREFIX, Kind
from luigi_appliance.server.snapshots import SnapshotStats

# Every status luigi's scheduler files a task under: each is exported, 0 when none is in it.
TASK_STATUSES = (PENDING, RUNNING, BATCH_RUNNING, DONE, FAILED, DISABLED, UNKNOWN)

Family = GaugeMetricFamily | CounterMetricFamily


def family(name: str) -> Family:
    """An empty family of the catalog's metric ``name``, with its help and labels."""
    metric = BY_NAME[PREFIX + name]
    if metric.kind is Kind.COUNTER:
        return CounterMetricFamily(metric.name, metric.help, labels=metric.labels)
    return GaugeMetricFamily(metric.name, metric.help, labels=metric.labels)


def single(name: str, value: float) -> Family:
    found = family(name)
    found.add_metric([], value)
    return found


class _Each:
    """A collector of families computed by ``make`` at each scrape (names for the registry's
    duplicate check come from the catalog)."""

    def __init__(self, names: tuple[str, ...], make: Callable[[], list[Family]]):
        self._names = names
        self._make = make

    def collect(self) -> Iterator[Family]:
        yield from self._make()

    def describe(self) -> Iterator[Family]:
        return iter([family(name) for name in self._names])


def build_info() -> Collector:
    """``build_info``: 1, with the appliance's and luigi's versions as labels."""
    def make() -> list[Family]:
        info = family("build_info")
        info.add_metric([luigi_appliance.__version__, luigi.__version__], 1)
        return [info]

    return _Each(("build_info",), make)


def scheduler_state(scheduler: Any) -> Collector:
    """``tasks`` by status, ``workers_active``, ``scheduler_paused`` of a luigi_appliance Scheduler."""
    def make() -> list[Family]:
        state = scheduler.task_state
        tasks = family("tasks")
        for status in TASK_STATUSES:
            tasks.add_metric([status], state.get_active_task_count_for_status(status))
        since = time.time() - scheduler.settings.worker_disconnect_delay
        active = sum(1 for worker in state.get_active_workers() if worker.last_active >= since)
        return [tasks, single("workers_active", active), single("scheduler_paused", int(scheduler.paused))]

    return _Each(("tasks", "workers_active", "scheduler_paused"), make)


def snapshots(stats: SnapshotStats) -> Collector:
    """``snapshot_*`` from the Snapshotter's counters."""
    def make() -> list[Family]:
        since = stats.last_success or stats.started
        return [single("snapshot_last_success_timestamp_seconds", stats.last_success),
                single("snapshot_age_seconds", max(0.0, time.time() - since)),
                single("snapshot_failures_total", stats.failures)]

    return _Each(("snapshot_last_success_timestamp_seconds", "snapshot_age_seconds", "snapshot_failures_total"),
                 make)


def audit(stats: AuditStats) -> Collector:
    """``audit_*`` from the audit trail's counters."""
    def make() -> list[Family]:
        return [single("audit_records_total", stats.records), single("audit_checkpoints_total", stats.checkpoints),
                single("audit_write_failures_total", stats.write_failures)]

    return _Each(("audit_records_total", "audit_checkpoints_total", "audit_write_failures_total"), make)


def logins(throttle: LoginThrottle | None) -> Collector:
    """``lockouts_total`` and ``locked_out`` from the failed-login throttle (0 without one)."""
    def make() -> list[Family]:
        if throttle is None:
            return [single("lockouts_total", 0), single("locked_out", 0)]
        return [single("lockouts_total", throttle.lockouts), single("locked_out", throttle.locked_now())]

    return _Each(("lockouts_total", "locked_out"), make)


def high_availability(status: Callable[[], NodeStatus]) -> Collector:
    """``ha_*`` from the node's status ([ha]; a lone scheduler: leader at epoch 0)."""
    names = ("ha_role", "ha_epoch", "ha_journal_lag_records", "ha_journal_lag_seconds", "ha_failovers_total",
             "ha_journal_records_total", "ha_replay_divergences_total")

    def make() -> list[Family]:
        now = status()
        role = family("ha_role")
        for name in ROLES:
            role.add_metric([name], 1 if now.role == name else 0)
        return [role, single("ha_epoch", now.epoch), single("ha_journal_lag_records", now.lag_records),
                single("ha_journal_lag_seconds", now.lag_seconds), single("ha_failovers_total", now.failovers),
                single("ha_journal_records_total", now.journalled),
                single("ha_replay_divergences_total", now.divergences)]

    return _Each(names, make)


@dataclass(frozen=True)
class Sources:
    """What the scrape-time collectors read, in the running scheduler."""

    scheduler: Any
    history: Callable[[], HistoryStatus | None]
    snapshots: SnapshotStats
    audit: AuditStats
    throttle: LoginThrottle | None
    ha: Callable[[], NodeStatus]


def collectors(sources: Sources) -> list[Collector]:
    """Every scrape-time collector of the catalog's gauges and kept counters, and this process's
    CPU, memory and file descriptors (catalog.PROCESS_METRICS)."""
    return [build_info(), scheduler_state(sources.scheduler), HistoryCollector(sources.history),
            snapshots(sources.snapshots), audit(sources.audit), logins(sources.throttle),
            high_availability(sources.ha), ProcessCollector(registry=None)]
