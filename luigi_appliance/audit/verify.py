"""``audit verify``: check an audit trail (the live file and logrotate's rotated ones) against its
hash chain and signed checkpoints (chain.py), and say exactly where it was changed.

Files are read line by line, gzip, xz and bzip2 ones transparently (by their magic bytes, not
their names; trail_files.py), and judged one record at a time (chain_check.py): memory holds the
findings and a few records, not the trail. They are put oldest first by the chain itself: by
the seq of each file's first chained record; a file without one (empty, or only torn lines)
keeps its place in the names' order (NAME-DATE oldest date first, then NAME.N highest N
first, then NAME).

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

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from luigi_appliance.audit import chain
from luigi_appliance.audit.chain_check import JOURNAL_MARK, MAX_FINDINGS, Problem, Severity, check, read_journal
from luigi_appliance.audit.trail_files import (
    DAMAGED_TAIL,
    Entry,
    Position,
    TrailFile,
    order_files,
    read_file,
    rotated_siblings,
)
from luigi_appliance.errors import ApplianceError

__all__ = ["DAMAGED_TAIL", "EXIT_INTACT", "EXIT_TAMPERED", "EXIT_UNREADABLE", "EXIT_UNSEALED", "JOURNAL_MARK",
           "MAX_FINDINGS", "Entry", "Position", "Problem", "Records", "Report", "Severity", "TrailFile",
           "load_public_keys", "order_files", "read_file", "rotated_siblings", "verify"]

EXIT_INTACT = 0
EXIT_TAMPERED = 1
EXIT_UNREADABLE = 2
EXIT_UNSEALED = 3
_EXIT = {Severity.INFO: EXIT_INTACT, Severity.UNSEALED: EXIT_UNSEALED, Severity.TAMPERED: EXIT_TAMPERED}


class Records:
    """The trail's records, one per seq, in seq order (without the inserted ones), as
    verification found them: counted, and read again (lines kept) when iterated, from the files
    as far as they were verified (the live file may have grown since). The trail is not held.
    Read again, they must still be the records verified (from the same seq, seqs increasing, the
    same hashes): ApplianceError when a file changed since (logrotate ran), at the first record
    that shows it, or at the end."""

    def __init__(self, files: list[TrailFile], count: int, held: list[Entry] | None = None,
                 seqs: tuple[int, int] | None = None, digest: str = "") -> None:
        self._files, self._count, self._held = files, count, held
        self._first_seq, self._digest = seqs[0] if seqs else None, digest

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Entry]:
        if self._held is not None:
            yield from self._held
            return
        before: Entry | None = None
        digest = hashlib.sha256()
        for entry in itertools.islice(self._chained(), self._count):
            restart = entry.seq == 1 and entry.prev == chain.GENESIS  # as verification split the chain
            if entry.seq != self._first_seq if before is None else (entry.seq <= before.seq and not restart):
                raise self._changed(entry.at)
            digest.update(entry.hash.encode("utf-8", "surrogateescape"))
            yield entry
            before = entry
        if digest.hexdigest() != self._digest:
            raise self._changed(before.at if before else None)

    def _chained(self) -> Iterator[Entry]:
        for trail_file in self._files:
            yield from (e for e in trail_file.entries(keep_lines=True, limit=trail_file.lines) if e.chained)

    @staticmethod
    def _changed(at: Position | None) -> ApplianceError:
        return ApplianceError(f"the audit trail changed since it was verified{f' ({at})' if at else ''}: "
                              "rotated while reading it? run it again")


@dataclass
class Report:
    """What verification found and the trail's figures; ``records`` reads the records again."""

    files: list[TrailFile]
    ordered_by: str
    problems: list[Problem]
    records: Records
    checkpoints: int
    sealed_through: int | None  # seq of the last good checkpoint
    seqs: tuple[int, int] | None
    times: tuple[str, str] | None
    more: int = 0  # findings beyond the first MAX_FINDINGS, counted, not kept
    more_severity: Severity = Severity.INFO  # the worst of them

    @property
    def severity(self) -> Severity:
        return max((p.severity for p in self.problems), default=self.more_severity)

    @property
    def exit_code(self) -> int:
        return _EXIT[self.severity]

    @property
    def status(self) -> str:
        return {Severity.INFO: "intact", Severity.UNSEALED: "intact, not all sealed",
                Severity.TAMPERED: "TAMPERED"}[self.severity]

    def seq_range(self) -> tuple[int, int] | None:
        return self.seqs

    def time_range(self) -> tuple[str, str] | None:
        return self.times

    def problem_lines(self) -> list[str]:
        """The text report's lines before the summary: one per finding, and how many more."""
        more = [f"{self.more} more finding(s) not listed: only the first {MAX_FINDINGS} are kept"] if self.more else []
        return [str(p) for p in self.problems] + more

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
            "files": [{"file": f.shown, "lines": f.lines, "first_seq": f.first_seq} for f in self.files],
            "seq_range": list(seqs) if seqs else None, "time_range": list(times) if times else None,
            **({"problems_not_listed": self.more} if self.more else {}),
        }


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


def verify(paths: Sequence[Path], public_keys: dict[str, Ed25519PublicKey], checkpoints: Path | None = None) -> Report:
    """Verify the trail made of ``paths`` (any order) against ``public_keys`` (key_id -> key) and,
    when given, a journal export of its checkpoints. ApplianceError when a file cannot be read."""
    files, ordered_by = order_files([read_file(p, str(p)) for p in paths])
    journal = read_journal(checkpoints) if checkpoints is not None else None
    outcome = check(files, public_keys, journal)
    records = Records(files, outcome.records, outcome.held, outcome.seq_range, outcome.digest)
    return Report(files, ordered_by, outcome.problems, records, outcome.checkpoints, outcome.sealed_through,
                  outcome.seq_range, outcome.time_range, outcome.more, outcome.more_severity)
