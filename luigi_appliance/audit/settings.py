"""The [audit] section: where the audit trail is written, and whether workers' heartbeats are in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import section
from luigi_appliance.settings.parsers import parse_bool, parse_path


@dataclass(frozen=True)
class AuditSettings:
    file: Path = key(parse_path, Path("/var/log/luigi-appliance/audit.log"), "where audit lines are appended")
    stderr: bool = key(parse_bool, True, "also write each audit line to stderr (the journal)")
    heartbeats: bool = key(parse_bool, False, "also audit workers' ping and get_work calls that succeed "
                                              "(refused ones always are)")


AUDIT = section("audit", AuditSettings)
