"""The dead-letter file: events the database refused, set aside so that the rest is written.

``[state] dir/history-dead-letter.jsonl``, mode 0600, one JSON object per line (ASCII only, so a
lone surrogate survives as ``\\ud800``)::

    {"time": "2026-01-02T03:04:05Z", "reason": "IntegrityError: new row ... violates check constraint",
     "event": {"uid": ..., "task_id": ..., "name": ..., "params": {...}, "event_name": ..., "ts": ...,
               "host": ..., "principal": ...}}

Appended and fsync'd by the history writer thread only; it never grows past its limit
(``[history] spool_limit``): an event that does not fit is dropped and counted as such.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from luigi_appliance.history.events import Event

# In [state] dir.
DEAD_LETTER_NAME = "history-dead-letter.jsonl"

_MODE = 0o600


class DeadLetters:
    """Append-only JSON lines of refused events with their reason. Not thread-safe."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit

    def add(self, event: Event, reason: str) -> bool:
        """Append one event; False (nothing written) when the file would exceed its limit.
        OSError when it cannot be written (the file is left as it was)."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason,
                           "event": event.to_json()}, separators=(",", ":")) + "\n"
        data = line.encode("ascii")
        # O_NOFOLLOW: the service account owns the state directory; never append through a link.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, _MODE)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            if stat.S_IMODE(info.st_mode) != _MODE:
                os.fchmod(fd, _MODE)
            if info.st_size + len(data) > self.limit:
                return False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, info.st_size)  # no half line (e.g. the disk is full)
                raise
        finally:
            os.close(fd)
        return True
