"""add_tasks' pure parts: the client's buffer, the server's batch shape and its family checks."""

from __future__ import annotations

import json

import pytest

from luigi_appliance.auth import Principal, Role
from luigi_appliance.client.task_batches import TaskBuffer
from luigi_appliance.server.rpc_arguments import MAX_BATCH_TASKS, BadArguments, check_batch
from luigi_appliance.server.task_access import batch_family_refusal


def call(task_id: str, worker: str = "w1", **more) -> dict:
    return {"worker": worker, "task_id": task_id, "status": "PENDING", **more}


# ---- the client's buffer ------------------------------------------------------------------------

def test_buffer_sends_full_batches_in_call_order_and_keeps_the_rest() -> None:
    buffer = TaskBuffer(max_tasks=3)
    ready = [batch for i in range(7) for batch in buffer.add(call(f"T_{i}"))]
    assert [[t["task_id"] for t in b.tasks] for b in ready] == [["T_0", "T_1", "T_2"], ["T_3", "T_4", "T_5"]]
    assert len(buffer) == 1
    rest = buffer.take()
    assert rest is not None and [t["task_id"] for t in rest.tasks] == ["T_6"]
    assert buffer.take() is None and len(buffer) == 0


def test_batch_data_is_add_tasks_arguments_with_the_worker_once() -> None:
    buffer = TaskBuffer(max_tasks=10)
    buffer.add(call("T_1", deps=["T_2"], priority=3))
    buffer.add(call("T_2"))
    batch = buffer.take()
    assert batch is not None
    assert json.loads(batch.data()) == {"worker": "w1", "tasks": [
        {"task_id": "T_1", "status": "PENDING", "deps": ["T_2"], "priority": 3},
        {"task_id": "T_2", "status": "PENDING"}]}


def test_another_worker_id_starts_a_new_batch() -> None:
    buffer = TaskBuffer(max_tasks=10)
    assert buffer.add(call("T_1", worker="a")) == []
    [first] = buffer.add(call("T_2", worker="b"))
    assert first.worker == "a" and [t["task_id"] for t in first.tasks] == ["T_1"]
    second = buffer.take()
    assert second is not None and second.worker == "b"


def test_a_batch_stays_under_its_byte_budget_and_splits_in_order() -> None:
    buffer = TaskBuffer(max_tasks=1000, max_json_bytes=1000)
    big = "x" * 300
    ready = [batch for i in range(10) for batch in buffer.add(call(f"T_{i}", params={"p": big}))]
    assert ready and all(b.json_bytes <= 1000 for b in ready)
    assert all(len(b.data()) < 1000 + 100 for b in ready)
    first, second = ready[0].halves()
    assert [t["task_id"] for t in first.tasks + second.tasks] == [t["task_id"] for t in ready[0].tasks]
    assert first.data() != second.data() and first.worker == second.worker == "w1"


# ---- the server: the batch's shape ---------------------------------------------------------------

def test_check_batch_gives_each_task_the_batch_worker() -> None:
    tasks = check_batch({"worker": "w1", "tasks": [{"task_id": "A_1"}, {"task_id": "B_1", "deps": ["A_1"]}]})
    assert tasks == [{"task_id": "A_1", "worker": "w1"}, {"task_id": "B_1", "deps": ["A_1"], "worker": "w1"}]


@pytest.mark.doc_rule("add-tasks-arguments")
@pytest.mark.parametrize(("data", "status", "reason"), [
    ({"tasks": []}, 400, "needs argument worker"),
    ({"worker": "w", "tasks": {}}, 400, "needs argument tasks"),
    ({"worker": "w", "tasks": [], "extra": 1}, 400, "takes no argument(s) extra"),
    ({"worker": "w", "tasks": [{"task_id": "A_1"}, "x"]}, 400, "task 2 of 2: is not a JSON object"),
    ({"worker": "w", "tasks": [{"task_id": "A_1", "worker": "other"}]}, 400, "task 1 of 1 (A_1): carries a worker id"),
    ({"worker": "w", "tasks": [{"task_id": "A_1"}, {"task_id": "B_1", "priority": "high"}]}, 400,
     "task 2 of 2 (B_1): add_task: priority must be a number"),
    ({"worker": "w", "tasks": [{"task_id": "A_1", "params": {"p": "x" * 40_000}}]}, 413, "task 1 of 1 (A_1)"),
    ({"worker": "w", "tasks": [{"task_id": f"A_{i}"} for i in range(MAX_BATCH_TASKS + 1)]}, 413,
     f"limit of {MAX_BATCH_TASKS} per call"),
])
def test_check_batch_refuses_naming_the_first_bad_task(data: dict, status: int, reason: str) -> None:
    with pytest.raises(BadArguments) as refused:
        check_batch(data)
    assert refused.value.status == status and reason in str(refused.value)


# ---- the server: families as a sequence of add_task calls would see them -------------------------

BOT = Principal("etl-bot", Role.WORKER, "ldap", families=("Report*",))
ADMIN = Principal("root", Role.ADMIN, "local")


def test_batch_family_refusal_names_the_first_task_out_of_the_allowlist() -> None:
    tasks = [call("Report_1", family="Report"), call("Other_1", family="Other"), call("Other_2", family="Other")]
    assert batch_family_refusal(BOT, tasks, lambda task_id: "") == (
        1, "task family 'Other' is not in the allowlist of etl-bot")
    assert batch_family_refusal(BOT, tasks[:1], lambda task_id: "") is None


def test_the_scheduler_record_decides_over_the_declared_family() -> None:
    records = {"Secret_1": "Secret"}
    lie = [call("Secret_1", family="Report", status="DONE")]
    index, reason = batch_family_refusal(BOT, lie, lambda task_id: records.get(task_id, ""))
    assert index == 0 and "declares family 'Report' but task 'Secret_1' is a 'Secret'" in reason


@pytest.mark.doc_rule("add-tasks-sequence")
def test_a_later_task_is_checked_against_the_family_an_earlier_one_gave_it() -> None:
    # Job_1 is new: the first call gives it family Job, so the second one's Other is a mismatch,
    # refused for everyone (as the second of two add_task calls would be).
    tasks = [call("Job_1", family="Job"), call("Job_1", family="Other")]
    index, reason = batch_family_refusal(ADMIN, tasks, lambda task_id: "")
    assert index == 1 and "declares family 'Other' but task 'Job_1' is a 'Job'" in reason
    # A dependency placeholder (no family) takes the family of the first call that declares one.
    assert batch_family_refusal(BOT, [call("Report_2", family="Report"), call("Report_2")], lambda t: "") is None
