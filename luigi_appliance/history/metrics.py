"""The history's status as Prometheus metrics (metrics/catalog.py ``history_*``): on /metrics
with the scheduler's others, and alone on /history/metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from luigi_appliance.history.status import HistoryStatus
from luigi_appliance.metrics.catalog import BY_NAME, PREFIX, Kind

# Catalog name (after the prefix) -> its value in a status; the order of /history/metrics.
_VALUES: tuple[tuple[str, Callable[[HistoryStatus], int]], ...] = (
    ("history_up", lambda s: int(s.healthy)),
    ("history_queued_events", lambda s: s.queued),
    ("history_spool_events", lambda s: s.spool_events),
    ("history_spool_bytes", lambda s: s.spool_bytes),
    ("history_events_emitted_total", lambda s: s.emitted),
    ("history_events_written_total", lambda s: s.written),
    ("history_events_spooled_total", lambda s: s.spooled),
    ("history_events_replayed_total", lambda s: s.replayed),
    ("history_events_dropped_total", lambda s: s.dropped),
    ("history_events_dead_lettered_total", lambda s: s.dead_lettered),
)


def _family(name: str, value: int | None) -> GaugeMetricFamily | CounterMetricFamily:
    metric = BY_NAME[PREFIX + name]
    kind = CounterMetricFamily if metric.kind is Kind.COUNTER else GaugeMetricFamily
    return kind(metric.name, metric.help, value=value)


class HistoryCollector:
    """The history's metrics read from ``status`` at each scrape; all 0 without [history]
    configured (``status`` answers None)."""

    def __init__(self, status: Callable[[], HistoryStatus | None]):
        self._status = status

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self._status()
        for name, value in _VALUES:
            yield _family(name, 0 if status is None else value(status))

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, _ in _VALUES:
            yield _family(name, None)


def prometheus_text(status: HistoryStatus | None) -> bytes:
    """/history/metrics: the metrics of ``status`` alone, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HistoryCollector(lambda: status))
    return generate_latest(registry)
