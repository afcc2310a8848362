"""scheduler.conf: the sections it is composed of and the Settings they make.

Each domain declares its own section next to the code that uses it (server/settings.py,
state_settings.py, auth/settings.py, auth/ldap_settings.py, history/settings.py, ...); this
module lists them, in the order ``config show`` prints them. config_loader.py reads the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luigi_appliance.approvals.settings import APPROVAL, APPROVALS, ApprovalPolicy
from luigi_appliance.audit.settings import AUDIT, AuditSettings
from luigi_appliance.auth.certificate_settings import CLIENT_CERTIFICATES, ClientCertificateSettings
from luigi_appliance.auth.ldap_settings import LDAP, LdapSettings
from luigi_appliance.auth.oidc.settings import OIDC, OidcIssuerSettings
from luigi_appliance.auth.settings import (
    AUTH,
    GROUP_SECTIONS,
    SESSION,
    TOKENS,
    AuthSettings,
    SessionSettings,
    TokenSettings,
)
from luigi_appliance.ha.settings import HA, HaSettings
from luigi_appliance.history.settings import HISTORY, HistorySettings
from luigi_appliance.logging_settings import LOGGING, LoggingSettings
from luigi_appliance.secret_settings import SECRETS
from luigi_appliance.server.settings import SERVER, TLS, ServerSettings, TLSSettings
from luigi_appliance.settings.loader import Section, SectionFamily
from luigi_appliance.state_settings import STATE, StateSettings

# Cross-checks run in this order too, after every section is loaded.
SECTIONS: tuple[Section[Any], ...] = (SERVER, TLS, STATE, AUTH, LDAP, TOKENS, AUDIT, SECRETS, LOGGING, SESSION,
                                      HISTORY, HA, CLIENT_CERTIFICATES, APPROVALS)
# Sections whose keys are not declared: luigi's scheduler options (checked against luigi's own
# parameters), resource limits (any name, a non-negative integer each) and the directory groups.
FREEFORM_SECTIONS = ("scheduler", "resources", *GROUP_SECTIONS)
# Sections [PREFIX.NAME] with the user's NAMEs: OpenID Connect issuers, approval rules.
SECTION_FAMILIES: tuple[SectionFamily[Any], ...] = (OIDC, APPROVAL)


@dataclass(frozen=True)
class Settings:
    """Everything ``serve`` needs, validated."""

    server: ServerSettings
    tls: TLSSettings
    state: StateSettings
    auth: AuthSettings
    ldap: LdapSettings
    tokens: TokenSettings
    audit: AuditSettings
    logging: LoggingSettings
    secrets_key_file: Path
    scheduler: dict[str, Any]
    resources: dict[str, int]
    files: list[str]
    # (section, key) -> (display value, origin) for ``config show``
    effective: dict[tuple[str, str], tuple[str, str]]
    history: HistorySettings = field(default_factory=HistorySettings)
    ha: HaSettings = field(default_factory=HaSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    client_certificates: ClientCertificateSettings = field(default_factory=ClientCertificateSettings)
    # [oidc.NAME] NAME -> its settings, in the order of the files.
    oidc: dict[str, OidcIssuerSettings] = field(default_factory=dict)
    # [approvals] and the [approval.NAME] rules.
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)


def render_effective(settings: Settings) -> str:
    """The effective configuration as INI text that loads back to the same settings: a value
    from a file under a comment naming its origin; a default, and a secret given as an ``enc:``
    value (redacted), as a comment line of its own."""
    members = [f"oidc.{name}" for name in settings.oidc] + [f"approval.{name}" for name in settings.approvals.rules]
    inline_secrets = {(s.name, k.name) for s in SECTIONS for k in s.keys if k.secret}
    inline_secrets |= {(m, k.name) for m in members for k in OIDC.keys if k.secret}
    lines: list[str] = []
    by_section: dict[str, list[tuple[str, str, str]]] = {}
    for (section, name), (value, origin) in sorted(settings.effective.items()):
        by_section.setdefault(section, []).append((name, value, origin))
    for section in [*(s.name for s in SECTIONS), *members, *FREEFORM_SECTIONS]:
        rows = by_section.get(section)
        if not rows:
            continue
        lines.append(f"[{section}]")
        for name, value, origin in rows:
            if origin == "default":
                lines.append(f"# {name} = {value}    (default)")
            elif (section, name) in inline_secrets:
                lines.append(f"# {name} = {value}    ({origin})")
            else:
                lines += [f"# {origin}", f"{name} = {value}"]
        lines.append("")
    return "\n".join(lines)
