"""Which principal owns which worker id.

A worker id belongs to the principal that first used it; another principal sending worker RPCs
under that id is refused, so one account cannot act as another's worker (take its tasks with
get_work, report them done with add_task, keep it alive with ping). Task-scoped methods also ask
here who owns the worker running a task.
"""

from __future__ import annotations

from collections import OrderedDict


class WorkerBindings:
    """worker id -> principal name."""

    def __init__(self) -> None:
        # Least recently used first.
        self._owners: OrderedDict[str, str] = OrderedDict()

    def owner(self, worker_id: str) -> str | None:
        """The principal bound to ``worker_id``, or None when nobody claimed it yet."""
        return self._owners.get(worker_id)

    def claim(self, worker_id: str, principal: str) -> str | None:
        """Bind ``worker_id`` to ``principal`` if free; why not, or None when it is (now) theirs."""
        owner = self._owners.get(worker_id)
        if owner is None:
            self._owners[worker_id] = principal
        elif owner != principal:
            return "worker id belongs to another principal"
        else:
            self._owners.move_to_end(worker_id)
        return None

    def release(self, worker_id: str) -> str | None:
        """Forget ``worker_id``'s binding; returns the principal it was bound to, if any."""
        return self._owners.pop(worker_id, None)
