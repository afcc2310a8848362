"""The scheduler's state directory: checked before anything is read from it, and its store."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from luigi_appliance import state, tls
from luigi_appliance.audit.signing import PUBLIC_KEY, SIGNING_KEY
from luigi_appliance.audit.trail import HEAD_FILE
from luigi_appliance.auth.tokens import default_keys_file
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.history.deadletter import DEAD_LETTER_NAME
from luigi_appliance.history.spool import SPOOL_NAME
from luigi_appliance.secret_values import read_secret_file, remove_stale_temporaries
from luigi_appliance.state_settings import read_hmac_key

log = logging.getLogger(__name__)


def _state_dir_files(settings: Settings) -> list[Path]:
    """The files the scheduler itself opens in its state directory."""
    directory = settings.state.dir
    return [settings.state.snapshot_path, settings.state.generation_path, settings.state.default_key_path,
            directory / tls.SELF_SIGNED_CERT, directory / tls.SELF_SIGNED_KEY, default_keys_file(directory),
            directory / SPOOL_NAME, directory / f"{SPOOL_NAME}.offset", directory / DEAD_LETTER_NAME,
            directory / SIGNING_KEY, directory / PUBLIC_KEY, directory / HEAD_FILE]


def _creatable(directory: Path) -> str | None:
    """Why ``directory``, which does not exist, could not be created by this account, or None."""
    ancestor = next(parent for parent in directory.parents if parent.exists())
    if not ancestor.is_dir():
        return f"state directory {directory} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK, effective_ids=True):
        return (f"state directory {directory} does not exist and cannot be created: {ancestor} is not "
                f"writable by this account (uid {os.geteuid()}); create it, owned by the service account, mode 0750")
    return None


def _file_problems(settings: Settings) -> list[str]:
    """Links among the files the scheduler opens there, and the ones it reads that it could not."""
    problems = []
    for path in _state_dir_files(settings):
        try:
            state.refuse_symlink(path)
        except ApplianceError as exc:
            problems.append(str(exc))
    snapshot = settings.state.snapshot_path
    if snapshot.exists() and not os.access(snapshot, os.R_OK, effective_ids=True):
        problems.append(f"cannot read state snapshot {snapshot}: not readable by this account (uid {os.geteuid()})")
    try:
        state.GenerationFile(settings.state.generation_path).read()
    except ApplianceError as exc:
        problems.append(str(exc))
    key_path = settings.state.default_key_path
    if settings.state.hmac_key is None and settings.state.hmac_key_file is None and key_path.exists():
        try:
            state.check_key(read_secret_file(key_path).strip(), str(key_path))
        except ApplianceError as exc:
            problems.append(str(exc))
    return problems


def state_dir_problems(settings: Settings) -> list[str]:
    """What keeps ``serve`` from using the state directory, found without creating or changing
    anything: a link (the directory itself or a file the scheduler opens there: a link would
    send its reads and writes outside the directory it owns), access by others, a directory
    this account cannot create or write, and files there it would refuse to read."""
    directory = settings.state.dir
    try:
        state.refuse_symlink(directory)
    except ApplianceError as exc:
        return [str(exc)]
    if not directory.exists():
        problem = _creatable(directory)
        return [problem] if problem else []
    if not directory.is_dir():
        return [f"state directory {directory} is not a directory"]
    st = directory.stat()
    mode = st.st_mode & 0o777
    problems = []
    if mode & 0o007:
        problems.append(f"state directory {directory} has mode {mode:04o}: others may access it; "
                        "expected 0750 or stricter")
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK, effective_ids=True):
        problems.append(f"state directory {directory} (owner uid {st.st_uid}, mode {mode:04o}) is not writable "
                        f"by this account (uid {os.geteuid()}); chown it to the service account")
    return problems + _file_problems(settings)


def prepare_state_dir(settings: Settings) -> None:
    """Create the state directory if needed, after ``state_dir_problems`` found none (the
    configuration check asks it first; this guards against a change since)."""
    problems = state_dir_problems(settings)
    if problems:
        raise ApplianceError(problems[0])
    settings.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
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
