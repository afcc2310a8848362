"""``luigi-appliance ha status``: one row per scheduler URL from its /healthz/leader, exit 0 only
when exactly one node leads.

The nodes are ``StubNode``s (test_client_failover.py): real HTTPS servers on 127.0.0.1 answering
/healthz/leader as a node of the HA pair does (the lead's server side; tests/system/test_ha_*.py
ask the real pair), with a certificate made by the appliance's own self-signed generator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client_failover import StubNode

from conftest import Server, cli, free_port
from luigi_appliance.tls import ensure_self_signed

EXIT_ONE_LEADER, EXIT_NOT_ONE_LEADER = 0, 1


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path]:
    pair = ensure_self_signed(tmp_path, ["127.0.0.1"])
    return pair.cert_file, pair.key_file


@pytest.fixture
def pair(tls: tuple[Path, Path]) -> Iterator[tuple[StubNode, StubNode]]:
    """Node a leads at epoch 7; node b stands by, 3 records (0.4 s) behind."""
    a, b = StubNode(tls), StubNode(tls)
    a.status = {"role": "leader", "node": "a", "epoch": 7, "leader": "a", "leader_url": a.url, "applied_pos": 120,
                "lag_records": 0, "lag_seconds": 0.0}
    b.status = {"role": "standby", "node": "b", "epoch": 7, "leader": "a", "leader_url": a.url, "applied_pos": 117,
                "lag_records": 3, "lag_seconds": 0.4}
    yield a, b
    a.stop()
    b.stop()


def client_conf(tmp_path: Path, ca_file: Path, *urls: str) -> Path:
    path = tmp_path / "client.conf"
    path.write_text(f"[client]\nscheduler_url = {', '.join(urls)}\nca_file = {ca_file}\nconnect_timeout = 5\n")
    return path


def ha_status(conf: Path, *args: str):
    return cli("ha", "status", "--client-config", str(conf), *args, timeout=60)


def test_a_leader_and_its_standby(tmp_path: Path, tls: tuple[Path, Path], pair: tuple[StubNode, StubNode]) -> None:
    a, b = pair
    conf = client_conf(tmp_path, tls[0], a.url, b.url)
    result = ha_status(conf)
    assert result.returncode == EXIT_ONE_LEADER, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["URL", "NODE", "ROLE", "EPOCH", "LEADER", "LAG", "RECORDS", "LAG", "SECONDS", "DETAIL"]
    assert lines[1].split() == [a.url, "a", "leader", "7", "a", "0", "0.0", "-"]
    assert lines[2].split() == [b.url, "b", "standby", "7", "a", "3", "0.4", "-"]
    assert lines[3] == "leader: a" and len(lines) == 4
    # Asked without credentials, and only its health route.
    assert a.seen == b.seen == ["/healthz/leader"]
    listed = json.loads(ha_status(conf, "--json").stdout)
    assert [r["url"] for r in listed] == [a.url, b.url]
    assert listed[1] == {"url": b.url, "role": "standby", "node": "b", "epoch": 7, "leader": "a", "leader_url": a.url,
                         "applied_pos": 117, "lag_records": 3, "lag_seconds": 0.4, "detail": None, "error": None}


def test_no_leader_or_two_leaders_exit_1(tmp_path: Path, tls: tuple[Path, Path],
                                         pair: tuple[StubNode, StubNode]) -> None:
    a, b = pair
    conf = client_conf(tmp_path, tls[0], a.url, b.url)
    a.status = {**a.status, "role": "promoting", "detail": "applying the journal"}
    result = ha_status(conf)
    assert result.returncode == EXIT_NOT_ONE_LEADER, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "no node says it leads"
    assert "applying the journal" in result.stdout.splitlines()[1]
    a.status["role"] = "leader"
    b.status = {**b.status, "role": "leader"}
    result = ha_status(conf)
    assert result.returncode == EXIT_NOT_ONE_LEADER
    assert result.stdout.splitlines()[-1] == "2 nodes say they lead: a, b"
    # One node reached by two URLs (a virtual IP and its own name) is one leader.
    b.status["node"] = "a"
    assert ha_status(conf).returncode == EXIT_ONE_LEADER


def test_an_unreachable_or_foreign_node_is_a_row_with_the_reason(tmp_path: Path, tls: tuple[Path, Path],
                                                                 pair: tuple[StubNode, StubNode],
                                                                 dev_server: Server) -> None:
    a, _ = pair
    down = f"https://127.0.0.1:{free_port()}/"
    result = ha_status(client_conf(tmp_path, tls[0], down, a.url))
    assert result.returncode == EXIT_ONE_LEADER, result.stderr  # exactly one node leads
    row = result.stdout.splitlines()[1]
    assert row.startswith(down) and row.split()[1:4] == ["-", "error", "-"]
    assert row.endswith("cannot reach it: connection refused")
    # Not the CA that signed its certificate: said so, not followed by a traceback.
    result = ha_status(client_conf(tmp_path, dev_server.ca_file, a.url))
    assert result.returncode == EXIT_NOT_ONE_LEADER
    assert "cannot reach it: certificate verify failed" in result.stdout and "Traceback" not in result.stderr


def test_urls_from_the_command_line_and_bad_ones_named(tmp_path: Path, tls: tuple[Path, Path],
                                                       pair: tuple[StubNode, StubNode]) -> None:
    a, b = pair
    conf = client_conf(tmp_path, tls[0], "https://127.0.0.1:1/")
    result = ha_status(conf, "--scheduler-url", a.url, "--scheduler-url", b.url, "--json")
    assert result.returncode == EXIT_ONE_LEADER, result.stderr
    assert [r["node"] for r in json.loads(result.stdout)] == ["a", "b"]
    result = ha_status(conf, "--scheduler-url", f"{a.url},ftp://b/")
    assert result.returncode == 1
    assert "--scheduler-url: URL 2 of 2: expected https://HOST:PORT/, got 'ftp://b/'" in result.stderr
    broken = client_conf(tmp_path, tls[0], a.url, "http://example.com/")
    result = ha_status(broken)
    assert result.returncode == 1 and f"{broken}:2" in result.stderr and "URL 2 of 2" in result.stderr


def test_help_says_what_the_exit_status_means() -> None:
    result = cli("ha", "status", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "Exit status: 0 exactly one node says it leads; 1 none or several do" in text


def test_a_scheduler_without_ha_leads_alone(tmp_path: Path, dev_server: Server) -> None:
    result = ha_status(client_conf(tmp_path, dev_server.ca_file, f"{dev_server.url}/"), "--json")
    assert result.returncode == EXIT_ONE_LEADER, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)
    assert row["role"] == "leader" and row["node"] is None and row["epoch"] == 0 and row["error"] is None
