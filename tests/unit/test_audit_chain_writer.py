"""The audit writer's hash chain and signed checkpoints: one chain across batches, logrotate's
moves and restarts (from the live file's tail, from the head file when the file was rotated
away, after a torn last line), checkpoints that verify with the public key, and a failing disk
counted with one error line, not a traceback per write.

The verification here is written from chain.py's format and ``cryptography`` alone, not with
``audit verify``'s code, so the two cannot agree on a mistake.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from luigi_appliance.audit import trail
from luigi_appliance.audit.settings import AuditSettings
from luigi_appliance.audit.trail import AuditLog
from luigi_appliance.errors import ApplianceError

KEY = Ed25519PrivateKey.generate()


def open_log(tmp_path: Path, **settings: Any) -> AuditLog:
    return AuditLog(AuditSettings(file=tmp_path / "audit.log", stderr=False, **settings),
                    signing_key=KEY, head_file=tmp_path / "audit-chain.head")


def add(log: AuditLog, first: int, count: int) -> None:
    for n in range(first, first + count):
        log.record("rpc", principal="alice", source="127.0.0.1", outcome="ok", method="add_task", task_id=f"T{n}")


def records(*paths: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def verify(lines: list[dict[str, Any]], public: Ed25519PublicKey) -> None:
    """seq 1, 2, ... from GENESIS, each prev the hash before, each hash SHA-256 of prev and the
    sorted compact body, chain fields last, and every checkpoint's signature good."""
    prev = "0" * 64
    key_id = hashlib.sha256(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()
    for seq, record in enumerate(lines, start=1):
        assert next(iter(record)) == "time" and list(record)[-3:] == ["seq", "prev", "hash"], record
        assert (record["seq"], record["prev"]) == (seq, prev), record
        body = json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
        assert record["hash"] == hashlib.sha256((prev + body).encode()).hexdigest(), record
        if record["event"] == "audit_checkpoint":
            assert record["key_id"] == key_id[:16]
            message = f"luigi-appliance-audit-checkpoint:v1:{seq}:{prev}:{record['time']}".encode()
            public.verify(base64.b64decode(record["signature"], validate=True), message)  # raises if forged
        prev = record["hash"]


def wait_for_lines(path: Path, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(path.read_text().splitlines()) < count:
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def events(lines: list[dict[str, Any]]) -> list[str]:
    return [x.get("reason") or x.get("task_id") or x["event"] for x in lines]


def test_one_chain_across_batches_and_a_rotation_with_start_and_shutdown_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail, "WRITE_BATCH", 7)  # many writes, one of them short
    log = open_log(tmp_path)
    add(log, 0, 50)
    log._flush()
    (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")  # logrotate's move
    add(log, 50, 20)
    log.close()

    lines = records(tmp_path / "audit.log.1", tmp_path / "audit.log")
    verify(lines, KEY.public_key())
    assert events(lines) == ["start", *(f"T{n}" for n in range(70)), "shutdown"]
    assert (log.stats.records, log.stats.checkpoints, log.stats.write_failures) == (70, 2, 0)
    assert json.loads((tmp_path / "audit-chain.head").read_text()) == {"seq": 72, "hash": lines[-1]["hash"]}


def test_a_restart_continues_from_the_live_files_tail(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    add(log, 0, 3)
    log.close()
    # The file's own tail, not the head file, says where the chain is.
    (tmp_path / "audit-chain.head").unlink()
    log = open_log(tmp_path)
    add(log, 3, 3)
    log.close()
    lines = records(tmp_path / "audit.log")
    verify(lines, KEY.public_key())
    assert events(lines) == ["start", "T0", "T1", "T2", "shutdown", "start", "T3", "T4", "T5", "shutdown"]


def test_a_restart_after_the_file_was_rotated_away_continues_from_the_head_file(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    add(log, 0, 3)
    log.close()
    (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")
    (tmp_path / "audit.log").touch()  # logrotate's `create`
    log = open_log(tmp_path)
    add(log, 3, 1)
    log.close()
    lines = records(tmp_path / "audit.log.1", tmp_path / "audit.log")
    verify(lines, KEY.public_key())
    assert events(lines)[4:] == ["shutdown", "start", "T3", "shutdown"]


def test_a_torn_last_line_is_kept_on_its_own_line_and_the_chain_goes_on_after_the_last_intact_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = open_log(tmp_path)
    add(log, 0, 2)
    log.close()
    torn = b'{"time": "2026-12-02T06:00:00.000+00:00", "event": "rpc", "princ'  # a crash mid-write
    with open(tmp_path / "audit.log", "ab") as fh:
        fh.write(torn)
    log = open_log(tmp_path)
    add(log, 2, 1)
    log.close()

    raw = (tmp_path / "audit.log").read_bytes().splitlines()
    assert raw[4] == torn
    lines = [json.loads(line) for line in raw[:4] + raw[5:]]
    verify(lines, KEY.public_key())
    assert events(lines)[3:] == ["shutdown", "start", "audit_damaged_tail", "T2", "shutdown"]
    note = lines[5]
    assert (note["after_seq"], note["bytes"], note["outcome"]) == (4, len(torn), "continued")
    assert f"ends with {len(torn)} bytes after its last intact record (seq 4)" in caplog.text


def test_an_edited_last_line_is_not_taken_as_the_head(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    add(log, 0, 2)
    log.close()
    path = tmp_path / "audit.log"
    path.write_text(path.read_text().replace('"reason": "shutdown"', '"reason": "shutdowN"'))
    log = open_log(tmp_path)
    log.close()
    lines = records(path)
    # The edited line stays in the file; the chain goes on after the record before it.
    assert lines[3]["reason"] == "shutdowN"
    verify(lines[:3] + lines[4:], KEY.public_key())
    assert events(lines)[4:] == ["start", "audit_damaged_tail", "shutdown"] and lines[5]["after_seq"] == 3


def test_a_damaged_head_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "audit-chain.head").write_text("{not json\n")
    with pytest.raises(ApplianceError, match=r"audit-chain.head does not hold the audit chain's head .* remove"):
        open_log(tmp_path)
    assert not (tmp_path / "audit.log").exists()


def test_interval_checkpoints_only_while_records_are_written_and_each_in_the_journal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="luigi_appliance.audit")
    log = open_log(tmp_path, checkpoint_interval=0.5)
    add(log, 0, 1)
    wait_for_lines(tmp_path / "audit.log", 3)  # start, T0, interval
    time.sleep(1.0)  # two intervals without a record: no checkpoint
    assert len(records(tmp_path / "audit.log")) == 3
    add(log, 1, 1)
    wait_for_lines(tmp_path / "audit.log", 5)
    log.close()
    lines = records(tmp_path / "audit.log")
    verify(lines, KEY.public_key())
    assert events(lines) == ["start", "T0", "interval", "T1", "interval", "shutdown"]
    written = (tmp_path / "audit.log").read_text().splitlines()
    journal = [r.getMessage() for r in caplog.records if r.name == "luigi_appliance.audit"
               and r.getMessage().startswith("audit checkpoint: ")]
    assert journal == [f"audit checkpoint: {line}" for line in written if '"audit_checkpoint"' in line]
    assert log.stats.checkpoints == 4


def test_a_failing_disk_is_counted_with_one_error_line_per_episode_and_no_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.log"
    path.symlink_to("/dev/full")  # every write fails with ENOSPC: a real full disk
    log = AuditLog(AuditSettings(file=path, stderr=True), signing_key=KEY, head_file=tmp_path / "audit-chain.head")
    for n in range(3):
        add(log, n, 1)
        log._flush()
    path.unlink()  # the disk has room again: logrotate-like, a new file at the path
    add(log, 3, 1)
    log._flush()
    log.close()

    assert log.stats.write_failures == 4  # the start checkpoint and three batches
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"Cannot write the audit trail to {path}: No space left on device; lines are lost there "
                      "until it can be written again"]
    assert f"Writing the audit trail to {path} again, after 4 failed writes" in caplog.text
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # stderr (the journal) has every line; the file those written once it could be.
    assert [json.loads(x.removeprefix("audit: "))["seq"] for x in err.splitlines()] == [1, 2, 3, 4, 5, 6]
    assert [x["seq"] for x in records(path)] == [5, 6]
    assert json.loads((tmp_path / "audit-chain.head").read_text())["seq"] == 6
