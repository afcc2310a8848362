"""TLS for the scheduler: server contexts, and a self-signed certificate when none is configured."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from luigi_appliance.secret_values import secret_file_problem, write_private_file
from luigi_appliance.server.settings import TLSSettings
from luigi_appliance.state import refuse_symlink

log = logging.getLogger(__name__)

SELF_SIGNED_CERT = "tls-selfsigned.crt"
SELF_SIGNED_KEY = "tls-selfsigned.key"
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class CertPair:
    cert_file: Path
    key_file: Path


def fingerprint(cert_file: Path) -> str:
    """SHA-256 fingerprint of the first certificate in ``cert_file``, as colon-separated hex."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure_self_signed(state_dir: Path, hostnames: list[str]) -> CertPair:
    """Return the self-signed pair in ``state_dir``, generating it (key 0600) on first use."""
    pair = CertPair(state_dir / SELF_SIGNED_CERT, state_dir / SELF_SIGNED_KEY)
    refuse_symlink(pair.cert_file)
    refuse_symlink(pair.key_file)
    if pair.cert_file.exists() and pair.key_file.exists():
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hostnames, "localhost", socket.getfqdn()]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    for addr in ("127.0.0.1", "::1"):
        if x509.IPAddress(ipaddress.ip_address(addr)) not in names:
            names.append(x509.IPAddress(ipaddress.ip_address(addr)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luigi-appliance self-signed")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_private_file(pair.key_file, key_pem)
    write_private_file(pair.cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.warning("Generated a self-signed TLS certificate %s; configure [tls] cert_file and key_file "
                "for production", pair.cert_file)
    return pair


def resolve_pair(tls: TLSSettings, state_dir: Path, hostnames: list[str]) -> CertPair:
    if tls.cert_file is not None and tls.key_file is not None:
        return CertPair(tls.cert_file, tls.key_file)
    return ensure_self_signed(state_dir, hostnames)


def server_context(tls: TLSSettings, pair: CertPair, work_dir: Path) -> ssl.SSLContext:
    """A server context: TLS >= the configured minimum, modern ciphers, no compression."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS")
    load_pair(ctx, tls, pair, work_dir)
    return ctx


@dataclass(frozen=True)
class PairProblem:
    """Why a certificate pair cannot be served, and which ``[tls]`` key names the faulty file."""

    key: str  # cert_file, key_file or ca_file
    message: str


def _load_certificate(cert_file: Path) -> x509.Certificate | str:
    """The first certificate in ``cert_file``, or why there is none."""
    try:
        return x509.load_pem_x509_certificate(cert_file.read_bytes())
    except OSError as exc:
        return f"cannot read the certificate {cert_file}: {exc.strerror}"
    except ValueError:
        return f"{cert_file} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"


def _load_private_key(key_file: Path) -> PrivateKeyTypes | str:
    """The private key in ``key_file``, or why there is none."""
    try:
        return serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except OSError as exc:
        return f"cannot read the private key {key_file}: {exc.strerror}"
    except TypeError:
        return f"the private key {key_file} is encrypted; the scheduler needs it unencrypted (mode 0600)"
    except (ValueError, UnsupportedAlgorithm):
        return f"{key_file} is not a PEM private key (expected -----BEGIN PRIVATE KEY-----)"


def _public_der(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def chain_problem(ca_file: Path) -> str | None:
    """Why ``ca_file`` is no PEM certificate chain, or None."""
    try:
        x509.load_pem_x509_certificates(ca_file.read_bytes())
    except OSError as exc:
        return f"cannot read {ca_file}: {exc.strerror}"
    except ValueError:
        return f"{ca_file} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    return None


def pair_problem(tls: TLSSettings, pair: CertPair) -> PairProblem | None:
    """Why ``pair`` cannot be served, or None: the key-file rules, certificate and key that parse
    as PEM and belong together, the chain file, then a trial load into a scratch context.

    Reads the files and writes nothing: ``config check`` and ``serve`` ask it before anything is
    created, and SIGHUP before touching the live context (a failed load_cert_chain can leave a
    context with the new certificate and no key, and then every handshake fails).
    """
    problem = secret_file_problem(pair.key_file)
    if problem is not None:
        return PairProblem("key_file", problem)
    cert = _load_certificate(pair.cert_file)
    if isinstance(cert, str):
        return PairProblem("cert_file", cert)
    key = _load_private_key(pair.key_file)
    if isinstance(key, str):
        return PairProblem("key_file", key)
    if _public_der(key) != _public_der(cert):
        return PairProblem("key_file", f"the private key {pair.key_file} does not belong to the certificate "
                           f"{pair.cert_file}; give the key the certificate was issued for")
    if tls.ca_file is not None:
        problem = chain_problem(tls.ca_file)
        if problem is not None:
            return PairProblem("ca_file", problem)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(pair.cert_file), str(pair.key_file))
    except (OSError, ssl.SSLError, ValueError) as exc:
        return PairProblem("cert_file", f"cannot load {pair.cert_file} with key {pair.key_file}: {exc}")
    return None


def reload_pair(ctx: ssl.SSLContext, tls: TLSSettings, pair: CertPair, work_dir: Path) -> str | None:
    """Load the pair's current files into the live ``ctx`` if they pass ``pair_problem``;
    otherwise leave ``ctx`` as it is and return why."""
    problem = pair_problem(tls, pair)
    if problem is not None:
        return problem.message
    load_pair(ctx, tls, pair, work_dir)
    return None


def load_pair(ctx: ssl.SSLContext, tls: TLSSettings, pair: CertPair, work_dir: Path) -> None:
    """(Re)load the certificate chain; new handshakes use it, existing connections keep theirs."""
    if tls.ca_file is not None:
        # The configured CA file is the intermediate chain served after the leaf.
        chain = pair.cert_file.read_bytes().rstrip() + b"\n" + tls.ca_file.read_bytes()
        # load_cert_chain only takes paths; /etc may be read-only, so combine in the state dir.
        combined = work_dir / ".tls-chain.pem"
        write_private_file(combined, chain)
        ctx.load_cert_chain(str(combined), str(pair.key_file))
        combined.unlink(missing_ok=True)
    else:
        ctx.load_cert_chain(str(pair.cert_file), str(pair.key_file))


def client_ca_problem(ca_file: Path) -> str | None:
    """Why ``ca_file`` cannot verify client certificates, or None: PEM certificates that are
    CAs and load into a scratch context. Reads the file and writes nothing."""
    problem = chain_problem(ca_file)
    if problem is not None:
        return problem
    for cert in x509.load_pem_x509_certificates(ca_file.read_bytes()):
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            return (f"{ca_file} holds {cert.subject.rfc4514_string()!r}, which is no CA certificate; give the "
                    "certificates of the CA that issues the client certificates")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        return f"cannot load {ca_file} as CA certificates: {exc}"
    return None


def request_client_certificates(ctx: ssl.SSLContext, ca_file: Path) -> str | None:
    """Ask clients for a certificate and verify one against ``ca_file`` if it passes
    ``client_ca_problem``; otherwise leave ``ctx`` as it is and return why.

    Optional: browsers and workers without a certificate keep working, with another scheme. A
    certificate that does not verify fails the handshake. Reloading adds the file's CAs to the
    context (OpenSSL never drops one): the certificate scheme checks the issuer against the file
    as last loaded too (auth/certificate.py).
    """
    problem = client_ca_problem(ca_file)
    if problem is not None:
        return problem
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return None
