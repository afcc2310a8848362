"""The spool: events the database could not take yet, on disk, in order.

One append-only file of frames in the state directory. A frame is one batch of events::

    b"LS" | payload length (4 bytes, big endian) | CRC-32 of the payload (4 bytes) | JSON payload

Each append is fsync'd before the writer moves on. Replay reads frames from the offset in
``<spool>.offset`` and advances it after each batch the database committed; when everything is
replayed both files are removed. A crash between a commit and the offset update replays a batch
again, which the database ignores (events carry a unique uid).

At open, every frame from the offset on is checked. A torn or corrupt frame (a crash in the
middle of an append, a damaged disk block) ends the readable spool: the bytes from there on are
moved to ``<spool>.damaged-<time>`` and the loss is logged as an error, never skipped silently.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.history.events import Event

# In [state] dir, with its replay offset beside it (NAME.offset).
SPOOL_NAME = "history-spool"

log = logging.getLogger(__name__)

MAGIC = b"LS"
_HEADER = struct.Struct(">2sII")


@dataclass(frozen=True)
class Frame:
    offset: int
    end: int
    events: list[Event]


class SpoolCorrupt(Exception):
    def __init__(self, offset: int, reason: str):
        super().__init__(f"at byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


def encode_frame(events: list[Event]) -> bytes:
    payload = json.dumps([e.to_json() for e in events], separators=(",", ":")).encode()
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _read_frame(fh, offset: int, size: int) -> Frame:
    header = fh.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise SpoolCorrupt(offset, f"torn frame header ({len(header)} of {_HEADER.size} bytes)")
    magic, length, crc = _HEADER.unpack(header)
    if magic != MAGIC:
        raise SpoolCorrupt(offset, "no frame marker")
    end = offset + _HEADER.size + length
    if end > size:
        raise SpoolCorrupt(offset, f"torn frame ({size - offset - _HEADER.size} of {length} payload bytes)")
    payload = fh.read(length)
    if zlib.crc32(payload) != crc:
        raise SpoolCorrupt(offset, "checksum mismatch")
    try:
        events = [Event.from_json(item) for item in json.loads(payload)]
    except (ValueError, TypeError) as exc:
        raise SpoolCorrupt(offset, f"undecodable payload: {exc}") from None
    return Frame(offset, end, events)


class Spool:
    """Append-only, checksummed, fsync'd event spool with a replay offset. Not thread-safe:
    only the history writer thread uses it."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.offset_path = path.with_name(path.name + ".offset")
        self.limit = limit
        self.size = 0
        self.offset = 0
        self.pending_events = 0

    def open(self) -> None:
        """Check the spool left by a previous run; cut off a torn or corrupt tail (logged)."""
        self.size = self.path.stat().st_size if self.path.exists() else 0
        self.offset = self._read_offset()
        self.pending_events = 0
        if self.size == 0:
            return
        try:
            for frame in self.frames():
                self.pending_events += len(frame.events)
        except SpoolCorrupt as exc:
            self._set_aside(exc)
        if self.pending_events:
            log.warning("History spool %s holds %d event(s) not yet in the database; they are replayed first",
                        self.path, self.pending_events)

    def _read_offset(self) -> int:
        try:
            offset = int(self.offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        return offset if 0 <= offset <= self.size else 0

    def _set_aside(self, exc: SpoolCorrupt) -> None:
        damaged = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        with open(self.path, "rb") as src, open(damaged, "wb") as dst:
            src.seek(exc.offset)
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        with open(self.path, "r+b") as fh:
            fh.truncate(exc.offset)
            fh.flush()
            os.fsync(fh.fileno())
        log.error("History spool %s is damaged %s (%s): the %d byte(s) from there on cannot be read and were "
                  "moved to %s; the %d event(s) before it are kept and replayed", self.path, f"at byte {exc.offset}",
                  exc.reason, self.size - exc.offset, damaged, self.pending_events)
        self.size = exc.offset

    def frames(self, start: int | None = None) -> Iterator[Frame]:
        """Frames from ``start`` (default: the replay offset) to the end; SpoolCorrupt on damage."""
        offset = self.offset if start is None else start
        if offset >= self.size:
            return
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while offset < self.size:
                frame = _read_frame(fh, offset, self.size)
                yield frame
                offset = frame.end

    def append(self, events: list[Event]) -> bool:
        """Write one frame and fsync it; False (nothing written) when it would exceed the limit."""
        data = encode_frame(events)
        if self.size + len(data) > self.limit:
            return False
        # O_NOFOLLOW: the service account owns the state directory; never append through a link.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != self.size:
                # A partial earlier write (e.g. ENOSPC) left bytes behind: cut them off first.
                os.ftruncate(fd, self.size)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, self.size)
            raise
        finally:
            os.close(fd)
        self.size += len(data)
        self.pending_events += len(events)
        return True

    def next_batch(self, max_events: int) -> tuple[list[Event], int]:
        """Events from the replay offset, whole frames, about ``max_events``; and the offset after them."""
        events: list[Event] = []
        end = self.offset
        for frame in self.frames():
            events.extend(frame.events)
            end = frame.end
            if len(events) >= max_events:
                break
        return events, end

    def advance(self, end: int, count: int) -> None:
        """The database committed the events up to ``end``: move the replay offset there.

        The offset moves in memory first; OSError when it cannot be saved (disk full), and then
        a restart replays those events again, which the database skips (same uids).
        """
        self.offset = end
        self.pending_events -= count
        if self.offset >= self.size:
            self.clear()
            return
        tmp = self._offset_tmp()
        tmp.write_text(f"{end}\n")
        os.replace(tmp, self.offset_path)

    def _offset_tmp(self) -> Path:
        return self.offset_path.with_name(self.offset_path.name + ".tmp")

    def clear(self) -> None:
        for path in (self.path, self.offset_path, self._offset_tmp()):
            path.unlink(missing_ok=True)
        self.size = self.offset = self.pending_events = 0
