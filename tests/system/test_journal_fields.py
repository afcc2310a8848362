"""A real scheduler under a (stand-in) journald: its log and audit records arrive through the
native protocol with their fields; and the catalog, checked by journalctl itself, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_socket import FakeJournal

from conftest import REPO, Server, free_port
from luigi_appliance.journald import fields
from luigi_appliance.journald.native import SOCKET_ENV

CATALOG = REPO / "etc" / "systemd" / "catalog" / "luigi-appliance.catalog"


class Collector:
    """Reads the fake journal in a thread, as journald would, so the scheduler never waits on a full queue."""

    def __init__(self, journal: FakeJournal):
        self.journal = journal
        self.entries: list[dict[str, bytes]] = []
        self._stop = threading.Event()
        journal.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.entries.append(self.journal.receive())
            except TimeoutError:
                continue

    def wait_for(self, test, timeout: float = 15) -> dict[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.entries):
                if test(entry):
                    return entry
            time.sleep(0.05)
        raise AssertionError(f"no such entry among {len(self.entries)}: "
                             f"{[e.get('MESSAGE', b'')[:80] for e in self.entries]}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def journal() -> Iterator[FakeJournal]:
    fake = FakeJournal()
    yield fake
    fake.close()


def _of_kind(kind: str):
    message_id = fields.KINDS[kind].message_id.encode()
    return lambda entry: entry.get("MESSAGE_ID") == message_id


def test_login_failure_and_refused_rpc_reach_the_journal_with_their_fields(tmp_path: Path,
                                                                           journal: FakeJournal) -> None:
    log = tmp_path / "log"
    log.touch()
    st = os.stat(log)
    port = free_port()
    server = Server(["serve", "--dev", "--state-dir", str(tmp_path / "var"), "--port", str(port)],
                    tmp_path / "var", port, log,
                    env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", SOCKET_ENV: journal.path})
    collector = Collector(journal)
    try:
        server.start()
        started = collector.wait_for(lambda e: e["MESSAGE"].startswith(b"Scheduler listening on https://"))
        assert started["LOGGER"] == b"luigi_appliance.server.serve" and started["PRIORITY"] == b"6"
        assert started["SYSLOG_IDENTIFIER"] == b"luigi-appliance"
        assert started["CODE_FILE"].endswith(b"luigi_appliance/server/serve.py") and int(started["CODE_LINE"]) > 0

        assert server.rpc("ping", session=server.session(password="wrong"), worker="w").status_code == 401
        failure = collector.wait_for(_of_kind("login_failure"))
        assert (failure["PRINCIPAL"], failure["REMOTE_ADDR"], failure["OUTCOME"], failure["AUDIT_EVENT"]) == \
            (b"admin", b"127.0.0.1", b"failure", b"login")
        assert failure["PRIORITY"] == b"4" and failure["MESSAGE"].startswith(b"audit: {")

        answer = server.rpc("add_task", task_id="Secret_1", worker="w1", family="Secret", priority="high")
        assert answer.status_code == 400
        refused = collector.wait_for(_of_kind("rpc_refused"))
        assert (refused["PRINCIPAL"], refused["REMOTE_ADDR"], refused["OUTCOME"]) == \
            (b"admin", b"127.0.0.1", b"refused:400")
        assert (refused["TASK_ID"], refused["TASK_FAMILY"], refused["RPC_METHOD"]) == \
            (b"Secret_1", b"Secret", b"add_task")
        # The ordinary log line about it, too, as its own entry.
        collector.wait_for(lambda e: e["MESSAGE"].startswith(b"Refused RPC add_task for admin")
                           and e["PRIORITY"] == b"4")
        assert server.stop() == 0
    finally:
        collector.stop()
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
    # Nothing went to stderr that the journal had: no audit copy, no log line.
    stderr = log.read_text()
    assert "audit: " not in stderr and "Scheduler listening" not in stderr, stderr


def _catalog_root(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "root"
    catalog_dir = root / "usr" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    (catalog_dir / "luigi-appliance.catalog").write_text(text)
    return root


def _journalctl(*args: str) -> subprocess.CompletedProcess:
    journalctl = shutil.which("journalctl")
    assert journalctl, "journalctl (systemd) is needed to check the catalog"
    return subprocess.run([journalctl, *args], capture_output=True, text=True, timeout=60)


def test_journalctl_takes_the_catalog(tmp_path: Path) -> None:
    root = _catalog_root(tmp_path, CATALOG.read_text())
    update = _journalctl(f"--root={root}", "--update-catalog")
    assert update.returncode == 0, update.stderr
    assert (root / "var" / "lib" / "systemd" / "catalog" / "database").exists()
    for kind in (k for k in fields.KINDS.values() if k.catalogued):
        listed = _journalctl(f"--root={root}", "--list-catalog", kind.message_id)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith(f"{kind.message_id} luigi-appliance: "), (kind.name, listed.stdout)
    shown = _journalctl(f"--root={root}", "--dump-catalog", fields.KINDS["lockout"].message_id)
    assert "Subject: Login of @PRINCIPAL@ from @REMOTE_ADDR@ locked out" in shown.stdout


def test_journalctl_refuses_a_malformed_catalog(tmp_path: Path) -> None:
    """The check above can fail: text before the first id is what a broken edit looks like."""
    root = _catalog_root(tmp_path, "Subject: orphan\n" + CATALOG.read_text())
    update = _journalctl(f"--root={root}", "--update-catalog")
    assert update.returncode != 0
    assert "Got payload before ID" in update.stderr
