"""docs/monitoring.md against what ships: its metrics table is the catalog
(luigi_appliance/metrics/catalog.py) as :func:`metrics_table` renders it, it lists the process
metrics, every alert of etc/prometheus/luigi-appliance-rules.yml has its own section (and no
section names an alert the file lacks), and it names the paths the RPM installs the files at.
"""

from __future__ import annotations

import re
from pathlib import Path

from luigi_appliance.metrics import catalog

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "monitoring.md"
RULES = REPO / "etc" / "prometheus" / "luigi-appliance-rules.yml"
INSTALLED = ("/usr/share/luigi-appliance/prometheus/luigi-appliance-rules.yml",
             "/usr/share/luigi-appliance/prometheus/tests/luigi-appliance-rules.test.yml",
             "/usr/share/luigi-appliance/grafana/luigi-appliance-dashboard.json")
BEGIN = "<!-- metrics table: generated from luigi_appliance/metrics/catalog.py (tests/unit/test_monitoring_doc.py) -->"
END = "<!-- end of metrics table -->"


def metrics_table() -> str:
    """The table of every catalog metric, as docs/monitoring.md must have it between its markers."""
    lines = ["| metric | type | labels | what |", "|---|---|---|---|"]
    for metric in catalog.METRICS:
        labels = ", ".join(f"`{label}`" for label in metric.labels) or "none"
        lines.append(f"| `{metric.name}` | {metric.kind.value} | {labels} | {metric.help} |")
    return "\n".join(lines)


def documented_table(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip() if BEGIN in text and END in text else ""


def alerts_in_rules() -> set[str]:
    # Alert names are single tokens after `- alert:` (PyYAML is not in the RPM's %check).
    return set(re.findall(r"^\s*- alert:\s*(\w+)\s*$", RULES.read_text(), re.MULTILINE))


def test_the_metrics_table_is_the_catalog() -> None:
    expected = metrics_table()
    assert documented_table(DOC.read_text()) == expected, (
        f"docs/monitoring.md's metrics table differs from the catalog; between its markers put:\n{expected}")


def test_the_table_check_sees_a_missing_metric() -> None:
    text = DOC.read_text()
    row = next(line for line in documented_table(text).splitlines() if "`luigi_appliance_locked_out`" in line)
    assert documented_table(text.replace(row + "\n", "")) != metrics_table()


def test_every_process_metric_is_listed() -> None:
    text = DOC.read_text()
    assert [name for name in catalog.PROCESS_METRICS if f"`{name}`" not in text] == []


def test_every_alert_has_a_section() -> None:
    sections = set(re.findall(r"^### (\w+)$", DOC.read_text(), re.MULTILINE))
    alerts = alerts_in_rules()
    assert len(alerts) >= 10
    assert alerts - sections == set(), "alerts docs/monitoring.md does not explain"
    assert {name for name in sections if name.startswith("LuigiAppliance")} - alerts == set(), \
        "sections for alerts the rules file does not have"


def test_the_installed_paths_are_named() -> None:
    text = DOC.read_text()
    assert [path for path in INSTALLED if path not in text] == []
