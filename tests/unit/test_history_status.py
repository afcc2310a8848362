"""The history's typed status (history/status.py), its metrics text (history/metrics.py) and the
recorder's enqueue-only TaskHistory (history/recorder.py): pure logic, no database."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from luigi.task_history import TaskHistory

from luigi_appliance.history.metrics import prometheus_text
from luigi_appliance.history.recorder import HistoryRecorder
from luigi_appliance.history.runtime import HistoryRuntime
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.status import DISABLED_JSON, Counters, HistoryStatus, LossLog

OK = HistoryStatus(backend="postgresql", database="postgresql://luigi_scheduler@db:5432/luigi (sslmode=verify-full)",
                   database_state="ok", last_error=None, queued=3, spool_events=0, spool_bytes=0,
                   spool_limit_bytes=1024, emitted=10, written=7, spooled=2, replayed=1, dropped=0, dead_lettered=0,
                   writer_alive=True, recent_losses=False)

METRICS_OK = """\
# HELP luigi_appliance_history_up 1 when the history database takes events and the spool is empty
# TYPE luigi_appliance_history_up gauge
luigi_appliance_history_up 1.0
# HELP luigi_appliance_history_queued_events events in the in-memory queue
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
