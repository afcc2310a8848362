"""The [state] section: where the signed state snapshots live and the key signing them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.secret_values import read_secret_file
from luigi_appliance.settings.declare import key, secret
from luigi_appliance.settings.loader import section
from luigi_appliance.settings.parsers import duration_range, parse_bool, parse_path


@dataclass(frozen=True)
class StateSettings:
    dir: Path = key(parse_path, Path("/var/lib/luigi-appliance"), "the scheduler's state directory")
    snapshot_interval: float = key(duration_range(1, 3600), 30.0, "how often the state is written to disk")
    hmac_key_file: Path | None = None
    hmac_key: bytes | None = secret("key signing the state snapshots (unset: [state] dir/state.key)")
    refuse_stale_snapshot: bool = key(parse_bool, False,
                                      "refuse a signed snapshot older than the last one written")

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "state.pickle"

    @property
    def generation_path(self) -> Path:
        return self.dir / "state.generation"

    @property
    def default_key_path(self) -> Path:
        return self.dir / "state.key"


STATE = section("state", StateSettings)


def read_hmac_key(state: StateSettings) -> bytes | None:
    """The configured state HMAC key (from enc: or a key file), or None to use the default file."""
    if state.hmac_key is not None:
        return state.hmac_key
    if state.hmac_key_file is not None:
        return read_secret_file(state.hmac_key_file).strip()
    return None
