"""Snapshots are pickled and written by a forked child, so a large state never stops the loop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from luigi_appliance.scheduler import Scheduler
from luigi_appliance.server.snapshots import Snapshotter
from luigi_appliance.server.worker_bindings import WorkerBindings
from luigi_appliance.state import GenerationFile, SignedSnapshotFile, StateStore

KEY = b"k" * 32


class Probe:
    """Stored in a task record. Pickling it records the pickling process's pid and whether the
    scheduler's loop ran meanwhile: it waits (at most 20 s, a guard against a hang, never a
    measurement) for a file that only a loop callback creates."""

    def __init__(self, directory: str):
        self.directory = directory

    def __reduce__(self):
        go = Path(self.directory, "go")
        deadline = time.monotonic() + 20
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        Path(self.directory, "pickled").write_text(f"{os.getpid()} {'loop-ran' if go.exists() else 'loop-stopped'}")
        return (Probe, (self.directory,))


def scheduler_with_probe(tmp_path: Path) -> Scheduler:
    scheduler = Scheduler()
    scheduler.add_task(worker="w", task_id="T1", family="T", status="PENDING")
    scheduler.task_record("T1").expl = Probe(str(tmp_path))
    return scheduler


def store_in(directory: Path) -> StateStore:
    return StateStore(SignedSnapshotFile(directory / "state.pickle", KEY),
                      GenerationFile(directory / "state.generation"))


def snapshot_once(snapshotter: Snapshotter, tmp_path: Path) -> None:
    async def main() -> None:
        writing = asyncio.ensure_future(snapshotter.periodic())
        await asyncio.sleep(0)  # periodic() runs up to its first await: the fork, or the pickling
        (tmp_path / "go").touch()
        await writing

    asyncio.run(main())


def test_the_state_is_pickled_in_a_child_while_the_loop_runs(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    snapshotter = Snapshotter(scheduler_with_probe(tmp_path), store, WorkerBindings(), 30)
    snapshot_once(snapshotter, tmp_path)
    pid, loop = (tmp_path / "pickled").read_text().split()
    assert int(pid) != os.getpid() and loop == "loop-ran"
    assert snapshotter.healthy()
    # The child's snapshot is the whole state, under the generation the scheduler took.
    restored = store_in(tmp_path).load()
    assert restored is not None and restored.generation == 1 == GenerationFile(tmp_path / "state.generation").read()
    tasks = restored.luigi_state[0]
    assert set(tasks) == {"T1"} and isinstance(tasks["T1"].expl, Probe)


def test_a_child_that_cannot_write_is_reported_by_the_scheduler(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    store = store_in(gone)
    shutil.rmtree(gone)
    (tmp_path / "go").touch()
    snapshotter = Snapshotter(scheduler_with_probe(tmp_path), store, WorkerBindings(), 30)
    with caplog.at_level(logging.ERROR):
        asyncio.run(snapshotter.periodic())
    assert not snapshotter.healthy()
    assert f"cannot write state snapshot {gone}/state.pickle" in caplog.text


def test_without_fork_the_snapshot_is_still_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # A mock: fork failing (out of memory or processes) cannot be caused here without harming the
    # machine.
    def no_fork() -> int:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    monkeypatch.setattr(os, "fork", no_fork)
    (tmp_path / "go").touch()
    snapshotter = Snapshotter(scheduler_with_probe(tmp_path), store_in(tmp_path), WorkerBindings(), 30)
    with caplog.at_level(logging.WARNING):
        asyncio.run(snapshotter.periodic())
    assert snapshotter.healthy() and "Cannot fork to write the state snapshot" in caplog.text
    assert int((tmp_path / "pickled").read_text().split()[0]) == os.getpid()
    assert store_in(tmp_path).load() is not None
