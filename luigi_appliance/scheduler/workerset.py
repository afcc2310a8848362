"""A task's workers: luigi's OrderedSet semantics on a plain dict, telling the task's index of
every change.

luigi's OrderedSet keeps a linked list of three-element lists besides its dict: several hundred
bytes for a task's one or two workers. A dict keeps insertion order on its own, and re-adding a
present key leaves it where it is, exactly as OrderedSet.add does. Pickled, it is luigi's own
OrderedSet, so a snapshot stays loadable by stock luigi.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any, Protocol

import luigi.scheduler


class WorkersObserver(Protocol):
    """What a WorkerSet tells when it changes (the owning task's index)."""

    def workers_changing(self, task: Any) -> None: ...

    def workers_changed(self, task: Any) -> None: ...

    def worker_added(self, task: Any, worker_id: str) -> None: ...


class WorkerSet(MutableSet):
    """An insertion-ordered set of worker ids belonging to ``task``."""

    __slots__ = ("_members", "_owner")

    def __init__(self, iterable: Iterable[str] = (), task: Any = None):
        self._members: dict[str, None] = dict.fromkeys(iterable)
        self._owner = task

    def _observer(self) -> WorkersObserver | None:
        task = self._owner
        return None if task is None else task._ix

    def belongs_to(self, task: Any) -> bool:
        return self._owner is task

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._members)

    def add(self, key: str) -> None:
        if key in self._members:
            return
        observer = self._observer()
        if observer is None:
            self._members[key] = None
        else:
            observer.worker_added(self._owner, key)

    def insert(self, key: str) -> None:
        """Add ``key`` without telling anyone (the observer's own worker_added does it)."""
        self._members[key] = None

    def discard(self, key: str) -> None:
        if key in self._members:
            self._change(lambda: self._members.pop(key))

    def __isub__(self, other: Iterable[Any]) -> WorkerSet:
        if other is self:
            self._change(self._members.clear)
        else:
            gone = [key for key in other if key in self._members]
            if gone:
                self._change(lambda: [self._members.pop(key) for key in gone])
        return self

    def _change(self, mutate: Any) -> None:
        observer = self._observer()
        if observer is not None:
            observer.workers_changing(self._owner)
        mutate()
        if observer is not None:
            observer.workers_changed(self._owner)

    def peek(self, last: bool = True) -> str:
        if not self._members:
            raise KeyError("set is empty")
        return next(reversed(self._members)) if last else next(iter(self._members))

    def pop(self, last: bool = True) -> str:
        key = self.peek(last)
        self.discard(key)
        return key

    def __repr__(self) -> str:
        return f"OrderedSet({list(self._members)!r})" if self._members else "OrderedSet()"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (WorkerSet, luigi.scheduler.OrderedSet)):
            return len(self) == len(other) and list(self) == list(other)
        return isinstance(other, Iterable) and set(self) == set(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like luigi's OrderedSet

    def __reduce__(self) -> tuple[Any, ...]:
        return luigi.scheduler.OrderedSet, (list(self._members),)
