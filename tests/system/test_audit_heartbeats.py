"""Workers' heartbeats (ping, get_work) stay out of the audit trail unless ``[audit] heartbeats``
keeps them; refused ones are always in it. A real scheduler from a real scheduler.conf, a real
``luigi-appliance run`` of a pipeline, and calls as a worker and as a viewer over HTTPS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import PIPELINES, Server, cli, client_conf

ADMIN_PASSWORD = "admin-password-123"  # conftest's configured_server
VIEWER_PASSWORD = "viewer-password-123"


def start(configured_server, tmp_path: Path, keep_heartbeats: bool) -> Server:
    # configured_server's file ends with its [audit] section, so a bare key here belongs to it.
    server = configured_server("heartbeats = true" if keep_heartbeats else "", start=False)
    added = cli("user", "--users-file", str(tmp_path / "users"), "add", "viewer", "--role", "viewer",
                input=f"{VIEWER_PASSWORD}\n")
    assert added.returncode == 0, added.stderr
    return server.start()


def run_pipeline_and_poll(server: Server, tmp_path: Path) -> None:
    """A real worker's run (add_task, add_worker, get_work, ...), then heartbeats sent by hand (a
    short run may end before luigi's keep-alive thread pings) and two refused ones."""
    creds = tmp_path / "admin-credentials"
    creds.write_text(f"admin:{ADMIN_PASSWORD}\n")
    creds.chmod(0o600)
    result = cli("run", "--client-config", str(client_conf(tmp_path, server)), "--credentials-file", str(creds),
                 "--module", "diamond_pipeline", "Extract", "--part", "1", "--out-dir", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in ("ping", "get_work"):
        assert server.rpc(method, worker="hand-worker").status_code == 200
    viewer = server.session("viewer", VIEWER_PASSWORD)
    for method in ("ping", "get_work"):
        assert server.rpc(method, session=viewer, worker="viewer-worker").status_code == 403


def rpc_lines(server: Server, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(principal, method, outcome) of every rpc line, once the server has stopped (written all)."""
    assert server.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    return [(x["principal"], x["method"], x["outcome"]) for x in lines if x["event"] == "rpc"]


@pytest.mark.doc_rule("audit-heartbeats")
def test_heartbeats_are_left_out_and_refused_ones_kept(configured_server, tmp_path: Path) -> None:
    server = start(configured_server, tmp_path, keep_heartbeats=False)
    run_pipeline_and_poll(server, tmp_path)
    lines = rpc_lines(server, tmp_path)
    # The run's other calls are all there: its task added PENDING, then reported DONE.
    assert ("admin", "add_worker", "ok") in lines and lines.count(("admin", "add_task", "ok")) == 2
    heartbeats = [line for line in lines if line[1] in ("ping", "get_work")]
    assert heartbeats == [("viewer", "ping", "refused:403"), ("viewer", "get_work", "refused:403")]


@pytest.mark.doc_rule("audit-heartbeats")
def test_heartbeats_true_keeps_them(configured_server, tmp_path: Path) -> None:
    server = start(configured_server, tmp_path, keep_heartbeats=True)
    run_pipeline_and_poll(server, tmp_path)
    lines = rpc_lines(server, tmp_path)
    # The worker asked for work, and again once its task was done.
    assert lines.count(("admin", "get_work", "ok")) >= 2
    assert ("admin", "ping", "ok") in lines
    assert {("viewer", "ping", "refused:403"), ("viewer", "get_work", "refused:403")} <= set(lines)
