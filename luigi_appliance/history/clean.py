"""Making an event storable before it is queued (docs/history.md, "What is stored").

PostgreSQL refuses a NUL character in TEXT and VARCHAR, a lone surrogate (``"\\ud800"``, which
JSON over HTTP can carry) cannot be encoded as UTF-8, and ``VARCHAR(n)`` refuses a longer value.
Any worker account can send such values, and one event the database refuses must not stop the
history, so every text of an event is escaped and fitted to its column here, on the scheduler's
loop: a regular-expression scan and a length check per text; hashing only for a text too long.

* NUL becomes the four characters ``\\x00``, a lone surrogate ``\\udXXX`` (Python's notation).
* A text longer than its column keeps its start, then ``...#`` and 16 hex digits of the SHA-256
  of the whole text: distinct texts stay distinct (a task id or parameter name that would collide
  once cut does not), and the same text always gives the same stored value (the task's later
  events find its row). A shortened task id or family is also kept whole, as the parameters
  ``(task_id)`` and ``(family)`` (``task_parameters.value`` is unbounded).

Cleaning is idempotent: a cleaned event (or one spooled by an older version, cleaned on replay)
comes out the same.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from luigi_appliance.history.events import Event
from luigi_appliance.history.schema import task_events, task_parameters, tasks

MARK = "...#"
HASH_DIGITS = 16
FULL_TASK_ID = "(task_id)"
FULL_FAMILY = "(family)"
# Stands in for a params argument that is not an object (luigi's own workers always send one).
PARAMS_AS_TEXT = "(params)"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _width(column: sa.Column) -> int:
    length: int | None = getattr(column.type, "length", None)
    assert length is not None, f"{column} has no width"
    return length


TASK_ID_WIDTH = _width(tasks.c.task_id)
NAME_WIDTH = _width(tasks.c.name)
TASK_HOST_WIDTH = _width(tasks.c.host)
PARAM_NAME_WIDTH = _width(task_parameters.c.name)
PRINCIPAL_WIDTH = _width(task_events.c.principal)
WORKER_HOST_WIDTH = _width(task_events.c.worker_host)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return "\\x00" if char == "\x00" else f"\\u{ord(char):04x}"


def escape(value: Any) -> str:
    """``value`` as text the database accepts: NUL and lone surrogates written out as escapes."""
    text = value if type(value) is str else str(value)
    if text.isascii():  # the common case, and constant time: then only a NUL can be there (memchr)
        return text.replace("\x00", "\\x00") if "\x00" in text else text
    return _UNSTORABLE.sub(_escape_char, text) if _UNSTORABLE.search(text) else text


def fit(text: str, width: int) -> str:
    """``text`` if it has at most ``width`` characters, else its start, MARK and a hash of it
    (exactly ``width`` characters)."""
    if len(text) <= width:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]
    return f"{text[:width - len(MARK) - HASH_DIGITS]}{MARK}{digest}"


def stored_text(value: Any, width: int) -> str:
    """What the history stores for ``value`` in a column of ``width`` (the pages look up with it)."""
    return fit(escape(value), width)


def _optional(value: Any, width: int) -> str | None:
    return None if value is None else stored_text(value, width)


def _params(raw: Any) -> dict[str, str]:
    items = raw.items() if isinstance(raw, Mapping) else [(PARAMS_AS_TEXT, raw)] if raw else []
    params: dict[str, str] = {}
    for key, value in items:
        # setdefault: two names equal once cut would need equal SHA-256 prefixes; keep the first.
        params.setdefault(stored_text(key, PARAM_NAME_WIDTH), escape(value))
    return params


def make_event(uid: str, task_id: Any, name: Any, params: Any, event_name: str, ts: float, host: Any,
               principal: Any) -> Event:
    """An event with every text escaped and fitted to the schema's columns (see the module)."""
    task_id, name, params = escape(task_id), escape(name), _params(params)
    short_id, short_name = fit(task_id, TASK_ID_WIDTH), fit(name, NAME_WIDTH)
    if short_id != task_id:
        params[FULL_TASK_ID] = task_id
    if short_name != name:
        params[FULL_FAMILY] = name
    return Event(uid, short_id, short_name, params, event_name, ts, _optional(host, WORKER_HOST_WIDTH),
                 _optional(principal, PRINCIPAL_WIDTH))


def clean_event(event: Event) -> Event:
    """``event`` cleaned as make_event does (for events read back from the spool)."""
    return make_event(event.uid, event.task_id, event.name, event.params, event.event_name, event.ts, event.host,
                      event.principal)
