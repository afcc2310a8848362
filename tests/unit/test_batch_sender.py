"""The client's background add_tasks sender: batches go in order, one at a time, and the first
failure stops it, later batches unsent, raised in the worker's thread."""

from __future__ import annotations

import threading

import pytest

from luigi_appliance.client.batch_sender import QUEUED_BATCHES, BatchSender
from luigi_appliance.client.task_batches import Batch


class Refused(Exception):
    pass


def batch(name: str) -> Batch:
    return Batch("w1", tasks=[{"task_id": name}])


def names(batches: list[Batch]) -> list[str]:
    return [b.tasks[0]["task_id"] for b in batches]


def test_sends_every_batch_in_order_and_drain_waits_for_them() -> None:
    sent: list[Batch] = []
    sender = BatchSender(sent.append)
    for i in range(3 * QUEUED_BATCHES):
        sender.submit(batch(f"T_{i}"))
    sender.drain()
    assert names(sent) == [f"T_{i}" for i in range(3 * QUEUED_BATCHES)]
    sender.stop()


def test_a_failure_drops_what_was_queued_after_it_and_is_raised_from_then_on() -> None:
    sent: list[Batch] = []
    queued = threading.Event()

    def send(b: Batch) -> None:
        if b.tasks[0]["task_id"] == "T_1":
            queued.wait(10)  # the worker queues T_2 and T_3 while T_1 is in flight
            raise Refused("T_1 refused")
        sent.append(b)

    sender = BatchSender(send)
    for i in range(4):
        sender.submit(batch(f"T_{i}"))
    queued.set()
    with pytest.raises(Refused, match="T_1 refused"):
        sender.drain()
    with pytest.raises(Refused):
        sender.submit(batch("T_4"))
    with pytest.raises(Refused):
        sender.drain()
    sender.stop()
    assert names(sent) == ["T_0"]


def test_stop_without_a_batch_and_twice_is_fine() -> None:
    sender = BatchSender(lambda b: None)
    sender.drain()
    sender.stop()
    sender.submit(batch("T_0"))
    sender.drain()
    sender.stop()
    sender.stop()
