"""sd_notify over a real datagram socket, and journald-style stderr (without journald's socket;
with it: test_journal_fields.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

from conftest import Server, free_port
from luigi_appliance.journald.native import SOCKET_ENV


def test_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(15)
        port = free_port()
        server = Server(["serve", "--dev", "--state-dir", str(tmp_path / "var"), "--port", str(port)],
                        tmp_path / "var", port, tmp_path / "log",
                        env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
        server.start(wait=False)
        messages: list[str] = []
        deadline = time.monotonic() + 15
        while not any(m == "WATCHDOG=1" for m in messages) and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1\nSTATUS=Scheduling on 127.0.0.1:")
        assert "WATCHDOG=1" in messages
        server.wait_ready()
        server.send(signal.SIGTERM)
        while "STOPPING=1" not in messages and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        assert "STOPPING=1" in messages
        assert server.stop() == 0


def test_journal_format_under_journald(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.touch()
    st = os.stat(log)
    port = free_port()
    # journald sets JOURNAL_STREAM to the device:inode of the stream it gave us as stderr. Its
    # socket is missing here (also on a host that has one): stderr is the journal's only way in.
    server = Server(["serve", "--dev", "--state-dir", str(tmp_path / "var"), "--port", str(port)],
                    tmp_path / "var", port, log, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
                                                      SOCKET_ENV: str(tmp_path / "no-journal-socket")})
    server.start()
    server.stop()
    lines = [line for line in log.read_text().splitlines() if line.startswith("<")]
    assert any(line.startswith("<6>luigi_appliance.server.serve: Scheduler listening on https://") for line in lines)
    assert any(line.startswith("<4>luigi_appliance.tls: Generated a self-signed") for line in lines)
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d", line) for line in lines), "no timestamps under journald"


def test_text_format_on_a_terminal(dev_server: Server) -> None:
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO luigi_appliance.server.serve: Scheduler listening",
                     dev_server.log(), re.M)
