"""The scheduler's state directory: checked before anything is read from it, and its store."""

from __future__ import annotations

import logging
from pathlib import Path

from luigi_appliance import state, tls
from luigi_appliance.auth.tokens import default_keys_file
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.history.deadletter import DEAD_LETTER_NAME
from luigi_appliance.history.spool import SPOOL_NAME
from luigi_appliance.secret_values import remove_stale_temporaries
from luigi_appliance.state_settings import read_hmac_key

log = logging.getLogger(__name__)


def _state_dir_files(settings: Settings) -> list[Path]:
    """The files the scheduler itself opens in its state directory."""
    directory = settings.state.dir
    return [settings.state.snapshot_path, settings.state.generation_path, settings.state.default_key_path,
            directory / tls.SELF_SIGNED_CERT, directory / tls.SELF_SIGNED_KEY, default_keys_file(directory),
            directory / SPOOL_NAME, directory / f"{SPOOL_NAME}.offset", directory / DEAD_LETTER_NAME]


def prepare_state_dir(settings: Settings) -> None:
    """Create the state directory if needed; refuse one others may access, or any symbolic link
    there (the directory itself included): a link would send the scheduler's reads and writes
    to a file outside the directory it owns."""
    state.refuse_symlink(settings.state.dir)
    settings.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    mode = settings.state.dir.stat().st_mode & 0o777
    if mode & 0o007:
        raise ApplianceError(f"state directory {settings.state.dir} has mode {mode:04o}: others may "
                             "access it; expected 0750 or stricter")
    for path in _state_dir_files(settings):
        state.refuse_symlink(path)
    for path in remove_stale_temporaries(settings.state.dir):
        log.warning("Removed %s, a temporary file left by a crash while writing", path)


def open_store(settings: Settings) -> state.StateStore:
    """The signed snapshot store, with the configured key or the one kept in the state directory."""
    key = read_hmac_key(settings.state)
    if key is None:
        key = state.load_or_create_key(settings.state.default_key_path)
    return state.StateStore(state.SignedSnapshotFile(settings.state.snapshot_path, key),
                            state.GenerationFile(settings.state.generation_path),
                            refuse_stale=settings.state.refuse_stale_snapshot)
