"""The audit trail as tests read it: the records of what callers did, without the trail's own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from luigi_appliance.audit import FLUSH_INTERVAL
from luigi_appliance.audit.chain import CHECKPOINT

# Records the writer adds about the trail itself (audit/trail.py): signed checkpoints, and the
# note after a torn tail. Their source is "scheduler", their principal none.
TRAIL_EVENTS = frozenset({CHECKPOINT, "audit_damaged_tail"})


def caller_records(path: Path, *, settle: bool = True) -> list[dict]:
    """The records in the audit file at ``path`` (none if it does not exist) minus TRAIL_EVENTS;
    ``settle`` first waits for the writer's batches to reach the file."""
    if settle:
        time.sleep(3 * FLUSH_INTERVAL)
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines())
    return [record for record in records if record["event"] not in TRAIL_EVENTS]
