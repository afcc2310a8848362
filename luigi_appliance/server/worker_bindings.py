"""Which principal owns which worker id.

A worker id belongs to the principal that first used it; another principal sending worker RPCs
under that id is refused, so one account cannot act as another's worker (take its tasks with
get_work, report them done with add_task, keep it alive with ping). Task-scoped methods also ask
here who owns the worker running a task.

The table is kept in the signed state snapshot, so a restart does not hand the ids of running
workers to whoever calls first. It is bounded without evicting anyone who is still working: a
principal may hold at most ``per_principal`` ids and the table ``total``; when a new id would
exceed a limit, the bindings of workers the scheduler no longer knows (luigi pruned them after
``worker_disconnect_delay`` without a ping) are dropped first, and if that frees nothing the new
id is refused. A live worker's binding only goes when an operator releases it.

With [ha] the leader's ``listener`` hears every binding made and released, for the journal; a
standby applies them with ``replayed`` (ha/replay.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

MAX_PER_PRINCIPAL = 1000
MAX_TOTAL = 100_000


class WorkerBindings:
    """worker id -> principal name, with per-principal and global limits."""

    def __init__(self, is_live: Callable[[str], bool] | None = None,
                 per_principal: int = MAX_PER_PRINCIPAL, total: int = MAX_TOTAL,
                 listener: Callable[[str, str, str], None] | None = None) -> None:
        # Told ("bind" | "release", worker id, principal) of each change claim and release make
        # (not of load): the [ha] leader journals them.
        self.listener = listener
        # Without a scheduler to ask, every bound worker counts as live: nothing is ever dropped.
        self._is_live = is_live or (lambda worker_id: True)
        self._per_principal = per_principal
        self._total = total
        self._owners: dict[str, str] = {}
        self._by_principal: dict[str, set[str]] = {}

    def owner(self, worker_id: str) -> str | None:
        """The principal bound to ``worker_id``, or None when nobody claimed it yet."""
        return self._owners.get(worker_id)

    def claim(self, worker_id: str, principal: str) -> str | None:
        """Bind ``worker_id`` to ``principal`` if free; why not, or None when it is (now) theirs."""
        owner = self._owners.get(worker_id)
        if owner == principal:
            return None
        if owner is not None:
            return "worker id belongs to another principal"
        if len(self._by_principal.get(principal, ())) >= self._per_principal:
            self._drop_dead(list(self._by_principal[principal]))
            if len(self._by_principal.get(principal, ())) >= self._per_principal:
                return (f"{principal} already has {self._per_principal} worker ids bound to live workers "
                        "(limit per principal); ids are freed once the scheduler drops a stopped worker")
        if len(self._owners) >= self._total:
            self._drop_dead(list(self._owners))
            if len(self._owners) >= self._total:
                return f"the scheduler already has {self._total} worker ids bound to live workers (global limit)"
        self._bind(worker_id, principal)
        if self.listener is not None:
            self.listener("bind", worker_id, principal)
        return None

    def release(self, worker_id: str) -> str | None:
        """Forget ``worker_id``'s binding; returns the principal it was bound to, if any."""
        principal = self._drop(worker_id)
        if principal is not None and self.listener is not None:
            self.listener("release", worker_id, principal)
        return principal

    def replayed(self, op: str, worker_id: str, principal: str) -> None:
        """Apply a change the leader's listener heard ("bind" or "release"): no limits (the leader
        applied them), and the listener is not told."""
        if op == "bind":
            if self._owners.get(worker_id) not in (None, principal):
                self._drop(worker_id)
            self._bind(worker_id, principal)
        else:
            self._drop(worker_id)

    def export(self) -> dict[str, str]:
        """A copy of the table, for the state snapshot."""
        return dict(self._owners)

    def load(self, owners: Mapping[str, str]) -> None:
        """Replace the table with one from a snapshot; limits apply to later claims only."""
        self._owners = {}
        self._by_principal = {}
        for worker_id, principal in owners.items():
            if isinstance(worker_id, str) and isinstance(principal, str):
                self._bind(worker_id, principal)

    def __len__(self) -> int:
        return len(self._owners)

    def _bind(self, worker_id: str, principal: str) -> None:
        self._owners[worker_id] = principal
        self._by_principal.setdefault(principal, set()).add(worker_id)

    def _drop(self, worker_id: str) -> str | None:
        principal = self._owners.pop(worker_id, None)
        if principal is not None:
            ids = self._by_principal[principal]
            ids.discard(worker_id)
            if not ids:
                del self._by_principal[principal]
        return principal

    def _drop_dead(self, worker_ids: Iterable[str]) -> None:
        for worker_id in worker_ids:
            if not self._is_live(worker_id):
                self.release(worker_id)
