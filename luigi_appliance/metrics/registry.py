"""The scheduler's instrumentation: counters and histograms built from the catalog, fed through
small typed methods, in a registry of their own (never prometheus_client's global REGISTRY:
two schedulers in one test process, or a library registering its own, must not mix)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from luigi_appliance import policy
from luigi_appliance.auth.outcomes import Reason
from luigi_appliance.metrics.catalog import BY_NAME, PREFIX, RPC_BUCKETS, Kind, Metric

API_PREFIX = "/api/"
OTHER_METHOD = "other"
CODE_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def rpc_method_label(path: str) -> str:
    """The method label of a request to ``path`` under /api/: a name of policy.RPC_METHODS, or
    ``other`` (a client may put anything in a URL; labels must stay a bounded set)."""
    name = path[len(API_PREFIX):]
    return name if name in policy.RPC_METHODS else OTHER_METHOD


def code_class(status: int) -> str:
    """``2xx`` ... ``5xx``; a status outside 200-599 (Tornado answers none) counts as 5xx."""
    return f"{status // 100}xx" if 200 <= status < 600 else "5xx"


def _declared(name: str, kind: Kind) -> Metric:
    metric = BY_NAME[PREFIX + name]
    if metric.kind is not kind:
        raise ValueError(f"{metric.name} is a {metric.kind.value} in metrics/catalog.py, not a {kind.value}")
    return metric


def _counter(name: str) -> Counter:
    metric = _declared(name, Kind.COUNTER)
    return Counter(metric.name, metric.help, metric.labels, registry=None)


def _histogram(name: str) -> Histogram:
    metric = _declared(name, Kind.HISTOGRAM)
    return Histogram(metric.name, metric.help, metric.labels, registry=None, buckets=RPC_BUCKETS)


class _WithoutCreated:
    """prometheus_client's counters and histograms, minus their ``_created`` series: a second
    series per label set that no alert or panel reads (disabling it in prometheus_client would be
    process-wide state)."""

    def __init__(self, metrics: Iterable[MetricWrapperBase]):
        self._metrics = tuple(metrics)

    def collect(self) -> Iterator:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family

    def describe(self) -> Iterator:
        for metric in self._metrics:
            yield from metric.describe()


class SchedulerMetrics:
    """One scheduler's metrics: ``registry`` is what /metrics serves. The scrape-time collectors
    (metrics/collectors.py) are added with ``add``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._rpc_requests = _counter("rpc_requests_total")
        self._rpc_duration = _histogram("rpc_duration_seconds")
        self._get_work_duration = _histogram("get_work_duration_seconds")
        self._auth_successes = _counter("auth_successes_total")
        self._auth_failures = _counter("auth_failures_total")
        self._tokens_issued = _counter("tokens_issued_total")
        self._journal_commits = _histogram("ha_journal_commit_seconds")
        self.add(_WithoutCreated([self._rpc_requests, self._rpc_duration, self._get_work_duration,
                                  self._auth_successes, self._auth_failures, self._tokens_issued,
                                  self._journal_commits]))

    def add(self, collector: Collector) -> None:
        """Serve ``collector``'s families too (names are checked against the others' at once)."""
        self.registry.register(collector)

    def rpc_answered(self, path: str, status: int, seconds: float) -> None:
        """One request under /api/ answered with ``status`` after ``seconds``."""
        method = rpc_method_label(path)
        self._rpc_requests.labels(method=method, code=code_class(status)).inc()
        self._rpc_duration.labels(method=method).observe(seconds)

    def get_work_timed(self, seconds: float) -> None:
        """The scheduling core chose (or did not find) a task for get_work in ``seconds``."""
        self._get_work_duration.observe(seconds)

    def journal_committed(self, records: int, seconds: float) -> None:
        """One [ha] group commit of ``records`` journal records took ``seconds``."""
        self._journal_commits.observe(seconds)

    def auth_succeeded(self, backend: str) -> None:
        self._auth_successes.labels(backend=backend).inc()

    def auth_failed(self, backend: str, reason: Reason) -> None:
        self._auth_failures.labels(backend=backend, reason=reason.value).inc()

    def token_issued(self, role: str) -> None:
        self._tokens_issued.labels(role=role).inc()

