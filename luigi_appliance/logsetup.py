"""Logging to stderr in a form journald understands.

Under journald (JOURNAL_STREAM matches our stderr) each line starts with a syslog priority
prefix such as ``<4>`` and carries no timestamp: journald adds its own and would otherwise show
two. On a terminal, lines carry a timestamp and a level name instead.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        # One journal entry per line: continuation lines (tracebacks) keep the priority.
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup(level: str = "info", fmt: str = "auto") -> None:
    """Configure the root logger once, for the serve and run commands."""
    use_journal = fmt == "journal" or (fmt == "auto" and stderr_is_journal())
    handler = logging.StreamHandler(sys.stderr)
    if use_journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Tornado logs every request at INFO; keep the journal for what matters.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
