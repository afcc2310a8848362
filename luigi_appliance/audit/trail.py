"""The audit trail: one JSON line per authentication and per state-changing call, hash-chained,
with signed checkpoints (the format: chain.py).

Except workers' heartbeats: luigi's worker pings every second and asks for work in a loop, so
successful ``ping`` and ``get_work`` calls made almost all of the trail while saying little an
auditor needs (a task a worker was given is in the trail with the add_task that reports its
outcome, and in the task history, when there is one, as a RUNNING event with the principal).
They are left out unless ``[audit] heartbeats`` is on; a refused one is always written.

Lines go to the audit file (``[audit] file``, reopened when logrotate moves it) and, when
``[audit] stderr`` is on, to the journal, prefixed ``audit: ``: on stderr, or, when logsetup chose
journald's native protocol, as one entry per line with its fields (PRINCIPAL, REMOTE_ADDR,
OUTCOME, TASK_ID, TASK_FAMILY, a MESSAGE_ID per kind of event: journal/fields.py). The
scheduler's loop only puts a tuple on a queue; a writer thread formats, chains and writes (the
journal's entries too), so neither a slow disk nor JSON encoding and hashing stall the loop; it
writes what has gathered in few writes (WRITE_BATCH lines each), one line per record all the
same. Nothing else writes to these files: audit lines never reach the ordinary log handlers (the
journal's entries go to the native handler itself, not through the loggers).

The chain continues across logrotate's moves (it lives in this object) and across restarts: at
start the head is the last chained record in the last TAIL_BYTES of the live file; when the file
has none (logrotate moved it away while the scheduler was stopped), it is the head file in the
state directory (HEAD_FILE, rewritten after every write), else the chain starts at seq 1.

The head file is replaced by a rename, so it holds a whole head, the previous one or the new
one; it is not fsync'd because neither is the audit file: after a power cut it may be older than
the last records written, and then the records lost with the cut show as a break at that restart
(``audit verify`` reports it), never as a chain that silently agrees. A head file that is not a
head (edited) stops the start: see ``find_head``.

A crash while writing may leave an incomplete last line (a power cut, a full disk). The chain
then continues after the last intact record before it; the damaged bytes stay in the file, are
ended with a newline, and the next run records an ``audit_damaged_tail`` line naming the seq
after which they are (and ``audit verify`` reports them): the chain is never restarted because
its end is damaged.

Checkpoints (when a signing key is given: serve always gives one, see signing.py) are written
at start, every ``[audit] checkpoint_interval`` while records are written, and at close after
the queued records; each also goes to the journal through the ``luigi_appliance.audit`` logger
as ``audit checkpoint: `` and its line.

Nothing secret is ever passed here: callers give names, addresses, methods, task ids, outcomes.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from luigi_appliance.audit.chain import CHECKPOINT, GENESIS, chain, key_id, record_hash, signed_message
from luigi_appliance.audit.settings import AuditSettings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.journald import fields as journal_fields
from luigi_appliance.journald import handler as journal_handler

MAX_FIELD = 200
FLUSH_INTERVAL = 0.2  # seconds; a crash loses at most this much of the trail
# Lines per write: each write checks whether logrotate moved the file (a stat), which per line
# was a quarter of the scheduler's CPU while a worker added 100k tasks.
WRITE_BATCH = 1000
# How much of the live file's end is read at start to find the chain's head: far more than a
# line (fields are clipped to MAX_FIELD), little to read.
TAIL_BYTES = 1 << 20
HEAD_FILE = "audit-chain.head"
_ALWAYS = frozenset({"event", "principal", "source", "outcome"})
HEARTBEAT_METHODS = frozenset({"ping", "get_work"})

# The journal's copy of the checkpoints, and the writer's own errors.
journal = logging.getLogger("luigi_appliance.audit")
# The journal's copy of every line, with its fields (_Journal).
events = logging.getLogger("luigi_appliance.audit.events")


def _clip(value: Any) -> Any:
    # Attacker-chosen strings (user names, task ids) are bounded so a 10k-character name cannot
    # flood the trail.
    if isinstance(value, str) and len(value) > MAX_FIELD:
        return value[:MAX_FIELD] + f"...({len(value)} chars)"
    return value


@dataclass
class AuditStats:
    """Counters since the process started, for /metrics (metrics/catalog.py audit_*)."""

    records: int = 0
    checkpoints: int = 0
    write_failures: int = 0


@dataclass(frozen=True)
class Head:
    """Where the chain continues: the last record's seq and hash (0 and GENESIS for a new chain),
    what it was found in, and what follows it in the live file that is not part of the chain."""

    seq: int
    hash: str
    origin: str
    damaged_bytes: int = 0


def _chained(line: bytes) -> dict[str, Any] | None:
    """The record on ``line`` if it is an intact link (its hash matches its body), else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(record, dict) and isinstance(record.get("seq"), int) and isinstance(record.get("prev"), str)
            and isinstance(record.get("hash"), str)):
        return None
    try:
        intact = record_hash(record) == record["hash"]
    except (TypeError, ValueError):  # a field that is not ASCII-encodable JSON
        return None
    return record if intact else None


def _file_head(path: Path) -> Head | None:
    """The last intact record among the last TAIL_BYTES of ``path``, or None when there is none."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            fh.seek(start)
            tail = fh.read(TAIL_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplianceError(f"cannot read the audit log {path} ([audit] file) to continue its chain: "
                             f"{exc.strerror}") from None
    lines = tail.split(b"\n")
    if start > 0:
        lines = lines[1:]  # begins inside a line
    end = len(tail)  # where the line looked at ends (its newline, if it has one)
    for line in reversed(lines):
        record = _chained(line)
        if record is not None:
            return Head(record["seq"], record["hash"], str(path), damaged_bytes=max(0, len(tail) - end - 1))
        end -= len(line) + 1
    return None


def read_head_file(path: Path) -> Head | None:
    """The head kept in ``path`` (JSON ``{"seq": ..., "hash": ...}``), None when there is none;
    ApplianceError when it is not a head."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            text = fh.read()
    except (FileNotFoundError, NotADirectoryError):  # the state directory's own checks say why
        return None
    except OSError as exc:
        raise ApplianceError(f"cannot read the audit chain's head {path}: {exc.strerror}") from None
    try:
        kept = json.loads(text)
        seq, digest = kept["seq"], kept["hash"]
        valid = isinstance(seq, int) and seq >= 1 and isinstance(digest, str) and len(digest) == 64 \
            and all(c in "0123456789abcdef" for c in digest)
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise ApplianceError(f"{path} does not hold the audit chain's head (JSON seq and hash); if the "
                             f"audit log's end was lost with it, remove {path} to start a new chain at "
                             f"seq 1 (audit verify will report the break)")
    return Head(seq, digest, f"{path}")


def find_head(audit_file: Path, head_file: Path | None) -> Head:
    """Where the chain of ``audit_file`` continues (see the module's doc); ApplianceError when
    the live file cannot be read or the head file is damaged. Reads, never writes."""
    head = _file_head(audit_file)
    if head is not None:
        return head
    kept = read_head_file(head_file) if head_file is not None else None
    return kept if kept is not None else Head(0, GENESIS, "none")


class _Sink:
    """One destination of the trail's lines; keeps the reason of its failure episode, if any."""

    name: str
    failing: str | None = None
    failures: int = 0

    def write(self, text: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""


class _AuditFile(_Sink):
    """The audit file, appended with one write(2) per batch, reopened when its path names another
    file or none (logrotate moved it; ``create`` made a new one)."""

    def __init__(self, path: Path):
        self.name = str(path)
        self._path = path
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None
        self._open()
        # A crash or a failed write may have left part of a line: the next write starts a new one.
        self._partial = _ends_inside_a_line(path)

    def _open(self) -> None:
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)

    def _reopen_if_moved(self) -> None:
        try:
            st = os.stat(self._path)
            moved = (st.st_dev, st.st_ino) != self._id
        except FileNotFoundError:
            moved = True
        if moved or self._fd is None:
            self.close()
            self._open()
            self._partial = _ends_inside_a_line(self._path)

    def write(self, text: str) -> None:
        self._reopen_if_moved()
        assert self._fd is not None
        data = memoryview((("\n" if self._partial else "") + text).encode("ascii"))
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:
            self._partial = 0 < written < len(data) or (self._partial and written == 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _ends_inside_a_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


class _Stderr(_Sink):
    """stderr, for journald: every line prefixed ``audit: ``."""

    name = "stderr"

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        self._stream.write("audit: " + text.replace("\n", "\naudit: ").removesuffix("audit: "))
        self._stream.flush()


class _Journal(_Sink):
    """The journal through the native handler: one entry per line, its fields from the line. The
    handler's own fallback (stderr) takes what journald does not, so this sink never fails; it
    bypasses the loggers' levels, as the stderr sink does: ``[audit] stderr`` means every line."""

    name = "journal"

    def __init__(self, handler: journal_handler.JournalHandler):
        self._handler = handler

    def write(self, text: str) -> None:
        for line in text.splitlines():
            record = json.loads(line)
            kind = journal_fields.audit_kind(record.get("event"), record.get("outcome"))
            self._handler.send_line(events, kind.level, "audit: " + line, journal_fields.audit_extra(record, kind))


def _journal_sink() -> _Sink:
    handler = journal_handler.installed()
    return _Journal(handler) if handler is not None else _Stderr(sys.stderr)


def _save_head(path: Path, seq: int, digest: str) -> None:
    """Replace the head file by a rename (the temporary's name is one prepare_state_dir removes
    after a crash); no fsync: see the module's doc."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AuditLog:
    """The audit trail of one scheduler process; ``close()`` writes what is queued.

    ``signing_key`` signs the checkpoints and ``head_file`` keeps the chain's head for a restart
    after the live file was rotated away (signing.open_audit_log gives both, as serve uses it);
    without them the trail is chained all the same, without checkpoints.
    """

    def __init__(self, settings: AuditSettings, *, signing_key: Ed25519PrivateKey | None = None,
                 head_file: Path | None = None):
        self.path = settings.file
        self._heartbeats = settings.heartbeats
        self._checkpoint_interval = settings.checkpoint_interval
        self._key = signing_key
        self._key_id = key_id(signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)) if signing_key is not None else ""
        self._head_file = head_file
        self.stats = AuditStats()
        head = find_head(settings.file, head_file)
        try:
            self._file = _AuditFile(settings.file)
        except OSError as exc:
            raise ApplianceError(f"cannot open the audit log {settings.file} ([audit] file): "
                                 f"{exc.strerror}") from None
        self._sinks: list[_Sink] = [self._file, *([_journal_sink()] if settings.stderr else [])]
        # Written by the writer thread only (and here, before it starts).
        self._seq, self._prev = head.seq, head.hash
        self._unsigned = 0  # records written since the last checkpoint
        self._head_failing = False
        self._last_checkpoint = time.monotonic()
        self._announce(head)
        if self._key is not None:
            self._checkpoint("start")
        if head.damaged_bytes:
            self._write([self._link({"time": _stamp(time.time()), "event": "audit_damaged_tail", "principal": None,
                                     "source": "scheduler", "outcome": "continued", "after_seq": head.seq,
                                     "bytes": head.damaged_bytes})])
        # The loop only appends a tuple (deque.append is atomic and wakes nobody: waking a thread per
        # line handed it the GIL once per RPC); this thread formats and writes every FLUSH_INTERVAL.
        self._pending: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._thread.start()

    def _announce(self, head: Head) -> None:
        if head.damaged_bytes:
            journal.warning("The audit log %s ends with %d bytes after its last intact record (seq %d) that are "
                            "not part of the chain (a crash while writing, or an edit); they are kept, and the "
                            "chain continues after seq %d (audit verify reports them)",
                            self.path, head.damaged_bytes, head.seq, head.seq)
        elif head.seq == 0:
            journal.info("Starting the audit chain at seq 1 in %s", self.path)
        else:
            journal.info("Continuing the audit chain after seq %d (from %s)", head.seq, head.origin)

    def audits_rpc(self, method: str, status: int) -> bool:
        """Whether a call of ``method`` answered with ``status`` gets a line (see the module's doc)."""
        return self._heartbeats or status >= 400 or method not in HEARTBEAT_METHODS

    def record(self, event: str, *, principal: str | None, source: str, outcome: str, **fields: Any) -> None:
        """Append one line: UTC time, event, principal, source address, outcome and any fields."""
        self.stats.records += 1
        self._pending.append((time.time(), {"event": event, "principal": principal, "source": source,
                                            "outcome": outcome, **fields}))

    def _write_loop(self) -> None:
        while not self._closing.wait(FLUSH_INTERVAL):
            self._flush()
            if self._key is not None and self._unsigned and \
                    time.monotonic() - self._last_checkpoint >= self._checkpoint_interval:
                self._checkpoint("interval")
        self._flush()
        if self._key is not None:
            self._checkpoint("shutdown")

    def _flush(self) -> None:
        while self._pending:
            self._write([self._link(_fields(*self._pending.popleft()))
                         for _ in range(min(WRITE_BATCH, len(self._pending)))])

    def _link(self, record: dict[str, Any]) -> str:
        """``record`` as the chain's next line."""
        self._seq += 1
        linked = chain(record, self._seq, self._prev)
        self._prev = linked["hash"]
        return json.dumps(linked, ensure_ascii=True)

    def _checkpoint(self, reason: str) -> None:
        assert self._key is not None
        stamp = _stamp(time.time())
        signature = self._key.sign(signed_message(self._seq + 1, self._prev, stamp))
        line = self._link({"time": stamp, "event": CHECKPOINT, "principal": None, "source": "scheduler",
                           "outcome": "signed", "reason": reason, "key_id": self._key_id,
                           "signature": base64.b64encode(signature).decode("ascii")})
        self._write([line])
        self.stats.checkpoints += 1
        self._unsigned = 0
        self._last_checkpoint = time.monotonic()
        journal.info("audit checkpoint: %s", line)

    def _write(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n"
        for sink in self._sinks:
            try:
                sink.write(text)
            except (OSError, ValueError) as exc:  # ValueError: a closed stream
                self._failed(sink, getattr(exc, "strerror", None) or str(exc))
            else:
                self._recovered(sink)
        self._unsigned += len(lines)
        if self._head_file is not None and self._file.failing is None:
            try:
                _save_head(self._head_file, self._seq, self._prev)
            except OSError as exc:
                if not self._head_failing:  # once per episode, as the sinks
                    journal.error("Cannot keep the audit chain's head in %s: %s", self._head_file, exc.strerror)
                self._head_failing = True
            else:
                self._head_failing = False

    def _failed(self, sink: _Sink, reason: str) -> None:
        """Count a failed write; one error line per failure episode, not a traceback per write."""
        if sink is self._file:  # the metric counts the audit file's (metrics/catalog.py)
            self.stats.write_failures += 1
        sink.failures += 1
        if sink.failing is None:
            sink.failing = reason
            journal.error("Cannot write the audit trail to %s: %s; lines are lost there until it can be written "
                          "again", sink.name, reason)

    def _recovered(self, sink: _Sink) -> None:
        if sink.failing is not None:
            journal.warning("Writing the audit trail to %s again, after %d failed writes (%s)",
                            sink.name, sink.failures, sink.failing)
            sink.failing, sink.failures = None, 0

    def close(self) -> None:
        """Write what is queued and the closing checkpoint, then close the file."""
        self._closing.set()
        self._thread.join(10)
        for sink in self._sinks:
            sink.close()


def _stamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _fields(when: float, fields: dict[str, Any]) -> dict[str, Any]:
    # Time first; event, principal, source and outcome always; other fields only when known.
    return {"time": _stamp(when), **{k: _clip(v) for k, v in fields.items() if v is not None or k in _ALWAYS}}
