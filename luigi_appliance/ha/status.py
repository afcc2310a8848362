"""What one node says about itself: its role, its epoch, who leads and how far behind it is.

The same figures go to ``GET /healthz/leader`` (keepalived, Pacemaker and load balancers ask it),
to /metrics and to ``luigi-appliance ha status``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# starting: loading the state from PostgreSQL (or waiting for it); standby: tailing the journal;
# promoting: won the lease, applying the rest of the journal; leader: serving; fenced: lost the
# lease or was refused a write, reloading the state before it may stand by again.
# The header a non-leader's 503 names the leader's advertise_url in (server/leadership.py sends
# it, client/leader.py follows it).
LEADER_HEADER = "X-Luigi-Appliance-Leader"

ROLES = ("starting", "standby", "promoting", "leader", "fenced")


@dataclass(frozen=True)
class NodeStatus:
    """One node's answer. ``node`` is None (and ``epoch`` 0) for a scheduler without [ha]: a lone
    scheduler always leads."""

    role: str
    node: str | None = None
    epoch: int = 0
    leader: str | None = None
    leader_url: str | None = None
    applied_pos: int = 0
    lag_records: int = 0
    lag_seconds: float = 0.0
    # Why the node is not (yet) serving, when that is not plain standing by.
    detail: str | None = None
    # Since this process started: takeovers from another node, records journalled as leader,
    # records whose get_work answer differed here from the leader's.
    failovers: int = 0
    journalled: int = 0
    divergences: int = 0

    @property
    def leading(self) -> bool:
        return self.role == "leader"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


SOLO = NodeStatus(role="leader")
