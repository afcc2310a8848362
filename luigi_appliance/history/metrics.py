"""/history/metrics: the history's status in Prometheus' text format."""

from __future__ import annotations

from collections.abc import Callable

from luigi_appliance.history.status import HistoryStatus

PREFIX = "luigi_appliance_history_"

# (name, type, help, value): the order of the lines on /history/metrics.
_METRICS: tuple[tuple[str, str, str, Callable[[HistoryStatus], int]], ...] = (
    ("up", "gauge", "1 when the history database takes events and the spool is empty", lambda s: int(s.healthy)),
    ("queued_events", "gauge", "events in the in-memory queue", lambda s: s.queued),
    ("spool_events", "gauge", "events in the spool waiting for the database", lambda s: s.spool_events),
    ("spool_bytes", "gauge", "size of the spool file", lambda s: s.spool_bytes),
    ("events_emitted_total", "counter", "events the scheduler reported", lambda s: s.emitted),
    ("events_written_total", "counter", "events stored in the database", lambda s: s.written),
    ("events_spooled_total", "counter", "events written to the spool", lambda s: s.spooled),
    ("events_replayed_total", "counter", "events from the spool stored in the database", lambda s: s.replayed),
    ("events_dropped_total", "counter", "events lost: the queue or the spool was full or could not be written",
     lambda s: s.dropped),
    ("events_dead_lettered_total", "counter", "events the database refused, set aside in the dead-letter file",
     lambda s: s.dead_lettered),
)


def prometheus_text(status: HistoryStatus | None) -> str:
    """The metrics of ``status``; all 0 without [history] configured (``None``)."""
    lines = []
    for name, kind, help_text, value in _METRICS:
        metric = PREFIX + name
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}",
                  f"{metric} {0 if status is None else value(status)}"]
    return "\n".join(lines) + "\n"
