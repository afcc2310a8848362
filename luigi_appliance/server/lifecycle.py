"""The daemon's parts and their lifecycle: started in order, reloaded in order (SIGHUP), closed
in reverse order (SIGTERM), asked whether they are healthy (/healthz).

A part that has nothing to do at a step inherits the default, which does nothing (and reports
healthy). Objects that are not Components themselves (authenticators, the token keys, the
history) join through ``Hooks``, which names the methods to call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class Component:
    """One part of the daemon. Every step is optional."""

    name = "component"

    def start(self) -> None:
        """Begin work: the loop runs, but no request has been served yet."""

    def reload(self) -> None:
        """SIGHUP: re-read what may change while running (files, keys, certificates)."""

    def close(self) -> None:
        """Shutdown: the parts after this one in the list are closed already."""

    def healthy(self) -> bool:
        """Whether this part works as configured (/healthz says degraded when one does not)."""
        return True


def _nothing() -> None:
    return None


def _always() -> bool:
    return True


@dataclass
class Hooks(Component):
    """A component made of another object's methods."""

    name: str = "hooks"
    on_start: Callable[[], None] = _nothing
    on_reload: Callable[[], None] = _nothing
    on_close: Callable[[], None] = _nothing
    on_healthy: Callable[[], bool] = _always

    def start(self) -> None:
        self.on_start()

    def reload(self) -> None:
        self.on_reload()

    def close(self) -> None:
        self.on_close()

    def healthy(self) -> bool:
        return self.on_healthy()


@dataclass
class Components:
    """The daemon's parts, in the order they start; each step walks them all."""

    parts: list[Component] = field(default_factory=list)

    def add(self, part: Component) -> Component:
        self.parts.append(part)
        return part

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def reload(self) -> None:
        for part in self.parts:
            part.reload()

    def close(self) -> None:
        # What started last (the listener) stops first; what others still use (the audit trail) last.
        for part in reversed(self.parts):
            part.close()

    def healthy(self) -> bool:
        return all(part.healthy() for part in self.parts)
