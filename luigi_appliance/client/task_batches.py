"""A luigi worker's add_task calls gathered into add_tasks batches (client/remote.py sends them).

A batch holds one worker id's consecutive calls, at most ``max_tasks`` of them and
``max_json_bytes`` of JSON, so that its request body (form-encoded, at most three times the
JSON) stays under the scheduler's default body limit of 2 MiB and its task count under the
server's limit (``server/rpc_arguments.py`` MAX_BATCH_TASKS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BATCH_TASKS = 500
MAX_BATCH_JSON_BYTES = 512 * 1024


@dataclass
class Batch:
    """One worker's add_task arguments (each without the worker id), in call order."""

    worker: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    encoded: list[str] = field(default_factory=list)
    json_bytes: int = 0

    def data(self) -> str:
        """add_tasks' ``data``: each task is encoded once, when it is added."""
        return f'{{"worker":{json.dumps(self.worker)},"tasks":[{",".join(self.encoded)}]}}'

    def halves(self) -> tuple[Batch, Batch]:
        """The first and the second half, in order (for a scheduler that finds a batch too large)."""
        middle = len(self.tasks) // 2
        first, second = Batch(self.worker), Batch(self.worker)
        for half, part in ((first, slice(None, middle)), (second, slice(middle, None))):
            half.tasks, half.encoded = self.tasks[part], self.encoded[part]
            half.json_bytes = sum(len(text) + 1 for text in half.encoded)
        return first, second


class TaskBuffer:
    """add_task calls not sent yet."""

    def __init__(self, max_tasks: int = DEFAULT_BATCH_TASKS, max_json_bytes: int = MAX_BATCH_JSON_BYTES):
        if max_tasks < 1:
            raise ValueError("a batch holds at least one task")
        self.max_tasks = max_tasks
        self.max_json_bytes = max_json_bytes
        self._batch: Batch | None = None

    def add(self, arguments: dict[str, Any]) -> list[Batch]:
        """Buffer one add_task call (its keyword arguments, ``worker`` among them); the batches
        now ready to send, in order: one of another worker id, and this one once full."""
        task = {name: value for name, value in arguments.items() if name != "worker"}
        encoded = json.dumps(task, separators=(",", ":"))
        ready = []
        batch = self._batch
        if batch is not None and (batch.worker != arguments["worker"]
                                  or batch.json_bytes + len(encoded) > self.max_json_bytes):
            ready.append(batch)
            batch = None
        if batch is None:
            batch = Batch(arguments["worker"])
        batch.tasks.append(task)
        batch.encoded.append(encoded)
        batch.json_bytes += len(encoded) + 1
        self._batch = batch
        if len(batch.tasks) >= self.max_tasks:
            ready.append(batch)
            self._batch = None
        return ready

    def take(self) -> Batch | None:
        """What is buffered, emptying the buffer."""
        batch, self._batch = self._batch, None
        return batch

    def __len__(self) -> int:
        return len(self._batch.tasks) if self._batch is not None else 0
