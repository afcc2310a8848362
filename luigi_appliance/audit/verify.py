"""``audit verify``: check an audit trail (the live file and logrotate's rotated ones) against its
hash chain and signed checkpoints (chain.py), and say exactly where it was changed.

Files are read whole, gzip, xz and bzip2 ones transparently (by their magic bytes, not their
names). They are put oldest first by the chain itself: by the seq of each file's first chained
record; a file without one (empty, or only torn lines) keeps its place in the names' order
(NAME-DATE oldest date first, then NAME.N highest N first, then NAME).

The records are then judged by seq, the identity the writer gave them, not by where they are:

* a record whose ``hash`` is not the hash of its content was edited;
* a second record with a seq another record has, and that is not the one the chain links, was
  inserted (so is a line that is JSON but no chained record, after the chain has begun);
* a record that comes after one with a higher seq was moved (the fewest records that explain
  the order are named: the longest increasing run of seqs stays put);
* seqs absent between the first and the last were deleted;
* a record whose ``prev`` is not the hash of the record with the seq before it follows a record
  that was rewritten (edited and re-hashed) or replaced: at a file boundary, a replaced file;
* a checkpoint whose key_id is not one of the public keys, or whose signature does not verify,
  is forged (or the records before it were rewritten after it was signed).

Everything up to the last good checkpoint is sealed by its signature; records after it (the
unsealed tail, normal while the scheduler runs) are not, and lines before the chain begins
(written before the appliance chained its trail) cannot be. A journal export (``checkpoints``)
adds what the files alone cannot show: a checkpoint there beyond the files' last record proves
the tail was cut, and one that differs from the files' record of the same seq proves that
record replaced.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import bz2
import enum
import gzip
import io
import itertools
import json
import lzma
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from luigi_appliance.audit import chain
from luigi_appliance.errors import ApplianceError

JOURNAL_MARK = "audit checkpoint: "
DAMAGED_TAIL = "audit_damaged_tail"  # trail.py's record after the damaged end of a file it continues
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))


class Severity(enum.IntEnum):
    """How much a finding weighs; the worst one decides the exit status."""

    INFO = 0  # said, changes nothing (where the given trail starts)
    UNSEALED = 1  # intact as far as it can be told, but not all of it is vouched for by a signature
    TAMPERED = 2  # the trail is not what the scheduler wrote


EXIT_INTACT = 0
EXIT_TAMPERED = 1
EXIT_UNREADABLE = 2
EXIT_UNSEALED = 3
_EXIT = {Severity.INFO: EXIT_INTACT, Severity.UNSEALED: EXIT_UNSEALED, Severity.TAMPERED: EXIT_TAMPERED}


@dataclass(frozen=True, slots=True)
class Position:
    """A line of one file of the trail, as ``FILE:LINE`` (the file as it was given)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """One finding: its kind (a short word scripts can match), where, and what it means."""

    kind: str
    severity: Severity
    message: str
    at: Position | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


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


def _entry(at: Position, line: str, terminated: bool, keep_line: bool) -> Entry:
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
    return Entry(at, raw, True, True, seq, prev, digest, _intact(record), event, time, kept, terminated)


def _intact(record: dict[str, Any]) -> bool:
    """Whether the record's hash is the hash of its content (False too when a field cannot be
    hashed at all: a prev that is not ASCII)."""
    try:
        return chain.record_hash(record) == record.get("hash")
    except (ValueError, TypeError, KeyError):
        return False


@dataclass
class TrailFile:
    """One file of the trail and its lines."""

    path: Path
    shown: str
    entries: list[Entry]
    damage: str | None = None  # the compressed stream broke off: why

    @property
    def first_seq(self) -> int | None:
        return next((e.seq for e in self.entries if e.chained), None)


@dataclass
class Report:
    """What verification found, and the trail's records: one per seq, in seq order (without the
    inserted ones)."""

    files: list[TrailFile]
    ordered_by: str
    problems: list[Problem] = field(default_factory=list)
    records: list[Entry] = field(default_factory=list)
    checkpoints: int = 0
    sealed_through: int | None = None  # seq of the last good checkpoint

    @property
    def severity(self) -> Severity:
        return max((p.severity for p in self.problems), default=Severity.INFO)

    @property
    def exit_code(self) -> int:
        return _EXIT[self.severity]

    @property
    def status(self) -> str:
        return {Severity.INFO: "intact", Severity.UNSEALED: "intact, not all sealed",
                Severity.TAMPERED: "TAMPERED"}[self.severity]

    def seq_range(self) -> tuple[int, int] | None:
        return (self.records[0].seq, self.records[-1].seq) if self.records else None

    def time_range(self) -> tuple[str, str] | None:
        times = [e.time for e in self.records if e.time is not None]
        return (min(times), max(times)) if times else None

    def summary(self) -> str:
        """The last line of the text report."""
        seqs, times = self.seq_range(), self.time_range()
        return (f"{self.status}: {len(self.records)} record(s), {self.checkpoints} checkpoint(s), "
                f"{len(self.files)} file(s) ordered by {self.ordered_by} "
                f"({', '.join(f.shown for f in self.files)}), "
                f"seq {f'{seqs[0]}..{seqs[1]}' if seqs else '-'}, time {f'{times[0]} .. {times[1]}' if times else '-'}")

    def as_json(self) -> dict[str, Any]:
        """The ``--format json`` document."""
        seqs, times = self.seq_range(), self.time_range()
        return {
            "status": {Severity.INFO: "intact", Severity.UNSEALED: "unsealed", Severity.TAMPERED: "tampered"}[
                self.severity], "exit_code": self.exit_code,
            "problems": [{"kind": p.kind, "severity": p.severity.name.lower(), "message": p.message,
                          "file": p.at.file if p.at else None, "line": p.at.line if p.at else None, "seq": p.seq}
                         for p in self.problems],
            "records": len(self.records), "checkpoints": self.checkpoints, "sealed_through_seq": self.sealed_through,
            "ordered_by": self.ordered_by,
            "files": [{"file": f.shown, "lines": len(f.entries), "first_seq": f.first_seq} for f in self.files],
            "seq_range": list(seqs) if seqs else None, "time_range": list(times) if times else None,
        }


# ---- keys --------------------------------------------------------------------------------------

def load_public_keys(pems: Iterable[tuple[str, bytes]]) -> dict[str, Ed25519PublicKey]:
    """key_id -> key for each (where it came from, PEM text); ApplianceError for one that is no
    Ed25519 public key."""
    keys: dict[str, Ed25519PublicKey] = {}
    for origin, pem in pems:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ApplianceError(f"{origin}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ApplianceError(f"{origin}: not an Ed25519 public key (the audit trail is signed with Ed25519)")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys[chain.key_id(raw)] = key
    return keys


def _signature_problem(record: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> tuple[str, str] | None:
    """(kind, why) when this checkpoint record is not signed by one of ``keys``; None when it is."""
    key_id, signature, time = record.get("key_id"), record.get("signature"), record.get("time")
    if not (isinstance(key_id, str) and isinstance(signature, str) and isinstance(time, str)):
        return "bad-signature", "a checkpoint without key_id, signature or time"
    key = keys.get(key_id)
    if key is None:
        known = ", ".join(sorted(keys))
        return "unknown-key", (f"signed with key_id {key_id}, not the public key given ({known}): "
                               "forged with another key, or signed by a key not given (--public-key)")
    try:
        key.verify(base64.b64decode(signature, validate=True),
                   chain.signed_message(int(record["seq"]), str(record["prev"]), time))
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad-signature", ("the signature does not verify: forged, or the records before it were "
                                 "rewritten after it was signed")
    return None


# ---- reading -----------------------------------------------------------------------------------

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


def read_file(path: Path, shown: str, keep_lines: bool = False) -> TrailFile:
    """One file of the trail, every line parsed as far as it parses (and kept, when asked); read
    line by line, a trail can be large. Of a compressed file whose data breaks off, what came
    before the break (it is evidence too)."""
    trail_file = TrailFile(path, shown, [])
    try:
        with path.open("rb") as raw:
            stream, kind = _decompressing(raw)
            try:
                for number, data in enumerate(stream, 1):
                    line = data.decode("utf-8", errors="replace")
                    text = line.removesuffix("\n")
                    trail_file.entries.append(_entry(Position(shown, number), text, text != line, keep_lines))
            except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as exc:
                trail_file.damage = f"{kind} data damaged ({exc})"
    except OSError as exc:
        raise ApplianceError(f"cannot read the audit file {path}: {exc.strerror}") from None
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


# ---- checking ----------------------------------------------------------------------------------

def _problem(kind: str, severity: Severity, message: str, entry: Entry | None = None) -> Problem:
    return Problem(kind, severity, message, entry.at if entry else None,
                   entry.seq if entry is not None and entry.chained else None)


def _span(entries: Sequence[Entry]) -> str:
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        return str(first.at)
    return f"{first.at}..{last.at.line}" if first.at.file == last.at.file else f"{first.at}..{last.at}"


def _belong(entries: Sequence[Entry]) -> str:
    return "it belongs" if len(entries) == 1 else "they belong"


def _is_checkpoint(entry: Entry) -> bool:
    return entry.event == chain.CHECKPOINT


def _seqs(entries: Sequence[Entry]) -> str:
    first, last = entries[0].seq, entries[-1].seq
    return f"seq {first}" if len(entries) == 1 else f"seq {first}..{last}"


def _runs(entries: Sequence[Entry]) -> Iterator[list[Entry]]:
    """Entries grouped into runs of adjacent lines of one file."""
    run: list[Entry] = []
    for entry in entries:
        if run and (entry.at.file != run[-1].at.file or entry.at.line != run[-1].at.line + 1):
            yield run
            run = []
        run.append(entry)
    if run:
        yield run


def _longest_increasing(entries: Sequence[Entry]) -> set[int]:
    """Indexes into ``entries`` of one longest run of strictly increasing seqs (patience sort);
    the records outside it are the fewest whose moves explain the order."""
    tails: list[int] = []  # tails[k]: index of the smallest last seq of an increasing run of k+1
    parent: list[int | None] = [None] * len(entries)
    tail_seqs: list[int] = []
    for i, entry in enumerate(entries):
        k = bisect.bisect_left(tail_seqs, entry.seq)
        parent[i] = tails[k - 1] if k else None
        if k == len(tails):
            tails.append(i)
            tail_seqs.append(entry.seq)
        else:
            tails[k] = i
            tail_seqs[k] = entry.seq
    kept: set[int] = set()
    node: int | None = tails[-1] if tails else None
    while node is not None:
        kept.add(node)
        node = parent[node]
    return kept


def _genuine(candidates: list[Entry], before: Entry | None, after: list[Entry]) -> Entry:
    """Of records sharing one seq, the one the chain links: an intact one whose prev is the hash
    of the record before it and whose hash the record after it names, else the one with either;
    among equals the first."""
    after_prevs = {a.prev for a in after}

    def links(candidate: Entry) -> int:
        if not candidate.intact:
            return -1
        back = before is not None and candidate.prev == before.hash
        return int(back) + int(candidate.hash in after_prevs)

    return max(candidates, key=links)  # max keeps the first of equals


@dataclass
class _Checker:
    keys: dict[str, Ed25519PublicKey]
    problems: list[Problem] = field(default_factory=list)
    edited: set[Position] = field(default_factory=set)

    def add(self, kind: str, severity: Severity, message: str, entry: Entry | None = None) -> None:
        self.problems.append(_problem(kind, severity, message, entry))

    def lines(self, files: list[TrailFile]) -> list[Entry]:
        """The chained entries, in order; every other line reported."""
        chained: list[Entry] = []
        unchained: list[Entry] = []
        stray: list[Entry] = []  # lines inside the chain that are no link, until the next link
        stray_after: Entry | None = None  # the link before them
        last_file = files[-1] if files else None
        for trail_file in files:
            for entry in trail_file.entries:
                if entry.chained:
                    if stray and not _is_checkpoint(entry):  # the writer's start checkpoint may come first
                        self._strays(stray, stray_after, entry)
                        stray = []
                    chained.append(entry)
                elif not entry.json_object and not entry.terminated and trail_file is last_file:
                    self.add("incomplete", Severity.UNSEALED, f"{entry.at}: the last line is not complete "
                             "(being written now, or cut off)", entry)
                elif chained:
                    if not stray:
                        stray_after = chained[-1]
                    stray.append(entry)
                else:
                    unchained.append(entry)
            if trail_file.damage:
                where = Position(trail_file.shown, len(trail_file.entries) + 1)
                self.problems.append(Problem("damaged", Severity.TAMPERED,
                                             f"{where}: {trail_file.damage}: what follows is lost", where))
        if stray:
            self._strays(stray, stray_after, None)
        if unchained:
            self.add("unchained", Severity.UNSEALED, f"{len(unchained)} record(s) without a hash chain before "
                     f"it begins ({_span(unchained)}): written before the trail was chained, not verifiable",
                     unchained[0])
        return chained

    def _strays(self, stray: list[Entry], before: Entry | None, after: Entry | None) -> None:
        """Lines between two links that are no link: the damaged end the writer found at a start
        (a crash while writing) when the next record but checkpoints says so (DAMAGED_TAIL after
        the link before them); otherwise torn or inserted lines."""
        if (after is not None and after.record is not None and before is not None
                and after.event == DAMAGED_TAIL and after.record.get("after_seq") == before.seq):
            self.add("damaged-tail", Severity.UNSEALED, f"{_span(stray)}: no record (a crash while writing, "
                     f"found by the writer at its next start: {after.label()}): what these bytes held is not "
                     "vouched for", stray[0])
            return
        for entry in stray:
            if not entry.json_object:
                self.add("torn", Severity.TAMPERED, f"{entry.at}: not a complete JSON record "
                         "(torn, truncated or edited)", entry)
            else:
                self.add("inserted", Severity.TAMPERED, f"{entry.at}: a record without seq, prev and hash "
                         "inside the chain: inserted", entry)

    def segments(self, chained: list[Entry]) -> Iterator[list[Entry]]:
        """The chain, split where a new one starts from GENESIS after records of an older one."""
        start = 0
        for i, entry in enumerate(chained):
            if i and entry.seq == 1 and entry.prev == chain.GENESIS:
                self.add("restart", Severity.TAMPERED, f"{entry.label()}: a new chain starts (seq 1 after "
                         f"GENESIS) after {chained[i - 1].label()}: everything before it is not linked to it",
                         entry)
                yield chained[start:i]
                start = i
        yield chained[start:]

    def order(self, segment: list[Entry]) -> list[Entry]:
        """The segment's records by seq, one per seq; inserted and moved ones reported."""
        by_seq: dict[int, list[Entry]] = {}
        for entry in segment:
            by_seq.setdefault(entry.seq, []).append(entry)
        seqs = sorted(by_seq)
        chosen: dict[int, Entry] = {}
        for seq in seqs:
            candidates = by_seq[seq]
            chosen[seq] = candidates[0] if len(candidates) == 1 else _genuine(candidates, chosen.get(seq - 1),
                                                                              by_seq.get(seq + 1, []))
        keep = {id(e) for e in chosen.values()}
        for run in _runs([e for e in segment if id(e) not in keep]):
            twins = [chosen[e.seq] for e in run]
            same = all(t.hash == e.hash for t, e in zip(twins, run, strict=True))
            self.add("inserted", Severity.TAMPERED, f"{len(run)} record(s) inserted at {_span(run)} ({_seqs(run)}): "
                     f"the chain has {'the same records' if same else 'other records with these seqs'} at "
                     f"{_span(twins)}", run[0])
        physical = [e for e in segment if id(e) in keep]
        kept = _longest_increasing(physical)
        place = {id(e): i for i, e in enumerate(physical)}
        for run in _runs([e for i, e in enumerate(physical) if i not in kept]):
            before = physical[place[id(run[0])] - 1] if place[id(run[0])] else None
            home = chosen.get(run[0].seq - 1)
            self.add("reordered", Severity.TAMPERED,
                     f"{len(run)} record(s) out of order at {_span(run)} ({_seqs(run)})"
                     f"{f': after {before.label()}' if before else ''}"
                     f"{f', {_belong(run)} after {home.label()}' if home else ''}", run[0])
        return [chosen[s] for s in seqs]

    def links(self, records: list[Entry]) -> None:
        """Gaps (deleted records) and prev links that do not hold (rewritten or replaced ones)."""
        for before, entry in itertools.pairwise(records):
            if entry.seq > before.seq + 1:
                count = entry.seq - before.seq - 1
                seqs = f"seq {before.seq + 1}" + (f"..{entry.seq - 1}" if count > 1 else "")
                self.add("missing", Severity.TAMPERED, f"{count} record(s) missing before {entry.at} ({seqs})", entry)
            elif entry.prev != before.hash and not self._edited(before) and not self._edited(entry):
                if entry.at.file != before.at.file:
                    self.add("file-break", Severity.TAMPERED, f"{entry.label()} does not follow {before.label()}: "
                             "the chain breaks between the files: one was replaced or rewritten", entry)
                else:
                    self.add("chain-break", Severity.TAMPERED, f"{entry.label()}: its prev is not the hash of "
                             f"{before.label()}: that record was rewritten (edited and re-hashed) or replaced",
                             entry)

    def _edited(self, entry: Entry) -> bool:
        return entry.at in self.edited

    def hashes(self, records: list[Entry]) -> None:
        for entry in records:
            if not entry.intact:
                self.edited.add(entry.at)
                self.add("edited", Severity.TAMPERED, f"{entry.label()}: its hash does not match its content: "
                         "the record was edited", entry)

    def checkpoints(self, records: list[Entry]) -> tuple[int, int | None]:
        """(checkpoints found, seq of the last one that verifies)."""
        found, sealed = 0, None
        for entry in records:
            if not _is_checkpoint(entry):
                continue
            found += 1
            assert entry.record is not None  # kept for checkpoints
            wrong = _signature_problem(entry.record, self.keys)
            if wrong is None:
                sealed = entry.seq
            else:
                self.add(wrong[0], Severity.TAMPERED, f"checkpoint {entry.label()}: {wrong[1]}", entry)
        return found, sealed


def _journal(path: Path, checker: _Checker, records: list[Entry]) -> None:
    """Hold the trail to the checkpoints the journal has (``JOURNAL_MARK`` lines of ``path``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ApplianceError(f"cannot read the checkpoints file {path} (--checkpoints): {exc.strerror}") from None
    by_seq = {e.seq: e for e in records}
    last = records[-1] if records else None
    beyond: tuple[Position, dict[str, Any]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        mark = line.find(JOURNAL_MARK)
        if mark < 0:
            continue
        at = Position(str(path), number)
        try:
            record = json.loads(line[mark + len(JOURNAL_MARK):])
        except (ValueError, RecursionError):
            record = None
        seq = record.get("seq") if isinstance(record, dict) and type(record.get("seq")) is int else None
        if record is None or seq is None or not _intact(record):
            checker.problems.append(Problem("journal", Severity.TAMPERED, f"{at}: not a whole checkpoint record", at))
            continue
        wrong = _signature_problem(record, checker.keys)
        if wrong is not None:
            checker.problems.append(Problem("journal", Severity.TAMPERED, f"{at}: checkpoint seq {seq}: {wrong[1]}",
                                            at, seq))
            continue
        ours = by_seq.get(seq)
        if ours is not None and ours.hash != record["hash"]:
            checker.add("journal-mismatch", Severity.TAMPERED, f"{ours.label()} is not the checkpoint the journal "
                        f"has for seq {seq} ({at}): the record was replaced", ours)
        elif seq > (last.seq if last else 0) and (beyond is None or seq > beyond[1]["seq"]):
            beyond = (at, record)
    if beyond is not None:
        at, record = beyond
        end = f"the files end at seq {last.seq} ({last.at})" if last else "the files have no record"
        gone = record["seq"] - (last.seq if last else 0)
        checker.problems.append(Problem(
            "truncated", Severity.TAMPERED, f"the journal has checkpoint seq {record['seq']} of {record.get('time')} "
            f"({at}), {end}: the trail was cut, at least {gone} record(s) are gone", at, record["seq"]))


def verify(paths: Sequence[Path], public_keys: dict[str, Ed25519PublicKey], checkpoints: Path | None = None,
           keep_lines: bool = False) -> Report:
    """Verify the trail made of ``paths`` (any order) against ``public_keys`` (key_id -> key) and,
    when given, a journal export of its checkpoints; ``keep_lines`` keeps each record's line in
    the report (for export). ApplianceError when a file cannot be read."""
    files, ordered_by = order_files([read_file(p, str(p), keep_lines) for p in paths])
    checker = _Checker(public_keys)
    chained = checker.lines(files)
    report = Report(files, ordered_by)
    final: list[Entry] = []
    for segment in checker.segments(chained):
        final = checker.order(segment)
        checker.hashes(final)
        checker.links(final)
        found, sealed = checker.checkpoints(final)
        report.checkpoints += found
        report.records += final
        report.sealed_through = sealed  # the last segment's: the live chain
    if final and final[0].seq > 1:
        checker.add("start", Severity.INFO, f"the given trail starts at seq {final[0].seq} ({final[0].at}): "
                    "older records were rotated away or not given", final[0])
    tail = [e for e in final if report.sealed_through is None or e.seq > report.sealed_through]
    if tail:
        sealer = next((e for e in final if e.seq == report.sealed_through), None)
        since = f"the last good checkpoint, {sealer.label()} of {sealer.time}" if sealer else "no good checkpoint"
        forged = any(p.kind in ("bad-signature", "unknown-key") for p in checker.problems)
        checker.add("unsealed", Severity.UNSEALED, f"{len(tail)} record(s) after {since} are not sealed by a "
                    f"signature ({_span(tail)}, seq {tail[0].seq}..{tail[-1].seq})"
                    f"{'' if forged else ': normal while the scheduler runs'}", tail[0])
    if not chained and not any(p.kind == "unchained" for p in checker.problems):
        checker.add("empty", Severity.UNSEALED, "no record in the given files: nothing is vouched for")
    if checkpoints is not None:
        _journal(checkpoints, checker, final)
    rank = {f.shown: i for i, f in enumerate(files)}
    # In the trail's order, the journal's findings after it, then the unsealed tail, then where it starts.
    report.problems = sorted(checker.problems, key=lambda p: (
        2 if p.severity == Severity.INFO else int(p.kind == "unsealed"),
        rank.get(p.at.file, len(rank)) if p.at else len(rank), p.at.line if p.at else 0))
    return report

