"""Logging to journald, natively when it can, else to stderr in a form journald understands.

``[logging] format``:

* ``auto`` (default): when stderr is the journal (JOURNAL_STREAM matches our stderr, as
  systemd.exec(5) describes) and the journal socket accepts datagrams, every record is one journal
  entry with structured fields (journal/handler.py); when only stderr is the journal, lines carry
  a syslog priority prefix such as ``<4>`` and no timestamp (journald adds its own); otherwise
  (a terminal, a file) lines carry a timestamp and a level name.
* ``journal``: the process runs under journald whatever JOURNAL_STREAM says: native when the
  socket accepts datagrams, else the ``<N>`` stderr lines.
* ``text``: timestamped stderr lines, never the native protocol.

A record the native handler cannot send goes to stderr in the format the process would have
used without it, so nothing is lost when journald goes away.
"""

from __future__ import annotations

import logging
import os
import sys

from luigi_appliance.journald.handler import JournalHandler, priority
from luigi_appliance.journald.native import JournalSocket


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = priority(record.levelno)
        text = super().format(record)
        # One journal entry per line: continuation lines (tracebacks) keep the priority.
        return "\n".join(f"<{level}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def stderr_handler(journal: bool) -> logging.Handler:
    """Today's stderr lines: ``<N>name: message`` for journald, else timestamped text."""
    handler = logging.StreamHandler(sys.stderr)
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def choose_handler(fmt: str = "auto") -> logging.Handler:
    """The root handler for ``[logging] format`` in this process's environment (module doc)."""
    use_journal = fmt == "journal" or (fmt == "auto" and stderr_is_journal())
    fallback = stderr_handler(use_journal)
    if not use_journal:
        return fallback
    sock = JournalSocket()
    if not sock.accepts():
        sock.close()
        return fallback
    handler = JournalHandler(sock, fallback)
    # MESSAGE is the message alone: journald records the time, the logger is a field of its own.
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure the root logger once, for the serve and run commands."""
    root = logging.getLogger()
    root.handlers[:] = [choose_handler(fmt)]
    root.setLevel(level.upper())
    # Tornado logs every request at INFO; keep the journal for what matters.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
