"""The ``certificate`` credential scheme: a TLS client certificate issued by ``[client_certificates]
ca_file`` whose identity that section maps to a role (e.g. a Prometheus scraper).

Two checks, both required (fail closed): the TLS layer verified the certificate's chain, dates
and purpose against the CA file in the handshake (tls.py asks for a certificate when the file is
set), and this scheme checks that a certificate of the CA file as last (re)loaded issued it and
that it is within its dates now. The second check makes a CA taken out of the file stop
authenticating at the next SIGHUP (the TLS layer only ever adds CAs to a live context) and
covers resumed TLS sessions.

A certificate's identities are its DNS and URI subject alternative names when it has any, else
its subject common names (as RFC 6125 treats server names), compared exactly with the ones listed.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from tornado.httputil import HTTPServerRequest

from luigi_appliance import tls
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.certificate_settings import ClientCertificateSettings
from luigi_appliance.auth.groups import families_for
from luigi_appliance.auth.outcomes import UNCOUNTED, AuthOutcomes, Reason
from luigi_appliance.auth.registry import SchemeContext, register_scheme
from luigi_appliance.auth.settings import AuthSettings
from luigi_appliance.errors import ApplianceError

log = logging.getLogger(__name__)

BACKEND = "certificate"
# Certificates whose outcome was logged: each is logged once (a scraper presents its certificate
# on every request), up to this many, then the memory starts over.
MAX_REMEMBERED = 1024


def read_issuers(ca_file: Path) -> list[x509.Certificate]:
    """The CA certificates of ``ca_file``, held to the rules the TLS layer loads it by
    (tls.client_ca_problem); ApplianceError saying why not."""
    try:
        problem = tls.client_ca_problem(ca_file)
        if problem is None:
            return x509.load_pem_x509_certificates(ca_file.read_bytes())
    except OSError as exc:  # replaced between the check and the read
        problem = f"cannot read {ca_file}: {exc.strerror}"
    raise ApplianceError(problem)


def identities(cert: x509.Certificate) -> list[str]:
    """The names a certificate is known by: DNS and URI alternative names, else common names."""
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [*alternative.get_values_for_type(x509.DNSName),
            *alternative.get_values_for_type(x509.UniformResourceIdentifier)]


def issued_by(cert: x509.Certificate, issuers: Iterable[x509.Certificate]) -> bool:
    """Whether one of ``issuers`` signed ``cert``."""
    for issuer in issuers:
        if issuer.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def within_dates(cert: x509.Certificate) -> bool:
    now = datetime.datetime.now(datetime.timezone.utc)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def verified_peer_certificate(request: HTTPServerRequest) -> x509.Certificate | None:
    """The client certificate the TLS layer verified on this request's connection, or None.

    Python gives a certificate's fields only once the handshake verified it (an empty dict
    when a context without verification took it), so the DER form is used only then.
    """
    if not request.get_ssl_certificate():
        return None
    der = request.get_ssl_certificate(binary_form=True)
    if not isinstance(der, bytes):
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:  # OpenSSL took what cryptography cannot read: no identity to map
        log.warning("Ignored a verified client certificate from %s that cannot be parsed", request.remote_ip)
        return None


class CertificateAuthenticator:
    """Authenticator for a verified client certificate whose identity is mapped to a role."""

    def __init__(self, settings: ClientCertificateSettings, auth: AuthSettings, outcomes: AuthOutcomes = UNCOUNTED):
        if settings.ca_file is None:
            raise ApplianceError("the certificate scheme needs [client_certificates] ca_file")
        self._ca_file = settings.ca_file
        self._roles = settings.roles()
        self._auth = auth
        self._outcomes = outcomes
        self._issuers = read_issuers(settings.ca_file)
        # SHA-256 of a certificate -> its principal (None: refused), once logged.
        self._logged: dict[bytes, Principal | None] = {}

    async def authenticate(self, request: HTTPServerRequest) -> Principal | None:
        cert = verified_peer_certificate(request)
        if cert is None:
            return None
        digest = cert.fingerprint(hashes.SHA256())
        if not (issued_by(cert, self._issuers) and within_dates(cert)):
            # A certificate is a name the CA vouches for: one it does not (any more) is an unknown name.
            self._outcomes.auth_failed(BACKEND, Reason.BAD_CREDENTIALS)
            self._log_once(digest, None, "Refused a client certificate from %s: not issued by a CA of %s "
                           "as last loaded, or outside its dates", request.remote_ip, self._ca_file)
            return None
        principal = self.principal(cert)
        if principal is None:
            self._outcomes.auth_failed(BACKEND, Reason.BAD_CREDENTIALS)
            self._log_once(digest, None, "Refused a client certificate from %s: none of its identities %s "
                           "is listed in [client_certificates]", request.remote_ip, identities(cert))
        else:
            self._outcomes.auth_succeeded(BACKEND)
            self._log_once(digest, principal, "Client certificate %s from %s accepted as %r with role %s",
                           digest.hex(":")[:23], request.remote_ip, principal.name, principal.role)
        return principal

    def principal(self, cert: x509.Certificate) -> Principal | None:
        """The principal of a verified certificate: its listed identity with the highest role
        (all its names are the holder's, as a directory account's groups are), or None."""
        listed = [(self._roles[name], name) for name in identities(cert) if name in self._roles]
        if not listed:
            return None
        role: Role = max(r for r, _ in listed)
        name = next(n for r, n in listed if r == role)
        return Principal(name, role, BACKEND, families=families_for(role, frozenset(), self._auth))

    def _log_once(self, digest: bytes, principal: Principal | None, message: str, *args: object) -> None:
        if digest in self._logged and self._logged[digest] == principal:
            return
        if len(self._logged) >= MAX_REMEMBERED:
            self._logged.clear()
        self._logged[digest] = principal
        log.log(logging.INFO if principal is not None else logging.WARNING, message, *args)

    def reload(self) -> None:
        """Re-read the CA file; a file that no longer holds a certificate keeps the previous CAs."""
        try:
            self._issuers = read_issuers(self._ca_file)
        except ApplianceError as exc:
            log.error("Keeping the previous client CAs: %s", exc)
            return
        self._logged.clear()


def certificate_scheme(context: SchemeContext) -> CertificateAuthenticator | None:
    """Client certificates of ``[client_certificates]``; None (not asked) without a ca_file or
    over plain HTTP (no certificate can arrive)."""
    if not context.secure or context.settings.client_certificates.ca_file is None:
        return None
    return CertificateAuthenticator(context.settings.client_certificates, context.settings.auth, context.outcomes)


register_scheme("certificate", certificate_scheme)
