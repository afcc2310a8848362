"""``/metrics``: the scheduler's registry in Prometheus' text format, behind the guard
(policy.ROUTES: the ``metrics`` role, which a scrape account has and nothing more)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from luigi_appliance.server.guard import GuardMixin


class MetricsHandler(GuardMixin):
    """Serves one registry (metrics/registry.py ``SchedulerMetrics.registry``)."""

    def initialize(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self._registry))

    head = get


def routes(registry: CollectorRegistry | None) -> list[tuple[str, type, dict]]:
    """(pattern, handler, kwargs) for app.build_app; none without a registry (luigi's own
    /metrics then answers, as in a test app)."""
    if registry is None:
        return []
    return [(r"/metrics", MetricsHandler, {"registry": registry})]
