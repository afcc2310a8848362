"""The catalog (metrics/catalog.py) and what the scheduler registers agree: every metric with its
kind and labels, nothing else; and the label values stay the bounded sets the catalog promises."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from luigi_appliance import policy
from luigi_appliance.audit.trail import AuditStats
from luigi_appliance.auth.outcomes import BASIC, Reason
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.ha.status import SOLO
from luigi_appliance.metrics.catalog import METRICS, PROCESS_METRICS, Kind
from luigi_appliance.metrics.collectors import Sources, collectors
from luigi_appliance.metrics.registry import SchedulerMetrics, code_class, rpc_method_label
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.server.snapshots import SnapshotStats


def exercised() -> SchedulerMetrics:
    """The metrics of a real (idle) scheduler, each typed method called once."""
    metrics = SchedulerMetrics()
    scheduler = Scheduler(get_work_timer=metrics.get_work_timed)
    for collector in collectors(Sources(scheduler, lambda: None, SnapshotStats(), AuditStats(),
                                        LoginThrottle(5, 60, 300), lambda: SOLO)):
        metrics.add(collector)
    scheduler.get_work(worker="w-1", host="h")
    metrics.rpc_answered("/api/get_work", 200, 0.002)
    metrics.auth_succeeded("local")
    metrics.auth_failed(BASIC, Reason.BAD_CREDENTIALS)
    metrics.token_issued("metrics")
    metrics.journal_committed(3, 0.004)
    return metrics


def families(metrics: SchedulerMetrics) -> dict[str, tuple[str, set[str]]]:
    """Exported name -> (type, label names) as a scraper parses them."""
    text = generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = (family.type, {k for s in family.samples for k in s.labels} - {"le"})
    return found


def test_every_catalog_metric_is_registered_with_its_kind_and_labels_and_nothing_else() -> None:
    found = families(exercised())
    expected = {m.name: (m.kind.value, set(m.labels)) for m in METRICS}
    assert {name: found[name] for name in found if name not in PROCESS_METRICS} == expected
    assert set(PROCESS_METRICS) <= set(found)


def test_no_created_series_and_get_work_timed_by_the_scheduler_itself() -> None:
    text = generate_latest(exercised().registry).decode()
    assert "_created" not in text
    assert "luigi_appliance_get_work_duration_seconds_count 1.0" in text


def test_histograms_are_the_catalogs() -> None:
    assert {m.name for m in METRICS if m.kind is Kind.HISTOGRAM} == {
        "luigi_appliance_rpc_duration_seconds", "luigi_appliance_get_work_duration_seconds",
        "luigi_appliance_ha_journal_commit_seconds"}


def test_label_values_are_bounded_sets() -> None:
    assert rpc_method_label("/api/task_list") == "task_list"
    assert rpc_method_label("/api/add_tasks") == "add_tasks"
    for path in ("/api/Task_1234", "/api/", "/api/task_list/extra", "/api/task%5Flist"):
        assert rpc_method_label(path) == "other"
    assert {rpc_method_label(f"/api/{name}") for name in policy.RPC_METHODS} == set(policy.RPC_METHODS)
    assert [code_class(s) for s in (200, 204, 303, 401, 404, 429, 500, 503, 0, 700)] == [
        "2xx", "2xx", "3xx", "4xx", "4xx", "4xx", "5xx", "5xx", "5xx", "5xx"]
