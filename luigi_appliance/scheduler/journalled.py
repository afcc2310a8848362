"""Every state change of the scheduler as a journal record, for the [ha] standby to replay.

With ``journal`` None (no [ha], a standby, a fenced leader) the methods pass straight through:
nothing is pinned or recorded and the answers are the plain scheduler's. With a journal each
journalled method (``JOURNALLED``: luigi's state-changing RPCs, the approval decisions and
expiry, prune) runs under the leader's pinned clock and ids (luigi_internals/clock.py), and its
record (ha/records.py) is appended once it returned or raised: a call that raised may have
changed the state before, and replays to the same raise. Only the outermost journalled call is
recorded; what it calls (get_work's prune, approve_request's action) replays as part of it. A
read that prunes (luigi's task_list, graph, ...) calls prune at the outermost level: that prune
is recorded, the read is not.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import luigi.scheduler

from luigi_appliance.auth.context import current_caller
from luigi_appliance.ha import records
from luigi_appliance.luigi_internals import clock
from luigi_appliance.luigi_internals.scheduler import LuigiScheduler
from luigi_appliance.policy import RPC_METHODS

# luigi's RPCs that change state (add_tasks, approve and deny are handlers that call these); two
# reads that change it too: count_pending makes a record for a worker luigi does not know (its
# own, or the one running a task), get_scheduler_message_response pops the response it returns;
# and the appliance's own state changes.
JOURNALLED: tuple[str, ...] = (
    *sorted(name for name, rule in RPC_METHODS.items() if rule.mutates and hasattr(luigi.scheduler.Scheduler, name)),
    "count_pending", "get_scheduler_message_response", "approve_request", "deny_request", "expire_due",
)


class JournalSink(Protocol):
    def append(self, at: float, rec: dict[str, Any]) -> int:
        """Queue ``rec`` (made at leader time ``at``) for the journal; its sequence number."""


class Journalled(LuigiScheduler):
    """A scheduler whose state changes go to ``journal`` (None: not journalled)."""

    def __init__(self, *args: Any, journal: JournalSink | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.journal = journal
        self._journal_depth = 0

    @contextmanager
    def unjournalled(self) -> Iterator[None]:
        """Record nothing in the body (a standby applying records: never journalled twice)."""
        self._journal_depth += 1
        try:
            yield
        finally:
            self._journal_depth -= 1

    def _journalled(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        method = getattr(super(), name)
        journal = self.journal
        if journal is None or self._journal_depth:
            return method(*args, **kwargs)
        # Encoded before the call runs: a value the journal cannot hold refuses the call before
        # it changed anything, and the call cannot change the recorded arguments.
        arguments = records.encode_value(bound_arguments(type(self), name, args, kwargs))
        at, uid = clock.now(), str(uuid.uuid4())
        caller = current_caller.get()
        result = None
        raised = True
        self._journal_depth += 1
        try:
            with clock.pinned(at, uid):
                answer = method(*args, **kwargs)
            result = result_digest(name, answer)
            raised = False
            return answer
        finally:
            self._journal_depth -= 1
            journal.append(at, records.call(name, arguments, at, uid, caller, result, raised))


def result_digest(method: str, answer: Any) -> str | None:
    """What the standby compares its own answer with: get_work's task id (a batch: its batch id)."""
    if method != "get_work" or not isinstance(answer, dict):
        return None
    return answer.get("task_id") or answer.get("batch_id")


@functools.cache
def _signature(cls: type, name: str) -> inspect.Signature:
    """The first signature of ``name`` along ``cls``'s MRO that names its parameters (the outer
    layers take ``*args, **kwargs``)."""
    for klass in cls.__mro__:
        function = vars(klass).get(name)
        if function is None or klass is Journalled:
            continue
        signature = inspect.signature(function)
        if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
            return signature
    raise TypeError(f"{cls.__name__}.{name} has no signature with named parameters to journal its calls by")


@functools.cache
def _named(cls: type, name: str) -> frozenset[str]:
    """The parameters of ``name`` that can be passed by keyword (without ``self``)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(n for n, p in list(_signature(cls, name).parameters.items())[1:] if p.kind in kinds)


def bound_arguments(cls: type, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments by name, as the method would be called again (``**kwargs`` flattened);
    TypeError as the method itself would raise it for arguments it does not take."""
    if not args and kwargs.keys() <= _named(cls, name):
        return dict(kwargs)  # luigi's RPC handler calls by name: nothing to bind (a third of the cost)
    bound = _signature(cls, name).bind(None, *args, **kwargs)  # None for self
    parameters = _signature(cls, name).parameters
    arguments: dict[str, Any] = {}
    for parameter, value in list(bound.arguments.items())[1:]:
        if parameters[parameter].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        else:
            arguments[parameter] = value
    return arguments


def _journalling(name: str) -> Callable[..., Any]:
    def method(self: Journalled, *args: Any, **kwargs: Any) -> Any:
        return self._journalled(name, args, kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"luigi's {name}, journalled (see Journalled)."
    return method


for _name in JOURNALLED:
    setattr(Journalled, _name, _journalling(_name))
del _name

__all__ = ["JOURNALLED", "JournalSink", "Journalled", "bound_arguments", "result_digest"]
