"""Signed, crash-safe snapshots of the scheduler's state.

Stock luigid pickles its state only at shutdown, in place, and unpickles whatever it finds, so
anyone who can write the file runs code as the scheduler. Here a snapshot is

    MAGIC (8 bytes) | VERSION (1 byte) | HMAC-SHA256 over MAGIC+VERSION+payload (32 bytes) | payload

written to a temporary file, fsync'd and renamed over the previous one, every interval and at
shutdown. A snapshot whose MAC does not verify is never unpickled: it is moved aside and the
scheduler starts empty.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import time
from pathlib import Path
from typing import Any

from luigi_appliance.errors import StateError
from luigi_appliance.secret_values import read_secret_file, write_private_file

log = logging.getLogger(__name__)

MAGIC = b"LAPSTATE"
VERSION = 1
_HEADER = len(MAGIC) + 1
_MAC_LEN = hashlib.sha256().digest_size
MIN_KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """The HMAC key kept in ``path`` (hex), created 0600 on first start."""
    if not path.exists():
        write_private_file(path, secrets.token_hex(MIN_KEY_BYTES).encode() + b"\n")
        log.info("Generated state signing key %s", path)
    return check_key(read_secret_file(path).strip(), str(path))


def check_key(key: bytes, origin: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise StateError(f"state signing key from {origin} is {len(key)} bytes; at least {MIN_KEY_BYTES} are required")
    return key


class SignedSnapshotFile:
    """One snapshot file authenticated with HMAC-SHA256."""

    def __init__(self, path: Path, key: bytes):
        self.path = path
        self._key = check_key(key, "configuration")

    def _mac(self, header: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, header + payload, hashlib.sha256).digest()

    def encode(self, state: Any) -> bytes:
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        header = MAGIC + bytes([VERSION])
        return header + self._mac(header, payload) + payload

    def write(self, blob: bytes) -> None:
        """Replace the snapshot atomically: a crash leaves the old file or the new one, never half."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StateError(f"cannot write state snapshot {self.path}: {exc.strerror}") from exc
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    def read(self) -> Any | None:
        """The verified state, or None when there is none or it was rejected (and moved aside)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            log.info("No state snapshot at %s; starting with an empty state", self.path)
            return None
        except OSError as exc:
            raise StateError(f"cannot read state snapshot {self.path}: {exc.strerror}") from exc
        reason = self._verify(blob)
        if reason is not None:
            self._quarantine(reason)
            return None
        try:
            return pickle.loads(blob[_HEADER + _MAC_LEN:])  # noqa: S301 - only after the MAC verified
        except Exception as exc:  # signed by us, but written by an incompatible version
            self._quarantine(f"signed snapshot could not be decoded ({type(exc).__name__})")
            return None

    def _verify(self, blob: bytes) -> str | None:
        if len(blob) < _HEADER + _MAC_LEN or blob[:len(MAGIC)] != MAGIC:
            return "not a signed luigi-appliance snapshot (unsigned or foreign file)"
        if blob[len(MAGIC)] != VERSION:
            return f"unsupported snapshot version {blob[len(MAGIC)]}"
        header, mac, payload = blob[:_HEADER], blob[_HEADER:_HEADER + _MAC_LEN], blob[_HEADER + _MAC_LEN:]
        if not hmac.compare_digest(mac, self._mac(header, payload)):
            return "HMAC verification failed (tampered with, or signed with another key)"
        return None

    def _quarantine(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.rejected-{stamp}")
        os.replace(self.path, target)
        log.critical("REFUSED state snapshot %s: %s. It was NOT loaded and was moved to %s; "
                     "the scheduler starts with an empty state", self.path, reason, target)


def capture(scheduler: Any) -> Any:
    """The scheduler's state as luigi's own dump() would pickle it."""
    return scheduler._state.get_state()


def restore(scheduler: Any, state: Any) -> None:
    """Install ``state`` the way luigi's SimpleTaskState.load() does, minus the unpickling."""
    task_state = scheduler._state
    task_state.set_state(state)
    task_state._status_tasks = collections.defaultdict(dict)
    for task in task_state._tasks.values():
        task_state._status_tasks[task.status][task.id] = task
    log.info("Restored %d tasks and %d workers from the signed snapshot",
             len(task_state._tasks), len(task_state._active_workers))
