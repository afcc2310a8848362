"""One task-history event, as queued, spooled and stored."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """What the scheduler reported, captured on its loop thread.

    ``uid`` makes the insert idempotent: an event is stored once however often a batch is
    replayed. ``ts`` is seconds since the epoch (UTC).
    """

    uid: str
    task_id: str
    name: str
    params: dict[str, str]
    event_name: str
    ts: float
    host: str | None = None
    principal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(**data)
