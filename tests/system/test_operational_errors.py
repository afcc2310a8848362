"""Everyday mistakes end in one line naming what is wrong and what to do, never a traceback.

Every case is the real command in a subprocess against real sockets: a scheduler from
``serve --dev``, a port held by a listening socket, a closed port, a wrong password, a CA that did
not sign the scheduler's certificate. A final answer (401, an untrusted certificate) is not
retried: the counting proxy in front of the scheduler sees one connection where luigi's retries
would make one per attempt.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from counting_proxy import counting_proxy

from conftest import PIPELINES, Server, cli, free_port
from luigi_appliance.tls import ensure_self_signed

ATTEMPTS = 3  # retry_attempts in the client.conf of these tests: a retry would show as more connections


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> Iterator[Server]:
    """One dev scheduler for the module (each wrong password counts towards its lockout of
    127.0.0.1 after 5: this module makes 2)."""
    tmp = tmp_path_factory.mktemp("operational")
    port = free_port()
    server = Server(["serve", "--dev", "--state-dir", str(tmp / "var"), "--port", str(port)],
                    tmp / "var", port, tmp / "server.log")
    server.start()
    yield server
    server.stop()


def client_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with the test pipelines; luigi's keep-alive ping far off, so that the only
    requests are those of the worker's main thread (which the proxy counts)."""
    luigi_cfg = tmp_path / "luigi.cfg"
    luigi_cfg.write_text("[worker]\nping_interval = 600\n")
    path = os.pathsep.join(p for p in (str(PIPELINES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "LUIGI_CONFIG_PATH": str(luigi_cfg)}


def client_config(tmp_path: Path, url: str, ca_file: Path | None) -> Path:
    path = tmp_path / "client.conf"
    ca = f"ca_file = {ca_file}\n" if ca_file else ""
    path.write_text(f"[client]\nscheduler_url = {url}\n{ca}retry_attempts = {ATTEMPTS}\nretry_wait = 0\n")
    return path


def private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def run(tmp_path: Path, conf: Path, credentials: Path, *task: str) -> subprocess.CompletedProcess:
    return cli("run", "--client-config", str(conf), "--credentials-file", str(credentials), *task,
               env=client_env(tmp_path), cwd=tmp_path)


def extract(tmp_path: Path) -> list[str]:
    return ["--module", "diamond_pipeline", "Extract", "--out-dir", str(tmp_path / "out"), "--part", "1"]


def the_error(result: subprocess.CompletedProcess, code: int, *names: str) -> str:
    """The one error line of a command that exited with ``code``; each of ``names`` is in it."""
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == code, result.stderr[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("luigi-appliance:")]
    assert len(lines) == 1, result.stderr[-4000:]
    if lines[0].endswith("configuration error(s):"):  # the header; each problem on its own line
        lines = [result.stderr.split(lines[0], 1)[1].strip()]
        assert "\n" not in lines[0], result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def failed_logins(server: Server) -> int:
    lines = (server.state_dir / "audit.log").read_text().splitlines()
    return sum(1 for line in lines if json.loads(line)["event"] == "login" and json.loads(line)["outcome"] == "failure")


def another_ca(tmp_path: Path) -> Path:
    """A valid CA certificate that did not sign the scheduler's."""
    directory = tmp_path / "other-ca"
    directory.mkdir(mode=0o700)
    return ensure_self_signed(directory, ["127.0.0.1"]).cert_file


# ---- serve -------------------------------------------------------------------------------------

def test_serve_on_a_port_in_use_names_the_address(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        result = cli("serve", "--dev", "--state-dir", str(tmp_path / "var"), "--port", str(port), timeout=60)
    line = the_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "Address already in use", "command line")
    assert "stop it or choose another address" in line


def test_serve_names_the_configured_listen_line_it_cannot_bind(configured_server) -> None:
    server = configured_server(start=False)
    conf = Path(server.args[1])
    with socket.create_server(("127.0.0.1", server.port)):
        result = cli(*server.args, timeout=60)
    the_error(result, 1, f"cannot listen on 127.0.0.1:{server.port}", f"{conf}:3", "Address already in use")
    # Bound before the state directory is touched: nothing was written there.
    assert not (server.state_dir / "state.key").exists()


# ---- run ---------------------------------------------------------------------------------------

def test_wrong_password_is_final_one_line_exit_3(scheduler: Server, tmp_path: Path) -> None:
    secret = "Wr0ng-but-secret-P4ssword"
    creds = private_file(tmp_path / "bad-creds", f"admin:{secret}\n")
    before = failed_logins(scheduler)
    with counting_proxy(scheduler.port) as proxy:
        conf = client_config(tmp_path, f"https://127.0.0.1:{proxy.port}/", scheduler.ca_file)
        result = run(tmp_path, conf, creds, *extract(tmp_path))
        attempts = proxy.connections()
    the_error(result, 3, "401", "'admin'", str(creds))
    assert attempts == 1
    assert secret not in result.stderr + result.stdout
    assert failed_logins_settled(scheduler, before + 1) == before + 1
    assert not (tmp_path / "out").exists()


def failed_logins_settled(server: Server, expected: int) -> int:
    """The failed-login count once the audit writer has caught up to ``expected`` (it writes
    in the background), or what it reached meanwhile."""
    deadline = time.monotonic() + 10
    while failed_logins(server) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return failed_logins(server)


def test_untrusted_certificate_is_final_one_line_exit_3(scheduler: Server, tmp_path: Path) -> None:
    ca = another_ca(tmp_path)
    with counting_proxy(scheduler.port) as proxy:
        conf = client_config(tmp_path, f"https://127.0.0.1:{proxy.port}/", ca)
        result = run(tmp_path, conf, scheduler.state_dir / "admin-credentials", *extract(tmp_path))
        attempts = proxy.connections()
    line = the_error(result, 3, "not trusted", str(ca), f"127.0.0.1:{proxy.port}", "certificate verify failed")
    assert "--ca-file" in line
    assert attempts == 1
    assert not (tmp_path / "out").exists()


def test_a_scheduler_that_is_down_is_one_line_after_the_retries(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    creds = private_file(tmp_path / "creds", "admin:some-password-123\n")
    conf = client_config(tmp_path, f"https://127.0.0.1:{port}/", None)
    result = run(tmp_path, conf, creds, *extract(tmp_path))
    the_error(result, 3, "cannot reach the scheduler", f"127.0.0.1:{port}", f"{ATTEMPTS} attempts",
              "connection refused", "scheduler_url")


def test_a_module_that_does_not_import_is_one_line_exit_1(scheduler: Server, tmp_path: Path) -> None:
    conf = client_config(tmp_path, scheduler.url + "/", scheduler.ca_file)
    result = run(tmp_path, conf, scheduler.state_dir / "admin-credentials", "--module", "no_such_pipeline", "T")
    the_error(result, 1, "'no_such_pipeline'", "--module", "PYTHONPATH")


@pytest.mark.parametrize("problem", ["missing", "world-readable", "a directory"])
def test_credentials_file_problems_name_the_file_and_the_option(scheduler: Server, tmp_path: Path,
                                                                problem: str) -> None:
    creds = tmp_path / "creds"
    if problem == "world-readable":
        private_file(creds, (scheduler.state_dir / "admin-credentials").read_text(), 0o644)
    elif problem == "a directory":
        creds.mkdir()
    conf = client_config(tmp_path, scheduler.url + "/", scheduler.ca_file)
    result = run(tmp_path, conf, creds, *extract(tmp_path))
    line = the_error(result, 1, str(creds), "(--credentials-file)")
    assert {"missing": "create it with one line username:password", "world-readable": "chmod o-rwx",
            "a directory": "not a regular file"}[problem] in line
    assert scheduler.admin_password not in result.stderr


def test_a_ca_file_that_is_not_pem_is_named_before_any_request(scheduler: Server, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    conf = client_config(tmp_path, scheduler.url + "/", None)
    result = cli("run", "--client-config", str(conf), "--ca-file", "ca.crt",
                 "--credentials-file", str(scheduler.state_dir / "admin-credentials"), *extract(tmp_path),
                 env=client_env(tmp_path), cwd=tmp_path)
    the_error(result, 1, "--ca-file", str(not_pem), "no PEM certificate")


def test_the_readme_worker_command_with_relative_paths_works(scheduler: Server) -> None:
    # As README.md has it, from the directory that holds var/ (paths relative to it).
    out = scheduler.state_dir.parent / "report"
    result = cli("run", "--scheduler-url", f"https://127.0.0.1:{scheduler.port}/",
                 "--ca-file", "var/tls-selfsigned.crt", "--credentials-file", "var/admin-credentials",
                 "--module", "diamond_pipeline", "Report", "--out-dir", str(out), "--workers", "2",
                 env=client_env(scheduler.state_dir.parent), cwd=scheduler.state_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report.txt").exists()


# ---- worker release ----------------------------------------------------------------------------

def release(tmp_path: Path, conf: Path, credentials: Path) -> subprocess.CompletedProcess:
    return cli("worker", "release", "Worker(salt=1)", "--client-config", str(conf),
               "--credentials-file", str(credentials), cwd=tmp_path)


def test_release_with_a_wrong_password_is_one_line(scheduler: Server, tmp_path: Path) -> None:
    creds = private_file(tmp_path / "bad-creds", "admin:Wr0ng-password-again\n")
    with counting_proxy(scheduler.port) as proxy:
        conf = client_config(tmp_path, f"https://127.0.0.1:{proxy.port}/", scheduler.ca_file)
        result = release(tmp_path, conf, creds)
        attempts = proxy.connections()
    the_error(result, 1, "401", "'admin'", str(creds))
    assert attempts == 1


def test_release_against_an_untrusted_certificate_is_one_line(scheduler: Server, tmp_path: Path) -> None:
    ca = another_ca(tmp_path)
    with counting_proxy(scheduler.port) as proxy:
        conf = client_config(tmp_path, f"https://127.0.0.1:{proxy.port}/", ca)
        result = release(tmp_path, conf, scheduler.state_dir / "admin-credentials")
        attempts = proxy.connections()
    the_error(result, 1, "not trusted", str(ca), "certificate verify failed")
    assert attempts == 1


def test_release_against_a_scheduler_that_is_down_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    creds = private_file(tmp_path / "creds", "admin:some-password-123\n")
    result = release(tmp_path, client_config(tmp_path, f"https://127.0.0.1:{port}/", None), creds)
    the_error(result, 1, "cannot reach the scheduler", f"127.0.0.1:{port}", "connection refused")

