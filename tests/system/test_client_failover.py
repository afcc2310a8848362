"""``luigi-appliance run`` and ``approvals approve|deny`` with client.conf naming several scheduler
URLs follow the leader.

The leader is a real scheduler (``serve --dev``); the standby is ``StubNode``, a real HTTPS
server on 127.0.0.1 with the scheduler's own certificate that answers as a standby of the HA pair
does (docs/ha.md): 503, ``Retry-After: 1`` and the leader's URL in ``X-Luigi-Appliance-Leader``
for every route but /healthz/leader, which answers the node's status. It stands in for the
second ``luigi-appliance serve`` of the pair, which the server side of issue 19 provides
(tests/system/test_ha_*.py fail real pairs over under load).

client.conf's retry_wait is 300 s: a worker that fell back to it even once would outlast the
subprocess timeout. Reaching the leader is the fetcher's doing, within one attempt.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import PIPELINES, Server, cli, free_port
from luigi_appliance.client.leader import LEADER_HEADER

EXPECTED_REPORT = 30 + 50 + 94  # tests/pipelines/diamond_pipeline.py's report
RUN_TIMEOUT = 120  # well below retry_wait


@dataclass
class StubNode:
    """A stand-in node on 127.0.0.1 over HTTPS (``tls``: the certificate and key to serve).
    ``status`` is its /healthz/leader answer (200 when its role is leader, 503 otherwise);
    unless it leads, every other request gets a standby's 503 naming ``status["leader_url"]``.
    The paths asked are recorded."""

    tls: tuple[Path, Path]
    status: dict[str, Any] = field(default_factory=lambda: {"role": "standby"})
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, self.tls))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(node: StubNode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer()

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            node.seen.append(path)
            leads = node.status.get("role") == "leader"
            if path == "/healthz/leader":
                return self._json(200 if leads else 503, node.status, {})
            leader = node.status.get("leader_url")
            headers = {"Retry-After": "1", **({LEADER_HEADER: leader} if leader else {})}
            self._json(503, {"error": 503, "reason": f"standby: the leader is {leader}"}, headers)

        def _json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def server_tls(server: Server) -> tuple[Path, Path]:
    """The dev scheduler's self-signed certificate and key: the stub is trusted by the same CA file."""
    return server.ca_file, server.state_dir / "tls-selfsigned.key"


StartStub = Callable[[dict[str, Any]], StubNode]


@pytest.fixture
def stub(dev_server: Server) -> Iterator[StartStub]:
    """Starts a stand-in node with the given status, trusted like the dev scheduler; each is
    stopped after the test."""
    made: list[StubNode] = []

    def start(status: dict[str, Any]) -> StubNode:
        made.append(StubNode(server_tls(dev_server), status))
        return made[-1]

    yield start
    for node in made:
        node.stop()


def write_client_conf(tmp_path: Path, server: Server, urls: list[str], extra: str = "") -> Path:
    conf = tmp_path / "client.conf"
    conf.write_text(f"[client]\nscheduler_url = {', '.join(urls)}\nca_file = {server.ca_file}\n{extra}")
    return conf


def run_report(tmp_path: Path, server: Server, urls: list[str]):
    conf = write_client_conf(tmp_path, server, urls, "retry_attempts = 3\nretry_wait = 300\n")
    return cli("run", "--client-config", str(conf), "--credentials-file", str(server.state_dir / "admin-credentials"),
               "--module", "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"), "--workers", "2",
               env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path, timeout=RUN_TIMEOUT)


def test_a_worker_whose_first_url_is_a_standby_completes_through_the_leader(
        dev_server: Server, tmp_path: Path, stub: StartStub) -> None:
    leader_url = f"{dev_server.url}/"
    standby = stub({"role": "standby", "leader_url": leader_url})
    result = run_report(tmp_path, dev_server, [standby.url, leader_url])
    assert result.returncode == 0, result.stderr[-3000:]
    assert int((tmp_path / "out" / "report.txt").read_text()) == EXPECTED_REPORT
    done = dev_server.rpc("task_list", status="DONE", upstream_status="").json()["response"]
    assert len(done) == 12
    # Asked once (the token), then never again: every RPC went to the leader it named.
    assert standby.seen == ["/auth/token"]
    assert result.stderr.count(f"scheduler leader is now {leader_url}") == 1
    assert "Traceback" not in result.stderr and "Wait for 300 seconds" not in result.stderr


def test_a_first_url_that_is_down_sends_the_worker_to_the_next(dev_server: Server, tmp_path: Path) -> None:
    down = f"https://127.0.0.1:{free_port()}/"  # nothing listens: connection refused
    result = run_report(tmp_path, dev_server, [down, f"{dev_server.url}/"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert int((tmp_path / "out" / "report.txt").read_text()) == EXPECTED_REPORT
    assert f"scheduler leader is now {dev_server.url}/" in result.stderr


def test_a_leader_the_configuration_does_not_name_gets_nothing(
        dev_server: Server, tmp_path: Path, stub: StartStub) -> None:
    stranger = stub({"role": "leader"})
    standby = stub({"role": "standby", "leader_url": stranger.url})
    conf = write_client_conf(tmp_path, dev_server, [standby.url], "retry_attempts = 2\nretry_wait = 0\n")
    result = cli("run", "--client-config", str(conf),
                 "--credentials-file", str(dev_server.state_dir / "admin-credentials"),
                 "--module", "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path, timeout=RUN_TIMEOUT)
    assert result.returncode == 3, result.stderr[-3000:]  # README: scheduling failed
    assert stranger.seen == []  # neither the password nor a token went there
    warning = f"names {stranger.url} as its leader, which is not one of the configured scheduler URLs"
    assert result.stderr.count(warning) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("luigi-appliance: error: cannot reach the scheduler:") and "503" in last, last


def deny_as_admin(tmp_path: Path, server: Server, urls: list[str]):
    """``approvals deny`` of a request no scheduler holds, as the dev admin with a fresh login."""
    conf = write_client_conf(tmp_path, server, urls)
    password = (server.state_dir / "admin-password").read_text().strip()
    return cli("approvals", "deny", "apr-000000000000", "--comment", "not this one", "--client-config", str(conf),
               "--user", "admin", "--password-stdin", input=password + "\n", timeout=RUN_TIMEOUT)


def test_an_approval_decision_goes_to_the_leader_a_standby_names(
        dev_server: Server, tmp_path: Path, stub: StartStub) -> None:
    leader_url = f"{dev_server.url}/"
    standby = stub({"role": "standby", "leader_url": leader_url})
    result = deny_as_admin(tmp_path, dev_server, [standby.url, leader_url])
    # The leader's own answer (the dev scheduler has no approval rules), not the standby's 503.
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "scheduler answered 404 to deny" in result.stderr and "approval rules" in result.stderr, result.stderr
    assert standby.seen == ["/api/deny"]  # asked once: no retry of a decision
    assert "Traceback" not in result.stderr


def test_an_approval_decision_never_goes_to_an_unconfigured_leader(
        dev_server: Server, tmp_path: Path, stub: StartStub) -> None:
    stranger = stub({"role": "leader"})
    standby = stub({"role": "standby", "leader_url": stranger.url})
    result = deny_as_admin(tmp_path, dev_server, [standby.url])
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert stranger.seen == []  # the password stays with the configured nodes
    assert standby.seen == ["/api/deny"]
    assert "scheduler answered 503 to deny" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
