"""The checks of ``audit verify`` (the rules are in verify.py's docstring), one record at a time:
what is remembered is the record before, the lines after the last link that are no link yet,
the last segment's first record, its last good checkpoint and the findings; never the records.

Only a chain whose seqs do not increase (records moved or inserted: tampered) needs them all
to name the fewest moves that explain the order; ``check`` then reads the trail again and
judges it whole (reorder_check.py). An intact trail is never held.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from luigi_appliance.audit import chain
from luigi_appliance.audit.findings import Problem, Severity, finding, is_checkpoint, signature_problem, span
from luigi_appliance.audit.reorder_check import WholeTrailChecker
from luigi_appliance.audit.trail_files import DAMAGED_TAIL, Entry, Position, TrailFile, intact
from luigi_appliance.errors import ApplianceError

JOURNAL_MARK = "audit checkpoint: "
# Findings kept (the first ones in the report's order); the rest are counted: a trail damaged on
# every line must not cost memory per line for the findings either.
MAX_FINDINGS = 1000


class _OutOfOrder(Exception):
    """A segment's seqs stop increasing (records moved or inserted): the trail is judged whole."""


_LINES, _RESTART, _HASHES, _LINKS, _SIGNATURES = range(5)  # the order the checks report in
_Key = tuple[int, int, int]  # the order the checks found a problem in, among those at one place
_Rank = tuple[int, int, int, _Key]  # the report's order


@dataclass(frozen=True)
class JournalLine:
    """A ``JOURNAL_MARK`` line of the journal export: where, and the checkpoint it holds (None
    when it holds no whole one)."""

    at: Position
    record: dict[str, Any] | None


def read_journal(path: Path) -> list[JournalLine]:
    """The checkpoint lines of a journal export (``--checkpoints``), read line by line (the
    export may hold much more); ApplianceError when it cannot be read."""
    found: list[JournalLine] = []
    number = 0
    try:
        # newline="" then splitlines(): the lines str.splitlines() would give the whole text.
        with path.open(encoding="utf-8", errors="replace", newline="") as journal:
            for physical in journal:
                for line in physical.splitlines():
                    number += 1
                    mark = line.find(JOURNAL_MARK)
                    if mark >= 0:
                        record = _journal_record(line[mark + len(JOURNAL_MARK):])
                        found.append(JournalLine(Position(str(path), number), record))
    except OSError as exc:
        raise ApplianceError(f"cannot read the checkpoints file {path} (--checkpoints): {exc.strerror}") from None
    return found


def _journal_record(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or type(record.get("seq")) is not int or not intact(record):
        return None
    return record


@dataclass
class Outcome:
    """What the checks found and the figures the report gives; ``held`` the records (one per
    seq, in seq order) only when the trail had to be judged whole."""

    problems: list[Problem]
    records: int
    seq_range: tuple[int, int] | None
    time_range: tuple[str, str] | None
    checkpoints: int
    sealed_through: int | None
    held: list[Entry] | None = None
    more: int = 0  # findings beyond MAX_FINDINGS, not in ``problems``
    more_severity: Severity = Severity.INFO  # the worst of them
    digest: str = ""  # of the records' hashes, in order: to know them again when read again


@dataclass
class _Tally:
    """What the checks remember of the chain: figures, findings, and of its last segment (the
    live chain) its first and last record, its last good checkpoint, the records after it and
    the records whose seq the journal has."""

    keys: dict[str, Ed25519PublicKey]
    wanted: frozenset[int]
    rank: dict[str, int]  # file shown -> place, oldest first
    findings: list[tuple[_Rank, Problem]] = field(default_factory=list)
    more: int = 0  # findings beyond MAX_FINDINGS, dropped
    more_severity: Severity = Severity.INFO
    forged: bool = False  # a checkpoint signed by no given key, or not verifying
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    time_min: str | None = None
    time_max: str | None = None
    checkpoints: int = 0
    chained: bool = False
    unchained: bool = False
    first: Entry | None = None
    last: Entry | None = None
    sealer: Entry | None = None
    tail: int = 0
    tail_first: Entry | None = None
    tail_last: Entry | None = None
    journaled: dict[int, Entry] = field(default_factory=dict)
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, key: _Key, kind: str, severity: Severity, message: str, entry: Entry | None = None) -> None:
        self.keep(key, finding(kind, severity, message, entry))

    def keep(self, key: _Key, problem: Problem) -> None:
        at, end = problem.at, len(self.rank)
        group = 2 if problem.severity == Severity.INFO else int(problem.kind == "unsealed")
        self.findings.append(((group, self.rank.get(at.file, end) if at else end, at.line if at else 0, key), problem))
        self.forged = self.forged or problem.kind in ("bad-signature", "unknown-key")
        if len(self.findings) > 2 * MAX_FINDINGS:
            self.trim()

    def trim(self) -> None:
        """Keep the first MAX_FINDINGS findings in the report's order, count the others."""
        self.findings.sort(key=lambda found: found[0])
        for _rank, dropped in self.findings[MAX_FINDINGS:]:
            self.more += 1
            self.more_severity = max(self.more_severity, dropped.severity)
        del self.findings[MAX_FINDINGS:]

    def segment(self, first: Entry) -> None:
        self.first, self.sealer, self.tail, self.tail_first, self.tail_last = first, None, 0, None, None
        self.journaled = {}

    def record(self, entry: Entry, sealed: bool) -> None:
        """Counts a record of the chain in seq order; ``sealed``: it is a good checkpoint."""
        self.chained = True
        self.records += 1
        self.digest.update(entry.hash.encode("utf-8", "surrogateescape"))
        self.first_seq = entry.seq if self.first_seq is None else self.first_seq
        self.last_seq, self.last = entry.seq, entry
        if entry.time is not None:
            self.time_min = entry.time if self.time_min is None else min(self.time_min, entry.time)
            self.time_max = entry.time if self.time_max is None else max(self.time_max, entry.time)
        if sealed:
            self.sealer, self.tail, self.tail_first, self.tail_last = entry, 0, None, None
        else:
            self.tail += 1
            self.tail_first = self.tail_first or entry
            self.tail_last = entry
        if entry.seq in self.wanted:
            self.journaled[entry.seq] = entry


@dataclass
class _StreamChecker:
    """The checks, fed the trail's lines in order; raises _OutOfOrder when they cannot be made
    one record at a time."""

    tally: _Tally
    segment: int = -1
    before: Entry | None = None  # the chain's last record so far
    stray: list[Entry] = field(default_factory=list)  # lines inside the chain that are no link, until the next link
    stray_after: Entry | None = None  # the link before them
    unchained: int = 0
    unchained_first: Entry | None = None
    unchained_last: Entry | None = None

    def add(self, stage: int, kind: str, severity: Severity, message: str, entry: Entry | None = None) -> None:
        self.tally.add((0, 0, 0) if stage == _LINES else (1, self.segment, stage), kind, severity, message, entry)

    def feed(self, entry: Entry, in_last_file: bool) -> None:
        if entry.chained:
            if self.stray and not is_checkpoint(entry):  # the writer's start checkpoint may come first
                self._strays(self.stray, self.stray_after, entry)
                self.stray = []
            self._link(entry)
        elif not entry.json_object and not entry.terminated and in_last_file:
            self.add(_LINES, "incomplete", Severity.UNSEALED, f"{entry.at}: the last line is not complete "
                     "(being written now, or cut off)", entry)
        elif self.before is not None:
            if not self.stray:
                self.stray_after = self.before
            self.stray.append(entry)
        else:
            self.unchained += 1
            self.unchained_first = self.unchained_first or entry
            self.unchained_last = entry

    def end_file(self, trail_file: TrailFile) -> None:
        if trail_file.damage:
            where = Position(trail_file.shown, trail_file.lines + 1)
            self.tally.keep((0, 0, 0), Problem("damaged", Severity.TAMPERED,
                                               f"{where}: {trail_file.damage}: what follows is lost", where))

    def finish(self) -> None:
        if self.stray:
            self._strays(self.stray, self.stray_after, None)
        if self.unchained_first is not None and self.unchained_last is not None:
            ends = [self.unchained_first] if self.unchained == 1 else [self.unchained_first, self.unchained_last]
            self.add(_LINES, "unchained", Severity.UNSEALED, f"{self.unchained} record(s) without a hash chain "
                     f"before it begins ({span(ends)}): written before the trail was chained, not verifiable",
                     self.unchained_first)
            self.tally.unchained = True

    def _strays(self, stray: list[Entry], before: Entry | None, after: Entry | None) -> None:
        if (after is not None and after.record is not None and before is not None
                and after.event == DAMAGED_TAIL and after.record.get("after_seq") == before.seq):
            self.add(_LINES, "damaged-tail", Severity.UNSEALED, f"{span(stray)}: no record (a crash while "
                     f"writing, found by the writer at its next start: {after.label()}): what these bytes held "
                     "is not vouched for", stray[0])
            return
        for entry in stray:
            if not entry.json_object:
                self.add(_LINES, "torn", Severity.TAMPERED, f"{entry.at}: not a complete JSON record "
                         "(torn, truncated or edited)", entry)
            else:
                self.add(_LINES, "inserted", Severity.TAMPERED, f"{entry.at}: a record without seq, prev and "
                         "hash inside the chain: inserted", entry)

    def _link(self, entry: Entry) -> None:
        before = self.before
        if before is None or (entry.seq == 1 and entry.prev == chain.GENESIS):
            self.segment += 1
            if before is not None:
                self.add(_RESTART, "restart", Severity.TAMPERED, f"{entry.label()}: a new chain starts (seq 1 "
                         f"after GENESIS) after {before.label()}: everything before it is not linked to it", entry)
            self.tally.segment(entry)
            before = None
        elif entry.seq <= before.seq:
            raise _OutOfOrder
        if not entry.intact:
            self.add(_HASHES, "edited", Severity.TAMPERED, f"{entry.label()}: its hash does not match its "
                     "content: the record was edited", entry)
        if before is not None:
            if entry.seq > before.seq + 1:
                count = entry.seq - before.seq - 1
                seqs = f"seq {before.seq + 1}" + (f"..{entry.seq - 1}" if count > 1 else "")
                self.add(_LINKS, "missing", Severity.TAMPERED, f"{count} record(s) missing before {entry.at} "
                         f"({seqs})", entry)
            elif entry.prev != before.hash and before.intact and entry.intact:
                if entry.at.file != before.at.file:
                    self.add(_LINKS, "file-break", Severity.TAMPERED, f"{entry.label()} does not follow "
                             f"{before.label()}: the chain breaks between the files: one was replaced or "
                             "rewritten", entry)
                else:
                    self.add(_LINKS, "chain-break", Severity.TAMPERED, f"{entry.label()}: its prev is not the "
                             f"hash of {before.label()}: that record was rewritten (edited and re-hashed) or "
                             "replaced", entry)
        self.tally.record(entry, self._sealed(entry))
        self.before = entry

    def _sealed(self, entry: Entry) -> bool:
        if not is_checkpoint(entry):
            return False
        self.tally.checkpoints += 1
        assert entry.record is not None  # kept for checkpoints
        wrong = signature_problem(entry.record, self.tally.keys)
        if wrong is not None:
            self.add(_SIGNATURES, wrong[0], Severity.TAMPERED, f"checkpoint {entry.label()}: {wrong[1]}", entry)
        return wrong is None


def _stream(files: list[TrailFile], tally: _Tally) -> None:
    checker = _StreamChecker(tally)
    for trail_file in files:
        last = trail_file is files[-1]
        for entry in trail_file.entries():
            checker.feed(entry, last)
        checker.end_file(trail_file)
    checker.finish()


def _whole(files: list[TrailFile], tally: _Tally) -> list[Entry]:
    """The checks over the trail held whole (moved or inserted records); the records chosen."""
    checker = WholeTrailChecker(tally.keys)
    chained = checker.lines([(f, list(f.entries())) for f in files])
    held: list[Entry] = []
    final: list[Entry] = []
    sealed: int | None = None
    for segment in checker.segments(chained):
        final = checker.order(segment)
        checker.hashes(final)
        checker.links(final)
        found, sealed = checker.checkpoints(final)
        tally.checkpoints += found
        held += final
    for i, reported in enumerate(checker.problems):
        tally.keep((0, i, 0), reported)
    tally.unchained = any(p.kind == "unchained" for p in checker.problems)
    tally.chained = bool(chained)
    if final:
        tally.segment(final[0])
    for entry in final:
        tally.record(entry, entry.seq == sealed)
    tally.records, tally.first_seq = len(held), held[0].seq if held else None
    times = [e.time for e in held if e.time is not None]
    tally.time_min, tally.time_max = (min(times), max(times)) if times else (None, None)
    return held


def check(files: list[TrailFile], keys: dict[str, Ed25519PublicKey], journal: list[JournalLine] | None) -> Outcome:
    """The checks of the trail made of ``files`` (oldest first) against ``keys`` and, when given,
    the journal's checkpoints; the findings in the trail's order, the journal's after it, then
    the unsealed tail, then where it starts. ApplianceError when a file cannot be read."""
    wanted = frozenset(j.record["seq"] for j in journal or [] if j.record is not None)
    rank = {f.shown: i for i, f in enumerate(files)}
    tally = _Tally(keys, wanted, rank)
    held: list[Entry] | None = None
    try:
        _stream(files, tally)
    except _OutOfOrder:
        tally = _Tally(keys, wanted, rank)
        held = _whole(files, tally)
    sealed = tally.sealer.seq if tally.sealer else None
    _conclude(tally, journal)
    tally.trim()
    return Outcome([p for _rank, p in tally.findings], tally.records,
                   (tally.first_seq, tally.last_seq) if tally.first_seq is not None and tally.last_seq is not None
                   else None,
                   (tally.time_min, tally.time_max) if tally.time_min is not None and tally.time_max is not None
                   else None, tally.checkpoints, sealed, held, tally.more, tally.more_severity,
                   tally.digest.hexdigest())


def _conclude(tally: _Tally, journal: list[JournalLine] | None) -> None:
    """The findings about the chain as a whole: where it starts, its unsealed tail, an empty
    trail, and what the journal's checkpoints say."""
    after = itertools.count()

    def post(problem: Problem) -> None:
        tally.keep((2, next(after), 0), problem)

    def add(kind: str, severity: Severity, message: str, entry: Entry | None = None) -> None:
        post(finding(kind, severity, message, entry))

    first = tally.first
    if first is not None and first.seq > 1:
        add("start", Severity.INFO, f"the given trail starts at seq {first.seq} ({first.at}): "
            "older records were rotated away or not given", first)
    if tally.tail and tally.tail_first is not None and tally.tail_last is not None:
        sealer = tally.sealer
        since = f"the last good checkpoint, {sealer.label()} of {sealer.time}" if sealer else "no good checkpoint"
        forged = tally.forged
        ends = [tally.tail_first] if tally.tail == 1 else [tally.tail_first, tally.tail_last]
        add("unsealed", Severity.UNSEALED, f"{tally.tail} record(s) after {since} are not sealed by a "
            f"signature ({span(ends)}, seq {tally.tail_first.seq}..{tally.tail_last.seq})"
            f"{'' if forged else ': normal while the scheduler runs'}", tally.tail_first)
    if not tally.chained and not tally.unchained:
        add("empty", Severity.UNSEALED, "no record in the given files: nothing is vouched for")
    if journal is not None:
        _hold_to_journal(journal, tally, post)


def _hold_to_journal(journal: list[JournalLine], tally: _Tally, post: Callable[[Problem], None]) -> None:
    """Hold the live chain to the checkpoints the journal has."""
    last = tally.last
    beyond: JournalLine | None = None
    for line in journal:
        record, at = line.record, line.at
        if record is None:
            post(Problem("journal", Severity.TAMPERED, f"{at}: not a whole checkpoint record", at))
            continue
        seq = record["seq"]
        wrong = signature_problem(record, tally.keys)
        if wrong is not None:
            post(Problem("journal", Severity.TAMPERED, f"{at}: checkpoint seq {seq}: {wrong[1]}", at, seq))
            continue
        ours = tally.journaled.get(seq)
        if ours is not None and ours.hash != record["hash"]:
            post(finding("journal-mismatch", Severity.TAMPERED, f"{ours.label()} is not the checkpoint the "
                          f"journal has for seq {seq} ({at}): the record was replaced", ours))
        elif seq > (last.seq if last else 0) and (beyond is None or seq > beyond.record["seq"]):  # type: ignore[index]
            beyond = line
    if beyond is not None and beyond.record is not None:
        record, at = beyond.record, beyond.at
        end = f"the files end at seq {last.seq} ({last.at})" if last else "the files have no record"
        gone = record["seq"] - (last.seq if last else 0)
        post(Problem("truncated", Severity.TAMPERED, f"the journal has checkpoint seq {record['seq']} of "
                     f"{record.get('time')} ({at}), {end}: the trail was cut, at least {gone} record(s) are gone",
                     at, record["seq"]))
