"""The [audit] section: where the audit trail is written, whether workers' heartbeats are in it,
and how its signed checkpoints are made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import section
from luigi_appliance.settings.parsers import duration_range, parse_bool, parse_path


@dataclass(frozen=True)
class AuditSettings:
    file: Path = key(parse_path, Path("/var/log/luigi-appliance/audit.log"), "where audit lines are appended")
    stderr: bool = key(parse_bool, True, "also write each audit line to stderr (the journal)")
    heartbeats: bool = key(parse_bool, False, "also audit workers' ping and get_work calls that succeed "
                                              "(refused ones always are)")
    checkpoint_interval: float = key(duration_range(1, 86400), 300.0,
                                     "how often a signed checkpoint is written while records are")
    signing_key_file: Path | None = key(parse_path, None, "Ed25519 private key (PEM) signing the checkpoints "
                                        "(unset: the systemd credential audit-signing-key, else "
                                        "[state] dir/audit-signing.key)", must_exist=True)


AUDIT = section("audit", AuditSettings)
