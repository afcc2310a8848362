"""etc/prometheus/: the rules pass the real promtool (Debian's prometheus package, as CI installs
it), its unit tests pass, and those tests are worth something: every alert has a case that fires
it and one that must not, every recording rule's value is checked, and an alert whose expression
is broken (never or always true) makes `promtool test rules` fail. Every rule reads only series
the scheduler exports (luigi_appliance/metrics/catalog.py), `up`, or the file's own recording
rules, and selects the documented job.

Then docs/monitoring.md, run for real: a real Prometheus scrapes a real scheduler with the scrape
account, token renewal script and scrape config the document gives, loads the rules and answers
every dashboard query; and the document's commands for another job name give rules whose tests
still pass.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import stat
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from conftest import REPO, Server, cli, free_port
from luigi_appliance.metrics import catalog

RULES = REPO / "etc" / "prometheus" / "luigi-appliance-rules.yml"
TESTS = REPO / "etc" / "prometheus" / "tests" / "luigi-appliance-rules.test.yml"
# Debian's package; a missing promtool fails the test rather than skipping it.
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _dashboard_checks() -> Any:
    """tests/unit/test_grafana_dashboard.py, for its PromQL name extraction (one parser for both)."""
    path = REPO / "tests" / "unit" / "test_grafana_dashboard.py"
    spec = importlib.util.spec_from_file_location("grafana_dashboard_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


def unit_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(TESTS.read_text())["tests"]


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_that_fires_it_and_one_that_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests():
        for check in case.get("alert_rule_test", ()):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alert_names() - fires == set(), "alerts no test fires"
    assert alert_names() - quiet == set(), "alerts no test expects quiet"
    assert (fires | quiet) - alert_names() == set(), "tests of alerts the rules file does not have"


def test_every_recording_rule_has_its_value_checked() -> None:
    checked = {check["expr"] for case in unit_tests() for check in case.get("promql_expr_test", ())
               if check.get("exp_samples")}
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    assert recorded - checked == set()


def test_every_alert_has_severity_summary_description_and_for() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert "for" in rule, rule["alert"]


def test_every_rule_reads_exported_series_only() -> None:
    metric_names = _dashboard_checks().metric_names
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = catalog.exported_names() | {"up"} | recorded
    unknown = {rule.get("alert") or rule["record"]: metric_names(rule["expr"]) - known for rule in rules()}
    assert {name: names for name, names in unknown.items() if names} == {}


def test_every_rule_selects_the_documented_job() -> None:
    """The rules file's header tells how to change job="luigi-appliance": every selector of a
    scraped series must carry it (recording rules keep the job label for the alerts)."""
    metric_names = _dashboard_checks().metric_names
    scraped = catalog.exported_names() | {"up"}
    for rule in rules():
        for name in metric_names(rule["expr"]) & scraped:
            for use in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?", rule["expr"]):
                assert 'job="luigi-appliance"' in (use[1] or ""), f"{rule.get('alert') or rule['record']}: {name}"


@pytest.mark.parametrize("broken", ["vector(0) == 1", "vector(1)"], ids=["never", "always"])
def test_broken_alerts_fail_the_unit_tests(tmp_path: Path, broken: str) -> None:
    """The same tests against a copy of the rules where every alert never, or always, fires:
    each alert's own cases must fail (one promtool run reports them all)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = broken
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document))
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS, tmp_path / "tests" / TESTS.name)
    result = promtool("test", "rules", tmp_path / "tests" / TESTS.name)
    assert result.returncode != 0, result.stdout
    report = result.stdout + result.stderr
    assert {alert for alert in alert_names() if f"alertname: {alert}," not in report} == set()


# ---- a real Prometheus scraping a real scheduler, configured as docs/monitoring.md says ------------

DOC = REPO / "docs" / "monitoring.md"
DASHBOARD = REPO / "etc" / "grafana" / "luigi-appliance-dashboard.json"
SCRAPER_PASSWORD = "scraper-password-123"


def doc_block_after(marker: str) -> str:
    """The first indented (code) block of docs/monitoring.md after the line holding ``marker``."""
    lines = DOC.read_text().split(marker, 1)[1].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def prometheus_api(url: str, path: str, **params: str) -> Any:
    answer = requests.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """Factory: a Prometheus (Debian's) on a free port with a config file; its URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> str:
        port = free_port()
        log = open(tmp_path / "prometheus.log", "ab")
        processes.append(subprocess.Popen(
            ["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT))
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert processes[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    return url
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{(tmp_path / 'prometheus.log').read_text()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


def test_prometheus_scrapes_the_scheduler_as_documented(configured_server: Callable[..., Server],
                                                         prometheus: Callable[[Path], str], tmp_path: Path) -> None:
    """The documented account, token renewal script and scrape config, run for real: the target is
    up, every rule is evaluated without error, and every dashboard query is valid PromQL that the
    real Prometheus answers (those of the overview and process rows with data)."""
    server = configured_server(start=False)
    result = cli("user", "--users-file", str(tmp_path / "users"), "add", "scraper", "--role", "metrics",
                 input=SCRAPER_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    server.start()

    etc = tmp_path / "etc-prometheus"
    etc.mkdir()
    shutil.copy(server.ca_file, etc / "ca.crt")
    (etc / "scraper.curl").write_text(f'user = "scraper:{SCRAPER_PASSWORD}"\n')
    (etc / "scraper.curl").chmod(0o600)
    script = doc_block_after("`/usr/local/sbin/luigi-appliance-scrape-token`")
    script = script.replace("/etc/prometheus/luigi-appliance", str(etc))
    script = script.replace("https://scheduler.example.org:8082", server.url)
    renewal = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert renewal.returncode == 0, renewal.stderr
    token = (etc / "token").read_text().strip()
    assert token and stat.S_IMODE((etc / "token").stat().st_mode) == 0o640
    assert SCRAPER_PASSWORD not in (tmp_path / "audit.log").read_text()
    # The token is the scrape account's: /metrics, nothing a viewer sees.
    with requests.Session() as scraper:
        scraper.trust_env = False
        scraper.verify = str(server.ca_file)
        scraper.headers["Authorization"] = f"Bearer {token}"
        assert scraper.get(f"{server.url}/metrics", timeout=10).status_code == 200
        assert scraper.get(f"{server.url}/api/task_list", timeout=10).status_code == 403

    config = yaml.safe_load(doc_block_after("The scrape config (`prometheus.yml`):"))
    job = config["scrape_configs"][0]
    assert job["job_name"] == "luigi-appliance"
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/luigi-appliance/token"
    job["authorization"]["credentials_file"] = str(etc / "token")
    job["tls_config"]["ca_file"] = str(etc / "ca.crt")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    job["scrape_interval"] = "1s"
    assert config["rule_files"] == ["/usr/share/luigi-appliance/prometheus/luigi-appliance-rules.yml"]
    # The rules as shipped, evaluated every second instead of every 30s.
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        group["interval"] = "1s"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document))
    config["rule_files"] = [str(tmp_path / RULES.name)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = prometheus(tmp_path / "prometheus.yml")

    deadline = time.monotonic() + 60
    targets: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        targets = prometheus_api(url, "targets")["activeTargets"]
        scraped = prometheus_api(url, "query", query="luigi_appliance_build_info")["result"]
        if targets and targets[0]["health"] == "up" and scraped:
            break
        time.sleep(0.5)
    assert [target["health"] for target in targets] == ["up"], targets

    loaded: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        loaded = [rule for group in prometheus_api(url, "rules")["groups"] for rule in group["rules"]]
        if all(rule["health"] != "unknown" for rule in loaded):
            break
        time.sleep(0.5)
    assert len(loaded) == len(rules())
    assert [(rule["name"], rule["health"], rule.get("lastError")) for rule in loaded if rule["health"] != "ok"] == []

    checks = _dashboard_checks()
    dashboard = json.loads(DASHBOARD.read_text())
    time.sleep(3)  # a few scrapes, so that rate() has two samples
    answered = {}
    for where, expr in checks.queries(dashboard):
        query = (expr.replace("$job", "luigi-appliance").replace("$instance", ".*")
                 .replace("$__rate_interval", "1m"))
        answered[where] = prometheus_api(url, "query", query=query)["result"]
    # What a scheduler shows from its first scrape: the overview row and the process row.
    for where in ("Scrape", "Version", "Uptime", "Paused", "Workers", "CPU", "Memory", "File descriptors",
                  "Snapshot age", "Tasks by status"):
        assert next(result for name, result in answered.items() if f"({where})" in name), where


def test_the_documented_job_rename_keeps_the_tests_passing(tmp_path: Path) -> None:
    """docs/monitoring.md's commands for another job name, run on copies: the renamed rules pass
    promtool and their renamed tests, and no selector of the old job is left."""
    source = tmp_path / "share"
    shutil.copytree(REPO / "etc" / "prometheus", source)
    commands = doc_block_after("change the selector in both, then run the tests:")
    commands = commands.replace("src=/usr/share/luigi-appliance/prometheus", f"src={source}")
    commands = commands.replace("dst=/etc/prometheus/luigi-appliance-rules", f"dst={tmp_path / 'etc'}")
    commands = commands.replace("promtool ", f"{PROMTOOL} ")
    result = subprocess.run(["sh", "-ec", commands], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    renamed = (tmp_path / "etc" / RULES.name).read_text()
    assert 'job="luigi-appliance"' not in renamed
    assert renamed.count('job="scheduler-prod"') == RULES.read_text().count('job="luigi-appliance"')
