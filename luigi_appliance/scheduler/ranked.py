"""A sorted set of unique, comparable keys with O(log n) insert and remove and ordered walks.

The schedulable tasks are kept here in get_work's order. A plain sorted list would pay an O(n)
memmove for every insert near its head (new tasks of equal priority rank last, but the best task
leaves from the head); a heap cannot be walked in order. So the keys sit in sorted runs of at most
``2 * LOAD`` keys, found by bisecting the runs' last keys: every change moves at most one run.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any

LOAD = 500


class RankedSet:
    """Unique keys in ascending order."""

    __slots__ = ("_lasts", "_runs", "_size")

    def __init__(self) -> None:
        self._runs: list[list[Any]] = []
        self._lasts: list[Any] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, key: Any) -> None:
        """Insert ``key`` (not already present)."""
        runs, lasts = self._runs, self._lasts
        self._size += 1
        if not runs:
            runs.append([key])
            lasts.append(key)
            return
        i = bisect_left(lasts, key)
        if i == len(runs):
            i -= 1
            runs[i].append(key)
            lasts[i] = key
        else:
            insort(runs[i], key)
        run = runs[i]
        if len(run) > 2 * LOAD:
            runs.insert(i + 1, run[LOAD:])
            del run[LOAD:]
            lasts.insert(i, run[-1])

    def remove(self, key: Any) -> None:
        """Remove ``key``, which must be present."""
        runs, lasts = self._runs, self._lasts
        i = bisect_left(lasts, key)
        if i == len(runs):
            raise KeyError(key)
        run = runs[i]
        j = bisect_left(run, key)
        if j == len(run) or run[j] != key:
            raise KeyError(key)
        del run[j]
        self._size -= 1
        if not run:
            del runs[i]
            del lasts[i]
        elif j == len(run):
            lasts[i] = run[-1]

    def __contains__(self, key: Any) -> bool:
        i = bisect_left(self._lasts, key)
        if i == len(self._runs):
            return False
        run = self._runs[i]
        j = bisect_left(run, key)
        return j < len(run) and run[j] == key

    def __iter__(self) -> Iterator[Any]:
        for run in self._runs:
            yield from run

    def walk_from(self, key: Any) -> Iterator[Any]:
        """The keys >= ``key``, ascending. The set must not change while the walk goes on."""
        runs = self._runs
        i = bisect_left(self._lasts, key)
        if i == len(runs):
            return
        run = runs[i]
        for j in range(bisect_left(run, key), len(run)):
            yield run[j]
        for k in range(i + 1, len(runs)):
            yield from runs[k]
