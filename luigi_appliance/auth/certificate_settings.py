"""The [client_certificates] section: which CA's client certificates are accepted, and the role
each certificate identity gets (the ``certificate`` scheme, auth/certificate.py).

The keys are the roles a certificate may carry, each listing identities; there is no ``admin``
key on purpose: the scheduler checks no revocation list, so a certificate stays usable until it
expires or leaves this section, and lifting lockouts or pruning is for accounts with a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.auth import Role
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import parse_path

# The roles a certificate may be mapped to, in the order of the section's keys.
CERTIFICATE_ROLES = (Role.METRICS, Role.VIEWER, Role.WORKER, Role.OPERATOR)


def parse_identities(value: str) -> tuple[str, ...]:
    """Certificate identities separated by commas, e.g. ``prometheus, spiffe://example.org/scraper``.

    Commas only: a subject common name may contain blanks. Each is kept exactly as written (it is
    compared exactly with the certificate's names).
    """
    identities = tuple(item.strip() for item in value.split(",") if item.strip())
    for identity in identities:
        if not identity.isprintable():
            raise ValueError(f"expected certificate identities separated by commas, got {identity!r}")
    if len(set(identities)) != len(identities):
        raise ValueError(f"an identity is listed twice in {value!r}")
    return identities


_IDENTITIES = ("certificate identities (subject alternative names, else the subject common name) "
               "given the {} role, comma-separated")


@dataclass(frozen=True)
class ClientCertificateSettings:
    ca_file: Path | None = key(parse_path, None, "PEM CA certificates that issue client certificates "
                               "(unset: none is asked for)", must_exist=True)
    metrics: tuple[str, ...] = key(parse_identities, (), _IDENTITIES.format("metrics"))
    viewer: tuple[str, ...] = key(parse_identities, (), _IDENTITIES.format("viewer"))
    worker: tuple[str, ...] = key(parse_identities, (), _IDENTITIES.format("worker"))
    operator: tuple[str, ...] = key(parse_identities, (), _IDENTITIES.format("operator"))

    def roles(self) -> dict[str, Role]:
        """Identity -> the role it is given."""
        listed = {Role.METRICS: self.metrics, Role.VIEWER: self.viewer, Role.WORKER: self.worker,
                  Role.OPERATOR: self.operator}
        return {identity: role for role, identities in listed.items() for identity in identities}


def _check(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    seen: dict[str, str] = {}
    for role in (str(r) for r in CERTIFICATE_ROLES):
        for identity in v.get(("client_certificates", role)) or ():
            if identity in seen:
                loader.issue(doc.get("client_certificates", role), "client_certificates", role,
                             f"identity {identity!r} is also given the {seen[identity]} role; give each one role")
            seen.setdefault(identity, role)
    if seen and v.get(("client_certificates", "ca_file")) is None:
        first = next(doc.get("client_certificates", str(r)) for r in CERTIFICATE_ROLES
                     if doc.get("client_certificates", str(r)) is not None)
        loader.issue(first, "client_certificates", "ca_file",
                     "certificate identities are mapped but no ca_file says which CA issues them; set ca_file")


CLIENT_CERTIFICATES = section("client_certificates", ClientCertificateSettings, _check)
