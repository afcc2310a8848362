"""Who is making the RPC being served right now.

Luigi's scheduler methods take no caller argument, yet the history must record who scheduled
each task and the guard must bind workers to principals. The guard sets this context variable
in ``prepare()``; the RPC runs in the same asyncio task right after, so code reached from the
RPC (scheduler, task history) reads it. Outside a request it is None.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from luigi_appliance.auth import Principal


@dataclass(frozen=True)
class Caller:
    principal: Principal
    # The client's address as the guard resolved it behind [server] trusted_proxies
    # (server/client_address.py): an IP address, or a label such as ``unix`` when unknown.
    remote_ip: str


current_caller: ContextVar[Caller | None] = ContextVar("luigi_appliance_caller", default=None)
