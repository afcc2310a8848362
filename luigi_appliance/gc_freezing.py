"""Fewer full garbage collections of a task graph while it is being built.

Building a graph of 100k luigi tasks creates millions of objects that all stay alive (luigi's
instance cache holds every task). CPython runs a full collection each time the number of
long-lived objects has grown by a quarter, and each full collection visits every one of them
again: about a quarter of the time of building such a graph went on those visits. Within
``survivors_frozen()``, what survives a full collection is moved to the permanent generation
(``gc.freeze()``), so the next full collection visits only what was created since. Nothing
reachable is ever freed either way; what is frozen and becomes cyclic garbage later is
collected after the block (``gc.unfreeze()`` returns it to the oldest generation).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

OLDEST = 2


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == OLDEST:
        gc.freeze()


@contextmanager
def survivors_frozen() -> Iterator[None]:
    """Within: each full collection's survivors are frozen; on the way out, all are unfrozen.
    Reentrant: an inner block leaves the freezing to the outer one. A process that froze objects
    itself (``gc.freeze()`` before forking workers) is left as it is: unfreezing would undo that."""
    if _freeze_after_full_collection in gc.callbacks or gc.get_freeze_count():
        yield
        return
    gc.callbacks.append(_freeze_after_full_collection)
    try:
        yield
    finally:
        gc.callbacks.remove(_freeze_after_full_collection)
        gc.unfreeze()
