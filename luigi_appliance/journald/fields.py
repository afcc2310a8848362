"""The journal fields the scheduler adds, and the MESSAGE_ID of each kind of event: declared once.

A log call carries fields as ``extra`` attributes named like the field
(``log.warning(..., extra=of_kind("snapshot_refused"))``); the native handler (handler.py) sends
those of FIELDS a record has. An audit record's fields come from its chained line
(``audit_extra``), so the journal says what the trail says.

The ids are fixed for good: a SOC's saved queries and the catalog
(etc/systemd/catalog/luigi-appliance.catalog, which has an entry for every kind marked
``catalogued``) name them. A new kind gets a new id (``python3 -c 'import uuid;
print(uuid.uuid4().hex)'``); an id is never reused for another meaning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

# The structured fields, beside journald's own (MESSAGE, PRIORITY, CODE_*, SYSLOG_IDENTIFIER).
MESSAGE_ID = "MESSAGE_ID"
PRINCIPAL = "PRINCIPAL"  # the authenticated (or claimed, for a failed login) user name
REMOTE_ADDR = "REMOTE_ADDR"  # the client's address as the guard resolved it
OUTCOME = "OUTCOME"  # the audit line's outcome: success, failure, locked_out, ok, refused:403, ...
TASK_ID = "TASK_ID"
TASK_FAMILY = "TASK_FAMILY"
AUDIT_EVENT = "AUDIT_EVENT"  # the audit line's event: login, rpc, token, approval, ...
AUDIT_SEQ = "AUDIT_SEQ"  # the line's seq in the hash chain: where to find it in the audit file
RPC_METHOD = "RPC_METHOD"
FIELDS = (MESSAGE_ID, PRINCIPAL, REMOTE_ADDR, OUTCOME, TASK_ID, TASK_FAMILY, AUDIT_EVENT, AUDIT_SEQ, RPC_METHOD)


@dataclass(frozen=True)
class EventKind:
    """One kind of event: its MESSAGE_ID, the level its journal entry has, and whether the
    catalog explains it (the kinds an operator looks up)."""

    name: str
    message_id: str
    level: int = logging.INFO
    catalogued: bool = False


_KINDS = (
    EventKind("login_success", "05d6ae728f4d4ff4b16529f3589be373"),
    EventKind("login_failure", "0f46b466dae04966a924ec1361ad1e92", logging.WARNING, True),
    EventKind("login_unavailable", "ca480d5c316348b6a676750153d64828", logging.WARNING, True),
    EventKind("lockout", "e69b10d2982045ca8a9627d4ed04512f", logging.WARNING, True),
    EventKind("logout", "0c6c3e2341604b7280b64038ade85dbd"),
    EventKind("session_renewal", "4eca7033d3fa4207933036e5a79759f8"),
    EventKind("token_issued", "68fd0ce45df14efebf6f9051bcdbbbbb"),
    EventKind("token_refused", "6b631537237d4b12b8e242c04b7b2b3f", logging.WARNING, True),
    EventKind("rpc_ok", "63c27c5184ec4756acacca4370e4b86d"),
    EventKind("rpc_refused", "aa5455c066134d62bd5825030bcdec2d", logging.WARNING, True),
    EventKind("approval_requested", "2b0231ecf1bf41959c1b082326202a24", logging.INFO, True),
    EventKind("approval_granted", "05a25e18f9714b2a9388c5bda31d9840"),
    EventKind("break_glass", "e5fde8208bef43d0be94c17a81edc529", logging.WARNING, True),
    EventKind("approval_denied", "a0cb62670c184ab982a4e2983b64a7a2", logging.INFO, True),
    EventKind("approval_expired", "aca485e254f045bbaab7122133d5e950", logging.WARNING, True),
    EventKind("approval_event", "7d3efb35da934b3e872b61c0642d9ae6"),
    EventKind("user_unlock", "a62783553f374406901a657153e9677b", logging.INFO, True),
    EventKind("worker_release", "390c2e48f78647e1bcdd6f5ff21be892"),
    EventKind("action_refused", "5b9ea8d4d3f44759b99f961990c326f0", logging.WARNING, True),
    EventKind("audit_checkpoint", "ca9c5af9f694411e96fda51cbfd89a32"),
    EventKind("audit_damaged_tail", "0ff982416c6449deb1c3cdd12432b5a7", logging.WARNING, True),
    EventKind("audit_other", "9ddaa387524f426f93796b487e53ff38"),
    # Not audit lines: log lines that carry the id (state.py, history/writer.py).
    EventKind("snapshot_refused", "ad9d159f53ce4033b9f3c8d4792223a2", logging.CRITICAL, True),
    EventKind("history_degraded", "ce497cacd4a24b05939132d50e238941", logging.ERROR, True),
    # An [ha] node took over or stepped down (ha/node.py; also its "ha" audit line).
    EventKind("ha_failover", "4c3b7e0f1a9d4f6e8b2a5d7c9e1f3a08", logging.WARNING, True),
)
KINDS: dict[str, EventKind] = {kind.name: kind for kind in _KINDS}

# Audit event -> outcome -> kind; "*" for any other outcome of that event.
_AUDIT_KINDS: dict[str, dict[str, str]] = {
    "login": {"success": "login_success", "locked_out": "lockout", "unavailable": "login_unavailable",
              "*": "login_failure"},
    "logout": {"*": "logout"},
    "session_renewal": {"*": "session_renewal"},
    "token": {"issued": "token_issued", "*": "token_refused"},
    "token_exchange": {"issued": "token_issued", "*": "token_refused"},
    "rpc": {"ok": "rpc_ok", "*": "rpc_refused"},
    "approval": {"requested": "approval_requested", "break_glass": "break_glass", "approval": "approval_granted",
                 "approved": "approval_granted", "denied": "approval_denied", "expired": "approval_expired",
                 "*": "approval_event"},
    "user_unlock": {"refused": "action_refused", "*": "user_unlock"},
    "worker_release": {"refused": "action_refused", "*": "worker_release"},
    "audit_checkpoint": {"*": "audit_checkpoint"},
    "audit_damaged_tail": {"*": "audit_damaged_tail"},
    "ha": {"*": "ha_failover"},
}


def audit_kind(event: Any, outcome: Any) -> EventKind:
    """The kind of an audit line (``refused:NNN`` outcomes count as ``refused``)."""
    outcomes = _AUDIT_KINDS.get(event) if isinstance(event, str) else None
    if outcomes is None:
        return KINDS["audit_other"]
    key = outcome.partition(":")[0] if isinstance(outcome, str) else ""
    return KINDS[outcomes.get(key) or outcomes["*"]]


def of_kind(kind: str, **fields: Any) -> dict[str, str]:
    """``extra=`` for a log call: the kind's MESSAGE_ID and the given FIELDS (None left out)."""
    values = {MESSAGE_ID: KINDS[kind].message_id}
    values.update((name, str(value)) for name, value in fields.items() if value is not None)
    return values


def audit_extra(record: dict[str, Any], kind: EventKind | None = None) -> dict[str, str]:
    """The journal fields of one chained audit record (as trail.py writes it), of ``kind`` when
    the caller already knows it."""
    kind = kind or audit_kind(record.get("event"), record.get("outcome"))
    return of_kind(kind.name, PRINCIPAL=record.get("principal"), REMOTE_ADDR=record.get("source") or None,
                 OUTCOME=record.get("outcome"), TASK_ID=record.get("task_id"), TASK_FAMILY=record.get("family"),
                 AUDIT_EVENT=record.get("event"), AUDIT_SEQ=record.get("seq"), RPC_METHOD=record.get("method"))
