"""Journal records (ha/records.py), how the scheduler makes them (scheduler/journalled.py), the
worker bindings' listener, the signed blob codec, and what replay refuses (ha/replay.py)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import luigi.scheduler
import pytest
from luigi.task_status import PENDING

from luigi_appliance.approvals.book import ApprovalRequest
from luigi_appliance.approvals.events import ApprovalEvents
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.context import Caller, current_caller
from luigi_appliance.ha import records, replay, state_payload
from luigi_appliance.ha.records import RecordError
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.server.worker_bindings import WorkerBindings

ALICE = Principal("alice", Role.OPERATOR, "ldap", frozenset({"b", "a"}), ("Etl*",))
UID = "0f8b6e1c-3b7a-4d2e-9c1f-5a6b7c8d9e0f"


def through_json(value: Any) -> Any:
    # allow_nan=False: PostgreSQL's jsonb takes no NaN or Infinity
    return json.loads(json.dumps(value, allow_nan=False))


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, "plain", "ünïcode", ["a", 1, [None]], {"k": {"n": [1.5]}},
    ALICE, Principal("bob", Role.WORKER, "local"), {"principal": ALICE},
    math.inf, -math.inf, "nul\x00inside", "lone \ud800 surrogate",
    {"$principal": {"name": "forged"}}, {"$dict": 1}, {"$x": "y", "z": 1},
])
def test_values_come_back_exactly_through_json(value: Any) -> None:
    back = records.decode_value(through_json(records.encode_value(value)))
    assert back == value and type(back) is type(value)


def test_nan_comes_back_as_nan() -> None:
    assert math.isnan(records.decode_value(through_json(records.encode_value(math.nan))))


def test_a_tuple_comes_back_as_the_list_json_makes_of_it() -> None:
    assert records.decode_value(through_json(records.encode_value(("a", ("b",))))) == ["a", ["b"]]


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), {1: "int key"}, {"nul\x00key": 1}])
def test_what_json_would_lose_is_refused(value: Any) -> None:
    with pytest.raises(RecordError, match="cannot journal"):
        records.encode_value(value)


def test_a_call_record_parses_back_with_its_caller() -> None:
    caller = Caller(ALICE, "192.0.2.1")
    arguments = records.encode_value({"request_id": "apr-1", "principal": ALICE, "comment": "ok"})
    rec = through_json(records.call("approve_request", arguments, 12.5, UID, caller, None, True))
    parsed = records.parse(rec)
    assert parsed == records.CallRecord("approve_request", {"request_id": "apr-1", "principal": ALICE,
                                                            "comment": "ok"}, 12.5, UID, caller, None, True)
    assert records.parse(through_json(records.binding("bind", "w1", "alice", 3.0))) == \
        records.BindingRecord("bind", "w1", "alice", 3.0)


@pytest.mark.parametrize(("rec", "why"), [
    ([], "JSON object"),
    ({"k": "call", "m": "ping", "a": {}, "u": UID}, "time"),
    ({"k": "call", "m": "ping", "a": {}, "t": 1.0}, "method"),
    ({"k": "call", "m": "ping", "a": {}, "t": 1.0, "u": "nope"}, "not a uuid"),
    ({"k": "call", "m": "ping", "a": {}, "t": 1.0, "u": UID, "r": 5}, "result"),
    ({"k": "call", "m": "ping", "a": {"$bad": 1}, "t": 1.0, "u": UID}, "unknown tag"),
    ({"k": "call", "m": "ping", "a": {}, "t": 1.0, "u": UID, "c": {"principal": {"name": "x"}, "remote_ip": ""}},
     "incomplete"),
    ({"k": "call", "m": "ping", "a": {}, "t": 1.0, "u": UID,
      "c": {"principal": {"name": "x", "role": "god", "backend": "b"}, "remote_ip": ""}}, "unknown role"),
    ({"k": "bind", "w": "w1", "t": 1.0}, "principal"),
    ({"k": "snapshot", "t": 1.0}, "unknown kind"),
])
def test_a_malformed_record_is_refused_with_what_is_wrong(rec: Any, why: str) -> None:
    with pytest.raises(RecordError, match=why):
        records.parse(rec)


# -- the Journalled scheduler -------------------------------------------------------------------

class Sink:
    def __init__(self) -> None:
        self.recs: list[dict[str, Any]] = []

    def append(self, at: float, rec: dict[str, Any]) -> int:
        assert at == rec["t"]
        self.recs.append(through_json(rec))
        return len(self.recs)


def journalled() -> tuple[Scheduler, Sink]:
    sink = Sink()
    return Scheduler(config=luigi.scheduler.scheduler(), journal=sink), sink


def test_positional_arguments_are_recorded_by_name_with_the_caller() -> None:
    scheduler, sink = journalled()
    token = current_caller.set(Caller(ALICE, "192.0.2.1"))
    try:
        scheduler.add_task("T1", worker="w", status=PENDING, deps=("D",))
        scheduler.update_resources(cpu=2)
        scheduler.set_worker_processes("w", 3)
    finally:
        current_caller.reset(token)
    assert [(r["m"], r["a"]) for r in sink.recs] == [
        ("add_task", {"task_id": "T1", "worker": "w", "status": PENDING, "deps": ["D"]}),
        ("update_resources", {"cpu": 2}), ("set_worker_processes", {"worker": "w", "n": 3})]
    assert records.parse(sink.recs[0]).caller == Caller(ALICE, "192.0.2.1")


def test_only_the_outermost_call_is_recorded_and_a_reads_prune_is() -> None:
    scheduler, sink = journalled()
    scheduler.add_task(task_id="T1", worker="w")
    reply = scheduler.get_work(worker="w")  # prunes and adds the worker inside: one record
    scheduler.task_list("", "")  # a read: its prune is the record
    assert [r["m"] for r in sink.recs] == ["add_task", "get_work", "prune"]
    assert sink.recs[1]["r"] == reply["task_id"] == "T1"
    assert sink.recs[2]["t"] >= sink.recs[1]["t"]


def test_a_call_that_raised_is_recorded_as_raised() -> None:
    scheduler, sink = journalled()
    with pytest.raises(AssertionError):
        scheduler.add_task(task_id="T1")  # luigi asserts a worker
    assert sink.recs[-1]["m"] == "add_task" and sink.recs[-1]["x"] is True


def test_an_argument_the_journal_cannot_hold_refuses_the_call_before_it_runs() -> None:
    scheduler, sink = journalled()
    with pytest.raises(RecordError):
        scheduler.add_task(task_id="T1", worker="w", params={"n": {1, 2}})
    assert sink.recs == [] and scheduler.task_record("T1") is None


def test_without_a_journal_nothing_is_pinned_or_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = Scheduler(config=luigi.scheduler.scheduler())
    seen = []
    monkeypatch.setattr(luigi.scheduler.Scheduler, "prune", lambda self: seen.append(luigi.scheduler.time))
    scheduler.prune()
    assert seen == [luigi.scheduler.time] and seen[0].__name__ == "time"  # the real module


def test_the_leader_runs_its_call_at_the_time_it_records(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler, sink = journalled()
    scheduler.add_task(task_id="T1", worker="w")
    task = scheduler.task_record("T1")
    assert task is not None and task.time == task.updated == sink.recs[0]["t"]


def test_send_scheduler_message_ids_replay_exactly() -> None:
    scheduler, sink = journalled()
    scheduler.add_task(task_id="T1", worker="w")
    sent = scheduler.send_scheduler_message(worker="w", task="T1", content="hi")
    assert sent["message_id"] == sink.recs[-1]["u"]  # the first id a call draws is its uid
    standby = Scheduler(config=luigi.scheduler.scheduler())
    for rec in sink.recs:
        assert replay.apply(standby, WorkerBindings(), rec) is None
    assert standby.ping(worker="w")["rpc_messages"] == scheduler.ping(worker="w")["rpc_messages"]


# -- replay ---------------------------------------------------------------------------------------

def test_replay_refuses_a_method_that_is_not_journalled() -> None:
    standby = Scheduler(config=luigi.scheduler.scheduler())
    rec = records.call("dump", {}, 1.0, UID, None, None, False)
    with pytest.raises(RecordError, match="not a journalled"):
        replay.apply(standby, WorkerBindings(), rec)


def test_replay_reports_a_different_get_work_answer_and_a_raise_the_leader_did_not_have() -> None:
    standby = Scheduler(config=luigi.scheduler.scheduler())
    bindings = WorkerBindings()
    rec = records.call("get_work", {"worker": "w"}, 1.0, UID, None, "T9", False)
    assert replay.apply(standby, bindings, rec) == "get_work handed out None here but 'T9' on the leader"
    rec = records.call("add_task", {"task_id": "T1"}, 1.0, UID, None, None, False)
    assert "raised AssertionError here" in (replay.apply(standby, bindings, rec) or "")
    rec = records.call("add_task", {"task_id": "T1"}, 1.0, UID, None, None, True)
    assert replay.apply(standby, bindings, rec) is None


def test_replay_tells_no_history_and_no_approval_event(caplog: pytest.LogCaptureFixture) -> None:
    class History:
        def __init__(self) -> None:
            self.told: list[str] = []

        def task_scheduled(self, task: Any) -> None:
            self.told.append(task.id)

    history = History()
    standby = Scheduler(config=luigi.scheduler.scheduler(), task_history_impl=history)
    rec = records.call("add_task", {"task_id": "T1", "worker": "w"}, 1.0, UID, None, None, False)
    assert replay.apply(standby, WorkerBindings(), rec) is None
    assert standby.task_record("T1") is not None and history.told == []
    standby.add_task(task_id="T2", worker="w")
    assert history.told == ["T2"]  # muted only while replaying
    events = ApprovalEvents()
    request = ApprovalRequest("apr-1", "T1", "F", {}, "add_task", "bot", "agent", (), 1.0)
    with caplog.at_level(logging.INFO, logger="luigi_appliance.approvals"):
        with events.muted():
            events.emit("requested", request, principal="bot")
        assert caplog.messages == []
        events.emit("requested", request, principal="bot")
        assert len(caplog.messages) == 1


# -- worker bindings ------------------------------------------------------------------------------

def test_the_listener_hears_binds_and_releases_but_not_loads() -> None:
    heard: list[tuple[str, str, str]] = []
    live = {"w1", "w2"}
    bindings = WorkerBindings(lambda w: w in live, per_principal=2, listener=lambda *a: heard.append(a))
    bindings.load({"w0": "alice"})
    assert bindings.claim("w1", "alice") is None
    assert bindings.claim("w1", "alice") is None  # already hers: nothing new
    assert bindings.claim("w2", "alice") is None  # at her limit: w0's worker is gone, its binding goes
    assert bindings.release("w1") == "alice" and bindings.release("nobody") is None
    assert heard == [("bind", "w1", "alice"), ("release", "w0", "alice"), ("bind", "w2", "alice"),
                     ("release", "w1", "alice")]
    replica = WorkerBindings(per_principal=1)
    replica.load({"w0": "alice"})
    for op, worker, principal in heard:
        replica.replayed(op, worker, principal)
    assert replica.export() == bindings.export() == {"w2": "alice"}


def test_a_replayed_bind_ignores_the_limits_and_tells_no_listener() -> None:
    heard: list[Any] = []
    bindings = WorkerBindings(per_principal=1, total=1, listener=lambda *a: heard.append(a))
    for worker in ("w1", "w2", "w3"):
        bindings.replayed("bind", worker, "alice")
    bindings.replayed("bind", "w1", "bob")
    bindings.replayed("release", "w2", "alice")
    assert bindings.export() == {"w1": "bob", "w3": "alice"} and heard == []


# -- the signed payload ---------------------------------------------------------------------------

def test_a_blob_signed_with_another_key_or_tampered_with_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    blob = state_payload.encode({"format": 2}, b"k" * 32)
    assert state_payload.decode(blob, b"k" * 32) == {"format": 2}
    with caplog.at_level(logging.ERROR):
        assert state_payload.decode(blob, b"x" * 32) is None
        assert state_payload.decode(blob[:-1] + b"!", b"k" * 32) is None
    assert sum("HMAC verification failed" in m for m in caplog.messages) == 2
