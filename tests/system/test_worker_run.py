"""Real luigi workers run real pipelines through ``luigi-appliance run`` against the real server."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import PIPELINES, Server, cli, client_conf

EXPECTED_REPORT = 30 + 50 + 94  # see diamond_pipeline: squares summed per transform group


def run_pipeline(tmp_path: Path, server: Server, *task: str, credentials: Path | None = None,
                 env: dict[str, str] | None = None):
    creds = ["--credentials-file", str(credentials)] if credentials else []
    return cli("run", "--client-config", str(client_conf(tmp_path, server)), *creds,
               "--module", "diamond_pipeline", *task, "--workers", "2",
               env={"PYTHONPATH": str(PIPELINES), **(env or {})}, cwd=tmp_path)


def test_dag_of_twelve_tasks_runs_to_completion(dev_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_pipeline(tmp_path, dev_server, "Report", "--out-dir", str(out),
                          credentials=dev_server.state_dir / "admin-credentials")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"extract-{i}.txt" for i in range(8)] + [f"transform-{g}.txt" for g in range(3)] + ["report.txt"])
    assert int((out / "report.txt").read_text()) == EXPECTED_REPORT
    # The scheduler saw all 12 tasks done, through the authenticated API.
    done = dev_server.rpc("task_list", status="DONE", upstream_status="").json()["response"]
    assert len(done) == 12
    assert dev_server.admin_password not in result.stderr + result.stdout
    # INFO by default, not luigi's DEBUG; --log-level still wins.
    assert "INFO: Informed scheduler that task" in result.stderr and "DEBUG: " not in result.stderr
    verbose = run_pipeline(tmp_path, dev_server, "Report", "--out-dir", str(out), "--log-level", "DEBUG",
                           credentials=dev_server.state_dir / "admin-credentials")
    assert verbose.returncode == 0 and "DEBUG: " in verbose.stderr


def test_failed_pipeline_exits_non_zero(dev_server: Server, tmp_path: Path) -> None:
    result = run_pipeline(tmp_path, dev_server, "Report", "--out-dir", str(tmp_path / "out"), "--fail",
                          credentials=dev_server.state_dir / "admin-credentials")
    assert result.returncode == 1, result.stderr[-3000:]
    assert (tmp_path / "out" / "transform-2.txt").exists()
    assert not (tmp_path / "out" / "report.txt").exists()


def test_wrong_password_fails_fast_and_never_leaks(dev_server: Server, tmp_path: Path) -> None:
    creds = tmp_path / "bad-creds"
    secret = "Wr0ng-but-secret-P4ssword"
    creds.write_text(f"admin:{secret}\n")
    creds.chmod(0o600)
    started = time.monotonic()
    result = run_pipeline(tmp_path, dev_server, "Report", "--out-dir", str(tmp_path / "out"), credentials=creds)
    assert result.returncode != 0
    assert time.monotonic() - started < 60  # 401 is not retried like a network error
    assert "401" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert secret not in dev_server.log()
    assert not (tmp_path / "out").exists()


def test_credentials_from_environment_and_systemd_credentials_dir(dev_server: Server, tmp_path: Path) -> None:
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    target = creds_dir / "luigi-appliance"
    target.write_bytes((dev_server.state_dir / "admin-credentials").read_bytes())
    target.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "LUIGI_APPLIANCE_CREDENTIALS"}
    result = run_pipeline(tmp_path, dev_server, "Extract", "--out-dir", str(tmp_path / "a"), "--part", "3",
                          env={**env, "CREDENTIALS_DIRECTORY": str(creds_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_pipeline(tmp_path, dev_server, "Extract", "--out-dir", str(tmp_path / "b"), "--part", "4",
                          env={"LUIGI_APPLIANCE_CREDENTIALS": str(target)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "a" / "extract-3.txt").exists() and (tmp_path / "b" / "extract-4.txt").exists()


def test_world_readable_credentials_are_refused(dev_server: Server, tmp_path: Path) -> None:
    creds = tmp_path / "open-creds"
    creds.write_bytes((dev_server.state_dir / "admin-credentials").read_bytes())
    creds.chmod(0o644)
    result = run_pipeline(tmp_path, dev_server, "Report", "--out-dir", str(tmp_path / "out"), credentials=creds)
    assert result.returncode == 1
    assert "others may access it" in result.stderr and str(creds) in result.stderr
    assert dev_server.admin_password not in result.stderr


def test_credentials_in_url_are_refused(dev_server: Server, tmp_path: Path) -> None:
    result = cli("run", "--client-config", str(client_conf(tmp_path, dev_server)),
                 "--scheduler-url", f"https://admin:{dev_server.admin_password}@127.0.0.1:{dev_server.port}/",
                 "--credentials-file", str(dev_server.state_dir / "admin-credentials"),
                 "--module", "diamond_pipeline", "Report", "--out-dir", str(tmp_path / "out"),
                 env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode == 1
    assert "credentials do not belong in the URL" in result.stderr
    assert dev_server.admin_password not in result.stderr


def test_untrusted_certificate_is_refused(dev_server: Server, tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    # No ca_file: the self-signed certificate is not in the system trust store.
    conf.write_text(f"[client]\nscheduler_url = {dev_server.url}/\nretry_attempts = 1\nretry_wait = 0\n")
    result = cli("run", "--client-config", str(conf),
                 "--credentials-file", str(dev_server.state_dir / "admin-credentials"),
                 "--module", "diamond_pipeline", "Extract", "--out-dir", str(tmp_path / "out"), "--part", "1",
                 env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert not (tmp_path / "out").exists()
