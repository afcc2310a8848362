"""The files of an audit trail: finding logrotate's rotations, putting them oldest first, and
reading them line by line (gzip, xz and bzip2 ones transparently, by their magic bytes, not their
names) as ``Entry`` values parsed as far as they parse.

Files are never held whole: ``read_file`` reads a file only up to its first chained record (all
that ordering needs) and ``entries`` streams its lines, counting them and noting where a
compressed stream broke off. A file without a chained record (empty, or only torn lines) keeps
its place in the names' order (NAME-DATE oldest date first, then NAME.N highest N first, then NAME).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luigi_appliance.audit import chain
from luigi_appliance.errors import ApplianceError

DAMAGED_TAIL = "audit_damaged_tail"  # trail.py's record after the damaged end of a file it continues
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))


@dataclass(frozen=True, slots=True)
class Position:
    """A line of one file of the trail, as ``FILE:LINE`` (the file as it was given)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class Entry:
    """One line of the trail, parsed as far as it parses. Only what the checks need is kept (a
    trail is millions of lines): the whole record for checkpoints and damaged-tail records, the
    line itself when asked (``fields``, for export)."""

    at: Position
    raw: str  # the line, or "" when not kept
    json_object: bool  # False: a torn line, not a JSON object
    chained: bool = False  # has seq, prev and hash
    seq: int = 0
    prev: str = ""
    hash: str = ""
    intact: bool = False  # the hash is the hash of the content
    event: str | None = None
    time: str | None = None
    record: dict[str, Any] | None = None  # kept for checkpoints and DAMAGED_TAIL only
    terminated: bool = True  # ended with a newline

    def label(self) -> str:
        return f"{self.at} (seq {self.seq})"

    def fields(self) -> dict[str, Any]:
        """The whole record (read again from the kept line)."""
        record = json.loads(self.raw)
        assert isinstance(record, dict)
        return record


def parse_line(at: Position, line: str, terminated: bool, keep_line: bool) -> Entry:
    """One line as an ``Entry``: as far as it parses; the line itself kept when asked."""
    raw = line if keep_line else ""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested beyond what json parses
        record = None
    if not isinstance(record, dict):
        return Entry(at, raw, False, terminated=terminated)
    event, time = record.get("event"), record.get("time")
    event = event if isinstance(event, str) else None
    time = time if isinstance(time, str) else None
    seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
    if not (type(seq) is int and isinstance(prev, str) and isinstance(digest, str)):
        return Entry(at, raw, True, event=event, time=time, terminated=terminated)
    kept = record if event in (chain.CHECKPOINT, DAMAGED_TAIL) else None
    return Entry(at, raw, True, True, seq, prev, digest, intact(record), event, time, kept, terminated)


def intact(record: dict[str, Any]) -> bool:
    """Whether the record's hash is the hash of its content (False too when a field cannot be
    hashed at all: a prev that is not ASCII)."""
    try:
        return chain.record_hash(record) == record.get("hash")
    except (ValueError, TypeError, KeyError):
        return False


@dataclass
class TrailFile:
    """One file of the trail: what is known of it without holding its lines. ``lines`` and
    ``damage`` are those of the last complete pass of ``entries`` over it."""

    path: Path
    shown: str
    first_seq: int | None = None  # of its first chained record
    lines: int = 0
    damage: str | None = None  # the compressed stream broke off: why

    def entries(self, keep_lines: bool = False, limit: int | None = None) -> Iterator[Entry]:
        """Its lines, parsed, one at a time (the line itself kept when asked); at most ``limit``
        lines (a pass after verification reads no more than was verified, however the live
        file grew since). ApplianceError when it cannot be read."""
        for count, entry, damage in _parsed(self.path, self.shown, keep_lines, limit):
            if entry is None:  # the end: how many lines, and whether the stream broke off
                self.lines, self.damage = count, damage
            else:
                yield entry


def _decompressing(raw: io.BufferedReader) -> tuple[io.BufferedIOBase, str | None]:
    """``raw`` decompressed (known by its magic bytes, not its name), and the compression's name."""
    magic = raw.peek(6)[:6]
    kind = next((name for prefix, name in _COMPRESSED if magic.startswith(prefix)), None)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb"), kind
    if kind == "xz":
        return lzma.LZMAFile(raw, "rb"), kind
    if kind == "bzip2":
        return bz2.BZ2File(raw, "rb"), kind
    return raw, None


def _parsed(path: Path, shown: str, keep_lines: bool,
            limit: int | None) -> Iterator[tuple[int, Entry | None, str | None]]:
    """(lines so far, the entry or None at the end, why a compressed stream broke off)."""
    number, damage = 0, None
    try:
        with path.open("rb") as raw:
            stream, kind = _decompressing(raw)
            try:
                for number, data in enumerate(stream, 1):
                    if limit is not None and number > limit:
                        number -= 1
                        break
                    line = data.decode("utf-8", errors="replace")
                    text = line.removesuffix("\n")
                    yield number, parse_line(Position(shown, number), text, text != line, keep_lines), None
            except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
                damage = f"{kind} data damaged ({exc})"
    except OSError as exc:
        raise ApplianceError(f"cannot read the audit file {path}: {exc.strerror}") from None
    yield number, None, damage


def read_file(path: Path, shown: str) -> TrailFile:
    """One file of the trail, read up to its first chained record (what ordering needs; the
    rest is streamed by ``TrailFile.entries``). ApplianceError when it cannot be read."""
    trail_file = TrailFile(path, shown)
    for _count, entry, _damage in _parsed(path, shown, False, None):
        if entry is not None and entry.chained:
            trail_file.first_seq = entry.seq
            break
    return trail_file


_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<n>\d+)|-(?P<date>\d[\d-]*))?(?:\.(?:gz|xz|bz2))?$")


def _name_age(path: Path) -> tuple[int, int, str]:
    """Sort key, oldest first, from logrotate's names: NAME-DATE (dateext), NAME.N, NAME."""
    match = _ROTATED.match(path.name)
    assert match is not None  # the pattern matches every name
    if match["date"]:
        return (0, int(match["date"].replace("-", "")[:20] or 0), path.name)
    if match["n"]:
        return (1, -int(match["n"]), path.name)
    return (2, 0, path.name)


def order_files(files: list[TrailFile]) -> tuple[list[TrailFile], str]:
    """Oldest first: by the seq of each file's first chained record, a file without one in its
    names' place; and how ("seq", "name" or "seq and name")."""
    by_name = sorted(files, key=lambda f: _name_age(f.path))
    slots = [i for i, f in enumerate(by_name) if f.first_seq is not None]
    by_seq = sorted((by_name[i] for i in slots), key=lambda f: f.first_seq or 0)
    ordered = list(by_name)
    for slot, item in zip(slots, by_seq, strict=True):
        ordered[slot] = item
    how = "seq" if len(slots) == len(files) else ("name" if not slots else "seq and name")
    return ordered, how


def rotated_siblings(path: Path) -> list[Path]:
    """``path`` and logrotate's rotations of it in its directory (NAME.N, NAME-DATE, compressed
    or not; NAME-DATE.EXT for ``extension``), those that exist."""
    stem, suffix = path.stem, path.suffix
    patterns = [re.compile(re.escape(path.name) + r"(?:\.\d+|-\d[\d-]*)?(?:\.(?:gz|xz|bz2))?")]
    if suffix:
        patterns.append(re.compile(re.escape(stem) + r"-\d[\d-]*" + re.escape(suffix) + r"(?:\.(?:gz|xz|bz2))?"))
    try:
        names = [p for p in path.parent.iterdir() if any(pattern.fullmatch(p.name) for pattern in patterns)]
    except OSError as exc:
        raise ApplianceError(f"cannot list {path.parent} for the audit trail ([audit] file {path}): "
                             f"{exc.strerror}") from None
    return sorted(p for p in names if p.is_file())
