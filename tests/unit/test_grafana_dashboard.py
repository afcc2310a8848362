"""etc/grafana/luigi-appliance-dashboard.json: well-formed for Grafana, and held to the metric catalog.

Grafana is not packaged for Debian, so nothing here imports the dashboard into a running Grafana;
what Grafana needs to import and draw it (unique panel ids, a grid position on the 24-column grid,
a datasource and queries for every panel, the `${datasource}`, `job` and `instance` variables)
is checked on the JSON. Every metric name a query (or a variable's query) reads must be one the
scheduler exports (luigi_appliance/metrics/catalog.py) or `up`, and every exported metric must
be on some panel: a renamed metric fails here instead of leaving an empty graph.

The PromQL name extraction (:func:`metric_names`) is also what tests/system/test_prometheus_rules.py
holds the alert and recording rules to (it needs PyYAML, which the RPM's %check has not: this
file runs there too).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from luigi_appliance.metrics import catalog

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "etc" / "grafana" / "luigi-appliance-dashboard.json"

# Prometheus' own series, added at each scrape.
PROMETHEUS_SERIES = frozenset({"up"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# Label lists: `by (a, b)`, `on (job)`, `group_left (x)` name labels, not series.
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier that is not the tail of a number (1e3), a duration (5m) or a longer name.
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "atan2", "inf", "nan",
})


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: not functions or aggregations (an identifier
    followed by `(`), keywords, label names and values, durations, numbers or strings."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        followed_by = text[match.end():].lstrip()[:1]
        if followed_by != "(" and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels of collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", ()):
            yield f"panel {panel['id']} ({panel['title']}) target {target.get('refId')}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            # label_values(METRIC{...}, label): the label is a name, the selector is PromQL.
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", text)
            yield f"variable {variable['name']}", selector[1] if selector else text


def structure_problems(dashboard: dict[str, Any]) -> list[str]:
    """What would keep Grafana from importing or drawing the dashboard as meant."""
    problems = []
    if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} is not a Grafana 10/11 one")
    for field in ("uid", "title"):
        if not dashboard.get(field):
            problems.append(f"the dashboard has no {field}")
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    source = variables.get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for Prometheus")
    for name in ("job", "instance"):
        if variables.get(name, {}).get("type") != "query":
            problems.append(f"no `{name}` query variable")
    seen: set[int] = set()
    for panel in panels(dashboard):
        label = f"panel {panel.get('id')} ({panel.get('title')})"
        if not isinstance(panel.get("id"), int) or panel["id"] in seen:
            problems.append(f"{label}: id missing or not unique")
        seen.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24 or grid["w"] < 1:
            problems.append(f"{label}: gridPos {grid} is not on the 24-column grid")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            problems.append(f"{label}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{label}: no targets")
        ref_ids = [target.get("refId") for target in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{label}: refIds {ref_ids} missing or repeated")
        for target in targets:
            if not target.get("expr"):
                problems.append(f"{label}: target {target.get('refId')} has no expr")
            elif 'instance=~"$instance"' not in target["expr"]:
                problems.append(f"{label}: target {target.get('refId')} ignores the instance variable")
            if target.get("datasource", panel.get("datasource")) != panel.get("datasource"):
                problems.append(f"{label}: target {target.get('refId')} has another datasource")
    return problems


def unknown_metrics(dashboard: dict[str, Any]) -> list[str]:
    """Queries that read a series the scheduler does not export."""
    known = catalog.exported_names() | PROMETHEUS_SERIES
    return [f"{where}: {sorted(metric_names(expr) - known)}" for where, expr in queries(dashboard)
            if metric_names(expr) - known]


def metrics_not_shown(dashboard: dict[str, Any]) -> set[str]:
    """Catalog metrics no panel reads (a histogram counts as shown through any of its series)."""
    read = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    missing = {name for name in catalog.PROCESS_METRICS if name not in read}
    for metric in catalog.METRICS:
        series = {metric.name}
        if metric.kind is catalog.Kind.HISTOGRAM:
            series = {metric.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        if not series & read:
            missing.add(metric.name)
    return missing


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (job, method) (rate(luigi_appliance_rpc_requests_total{code=~"5..", job="x"}[5m]))',
     {"luigi_appliance_rpc_requests_total"}),
    ("histogram_quantile(0.95, sum by (le) (rate(a_bucket[$__rate_interval])))", {"a_bucket"}),
    ("a == 0 and on (job, instance) sum without (status) (b{status=\"PENDING\"}) > 1e3", {"a", "b"}),
    ("rate(a[5m] offset 1h) / ignoring (code) group_left (version) b", {"a", "b"}),
    ("time() - process_start_time_seconds * 1000", {"process_start_time_seconds"}),
    ('absent(up{job="luigi-appliance"})', {"up"}),
    ("instance:luigi_appliance_auth_failures:rate5m > 0.2", {"instance:luigi_appliance_auth_failures:rate5m"}),
    ("max_over_time(a[1d:5m]) unless b offset 5m", {"a", "b"}),
    ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
])
def test_metric_names_are_the_series_an_expression_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_is_well_formed_for_grafana(dashboard: dict[str, Any]) -> None:
    assert structure_problems(dashboard) == []


def test_the_structure_check_finds_a_broken_dashboard(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    graphs = [panel for panel in panels(broken) if panel["type"] != "row"]
    graphs[1]["id"] = graphs[0]["id"]
    del graphs[2]["gridPos"]["y"]
    graphs[3]["datasource"] = {"type": "prometheus", "uid": "some-fixed-uid"}
    graphs[4]["targets"] = []
    problems = "\n".join(structure_problems(broken))
    for found in ("id missing or not unique", "not on the 24-column grid", "not the ${datasource} variable",
                  "no targets"):
        assert found in problems


def test_every_query_reads_an_exported_metric(dashboard: dict[str, Any]) -> None:
    assert unknown_metrics(dashboard) == []


def test_a_query_reading_an_unknown_metric_is_found(dashboard: dict[str, Any]) -> None:
    renamed = copy.deepcopy(dashboard)
    target = next(panel for panel in panels(renamed) if panel["type"] != "row")["targets"][0]
    target["expr"] = target["expr"].replace("up{", "luigi_appliance_up{")
    assert [problem for problem in unknown_metrics(renamed) if "luigi_appliance_up" in problem]


def test_every_exported_metric_is_on_a_panel(dashboard: dict[str, Any]) -> None:
    assert metrics_not_shown(dashboard) == set()


def test_a_metric_left_off_every_panel_is_found(dashboard: dict[str, Any]) -> None:
    trimmed = copy.deepcopy(dashboard)
    for panel in panels(trimmed):
        panel["targets"] = [target for target in panel.get("targets", ())
                            if "luigi_appliance_locked_out" not in target["expr"]]
    assert metrics_not_shown(trimmed) == {"luigi_appliance_locked_out"}
