"""TLS defaults: generated certificate, key mode, fingerprint logged, minimum version enforced."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import Server
from luigi_appliance.tls import ensure_self_signed, fingerprint


def handshake(server: Server, maximum: ssl.TLSVersion) -> str:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.version() or ""


def test_self_signed_certificate_generated_private_and_fingerprint_logged(dev_server: Server) -> None:
    key = dev_server.state_dir / "tls-selfsigned.key"
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)
    assert oct((dev_server.state_dir / "state.key").stat().st_mode & 0o777) == oct(0o600)
    assert oct((dev_server.state_dir / "admin-password").stat().st_mode & 0o777) == oct(0o600)
    assert f"SHA-256 fingerprint {fingerprint(dev_server.ca_file)}" in dev_server.log()
    assert handshake(dev_server, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(dev_server, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


def test_plain_http_to_the_tls_port_gets_nothing(dev_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", dev_server.port), timeout=10) as raw:
        raw.sendall(b"GET /api/task_list HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = raw.recv(4096)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/")


def test_min_version_13_refuses_tls12(configured_server) -> None:
    server = configured_server("[tls]\nmin_version = 1.3\n")
    assert handshake(server, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):
        handshake(server, ssl.TLSVersion.TLSv1_2)


def test_configured_certificate_is_used_and_reloaded_on_sighup(configured_server, tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    first = ensure_self_signed(tmp_path / "c1", ["127.0.0.1"])
    live_cert = tmp_path / "server.crt"
    live_key = tmp_path / "server.key"
    live_cert.write_bytes(first.cert_file.read_bytes())
    live_key.write_bytes(first.key_file.read_bytes())
    live_key.chmod(0o600)
    server = configured_server(f"[tls]\ncert_file = {live_cert}\nkey_file = {live_key}\n", start=False)
    server.state_dir.mkdir(exist_ok=True)
    (server.state_dir / "tls-selfsigned.crt").write_bytes(live_cert.read_bytes())  # what clients trust
    server.start()
    assert f"SHA-256 fingerprint {fingerprint(live_cert)}" in server.log()

    (tmp_path / "c2").mkdir()
    second = ensure_self_signed(tmp_path / "c2", ["127.0.0.1"])
    live_cert.write_bytes(second.cert_file.read_bytes())
    live_key.write_bytes(second.key_file.read_bytes())
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while f"Reloaded TLS certificate {live_cert} (SHA-256 {fingerprint(live_cert)})" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    ctx = ssl.create_default_context(cafile=str(second.cert_file))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version()
