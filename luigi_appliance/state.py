"""Signed, crash-safe snapshots of the scheduler's state.

Stock luigid pickles its state only at shutdown, in place, and unpickles whatever it finds, so
anyone who can write the file runs code as the scheduler. Here a snapshot is

    MAGIC (8 bytes) | VERSION (1 byte) | HMAC-SHA256 over MAGIC+VERSION+payload (32 bytes) | payload

written to a temporary file, fsync'd and renamed over the previous one, every interval and at
shutdown. A snapshot whose MAC does not verify is never unpickled: it is moved aside and the
scheduler starts empty.

The payload is a dict: the payload format, the snapshot's generation (one more at every write),
luigi's own state and the worker bindings. The generation last written is also kept outside the
snapshot, in ``state.generation``, so a validly signed but older snapshot put back (a backup, a
copy from another disk) is noticed: warned about, or with ``[state] refuse_stale_snapshot``
refused like a bad MAC. Payloads of the first format (luigi's state tuple alone) still load.

The scheduler never follows a symbolic link in its state directory: the files it reads there are
opened with O_NOFOLLOW or checked first, and what it writes goes to a new temporary file
(O_EXCL|O_NOFOLLOW) renamed over the target.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luigi_appliance.errors import StateError
from luigi_appliance.journald.fields import of_kind
from luigi_appliance.luigi_internals.scheduler import install_state, luigi_state
from luigi_appliance.secret_values import read_secret_file, write_private_file

log = logging.getLogger(__name__)

MAGIC = b"LAPSTATE"
VERSION = 1
_HEADER = len(MAGIC) + 1
_MAC_LEN = hashlib.sha256().digest_size
MIN_KEY_BYTES = 32
# Payload formats: 1 was luigi's get_state() tuple alone; 2 is the dict built by capture().
PAYLOAD_FORMAT = 2


def refuse_symlink(path: Path) -> None:
    """Raise StateError if ``path`` is a symbolic link (the scheduler follows none in its state dir)."""
    if path.is_symlink():
        raise StateError(f"{path} is a symbolic link; the scheduler does not follow links in its state "
                         "directory (put the file itself there)")


def _open_nofollow(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path)
        raise


def load_or_create_key(path: Path) -> bytes:
    """The HMAC key kept in ``path`` (hex), created 0600 on first start."""
    refuse_symlink(path)
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
        try:
            # A new temporary file (random name, O_EXCL|O_NOFOLLOW, 0600 set on the descriptor),
            # fsync'd and renamed over the snapshot: a planted file or link is never written through.
            write_private_file(self.path, blob)
        except OSError as exc:
            raise StateError(f"cannot write state snapshot {self.path}: {exc.strerror}") from exc
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)

    def read(self) -> Any | None:
        """The verified state, or None when there is none or it was rejected (and moved aside)."""
        try:
            with os.fdopen(_open_nofollow(self.path), "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            log.info("No state snapshot at %s; starting with an empty state", self.path)
            return None
        except OSError as exc:
            raise StateError(f"cannot read state snapshot {self.path}: {exc.strerror}") from exc
        return self.decode_blob(blob, on_rejected=self.quarantine)

    def decode_blob(self, blob: bytes, on_rejected: Callable[[str], None] | None = None) -> Any | None:
        """The verified, unpickled state in ``blob`` (as ``encode`` made it), or None when it is
        rejected: ``on_rejected`` is told why (by default it is logged at ERROR)."""
        reason = self._verify(blob)
        if reason is None:
            try:
                return pickle.loads(blob[_HEADER + _MAC_LEN:])  # noqa: S301 - only after the MAC verified
            except Exception as exc:  # signed by us, but written by an incompatible version
                reason = f"signed snapshot could not be decoded ({type(exc).__name__})"
        if on_rejected is None:
            log.error("REFUSED a state snapshot: %s. It was NOT loaded", reason)
        else:
            on_rejected(reason)
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

    def quarantine(self, reason: str) -> None:
        """Move the snapshot aside (never loaded) and say so at CRITICAL: the scheduler starts empty."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.rejected-{stamp}")
        os.replace(self.path, target)
        log.critical("REFUSED state snapshot %s: %s. It was NOT loaded and was moved to %s; "
                     "the scheduler starts with an empty state", self.path, reason, target,
                     extra=of_kind("snapshot_refused"))


@dataclass(frozen=True)
class Snapshot:
    """What a verified snapshot holds."""

    generation: int
    luigi_state: Any  # luigi's SimpleTaskState.get_state() tuple
    worker_bindings: dict[str, str]
    # The approval requests (approvals/book.py export); None in snapshots from before approvals.
    approvals: dict[str, Any] | None = None


@dataclass(frozen=True)
class EncodedSnapshot:
    generation: int
    blob: bytes


def capture(scheduler: Any, worker_bindings: dict[str, str], generation: int) -> dict[str, Any]:
    """The payload of a snapshot: luigi's state as its own dump() would pickle it, and ours."""
    payload = {"format": PAYLOAD_FORMAT, "generation": generation,
               "luigi": luigi_state(scheduler), "worker_bindings": worker_bindings}
    # In the same payload as the tasks: a restore never has a held task without its request.
    export = getattr(scheduler, "export_approvals", None)
    approvals = export() if export is not None else None
    if approvals is not None:
        payload["approvals"] = approvals
    return payload


def decode(payload: Any) -> Snapshot | str:
    """The snapshot in a verified payload, or why it cannot be used."""
    if isinstance(payload, tuple):
        return Snapshot(0, payload, {})  # format 1: before generations and persistent bindings
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), int):
        return "signed snapshot has no payload format"
    if payload["format"] != PAYLOAD_FORMAT:
        return f"unsupported payload format {payload['format']} (written by another luigi-appliance version)"
    generation, luigi_state, bindings = payload.get("generation"), payload.get("luigi"), payload.get("worker_bindings")
    if not isinstance(generation, int) or not isinstance(luigi_state, tuple) or not isinstance(bindings, dict):
        return "signed snapshot payload is incomplete"
    approvals = payload.get("approvals")
    if approvals is not None and not isinstance(approvals, dict):
        return "signed snapshot's approval requests are not readable"
    return Snapshot(generation, luigi_state, bindings, approvals)


def restore(scheduler: Any, snapshot: Snapshot) -> None:
    """Install luigi's state the way its SimpleTaskState.load() does, minus the unpickling."""
    load_approvals = getattr(scheduler, "load_approvals", None)
    if load_approvals is not None:
        try:
            load_approvals(snapshot.approvals)
        except ValueError as exc:
            # Starting without them would let every task that waits for approval run: refuse.
            raise StateError(f"cannot restore the approval requests of the state snapshot: {exc}. The "
                             "snapshot was left as it is; see docs/approvals.md") from None
    size = install_state(scheduler, snapshot.luigi_state)
    log.info("Restored %d tasks, %d workers and %d worker bindings from the signed snapshot (generation %d)",
             size.tasks, size.workers, len(snapshot.worker_bindings), snapshot.generation)


class GenerationFile:
    """The generation of the last snapshot written, kept next to it (not inside it)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> int:
        """The recorded generation; 0 when none was recorded yet."""
        try:
            with os.fdopen(_open_nofollow(self.path), "rb") as fh:
                text = fh.read(64).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StateError(f"cannot read the state generation file {self.path}: {exc.strerror}") from exc
        if not text.isdigit():
            raise StateError(f"state generation file {self.path} does not hold a generation number; "
                             "remove it to accept the snapshot that is there")
        return int(text)

    def write(self, generation: int) -> None:
        try:
            write_private_file(self.path, f"{generation}\n".encode())
        except OSError as exc:
            raise StateError(f"cannot write the state generation file {self.path}: {exc.strerror}") from exc


class StateStore:
    """The signed snapshot and its generation: stale snapshots are warned about or refused."""

    def __init__(self, snapshot: SignedSnapshotFile, generations: GenerationFile, refuse_stale: bool = False):
        self.snapshot = snapshot
        self.generations = generations
        self.refuse_stale = refuse_stale
        self._generation = 0

    @property
    def path(self) -> Path:
        return self.snapshot.path

    def load(self) -> Snapshot | None:
        """The snapshot to restore, or None to start empty (none there, or it was refused)."""
        last = self.generations.read()
        self._generation = last
        if last and not os.path.lexists(self.path):
            log.warning("No state snapshot at %s although generation %d was written (see %s): it was "
                        "removed; starting with an empty state", self.path, last, self.generations.path)
        payload = self.snapshot.read()
        if payload is None:
            return None
        decoded = decode(payload)
        if isinstance(decoded, str):
            self.snapshot.quarantine(decoded)
            return None
        if decoded.generation < last:
            stale = (f"snapshot generation {decoded.generation} is older than the last one written, {last} "
                     f"(recorded in {self.generations.path})")
            if self.refuse_stale:
                self.snapshot.quarantine(f"stale: {stale}; [state] refuse_stale_snapshot = true")
                return None
            log.warning("Restoring an OLD state snapshot %s: %s. It was put back or a newer one was lost; "
                        "tasks, workers and worker bindings are as they were then. Set [state] "
                        "refuse_stale_snapshot = true to refuse such a snapshot", self.path, stale)
        self._generation = max(last, decoded.generation)
        return decoded

    def next_generation(self) -> int:
        """The generation of the next snapshot, taken by the scheduler itself (the snapshot may be
        encoded in a forked child, whose count the scheduler would never see)."""
        self._generation += 1
        return self._generation

    def encode(self, scheduler: Any, worker_bindings: dict[str, str], generation: int) -> EncodedSnapshot:
        """Capture the state under ``generation``: from one instant (the loop, or a child forked
        from it)."""
        payload = capture(scheduler, worker_bindings, generation)
        return EncodedSnapshot(generation, self.snapshot.encode(payload))

    def write(self, encoded: EncodedSnapshot) -> None:
        """Write the snapshot, then record its generation (a crash between leaves the record behind,
        which only makes the next start accept a newer snapshot)."""
        self.snapshot.write(encoded.blob)
        self.generations.write(encoded.generation)
