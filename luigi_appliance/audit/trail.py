"""The audit trail: one JSON line per authentication and per state-changing call.

Except workers' heartbeats: luigi's worker pings every second and asks for work in a loop, so
successful ``ping`` and ``get_work`` calls made almost all of the trail while saying little an
auditor needs (a task a worker was given is in the trail with the add_task that reports its
outcome, and in the task history, when there is one, as a RUNNING event with the principal).
They are left out unless ``[audit] heartbeats`` is on; a refused one is always written.

Lines go to the audit file (``[audit] file``, reopened when logrotate moves it, through
WatchedFileHandler) and, when ``[audit] stderr`` is on, to stderr for journald. The scheduler's
loop only puts a tuple on a queue; a writer thread formats and writes, so neither a slow disk
nor JSON encoding stalls the loop; it writes what has gathered in few writes (WRITE_BATCH lines
each), one line per record all the same. The handlers are private to this object (not in logging's
registry): nothing else can write audit lines, and audit lines never reach the ordinary log
handlers twice.

Nothing secret is ever passed here: callers give names, addresses, methods, task ids, outcomes.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import logging.handlers
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from luigi_appliance.audit.settings import AuditSettings
from luigi_appliance.errors import ApplianceError

MAX_FIELD = 200
FLUSH_INTERVAL = 0.2  # seconds; a crash loses at most this much of the trail
# Lines per write: a handler's emit stats the file (WatchedFileHandler) and flushes each time, which
# per line was a quarter of the scheduler's CPU while a worker added 100k tasks.
WRITE_BATCH = 1000
_ALWAYS = frozenset({"event", "principal", "source", "outcome"})
HEARTBEAT_METHODS = frozenset({"ping", "get_work"})


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


class AuditLog:
    """The audit trail of one scheduler process; ``close()`` writes what is queued."""

    def __init__(self, settings: AuditSettings):
        self.path = settings.file
        self._heartbeats = settings.heartbeats
        self.stats = AuditStats()
        # Each handler with the separator between the lines of one write: its formatter puts
        # the prefix before the first line only.
        self._handlers: list[tuple[logging.Handler, str]] = []
        try:
            self._handlers.append((logging.handlers.WatchedFileHandler(settings.file, encoding="utf-8"), "\n"))
        except OSError as exc:
            raise ApplianceError(f"cannot open the audit log {settings.file} ([audit] file): "
                                 f"{exc.strerror}") from None
        if settings.stderr:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(logging.Formatter("audit: %(message)s"))
            self._handlers.append((stream, "\naudit: "))
        # The loop only appends a tuple (deque.append is atomic and wakes nobody: waking a thread per
        # line handed it the GIL once per RPC); this thread formats and writes every FLUSH_INTERVAL.
        self._pending: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._thread.start()

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
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            lines = [_line(*self._pending.popleft()) for _ in range(min(WRITE_BATCH, len(self._pending)))]
            for handler, separator in self._handlers:
                handler.handle(logging.LogRecord("luigi_appliance.audit", logging.INFO, __file__, 0,
                                                 separator.join(lines), None, None))

    def close(self) -> None:
        """Write what is queued, then close the files."""
        self._closing.set()
        self._thread.join(10)
        for handler, _ in self._handlers:
            handler.close()


def _line(when: float, fields: dict[str, Any]) -> str:
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat(timespec="milliseconds")
    # event, principal, source and outcome always; other fields only when known.
    line = {"time": stamp, **{k: _clip(v) for k, v in fields.items() if v is not None or k in _ALWAYS}}
    return json.dumps(line, ensure_ascii=True)
