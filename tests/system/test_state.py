"""Signed, crash-safe state: tampering, SIGKILL, SIGHUP and SIGTERM against the real process."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path

import luigi.scheduler
import pytest

from conftest import Server
from luigi_appliance.state import MAGIC, VERSION, SignedSnapshotFile


class _CreatesMarker:
    """Unpickling this creates a file: proof of code execution if anyone ever loads it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def task_ids(server: Server) -> set[str]:
    return set(server.rpc("task_list", status="", upstream_status="").json()["response"])


def add_tasks(server: Server, names: list[str]) -> None:
    for name in names:
        resp = server.rpc("add_task", worker="w1", task_id=name, family="Fam", status="PENDING")
        assert resp.status_code == 200, resp.text


def wait_for_snapshot_after(path: Path, since: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_mtime > since):
        assert time.monotonic() < deadline, f"no snapshot written to {path}"
        time.sleep(0.05)


def test_roundtrip_and_any_flipped_byte_is_rejected(tmp_path: Path) -> None:
    store = SignedSnapshotFile(tmp_path / "s", b"k" * 32)
    store.write(store.encode({"tasks": [1, 2, 3]}))
    assert store.read() == {"tasks": [1, 2, 3]}
    blob = bytearray((tmp_path / "s").read_bytes())
    blob[-1] ^= 0x01
    (tmp_path / "s").write_bytes(bytes(blob))
    assert store.read() is None
    assert not (tmp_path / "s").exists()
    assert len(list(tmp_path.glob("s.rejected-*"))) == 1


def test_short_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="at least 32"):
        SignedSnapshotFile(tmp_path / "s", b"short")


@pytest.mark.parametrize("forgery", ["unsigned-stock-pickle", "wrong-mac", "other-key"])
def test_tampered_snapshot_is_never_unpickled(configured_server, tmp_path: Path, forgery: str) -> None:
    server = configured_server()
    add_tasks(server, ["Keep1"])
    assert server.stop() == 0
    snapshot = server.state_dir / "state.pickle"
    marker = tmp_path / "pwned-marker"
    payload = pickle.dumps((_CreatesMarker(marker), {}), protocol=2)
    if forgery == "unsigned-stock-pickle":
        blob = payload  # what stock luigid writes and trusts
    elif forgery == "wrong-mac":
        blob = MAGIC + bytes([VERSION]) + b"\0" * 32 + payload
    else:
        other = SignedSnapshotFile(snapshot, os.urandom(32))
        blob = other.encode((_CreatesMarker(marker), {}))
    snapshot.write_bytes(blob)

    server.start()
    assert not marker.exists()
    assert not snapshot.exists() or snapshot.read_bytes() != blob
    rejected = list(server.state_dir.glob("state.pickle.rejected-*"))
    assert len(rejected) == 1 and rejected[0].read_bytes() == blob
    assert "REFUSED state snapshot" in server.log()
    assert task_ids(server) == set()  # started empty, and serves
    add_tasks(server, ["After"])
    assert task_ids(server) == {"After"}
    assert not marker.exists()


def test_sigkill_keeps_tasks_known_before_the_last_snapshot(configured_server) -> None:
    server = configured_server()
    names = [f"Task{i}" for i in range(25)]
    added_at = time.time()
    add_tasks(server, names)
    wait_for_snapshot_after(server.state_dir / "state.pickle", added_at + 0.01)
    time.sleep(1.2)  # one more interval, so the snapshot certainly follows the last add_task
    server.send(signal.SIGKILL)
    server.proc.wait(10)
    server.stop()
    server.start()
    assert task_ids(server) == set(names)
    assert "Restored 25 tasks" in server.log()


def test_sighup_keeps_process_and_state(configured_server) -> None:
    server = configured_server()
    add_tasks(server, ["A", "B"])
    pid = server.proc.pid
    for _ in range(3):
        server.send(signal.SIGHUP)
        time.sleep(0.3)
    assert server.proc.poll() is None and server.proc.pid == pid
    assert task_ids(server) == {"A", "B"}
    assert server.log().count("SIGHUP: reloading") == 3


def test_sigterm_saves_and_exits_cleanly(configured_server) -> None:
    server = configured_server(snapshot_interval="1h")  # only the shutdown snapshot can save them
    add_tasks(server, ["Z1", "Z2", "Z3"])
    snapshot = server.state_dir / "state.pickle"
    assert not snapshot.exists()
    assert server.stop(signal.SIGTERM) == 0
    assert "Stopped cleanly" in server.log()
    assert oct(snapshot.stat().st_mode & 0o777) == oct(0o600)
    server.start()
    assert task_ids(server) == {"Z1", "Z2", "Z3"}


def generation(server: Server) -> int:
    path = server.state_dir / "state.generation"
    return int(path.read_text()) if path.exists() else 0


def test_an_older_snapshot_put_back_is_warned_about_or_refused(configured_server, tmp_path: Path) -> None:
    server = configured_server()
    add_tasks(server, ["Old"])
    assert server.stop() == 0
    snapshot = server.state_dir / "state.pickle"
    older = snapshot.read_bytes()  # validly signed
    server.start()
    add_tasks(server, ["New"])
    assert server.stop() == 0
    last = generation(server)

    snapshot.write_bytes(older)  # put back, e.g. from a backup
    server.start()
    assert task_ids(server) == {"Old"}
    log = server.log()
    assert "WARNING luigi_appliance.state: Restoring an OLD state snapshot" in log
    assert f"older than the last one written, {last}" in log
    assert server.stop() == 0
    assert generation(server) > last  # the next snapshots continue above it, never reuse it

    snapshot.write_bytes(older)
    strict = configured_server("[state]\nrefuse_stale_snapshot = true\n")
    assert task_ids(strict) == set()  # started empty, and serves
    assert "CRITICAL luigi_appliance.state: REFUSED state snapshot" in strict.log()
    assert "stale: snapshot generation" in strict.log()
    [rejected] = server.state_dir.glob("state.pickle.rejected-*")
    assert rejected.read_bytes() == older


def test_a_snapshot_in_the_first_format_still_loads(configured_server) -> None:
    # Written by luigi-appliance before generations: the payload is luigi's state tuple alone.
    server = configured_server(start=False)
    scheduler = luigi.scheduler.Scheduler()
    scheduler.add_task(worker="w1", task_id="Legacy_1", family="Legacy", status="PENDING")
    key = b"k" * 64
    key_file = server.state_dir / "state.key"
    key_file.write_bytes(key + b"\n")
    key_file.chmod(0o600)
    store = SignedSnapshotFile(server.state_dir / "state.pickle", key)
    store.write(store.encode(scheduler._state.get_state()))
    server.start()
    assert task_ids(server) == {"Legacy_1"}
    assert "from the signed snapshot (generation 0)" in server.log()


def test_the_snapshot_temp_file_is_never_written_through_a_planted_link(configured_server, tmp_path: Path) -> None:
    server = configured_server(start=False)
    victim = tmp_path / "victim"
    victim.write_text("must stay as it is\n")
    # The temporary name the scheduler once used: a link there sent the snapshot into any file
    # the service account could write.
    (server.state_dir / ".state.pickle.tmp").symlink_to(victim)
    server.start()
    add_tasks(server, ["T"])
    assert server.stop() == 0  # writes the final snapshot
    assert victim.read_bytes() == b"must stay as it is\n"
    snapshot = server.state_dir / "state.pickle"
    assert not snapshot.is_symlink() and oct(snapshot.stat().st_mode & 0o777) == oct(0o600)
    server.start()
    assert task_ids(server) == {"T"}


@pytest.mark.parametrize("link", ["the state dir", "state.pickle", "state.key", "tls-selfsigned.key", "history-spool"])
def test_symlinks_in_the_state_dir_are_refused(configured_server, tmp_path: Path, link: str) -> None:
    server = configured_server(start=False)
    elsewhere = tmp_path / "elsewhere"
    if link == "the state dir":
        server.state_dir.rename(elsewhere)
        server.state_dir.symlink_to(elsewhere)
        linked = server.state_dir
    else:
        elsewhere.write_text("a" * 64 + "\n")
        elsewhere.chmod(0o600)
        linked = server.state_dir / link
        linked.symlink_to(elsewhere)
    server.start(wait=False)
    assert server.proc.wait(30) == 1
    server.stop()
    # Refused by the configuration check serve starts with, at the line of [state] dir.
    assert f"{server.args[1]}:5: [state] dir: {linked} is a symbolic link" in server.log()
    assert "Traceback" not in server.log()
    assert elsewhere.is_dir() or elsewhere.read_text() == "a" * 64 + "\n"


def test_temporary_files_left_by_a_crash_are_removed_at_start(configured_server) -> None:
    server: Server = configured_server(start=False)
    server.state_dir.mkdir(mode=0o750, exist_ok=True)
    leftover = server.state_dir / ".state.pickle.tmp-0123456789abcdef"
    leftover.write_bytes(b"half a snapshot")
    unrelated = server.state_dir / ".state.pickle.tmp-notours"
    unrelated.write_bytes(b"")
    server.start()
    assert not leftover.exists() and unrelated.exists()
    assert "a temporary file left by a crash" in server.log()
