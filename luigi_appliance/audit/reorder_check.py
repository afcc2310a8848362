"""The checks of ``audit verify`` over the whole trail held in memory: only for a chain whose seqs
do not increase (records moved or inserted: tampered), where the record the chain links among
those sharing a seq, and the fewest moves that explain the order, need every record's place.
An intact trail never comes here (chain_check.py streams it)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from luigi_appliance.audit import chain
from luigi_appliance.audit.findings import Problem, Severity, finding, is_checkpoint, signature_problem, span
from luigi_appliance.audit.trail_files import DAMAGED_TAIL, Entry, Position, TrailFile


def _belong(entries: Sequence[Entry]) -> str:
    return "it belongs" if len(entries) == 1 else "they belong"


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
class WholeTrailChecker:
    """The checks over the whole trail, in the order they report: lines, then each segment's
    order, hashes, links and checkpoints."""

    keys: dict[str, Ed25519PublicKey]
    problems: list[Problem] = field(default_factory=list)
    edited: set[Position] = field(default_factory=set)

    def add(self, kind: str, severity: Severity, message: str, entry: Entry | None = None) -> None:
        self.problems.append(finding(kind, severity, message, entry))

    def lines(self, files: list[tuple[TrailFile, list[Entry]]]) -> list[Entry]:
        """The chained entries, in order; every other line reported."""
        chained: list[Entry] = []
        unchained: list[Entry] = []
        stray: list[Entry] = []  # lines inside the chain that are no link, until the next link
        stray_after: Entry | None = None  # the link before them
        last_file = files[-1][0] if files else None
        for trail_file, entries in files:
            for entry in entries:
                if entry.chained:
                    if stray and not is_checkpoint(entry):  # the writer's start checkpoint may come first
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
                where = Position(trail_file.shown, trail_file.lines + 1)
                self.problems.append(Problem("damaged", Severity.TAMPERED,
                                             f"{where}: {trail_file.damage}: what follows is lost", where))
        if stray:
            self._strays(stray, stray_after, None)
        if unchained:
            self.add("unchained", Severity.UNSEALED, f"{len(unchained)} record(s) without a hash chain before "
                     f"it begins ({span(unchained)}): written before the trail was chained, not verifiable",
                     unchained[0])
        return chained

    def _strays(self, stray: list[Entry], before: Entry | None, after: Entry | None) -> None:
        """Lines between two links that are no link: the damaged end the writer found at a start
        (a crash while writing) when the next record but checkpoints says so (DAMAGED_TAIL after
        the link before them); otherwise torn or inserted lines."""
        if (after is not None and after.record is not None and before is not None
                and after.event == DAMAGED_TAIL and after.record.get("after_seq") == before.seq):
            self.add("damaged-tail", Severity.UNSEALED, f"{span(stray)}: no record (a crash while writing, "
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
            self.add("inserted", Severity.TAMPERED, f"{len(run)} record(s) inserted at {span(run)} ({_seqs(run)}): "
                     f"the chain has {'the same records' if same else 'other records with these seqs'} at "
                     f"{span(twins)}", run[0])
        physical = [e for e in segment if id(e) in keep]
        kept = _longest_increasing(physical)
        place = {id(e): i for i, e in enumerate(physical)}
        for run in _runs([e for i, e in enumerate(physical) if i not in kept]):
            before = physical[place[id(run[0])] - 1] if place[id(run[0])] else None
            home = chosen.get(run[0].seq - 1)
            self.add("reordered", Severity.TAMPERED,
                     f"{len(run)} record(s) out of order at {span(run)} ({_seqs(run)})"
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
            if not is_checkpoint(entry):
                continue
            found += 1
            assert entry.record is not None  # kept for checkpoints
            wrong = signature_problem(entry.record, self.keys)
            if wrong is None:
                sealed = entry.seq
            else:
                self.add(wrong[0], Severity.TAMPERED, f"checkpoint {entry.label()}: {wrong[1]}", entry)
        return found, sealed
