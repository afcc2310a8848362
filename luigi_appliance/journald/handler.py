"""A logging handler that writes each record as one journal entry with its fields (native.py).

Each entry has MESSAGE (the formatted record, traceback included: one entry, not one per line),
PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/CODE_LINE/CODE_FUNC, LOGGER, THREAD_NAME, and those of
fields.FIELDS the record carries as attributes (``extra=``). A record that cannot be sent (the
socket went away, journald is overloaded, the send fails in any way) goes to the fallback
handler instead, today's stderr format: never lost, and the caller never sees the error.
"""

from __future__ import annotations

import logging

from luigi_appliance.journald.fields import FIELDS
from luigi_appliance.journald.native import Field, JournalSocket, encode

IDENTIFIER = "luigi-appliance"


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (journald's PRIORITY, the ``<N>`` stderr prefix)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


_PRIORITIES = {level: str(priority(level))
               for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)}


class JournalHandler(logging.Handler):
    """Sends records to journald through ``sock``; ``fallback`` handles those it cannot send."""

    def __init__(self, sock: JournalSocket, fallback: logging.Handler, identifier: str = IDENTIFIER):
        super().__init__()
        self.sock = sock
        self.fallback = fallback
        self.identifier = identifier
        self.failures = 0  # records that went to the fallback
        self._prefixes: dict[str, bytes] = {}  # send_line's constant fields, per logger

    def fields(self, record: logging.LogRecord) -> list[Field]:
        """The entry's fields, MESSAGE first."""
        entry: list[Field] = [
            ("MESSAGE", self.format(record)),
            ("PRIORITY", str(priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
            ("THREAD_NAME", str(record.threadName)),
        ]
        attributes = record.__dict__
        entry.extend((name, str(attributes[name])) for name in FIELDS if attributes.get(name) is not None)
        return entry

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.send(encode(self.fields(record)))
        except Exception:  # any failure (OSError, an unformattable record): stderr has it instead
            self.failures += 1
            self.fallback.handle(record)

    def send_line(self, logger: logging.Logger, level: int, message: str, fields: dict[str, str]) -> None:
        """One entry for ``message`` with ``fields``, as if ``logger`` had logged it at ``level``
        (whatever its threshold), without the LogRecord and formatting unless it must fall back:
        trail.py sends one per audit line from its writer thread, thousands a second under load.
        The entry has no CODE_* fields: an audit line is data, not a place in the code."""
        try:
            self.sock.send(self._prefix(logger.name) + encode([("MESSAGE", message), ("PRIORITY", _PRIORITIES[level]),
                                                               *fields.items()]))
        except Exception:  # as in emit
            self.failures += 1
            self.fallback.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, "%s", (message,), None,
                                                   extra=fields))

    def _prefix(self, name: str) -> bytes:
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = encode([("SYSLOG_IDENTIFIER", self.identifier), ("LOGGER", name)])
        return prefix

    def close(self) -> None:
        self.sock.close()
        self.fallback.close()
        super().close()


def installed() -> JournalHandler | None:
    """The root logger's journal handler, when logsetup chose the native protocol."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, JournalHandler):
            return handler
    return None
