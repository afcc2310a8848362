"""Apply one journal record on a standby, exactly as the leader ran it.

The call runs with the leader's caller (auth/context.py), the leader's clock and ids
(luigi_internals/clock.py), and nothing leaving the state: no task history, no e-mails, no
approval events (the leader logged, audited and notified them) and no journal record. A binding
record goes to the worker bindings as the leader made it, without limits.
"""

from __future__ import annotations

from typing import Any

from luigi_appliance.auth.context import current_caller
from luigi_appliance.ha.records import BindingRecord, CallRecord, RecordError, parse
from luigi_appliance.luigi_internals.clock import pinned
from luigi_appliance.scheduler.journalled import JOURNALLED, result_digest
from luigi_appliance.server.worker_bindings import WorkerBindings

_JOURNALLED = frozenset(JOURNALLED)


def apply(scheduler: Any, bindings: WorkerBindings, rec: dict[str, Any]) -> str | None:
    """Apply ``rec``; None, or what the leader's call did that this one did not (get_work handed
    out another task, one raised and the other did not): the states differ from then on.
    RecordError for a record this version cannot apply."""
    parsed = parse(rec)
    if isinstance(parsed, BindingRecord):
        bindings.replayed(parsed.op, parsed.worker_id, parsed.principal)
        return None
    return _call(scheduler, parsed)


def _call(scheduler: Any, rec: CallRecord) -> str | None:
    if rec.method not in _JOURNALLED:
        raise RecordError(f"journal record of {rec.method!r}, which is not a journalled scheduler method")
    method = getattr(scheduler, rec.method)
    approvals = getattr(scheduler, "approvals", None)
    token = current_caller.set(rec.caller)
    try:
        with scheduler.unjournalled(), scheduler.replaying(), pinned(rec.at, rec.uid):
            if approvals is None:
                answer = method(**rec.arguments)
            else:
                with approvals.events.muted():
                    answer = method(**rec.arguments)
    except Exception as exc:
        if rec.raised:
            return None
        return f"{rec.method} raised {type(exc).__name__} here ({exc}) but not on the leader"
    finally:
        current_caller.reset(token)
    if rec.raised:
        return f"{rec.method} raised on the leader but not here"
    mine = result_digest(rec.method, answer)
    if mine != rec.result:
        return f"{rec.method} handed out {mine!r} here but {rec.result!r} on the leader"
    return None
