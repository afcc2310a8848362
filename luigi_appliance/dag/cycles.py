"""Cycle finding on a graph given as a function from node to successors. Iterative throughout:
graphs of 100k+ nodes and chains deeper than Python's recursion limit are the point."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

N = TypeVar("N", bound=Hashable)


def cyclic_components(starts: Iterable[N], successors: Callable[[N], Iterable[N]]) -> list[list[N]]:
    """Strongly connected components reachable from ``starts`` that contain a cycle (more than
    one node, or a node depending on itself). Tarjan's algorithm with an explicit stack."""
    index: dict[N, int] = {}
    low: dict[N, int] = {}
    on_stack: set[N] = set()
    stack: list[N] = []
    found: list[list[N]] = []
    counter = 0
    for start in starts:
        if start in index:
            continue
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work: list[tuple[N, Iterable[N]]] = [(start, iter(successors(start)))]
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors(child))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[N] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in set(successors(node)):
                    found.append(component)
    return found


def cycle_path(component: Iterable[N], successors: Callable[[N], Iterable[N]],
               key: Callable[[N], str] = str) -> list[N]:
    """One shortest cycle inside ``component``, as [a, b, ..., a], starting from its smallest node."""
    members = set(component)
    start = min(members, key=key)
    parent: dict[N, N] = {}
    queue: deque[N] = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for child in successors(node):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in seen:
                seen.add(child)
                parent[child] = node
                queue.append(child)
    raise ValueError("component has no cycle")
