"""TLS defaults: generated certificate, key mode, fingerprint logged, minimum version enforced."""

from __future__ import annotations

import hashlib
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


def served_fingerprint(server: Server) -> str:
    """SHA-256 of the certificate a new handshake gets (not verified: only compared)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).digest().hex(":").upper()


def server_with_configured_pair(configured_server, tmp_path: Path) -> tuple[Server, Path, Path]:
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
    return server, live_cert, live_key


def sighup_outcome(server: Server) -> str:
    """The TLS line the next SIGHUP logs: "Reloaded ..." or "Keeping the previous ..."."""
    def outcomes() -> list[str]:
        # Not the "SIGHUP: reloading ... TLS certificate" line logged before the outcome.
        return [line for line in server.log().splitlines()
                if "Reloaded TLS certificate" in line or "Keeping the previous TLS certificate" in line]

    before = len(outcomes())
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while len(outcomes()) == before:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    return outcomes()[-1]


def test_configured_certificate_is_used_and_reloaded_on_sighup(configured_server, tmp_path: Path) -> None:
    server, live_cert, live_key = server_with_configured_pair(configured_server, tmp_path)
    assert f"SHA-256 fingerprint {fingerprint(live_cert)}" in server.log()

    (tmp_path / "c2").mkdir()
    second = ensure_self_signed(tmp_path / "c2", ["127.0.0.1"])
    live_cert.write_bytes(second.cert_file.read_bytes())
    live_key.write_bytes(second.key_file.read_bytes())
    assert f"Reloaded TLS certificate {live_cert} (SHA-256 {fingerprint(live_cert)})" in sighup_outcome(server)
    ctx = ssl.create_default_context(cafile=str(second.cert_file))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version()


@pytest.mark.parametrize("change", ["key readable by others", "key of another certificate", "not PEM"])
def test_sighup_keeps_the_served_pair_when_the_new_files_would_be_refused(
        configured_server, tmp_path: Path, change: str) -> None:
    server, live_cert, live_key = server_with_configured_pair(configured_server, tmp_path)
    served = served_fingerprint(server)
    assert served == fingerprint(live_cert)
    (tmp_path / "c2").mkdir()
    second = ensure_self_signed(tmp_path / "c2", ["127.0.0.1"])
    if change == "key readable by others":  # what config check refuses: secret-file rules
        live_cert.write_bytes(second.cert_file.read_bytes())
        live_key.write_bytes(second.key_file.read_bytes())
        live_key.chmod(0o644)
        reason = f"secret file {live_key} has mode 0644"
    elif change == "key of another certificate":  # a renewal caught half-way: new certificate, old key
        live_cert.write_bytes(second.cert_file.read_bytes())
        reason = f"the private key {live_key} does not belong to the certificate {live_cert}"
    else:
        live_cert.write_bytes(b"not a certificate\n")
        reason = f"{live_cert} is not a PEM certificate"
    line = sighup_outcome(server)
    assert "ERROR" in line and "Keeping the previous TLS certificate" in line and reason in line, line
    assert served_fingerprint(server) == served  # new handshakes still get the old, working pair
