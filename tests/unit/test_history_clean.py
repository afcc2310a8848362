"""Cleaning of history events (luigi_appliance/history/clean.py) and the store's exact count, on
a real SQLite history (the ``serve --dev`` backend); PostgreSQL: tests/system/test_history_poison.py."""

from __future__ import annotations

from pathlib import Path

from luigi_appliance.history.clean import (
    FULL_FAMILY,
    FULL_TASK_ID,
    NAME_WIDTH,
    PARAM_NAME_WIDTH,
    PRINCIPAL_WIDTH,
    TASK_ID_WIDTH,
    WORKER_HOST_WIDTH,
    clean_event,
    make_event,
    stored_text,
)
from luigi_appliance.history.db import make_engine
from luigi_appliance.history.events import Event
from luigi_appliance.history.schema import tasks
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.history.store import EventStore

HOSTILE = ["\x00", "\ud800", "\udfff\x00é", "x" * 300, "é" * 129 + "\x00", "\x00" * 100]


def hostile_event(i: int, value: str) -> Event:
    return make_event(f"{i:032x}", value + str(i), value, {value: value, value + "2": 12, "ok": "fine"}, "PENDING",
                      1_700_000_000.0 + i, value, value * 3)


def texts(event: Event) -> list[str]:
    return [event.task_id, event.name, event.host or "", event.principal or "", *event.params, *event.params.values()]


def storable(text: str) -> bool:
    try:
        text.encode("utf-8")  # no lone surrogate
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def test_every_text_is_storable_fits_its_column_and_cleaning_is_idempotent() -> None:
    for i, value in enumerate(HOSTILE):
        event = hostile_event(i, value)
        assert all(storable(t) for t in texts(event)), event
        assert len(event.task_id) <= TASK_ID_WIDTH and len(event.name) <= NAME_WIDTH
        assert len(event.host or "") <= WORKER_HOST_WIDTH and len(event.principal or "") <= PRINCIPAL_WIDTH
        assert all(len(k) <= PARAM_NAME_WIDTH for k in event.params)
        assert clean_event(event) == event  # replaying a spooled (cleaned) event changes nothing
    assert TASK_ID_WIDTH == tasks.c.task_id.type.length  # the widths are the schema's


def test_values_equal_once_cut_stay_distinct_and_the_whole_is_kept() -> None:
    a, b = ("T" * 250 + end for end in "ab")
    ea = make_event("1", a, "F" * 500 + "a", {"p" * 200 + "1": "x", "p" * 200 + "2": "y"}, "PENDING", 0.0, None, None)
    eb = make_event("2", b, "F" * 500 + "b", {}, "PENDING", 0.0, None, None)
    assert ea.task_id != eb.task_id and ea.name != eb.name and len(ea.params) == 4
    assert ea.params[FULL_TASK_ID] == a and ea.params[FULL_FAMILY] == "F" * 500 + "a"
    assert stored_text(a, TASK_ID_WIDTH) == ea.task_id  # what the pages look up
    assert make_event("3", a, "F", {}, "DONE", 0.0, None, None).task_id == ea.task_id  # same task, same row
    # A client's own "(task_id)" parameter stays when the id is short, and is replaced when not.
    assert make_event("4", "short", "F", {FULL_TASK_ID: "mine"}, "PENDING", 0.0, None, None).params == {
        FULL_TASK_ID: "mine"}
    assert make_event("5", a, "F", {FULL_TASK_ID: "mine"}, "PENDING", 0.0, None, None).params[FULL_TASK_ID] == a


def test_sqlite_store_takes_hostile_events_and_counts_only_new_rows(tmp_path: Path) -> None:
    store = EventStore(make_engine(HistorySettings(backend="sqlite", sqlite_path=tmp_path / "h.db")),
                       owns_schema=True)
    store.check()
    events = [hostile_event(i, value) for i, value in enumerate(HOSTILE)]
    assert store.write(events) == len(events)
    assert store.write(events[:3]) == 0  # replayed after an unrecorded commit: stored once, not counted
    with store.engine.connect() as connection:
        stored = {row.task_id for row in connection.execute(tasks.select())}
    assert stored == {e.task_id for e in events}
    store.engine.dispose()
