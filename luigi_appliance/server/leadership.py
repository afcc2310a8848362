"""Whether this scheduler may serve, and when a state change is safe to acknowledge.

Without [ha] a scheduler always leads and nothing waits (``Solo``). With it the HA node
(ha/node.py) answers: a standby refuses everything but its health and metrics with a 503 that
names the leader, and a leader's replies to state-changing calls wait until the journal holds
their changes (server/guard.py).
"""

from __future__ import annotations

from typing import Protocol

from luigi_appliance.ha.status import LEADER_HEADER, SOLO, NodeStatus

__all__ = ["LEADER_HEADER", "Leadership", "NotLeader", "Solo", "standby_refusal"]


class NotLeader(Exception):
    """This node may not acknowledge the change: it is not (or no longer) the leader."""


class Leadership(Protocol):
    def serving(self) -> bool:
        """Whether this node answers RPCs and pages now."""

    def status(self) -> NodeStatus:
        """Role, epoch, leader and lag, for /healthz/leader and /metrics."""

    def appended(self) -> int:
        """How many journal records this node appended so far (a mark to compare with)."""

    async def committed(self) -> None:
        """Return once every record appended so far is committed; NotLeader when it cannot be."""


class Solo:
    """A scheduler without [ha]: it leads, and its changes are acknowledged at once."""

    def serving(self) -> bool:
        return True

    def status(self) -> NodeStatus:
        return SOLO

    def appended(self) -> int:
        return 0

    async def committed(self) -> None:
        return None


def standby_refusal(status: NodeStatus) -> tuple[str, dict[str, str]]:
    """The reason and headers of a non-leader's 503."""
    headers = {"Retry-After": "1"}
    if status.leader_url and status.role != "leader":
        headers[LEADER_HEADER] = status.leader_url
    where = f"the leader is {status.leader_url}" if status.leader_url else "no leader is known yet"
    return f"{status.role}: {where}", headers
