"""The client's address behind a reverse proxy: the unix-socket listener and [server] trusted_proxies.

Real ``serve`` processes: one listening on a unix socket (the documented reverse-proxy setup),
called over that socket with http.client, and one on TCP, called from distinct loopback source
addresses. What is checked is what the address is used for: the lockout, and the audit trail.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from audit_records import caller_records
from raw_http import basic, over_https, over_unix

from conftest import Server, cli, write_config
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError

ADMIN_PASSWORD = "admin-password-123"  # what tests/conftest.py's configured_server creates


def audit_lines(path: Path) -> list[dict]:
    return caller_records(path)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="la-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def unix_server(tmp_path: Path, short_dir: Path) -> Iterator[Callable[[str], Server]]:
    """Factory: a scheduler on unix:<short_dir>/s.sock (plain HTTP, as behind a local proxy)."""
    servers: list[Server] = []

    def make(server_extra: str = "") -> Server:
        users = tmp_path / "users"
        result = cli("user", "--users-file", str(users), "add", "admin", "--role", "admin",
                     input=ADMIN_PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        state_dir = tmp_path / "state"
        state_dir.mkdir(mode=0o750)
        conf = write_config(tmp_path / "scheduler.conf", f"""
[server]
listen = unix:{short_dir / 's.sock'}
insecure_http = true
{server_extra}
[state]
dir = {state_dir}
[auth]
users_file = {users}
failure_limit = 3
lockout = 1h
cache_ttl = 0
[secrets]
key_file = {tmp_path / 'secret.key'}
[audit]
file = {tmp_path / 'audit.log'}
""")
        server = Server(["--config", str(conf), "serve"], state_dir, 0, tmp_path / "server.log")
        servers.append(server)
        server.start(wait=False)
        deadline = time.monotonic() + 30
        while True:
            assert server.proc is not None and server.proc.poll() is None, server.log()
            try:
                if over_unix(short_dir / "s.sock", "GET", "/healthz", timeout=2).status == 200:
                    return server
            except OSError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)

    yield make
    for server in servers:
        server.stop()


# No cache of verified logins (cache_ttl = 0): a cached login passes without the throttle, and
# every admin login here must meet it.


def task_list(extra_headers: dict[str, str] | None = None, user: str = "admin",
              password: str = ADMIN_PASSWORD) -> tuple[str, str, dict[str, str], str]:
    return "POST", "/api/task_list", {**basic(user, password), **(extra_headers or {})}, "data={}"


@pytest.mark.doc_rule("client-address-unknown")
def test_behind_the_unix_socket_one_client_cannot_lock_out_the_others(unix_server, short_dir: Path,
                                                                      tmp_path: Path) -> None:
    unix_server()
    sock = short_dir / "s.sock"
    # A client guessing passwords: the name is locked out after three failures...
    statuses = [over_unix(sock, *task_list(user="mallory", password=f"guess-{i}")).status for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    # ...but every client of the proxy shares the socket's "address": it must not be locked.
    assert over_unix(sock, *task_list()).status == 200
    # A forwarded address from a peer that is no trusted proxy is ignored.
    spoofed = over_unix(sock, *task_list({"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"},
                                          user="mallory2", password="guess"))
    assert spoofed.status == 401
    assert over_unix(sock, "POST", "/api/pause", basic("admin", ADMIN_PASSWORD), "data={}").status == 200
    lines = audit_lines(tmp_path / "audit.log")
    assert {line["source"] for line in lines} == {"unix"}, lines
    assert ("mallory", "locked_out") in {(line["principal"], line["outcome"]) for line in lines}
    assert any(line["event"] == "rpc" and line["method"] == "pause" for line in lines)


@pytest.mark.doc_rule("client-address-proxy")
def test_a_trusted_unix_proxy_names_the_client(unix_server, short_dir: Path, tmp_path: Path) -> None:
    unix_server("trusted_proxies = unix")
    sock = short_dir / "s.sock"

    def via(client: str | None, **kwargs: str) -> int:
        headers = {} if client is None else {"X-Forwarded-For": f"198.51.100.1, {client}"}
        return over_unix(sock, *task_list(headers, **kwargs)).status

    # Three names guessed from one client address: the address is locked, for any name...
    assert [via("203.0.113.5", user=f"guess{i}", password="x") for i in range(3)] == [401, 401, 401]
    assert via("203.0.113.5") == 429
    # ...and only that address: the right-most hop is the client, what is left of it was sent
    # by the client itself (198.51.100.1 here) and proves nothing.
    assert via("203.0.113.6") == 200
    assert over_unix(sock, *task_list({"X-Real-IP": "192.0.2.44"})).status == 200
    # No forwarded address: nothing known about the client, so the name alone is counted.
    assert [via(None, user="guess9", password="x") for _ in range(3)] == [401, 401, 401]
    assert via(None) == 200
    lines = audit_lines(tmp_path / "audit.log")
    sources = [(line["principal"], line["source"], line["outcome"]) for line in lines]
    assert ("guess0", "203.0.113.5", "failure") in sources
    assert ("admin", "203.0.113.5", "locked_out") in sources
    assert ("admin", "203.0.113.6", "success") in sources
    assert ("admin", "192.0.2.44", "success") in sources
    assert ("guess9", "unix", "failure") in sources
    assert "0.0.0.0" not in {source for _, source, _ in sources}  # noqa: S104 - what Tornado says for a unix peer


@pytest.mark.doc_rule("client-address-proxy", "client-address-unknown")
def test_a_trusted_tcp_proxy_names_the_client_and_others_cannot(configured_server) -> None:
    # 127.0.0.1 is the proxy; clients connecting from 127.0.0.2 are not.
    server = configured_server("[server]\ntrusted_proxies = 127.0.0.1\n"
                               "[auth]\nfailure_limit = 3\nlockout = 1h\ncache_ttl = 0\n")

    def call(headers: dict[str, str], source: str = "127.0.0.1", **kwargs: str) -> int:
        return over_https(server.port, server.ca_file, *task_list(headers, **kwargs), source=source).status

    # The proxy's own hop (127.0.0.1, trusted) is skipped: the client is 203.0.113.7.
    chain = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
    assert [call(chain, user=f"guess{i}", password="x") for i in range(3)] == [401, 401, 401]
    assert call(chain) == 429
    assert call({"X-Forwarded-For": "203.0.113.8"}) == 200
    # The same header from an untrusted peer is ignored: the peer's address counts.
    spoof = {"X-Forwarded-For": "203.0.113.8"}
    assert [call(spoof, source="127.0.0.2", user=f"other{i}", password="x") for i in range(3)] == [401, 401, 401]
    assert call(spoof, source="127.0.0.2") == 429  # 127.0.0.2 is locked...
    assert call(spoof) == 200                      # ...203.0.113.8 is not
    # The proxy forwarding nobody: the client is unknown, so only names are counted.
    assert [call({}, user=f"direct{i}", password="x") for i in range(3)] == [401, 401, 401]
    assert call({}) == 200
    lines = audit_lines(server.state_dir.parent / "audit.log")
    sources = {(line["principal"], line["source"], line["outcome"]) for line in lines}
    assert {("guess0", "203.0.113.7", "failure"), ("admin", "203.0.113.7", "locked_out"),
            ("other0", "127.0.0.2", "failure"), ("admin", "127.0.0.2", "locked_out"),
            ("admin", "203.0.113.8", "success"), ("direct0", "proxy:127.0.0.1", "failure"),
            ("admin", "proxy:127.0.0.1", "success")} <= sources


@pytest.mark.parametrize("value", ["10.0.0.1/8", "unix:/run/x", "example.com", "10.0.0.0/33"])
def test_trusted_proxies_are_checked(tmp_path: Path, value: str) -> None:
    conf = write_config(tmp_path / "scheduler.conf", f"[server]\ntrusted_proxies = {value}\n")
    with pytest.raises(ConfigError, match=r"\[server\] trusted_proxies"):
        load_settings([conf], check_files=False)


def test_trusted_proxies_default_is_nobody(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "scheduler.conf", "[server]\n")
    proxies = load_settings([conf], check_files=False).server.trusted_proxies
    assert proxies.networks == () and not proxies.unix
    conf.write_text("[server]\ntrusted_proxies = unix, 127.0.0.1 10.0.0.0/8\n")
    proxies = load_settings([conf], check_files=False).server.trusted_proxies
    assert proxies.unix and [str(n) for n in proxies.networks] == ["127.0.0.1/32", "10.0.0.0/8"]
