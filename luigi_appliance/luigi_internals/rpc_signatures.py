"""What each of luigi's RPC methods takes, read from luigi's Scheduler itself."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import luigi.scheduler


@dataclass(frozen=True)
class Signature:
    """What a scheduler method takes: ``known`` None when it takes any keyword (``**kwargs``)."""

    required: frozenset[str]
    known: frozenset[str] | None


# Luigi asserts these itself (or reads them from **kwargs), with a traceback when they are missing.
_ALSO_REQUIRED = {"add_task": {"worker"}, "get_work": {"worker"}, "ping": {"worker"}}


def _signature(method: str) -> Signature:
    parameters = list(inspect.signature(getattr(luigi.scheduler.Scheduler, method)).parameters.values())[1:]
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = {p.name for p in named if p.default is p.empty} | _ALSO_REQUIRED.get(method, set())
    any_keyword = any(p.kind == p.VAR_KEYWORD for p in parameters)
    return Signature(frozenset(required), None if any_keyword else frozenset(p.name for p in named))


# Luigi's base class, not the appliance's subclass (whose overrides pass **kwargs through).
SIGNATURES: dict[str, Signature] = {name: _signature(name) for name in luigi.scheduler.RPC_METHODS}
