"""Every metric the scheduler exports on /metrics, declared once.

The collectors (metrics/) build their families from this table, docs/monitoring.md lists it,
and the tests hold the Grafana dashboard and the alert rules to it. Labels are bounded sets
(RPC method names from policy.py, status classes, task statuses, backend and reason names the
code defines): never a task id, a worker id or a user name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Metric:
    """One metric family. ``name`` is as exported: counters end in ``_total``."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


PREFIX = "luigi_appliance_"

# Seconds: from a ping's 100 µs to an add_tasks batch of thousands or a slow LDAP bind.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

METRICS: tuple[Metric, ...] = (
    Metric(PREFIX + "build_info", Kind.GAUGE, "1, labelled with the appliance's and luigi's versions",
           ("version", "luigi_version")),
    # RPCs (/api/...): method is a name of policy.RPC_METHODS, or "other" for any other path.
    Metric(PREFIX + "rpc_requests_total", Kind.COUNTER, "RPC calls answered, by method and HTTP status class",
           ("method", "code")),
    Metric(PREFIX + "rpc_duration_seconds", Kind.HISTOGRAM,
           "time from the request's arrival to its answer, authentication included", ("method",)),
    Metric(PREFIX + "get_work_duration_seconds", Kind.HISTOGRAM,
           "time the scheduler spent choosing a task in get_work (the scheduling core alone)"),
    # The scheduler's state, read at scrape time.
    Metric(PREFIX + "tasks", Kind.GAUGE, "tasks the scheduler holds, by status", ("status",)),
    Metric(PREFIX + "workers_active", Kind.GAUGE, "workers that pinged within [scheduler] worker_disconnect_delay"),
    Metric(PREFIX + "scheduler_paused", Kind.GAUGE, "1 while the scheduler is paused (get_work hands out nothing)"),
    # Authentication: backend is the [auth] backend that decided (local, ldap), or the scheme
    # when none alone did (basic: every backend asked, or none for a locked-out name; session,
    # bearer, certificate); reason is one of auth/outcomes.py's Reason values.
    Metric(PREFIX + "auth_successes_total", Kind.COUNTER, "successful authentications, by backend",
           ("backend",)),
    Metric(PREFIX + "auth_failures_total", Kind.COUNTER, "failed authentications, by backend and reason class",
           ("backend", "reason")),
    Metric(PREFIX + "lockouts_total", Kind.COUNTER, "names and addresses locked out after too many failed logins"),
    Metric(PREFIX + "locked_out", Kind.GAUGE, "names and addresses locked out now"),
    Metric(PREFIX + "tokens_issued_total", Kind.COUNTER, "bearer tokens issued by POST /auth/token, by role",
           ("role",)),
    # Task history (history/status.py), all 0 without [history].
    Metric(PREFIX + "history_up", Kind.GAUGE, "1 when the history database takes events and the spool is empty"),
    Metric(PREFIX + "history_queued_events", Kind.GAUGE,
           "events queued, or held by the writer and not yet stored or spooled"),
    Metric(PREFIX + "history_spool_events", Kind.GAUGE, "events in the spool waiting for the database"),
    Metric(PREFIX + "history_spool_bytes", Kind.GAUGE, "size of the spool file"),
    Metric(PREFIX + "history_events_emitted_total", Kind.COUNTER, "events the scheduler reported"),
    Metric(PREFIX + "history_events_written_total", Kind.COUNTER, "events stored in the database"),
    Metric(PREFIX + "history_events_spooled_total", Kind.COUNTER, "events written to the spool"),
    Metric(PREFIX + "history_events_replayed_total", Kind.COUNTER, "events from the spool stored in the database"),
    Metric(PREFIX + "history_events_dropped_total", Kind.COUNTER,
           "events lost: the queue or the spool was full or could not be written"),
    Metric(PREFIX + "history_events_dead_lettered_total", Kind.COUNTER,
           "events the database refused, set aside in the dead-letter file"),
    # Snapshots (server/snapshots.py).
    Metric(PREFIX + "snapshot_last_success_timestamp_seconds", Kind.GAUGE,
           "Unix time of the last state snapshot written (0 before the first)"),
    Metric(PREFIX + "snapshot_age_seconds", Kind.GAUGE,
           "seconds since the last state snapshot was written (since start before the first)"),
    Metric(PREFIX + "snapshot_failures_total", Kind.COUNTER, "state snapshots that could not be written"),
    # The audit trail (audit/).
    Metric(PREFIX + "audit_records_total", Kind.COUNTER, "records appended to the audit trail"),
    Metric(PREFIX + "audit_checkpoints_total", Kind.COUNTER, "signed checkpoints written to the audit trail"),
    Metric(PREFIX + "audit_write_failures_total", Kind.COUNTER, "writes of the audit file that failed"),
    # High availability ([ha], ha/node.py); a scheduler without [ha] leads alone at epoch 0.
    Metric(PREFIX + "ha_role", Kind.GAUGE, "1 for this node's role (starting, standby, promoting, leader, fenced)",
           ("role",)),
    Metric(PREFIX + "ha_epoch", Kind.GAUGE, "the lease epoch this node last held or saw"),
    Metric(PREFIX + "ha_journal_lag_records", Kind.GAUGE, "journal records the standby has not applied yet"),
    Metric(PREFIX + "ha_journal_lag_seconds", Kind.GAUGE, "age of the last applied record while records wait"),
    Metric(PREFIX + "ha_failovers_total", Kind.COUNTER, "times this node took the lease over from another node"),
    Metric(PREFIX + "ha_journal_records_total", Kind.COUNTER, "state changes this node journalled as leader"),
    Metric(PREFIX + "ha_replay_divergences_total", Kind.COUNTER,
           "journal records whose get_work answer differed on this standby from the leader's"),
    Metric(PREFIX + "ha_journal_commit_seconds", Kind.HISTOGRAM,
           "time one group commit of journal records took in PostgreSQL"),
)

# prometheus_client's ProcessCollector adds process_cpu_seconds_total, process_resident_memory_bytes,
# process_open_fds, process_max_fds, process_start_time_seconds and process_virtual_memory_bytes.
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                   "process_open_fds", "process_max_fds", "process_start_time_seconds")

BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


def exported_names() -> frozenset[str]:
    """Every series name a scrape can show: histograms add _bucket, _sum and _count."""
    names = set(PROCESS_METRICS)
    for metric in METRICS:
        names.add(metric.name)
        if metric.kind is Kind.HISTOGRAM:
            names.update(metric.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return frozenset(names)
