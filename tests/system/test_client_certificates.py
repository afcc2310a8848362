"""Client-certificate authentication ([client_certificates]) over real HTTPS against a real
scheduler, with certificates made here by a CA made here (cryptography): a scraper presenting the
certificate of "prometheus" reads /metrics; without a certificate, with one of another CA or with
an identity nobody mapped it gets nothing; the role a certificate carries is the one it is mapped
to, and no more."""

from __future__ import annotations

import datetime
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import Server, cli, write_config


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path


class CertificateAuthority:
    """A CA (PEM file ``ca_file``) that issues client certificates into ``dir``."""

    def __init__(self, dir: Path, name: str):
        dir.mkdir(parents=True, exist_ok=True)
        self.dir = dir
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = dir / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, file_name: str, common_name: str, *, uris: tuple[str, ...] = (),
              usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        end = now - datetime.timedelta(minutes=1) if expired else now + datetime.timedelta(days=1)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.dir / f"{file_name}.crt", self.dir / f"{file_name}.key")
        issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        issued.key_file.chmod(0o600)
        return issued


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "client-ca", "scrapers CA")


def client_ca_section(ca_file: Path) -> str:
    return (f"[client_certificates]\nca_file = {ca_file}\nmetrics = prometheus\n"
            # The URI names this holder; its common name (mapped to operator) is not looked at.
            "viewer = spiffe://example.org/dashboard\noperator = dashboard-cn\n")


def https(server: Server, cert: Issued | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    if cert is not None:
        s.cert = (str(cert.cert_file), str(cert.key_file))
    return s


def task_list(session: requests.Session, server: Server) -> int:
    return session.get(f"{server.url}/api/task_list", params={"data": "{}"}, timeout=10).status_code


def metrics(session: requests.Session, server: Server) -> int:
    return session.get(f"{server.url}/metrics", timeout=10).status_code


@pytest.mark.doc_rule("client-certificates")
def test_a_mapped_certificate_scrapes_and_nothing_else_does(configured_server, ca: CertificateAuthority,
                                                           tmp_path: Path) -> None:
    prometheus = ca.issue("prometheus", "prometheus")
    server = configured_server(client_ca_section(ca.ca_file))
    scraper = https(server, prometheus)
    assert metrics(scraper, server) == 200
    # The metrics role, nothing more: no RPC, no page.
    assert task_list(scraper, server) == 403
    assert scraper.get(f"{server.url}/", timeout=10).status_code == 403
    # Without a certificate: 401 with the Basic challenge (the certificate is optional) ...
    anonymous = https(server)
    resp = anonymous.get(f"{server.url}/metrics", timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic ")
    # ... and callers without one keep using passwords.
    admin = server.session()
    assert task_list(admin, server) == 200
    # A certificate of the CA whose identity nobody mapped gets no principal.
    stranger = https(server, ca.issue("stranger", "stranger"))
    assert metrics(stranger, server) == 401 and task_list(stranger, server) == 401
    # A certificate of another CA (same CA name, another key), an expired one, and one issued
    # for servers only, all for the mapped name, do not even get a connection.
    other = CertificateAuthority(tmp_path / "other-ca", "scrapers CA")
    for refused in (other.issue("prometheus", "prometheus"), ca.issue("expired", "prometheus", expired=True),
                    ca.issue("server-only", "prometheus", usage=ExtendedKeyUsageOID.SERVER_AUTH)):
        with pytest.raises(requests.exceptions.ConnectionError):
            metrics(https(server, refused), server)
    assert metrics(scraper, server) == 200  # and the scheduler serves on
    # Alternative names are a certificate's identities when it has any: this one is a viewer,
    # though its common name is mapped to operator.
    dashboard = https(server, ca.issue("dashboard", "dashboard-cn", uris=("spiffe://example.org/dashboard",)))
    assert task_list(dashboard, server) == 200
    assert dashboard.post(f"{server.url}/api/pause", data={"data": "{}"}, timeout=10).status_code == 403
    log = server.log()
    assert "accepted as 'prometheus' with role metrics" in log
    assert "none of its identities ['stranger'] is listed" in log


@pytest.mark.doc_rule("client-ca-reload")
def test_sighup_replaces_the_client_ca(configured_server, ca: CertificateAuthority, tmp_path: Path) -> None:
    live = tmp_path / "client-ca.pem"
    live.write_bytes(ca.ca_file.read_bytes())
    server = configured_server(client_ca_section(live))
    old = https(server, ca.issue("prometheus", "prometheus"))
    assert metrics(old, server) == 200
    successor = CertificateAuthority(tmp_path / "next-ca", "scrapers CA 2")
    new = https(server, successor.issue("prometheus", "prometheus"))
    with pytest.raises(requests.exceptions.ConnectionError):
        metrics(new, server)
    # The operator replaces the CA and reloads: the new CA's certificates are taken, and the old
    # CA's get no principal any more (on new and on kept connections alike).
    live.write_bytes(successor.ca_file.read_bytes())
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "Reloaded the client CAs" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert metrics(new, server) == 200
    assert metrics(old, server) == 401
    assert metrics(https(server, ca.issue("prometheus-2", "prometheus")), server) == 401
    assert "not issued by a CA of" in server.log()  # the TLS layer still knew the old CA
    # A file that no longer parses keeps the CAs in use.
    live.write_text("not a certificate\n")
    server.send(signal.SIGHUP)
    while "Keeping the previous client CAs" not in server.log():
        assert time.monotonic() < deadline + 10, server.log()
        time.sleep(0.1)
    assert metrics(new, server) == 200


def check(tmp_path: Path, section: str) -> str:
    conf = write_config(tmp_path / "check.conf", f"""
[state]
dir = {tmp_path / 'state'}
[auth]
users_file = {tmp_path / 'users'}
[secrets]
key_file = {tmp_path / 'secret.key'}
[audit]
file = {tmp_path / 'audit.log'}
{section}""")
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.doc_rule("client-certificates-checked")
def test_config_check_names_the_faulty_key_and_line(configured_server, ca: CertificateAuthority,
                                                   tmp_path: Path) -> None:
    configured_server(start=False)  # the users file
    conf = tmp_path / "check.conf"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    out = check(tmp_path, f"[client_certificates]\nca_file = {garbage}\nmetrics = prometheus\n")
    assert f"{conf}:11: [client_certificates] ca_file: {garbage} holds no PEM certificate" in out
    # A leaf certificate is no CA.
    leaf = ca.issue("leaf", "leaf").cert_file
    out = check(tmp_path, f"[client_certificates]\nca_file = {leaf}\nmetrics = prometheus\n")
    assert f"{conf}:11: [client_certificates] ca_file: {leaf} holds 'CN=leaf', which is no CA certificate" in out
    unreadable = tmp_path / "missing.pem"
    out = check(tmp_path, f"[client_certificates]\nca_file = {unreadable}\nmetrics = prometheus\n")
    assert f"{conf}:11: [client_certificates] ca_file: file {unreadable} does not exist" in out
    # Identities without a CA; one identity with two roles; admin is no role a certificate gets.
    out = check(tmp_path, "[client_certificates]\nmetrics = prometheus\n")
    assert f"{conf}:11: [client_certificates] ca_file: certificate identities are mapped but no ca_file" in out
    out = check(tmp_path, f"[client_certificates]\nca_file = {ca.ca_file}\nmetrics = prometheus\n"
                "viewer = grafana, prometheus\nadmin = root\n")
    assert f"{conf}:13: [client_certificates] viewer: identity 'prometheus' is also given the metrics role" in out
    assert f"{conf}:14: [client_certificates] admin: unknown key" in out
    # Plain HTTP carries no certificate.
    out = check(tmp_path, f"[server]\ninsecure_http = true\n[client_certificates]\nca_file = {ca.ca_file}\n"
                "metrics = prometheus\n")
    assert f"{conf}:13: [client_certificates] ca_file: plain HTTP ([server] insecure_http) carries no" in out
