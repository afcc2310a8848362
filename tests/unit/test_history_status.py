"""The history's typed status (history/status.py), its metrics text (history/metrics.py) and the
recorder's enqueue-only TaskHistory (history/recorder.py): pure logic, no database."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from luigi.task_history import TaskHistory

from luigi_appliance.history.metrics import prometheus_text
from luigi_appliance.history.recorder import HistoryRecorder
from luigi_appliance.history.runtime import HistoryRuntime
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.status import DISABLED_JSON, Counters, HistoryStatus, LossLog
from luigi_appliance.history.writer import BATCH_LINGER, HistoryWriter

OK = HistoryStatus(backend="postgresql", database="postgresql://luigi_scheduler@db:5432/luigi (sslmode=verify-full)",
                   database_state="ok", last_error=None, queued=3, spool_events=0, spool_bytes=0,
                   spool_limit_bytes=1024, emitted=10, written=7, spooled=2, replayed=1, dropped=0, dead_lettered=0,
                   writer_alive=True, recent_losses=False)

METRICS_OK = """\
# HELP luigi_appliance_history_up 1 when the history database takes events and the spool is empty
# TYPE luigi_appliance_history_up gauge
luigi_appliance_history_up 1.0
# HELP luigi_appliance_history_queued_events events queued, or held by the writer and not yet stored or spooled
# TYPE luigi_appliance_history_queued_events gauge
luigi_appliance_history_queued_events 3.0
# HELP luigi_appliance_history_spool_events events in the spool waiting for the database
# TYPE luigi_appliance_history_spool_events gauge
luigi_appliance_history_spool_events 0.0
# HELP luigi_appliance_history_spool_bytes size of the spool file
# TYPE luigi_appliance_history_spool_bytes gauge
luigi_appliance_history_spool_bytes 0.0
# HELP luigi_appliance_history_events_emitted_total events the scheduler reported
# TYPE luigi_appliance_history_events_emitted_total counter
luigi_appliance_history_events_emitted_total 10.0
# HELP luigi_appliance_history_events_written_total events stored in the database
# TYPE luigi_appliance_history_events_written_total counter
luigi_appliance_history_events_written_total 7.0
# HELP luigi_appliance_history_events_spooled_total events written to the spool
# TYPE luigi_appliance_history_events_spooled_total counter
luigi_appliance_history_events_spooled_total 2.0
# HELP luigi_appliance_history_events_replayed_total events from the spool stored in the database
# TYPE luigi_appliance_history_events_replayed_total counter
luigi_appliance_history_events_replayed_total 1.0
# HELP luigi_appliance_history_events_dropped_total events lost: the queue or the spool was full or could not be written
# TYPE luigi_appliance_history_events_dropped_total counter
luigi_appliance_history_events_dropped_total 0.0
# HELP luigi_appliance_history_events_dead_lettered_total events the database refused, set aside in the dead-letter file
# TYPE luigi_appliance_history_events_dead_lettered_total counter
luigi_appliance_history_events_dead_lettered_total 0.0
"""


def test_status_json_keys_and_order_are_the_api() -> None:
    assert json.dumps(OK.to_json()) == (
        '{"backend": "postgresql", "database": "postgresql://luigi_scheduler@db:5432/luigi (sslmode=verify-full)", '
        '"state": "ok", "database_state": "ok", "last_error": null, "queued": 3, "spool_events": 0, '
        '"spool_bytes": 0, "spool_limit_bytes": 1024, "emitted": 10, "written": 7, "spooled": 2, "replayed": 1, '
        '"dropped": 0, "dead_lettered": 0}')
    assert DISABLED_JSON == {"backend": "none", "state": "disabled"}


@pytest.mark.parametrize("change", [{"database_state": "down"}, {"spool_events": 1}, {"writer_alive": False},
                                    {"recent_losses": True}])
def test_degraded_when_down_spooling_dead_or_just_lost(change: dict) -> None:
    assert OK.healthy and OK.state == "ok"
    status = dataclasses.replace(OK, **change)
    assert not status.healthy and status.state == "degraded"
    assert status.to_json()["state"] == "degraded"


def test_starting_is_healthy_once_the_writer_runs() -> None:
    assert dataclasses.replace(OK, database_state="starting").healthy


def test_metrics_text_is_unchanged() -> None:
    """The names, help texts and order of the hand-written text before prometheus_client (which
    writes every value as a float)."""
    assert prometheus_text(OK).decode() == METRICS_OK
    degraded = prometheus_text(dataclasses.replace(OK, spool_events=4, spool_bytes=99, dropped=5)).decode()
    assert "luigi_appliance_history_up 0.0\n" in degraded
    assert "luigi_appliance_history_spool_bytes 99.0\n" in degraded
    assert "luigi_appliance_history_events_dropped_total 5.0\n" in degraded


def test_metrics_without_history_are_all_zero() -> None:
    text = prometheus_text(None).decode()
    values = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    assert [name for name, _ in values] == [line.split()[0] for line in METRICS_OK.splitlines()
                                           if not line.startswith("#")]
    assert {value for _, value in values} == {"0.0"}


def test_loss_log_counts_and_logs_the_first_at_once_then_once_a_minute(caplog) -> None:
    losses = LossLog("TASK HISTORY EVENTS DROPPED", "not recorded", "the queue is full")
    assert not losses.recent()
    with caplog.at_level("ERROR"):
        losses.add(2, "first")
        losses.add(3, "second")
    assert losses.count == 5 and losses.recent()
    assert [r.getMessage() for r in caplog.records] == [
        "TASK HISTORY EVENTS DROPPED: 2 event(s) not recorded (2 in total) because the queue is full (first)"]


def _task(task_id: str) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, family="Fam\x00ily", public_params={"p": "v"})


def test_recorder_only_enqueues_cleaned_events_and_counts_what_a_full_queue_drops() -> None:
    counters = Counters()
    recorder = HistoryRecorder(2, counters)
    assert isinstance(recorder, TaskHistory)
    recorder.task_scheduled(_task("A_1"))
    recorder.task_started(_task("A_1"), "worker-1")
    recorder.task_finished(_task("A_1"), False)
    assert counters == Counters(emitted=3) and recorder.drops.count == 1
    first, second = recorder.queue.get_nowait(), recorder.queue.get_nowait()
    assert (first.event_name, second.event_name, second.host) == ("PENDING", "RUNNING", "worker-1")
    assert first.name == "Fam\\x00ily" and first.params == {"p": "v"}
    assert first.uid != second.uid and len(first.uid) <= 32


def test_runtime_without_history_has_no_task_history_and_is_healthy(tmp_path: Path) -> None:
    runtime = HistoryRuntime(HistorySettings(), tmp_path)
    assert runtime.task_history is None and runtime.status() is None and runtime.healthy()


def test_runtime_offers_its_recorder_for_task_history_impl(tmp_path: Path) -> None:
    runtime = HistoryRuntime(HistorySettings(backend="sqlite", sqlite_path=tmp_path / "h.db"), tmp_path)
    assert isinstance(runtime.task_history, HistoryRecorder)
    status = runtime.status()
    assert status is not None and not status.healthy  # the writer is not started yet
    assert status.database == f"sqlite:{tmp_path / 'h.db'}"
    runtime.start()
    try:
        runtime.task_history.task_scheduled(_task("B_1"))
        deadline = time.monotonic() + 10
        while (status := runtime.status()) is not None and status.written < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status is not None and status.written == status.emitted == 1 and runtime.healthy()
    finally:
        runtime.close()


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _unaccounted(status: HistoryStatus) -> int:
    return status.emitted - (status.written + status.spool_events + status.queued + status.dropped
                             + status.dead_lettered)


def test_an_event_the_writer_holds_behind_a_database_lock_still_counts_as_queued(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    runtime = HistoryRuntime(HistorySettings(backend="sqlite", sqlite_path=db), tmp_path)
    recorder = runtime.task_history
    assert isinstance(recorder, HistoryRecorder)
    runtime.start()
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        recorder.task_scheduled(_task("A_1"))
        _wait(lambda: (st := runtime.status()) is not None and st.written == 1, "the first event written")
        locker.execute("BEGIN EXCLUSIVE")  # a real lock: the writer's insert waits (statement_timeout 30 s)
        recorder.task_scheduled(_task("A_2"))
        _wait(lambda: recorder.queue.qsize() == 0, "the writer taking the event")
        time.sleep(BATCH_LINGER + 0.3)  # past the linger: the insert waits on the lock
        status = runtime.status()
        assert status is not None
        assert (status.emitted, status.written, status.queued, status.spool_events) == (2, 1, 1, 0)
        assert _unaccounted(status) == 0
        locker.execute("ROLLBACK")
        _wait(lambda: (st := runtime.status()) is not None and st.queued == 0, "the held event stored")
        status = runtime.status()
        assert status is not None and status.written == 2 and _unaccounted(status) == 0
        # queued 0 and spool 0: the database has every event, at once.
        assert locker.execute("SELECT count(*) FROM task_events").fetchone() == (2,)
    finally:
        locker.close()
        runtime.close()


def test_a_batch_an_unexpected_error_leaves_in_no_counter_is_counted_as_dropped(tmp_path: Path, caplog) -> None:
    # The database is unreachable (no such directory), so the batch goes to the spool, whose
    # append then fails with an error that is not an OSError: a bug, impossible to cause for
    # real, hence the one replaced method.
    settings = HistorySettings(backend="sqlite", sqlite_path=tmp_path / "missing" / "h.db", retry_interval=60)
    counters = Counters()
    recorder = HistoryRecorder(10, counters)
    writer = HistoryWriter(settings, tmp_path, recorder.queue, counters)

    def broken_append(events: list) -> bool:
        raise RuntimeError("a bug in the spool")

    writer.spool.append = broken_append  # type: ignore[method-assign]
    writer.start()
    try:
        recorder.task_scheduled(_task("A_1"))
        recorder.task_scheduled(_task("A_2"))
        _wait(lambda: writer.dropped == 2, "the batch counted as dropped")
        # The writer thread counts the drop, then logs it: wait for the line, then check it.
        _wait(lambda: "TASK HISTORY EVENTS DROPPED" in caplog.text, "the drop logged")
        assert writer.held == 0 and recorder.queue.qsize() == 0
        assert counters.emitted == 2 and counters.written == counters.spooled == 0
        assert "TASK HISTORY EVENTS DROPPED" in caplog.text and "writer failed unexpectedly" in caplog.text
        assert "RuntimeError: a bug in the spool" in caplog.text
    finally:
        writer.close()
