"""``audit export``: the records of a time window of a verified trail, for an evidence request
(who did what, when, from where).

JSONL is the trail's own lines, byte for byte, checkpoints included: an excerpt anyone can
check again (each record's hash, each link inside the window, each checkpoint's signature with
chain.py and the public key). CSV is for reading: one row per record (not the checkpoints),
the fixed ``COLUMNS``, the chain's prev and hash left out (seq stays, to find the line in the
trail) and every other field in ``details`` as JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from luigi_appliance.audit import chain
from luigi_appliance.audit.verify import Entry
from luigi_appliance.errors import ApplianceError

COLUMNS = ("time", "seq", "event", "outcome", "principal", "source", "method", "task_id", "family", "worker",
           "details")
_NOT_DETAILS = frozenset(COLUMNS) | {"prev", "hash"}


def parse_when(value: str, option: str) -> dt.datetime:
    """An ISO 8601 date or time from the command line; one without an offset is UTC."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApplianceError(f"{option}: expected an ISO 8601 date or time (2024-05-01, "
                             f"2024-05-01T13:00:00+02:00), got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _time(entry: Entry) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(entry.time) if entry.time is not None else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def window(records: Iterable[Entry], since: dt.datetime | None, until: dt.datetime | None) -> list[Entry]:
    """The records with since <= time < until (a record without a readable time is in no window)."""
    chosen = []
    for entry in records:
        when = _time(entry)
        if when is not None and (since is None or when >= since) and (until is None or when < until):
            chosen.append(entry)
    return chosen


def write_jsonl(records: Iterable[Entry], out: IO[str]) -> None:
    """Each record's line as the trail has it."""
    for entry in records:
        out.write(entry.raw + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def write_csv(records: Iterable[Entry], out: IO[str]) -> None:
    """A header row of ``COLUMNS``, then one row per record that is not a checkpoint."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for entry in records:
        if entry.event == chain.CHECKPOINT:
            continue
        record = entry.fields()
        details = {k: v for k, v in record.items() if k not in _NOT_DETAILS}
        writer.writerow([*(_cell(record.get(name)) for name in COLUMNS[:-1]),
                         json.dumps(details, ensure_ascii=False, sort_keys=True) if details else ""])


def open_output(path: Path) -> IO[str]:
    """A new file for the export, 0600 (it names users and addresses); an existing one is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ApplianceError(f"{path} exists (--output): choose a new file; an export never overwrites") from None
    except OSError as exc:
        raise ApplianceError(f"cannot create {path} (--output): {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="")
