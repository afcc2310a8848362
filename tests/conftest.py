"""Fixtures that start the real scheduler (``luigi-appliance serve``) as a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pg_cluster import Database, PgCluster, cluster

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "luigi-appliance"
PIPELINES = Path(__file__).resolve().parent / "pipelines"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    return subprocess.run([str(BIN), *args], input=input, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


class Server:
    """One scheduler process. ``args`` are the serve arguments; the process can be restarted."""

    def __init__(self, args: list[str], state_dir: Path, port: int, log_path: Path, env: dict[str, str] | None = None):
        self.args = args
        self.state_dir = state_dir
        self.port = port
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "tls-selfsigned.crt"

    def start(self, wait: bool = True) -> Server:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(BIN), *self.args], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.state_dir.parent)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"scheduler exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", verify=str(self.ca_file), timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"scheduler not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def session(self, user: str = "admin", password: str | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else $REQUESTS_CA_BUNDLE overrides s.verify
        s.verify = str(self.ca_file)
        s.auth = (user, password if password is not None else self.admin_password)
        return s

    @property
    def admin_password(self) -> str:
        return (self.state_dir / "admin-password").read_text().strip()

    def rpc(self, method: str, session: requests.Session | None = None, **data) -> requests.Response:
        import json

        return (session or self.session()).post(f"{self.url}/api/{method}", data={"data": json.dumps(data)}, timeout=10)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[Server]:
    """``serve --dev`` with DIR=tmp/var: the README's run command."""
    port = free_port()
    state_dir = tmp_path / "var"
    server = Server(["serve", "--dev", "--state-dir", str(state_dir), "--port", str(port)],
                    state_dir, port, tmp_path / "server.log")
    server.start()
    yield server
    server.stop()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o640)
    return path


def scheduler_conf(root: Path, port: int, state_dir: Path, users: Path, extra: str = "",
                   snapshot_interval: str | None = None) -> Path:
    """``root``/scheduler.conf of a test scheduler: loopback, its state dir and users file,
    secrets key and audit trail under ``root``, then ``extra``."""
    interval = f"snapshot_interval = {snapshot_interval}\n" if snapshot_interval is not None else ""
    return write_config(root / "scheduler.conf", f"""
[server]
listen = 127.0.0.1:{port}
[state]
dir = {state_dir}
{interval}[auth]
users_file = {users}
[secrets]
key_file = {root / 'secret.key'}
[audit]
file = {root / 'audit.log'}
{extra}
""")


@pytest.fixture
def configured_server(tmp_path: Path):
    """Factory: a scheduler from a real scheduler.conf (users file made with ``user add``)."""
    servers: list[Server] = []

    def make(extra: str = "", start: bool = True, snapshot_interval: str = "1") -> Server:
        port = free_port()
        state_dir = tmp_path / "state"
        users = tmp_path / "users"
        if not users.exists():
            result = cli("user", "--users-file", str(users), "add", "admin", "--role", "admin",
                         input="admin-password-123\n")
            assert result.returncode == 0, result.stderr
            state_dir.mkdir(mode=0o750)
            (state_dir / "admin-password").write_text("admin-password-123\n")
        conf = scheduler_conf(tmp_path, port, state_dir, users, extra, snapshot_interval)
        server = Server(["--config", str(conf), "serve"], state_dir, port, tmp_path / "server.log")
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def client_conf(tmp_path: Path, server: Server) -> Path:
    """A client.conf for `luigi-appliance run` against ``server``: its CA, no retries."""
    path = tmp_path / "client.conf"
    path.write_text(f"[client]\nscheduler_url = {server.url}/\nca_file = {server.ca_file}\n"
                    "retry_attempts = 1\nretry_wait = 0\n")
    return path


@pytest.fixture
def pg() -> PgCluster:
    """The session's ephemeral PostgreSQL cluster (tests/pg_cluster.py; TLS and scram only)."""
    return cluster()


@pytest.fixture
def db(pg: PgCluster, tmp_path: Path) -> Database:
    """A fresh database with an owner and a DML-only role on that cluster."""
    return pg.create_database(tmp_path)
