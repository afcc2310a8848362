"""The spool file (framing, checksums, torn writes, limit), the [history] settings, and the
SQLite history of ``serve --dev`` through the same code path as PostgreSQL."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from conftest import PIPELINES, Server, cli, client_conf, write_config
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError
from luigi_appliance.history.events import Event
from luigi_appliance.history.spool import Spool, encode_frame


def events(start: int, count: int) -> list[Event]:
    return [Event(f"{i:032x}", f"Task_{i}", "Task", {"i": str(i)}, "PENDING", 1_700_000_000.0 + i, None, "admin")
            for i in range(start, start + count)]


def test_frames_replay_in_order_and_the_offset_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", limit=1 << 20)
    spool.open()
    for start in (0, 3, 6):
        assert spool.append(events(start, 3))
    batch, end = spool.next_batch(4)  # whole frames: 3 + 3
    assert [e.uid for e in batch] == [e.uid for e in events(0, 6)]
    spool.advance(end, len(batch))
    again = Spool(tmp_path / "spool", limit=1 << 20)
    again.open()
    assert again.pending_events == 3
    batch, end = again.next_batch(100)
    assert batch == events(6, 3)
    again.advance(end, len(batch))
    assert not (tmp_path / "spool").exists() and not (tmp_path / "spool.offset").exists()


@pytest.mark.parametrize("damage", ["torn_header", "torn_payload", "flipped_byte"])
def test_torn_or_corrupt_tail_is_detected_set_aside_and_logged(tmp_path: Path, caplog, damage: str) -> None:
    path = tmp_path / "spool"
    spool = Spool(path, limit=1 << 20)
    spool.open()
    spool.append(events(0, 2))
    good = path.stat().st_size
    frame = encode_frame(events(2, 2))
    if damage == "torn_header":
        data = frame[:5]
    elif damage == "torn_payload":
        data = frame[:-7]
    else:
        data = frame[:20] + bytes([frame[20] ^ 0x01]) + frame[21:]
    with open(path, "ab") as fh:
        fh.write(data)
    reopened = Spool(path, limit=1 << 20)
    with caplog.at_level(logging.ERROR):
        reopened.open()
    assert reopened.pending_events == 2 and path.stat().st_size == good
    damaged = list(tmp_path.glob("spool.damaged-*"))
    assert len(damaged) == 1 and damaged[0].read_bytes() == data
    assert any("damaged" in r.message and str(good) in r.message for r in caplog.records)
    assert reopened.next_batch(10)[0] == events(0, 2)
    assert reopened.append(events(4, 1)) and reopened.next_batch(10)[0] == [*events(0, 2), *events(4, 1)]


def test_limit_refuses_a_frame_that_does_not_fit(tmp_path: Path) -> None:
    one = len(encode_frame(events(0, 1)))
    spool = Spool(tmp_path / "spool", limit=2 * one)
    spool.open()
    assert spool.append(events(0, 1)) and spool.append(events(1, 1))
    assert not spool.append(events(2, 1))
    assert spool.pending_events == 2 and (tmp_path / "spool").stat().st_size == 2 * one


def conf(tmp_path: Path, text: str) -> Path:
    return write_config(tmp_path / "s.conf", text)


def test_history_settings_defaults_and_errors_name_file_line_key(tmp_path: Path) -> None:
    pw = write_config(tmp_path / "pw", "secret\n")
    pw.chmod(0o600)
    ok = load_settings([conf(tmp_path, f"[history]\nbackend = postgresql\nhost = db.example.com\n"
                                       f"sslrootcert = {pw}\npassword_file = {pw}\nspool_limit = 64M\n")],
                       check_files=False).history
    assert (ok.sslmode, ok.spool_limit, ok.password_file, ok.port) == ("verify-full", 64 << 20, pw, 5432)
    assert load_settings([conf(tmp_path, "[history]\nbackend = postgresql\nhost = /run/postgresql\n")],
                         check_files=False).history.sslmode == "disable"
    with pytest.raises(ConfigError) as err:
        load_settings([conf(tmp_path, "[history]\nbackend = postgresql\nhost = db.example.com\nsslmode = require\n"
                                      "password = hunter2\nspool_limit = lots\nspool_full = block\n")],
                      check_files=False)
    found = {(i.line, i.key): i.message for i in err.value.issues}
    path = str(tmp_path / "s.conf")
    assert all(i.file == path for i in err.value.issues)
    assert "refused for a non-local host unless allow_insecure = true" in found[(4, "sslmode")]
    assert "not accepted in clear" in found[(5, "password")]
    assert "expected a size" in found[(6, "spool_limit")]
    assert "expected one of drop-new" in found[(7, "spool_full")]
    with pytest.raises(ConfigError) as err:
        load_settings([conf(tmp_path, "[history]\nbackend = postgresql\nhost = db.example.com\n")],
                      check_files=False)
    assert [(i.line, i.key) for i in err.value.issues] == [(3, "sslrootcert")]
    allowed = load_settings([conf(tmp_path, "[history]\nbackend = postgresql\nhost = db.example.com\n"
                                            "sslmode = require\nallow_insecure = true\n")], check_files=False)
    assert allowed.history.is_insecure


def test_record_task_history_is_refused_pointing_at_history_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings([conf(tmp_path, "[scheduler]\nrecord_task_history = true\n")], check_files=False)
    (issue,) = err.value.issues
    assert issue.line == 2 and "[history]" in issue.message and "not available yet" not in issue.message


def test_dev_mode_records_history_in_sqlite(dev_server: Server, tmp_path: Path) -> None:
    result = cli("run", "--client-config", str(client_conf(tmp_path, dev_server)),
                 "--credentials-file", str(dev_server.state_dir / "admin-credentials"), "--module", "diamond_pipeline",
                 "Report", "--out-dir", str(tmp_path / "out"), env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    session = dev_server.session()
    deadline = time.monotonic() + 30
    while session.get(f"{dev_server.url}/history/api/status", timeout=10).json()["written"] < 36:
        assert time.monotonic() < deadline, "events not written"
        time.sleep(0.2)
    assert (dev_server.state_dir / "history.db").exists()
    events_json = session.get(f"{dev_server.url}/history/api/events", params={"name": "Report"}, timeout=10).json()
    assert [e["event"] for e in events_json["events"]] == ["DONE", "RUNNING", "PENDING"]
    assert {e["principal"] for e in events_json["events"]} == {"admin"}
    page = session.get(f"{dev_server.url}/tasklist/Transform", timeout=10)
    assert page.status_code == 200 and page.text.count('class="DONE"') == 3
    # Restarting keeps the history (and the schema is not migrated twice).
    dev_server.stop()
    dev_server.start()
    assert session.get(f"{dev_server.url}/history/by_name/Extract", timeout=10).text.count("/history/by_id/") == 8
