"""The audit trail's writer: lines gathered into few writes are still one JSON line per record,
each prefixed on stderr with the file's very line, and a file moved away (logrotate) is reopened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from luigi_appliance.audit import AuditLog, trail
from luigi_appliance.audit.settings import AuditSettings


def _records(log: AuditLog, first: int, count: int) -> None:
    for n in range(first, first + count):
        log.record("rpc", principal="alice", source="127.0.0.1", outcome="ok", method="add_task", task_id=f"T{n}")


def test_batched_writes_keep_one_line_per_record_and_follow_a_rotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail, "WRITE_BATCH", 7)  # several writes, one of them short
    path = tmp_path / "audit.log"
    log = AuditLog(AuditSettings(file=path, stderr=True))
    _records(log, 0, 20)
    log._flush()
    path.rename(tmp_path / "audit.log.1")  # logrotate's move
    _records(log, 20, 5)
    log.close()

    def task_ids(lines: list[str]) -> list[str]:
        return [json.loads(line)["task_id"] for line in lines]

    assert task_ids((tmp_path / "audit.log.1").read_text().splitlines()) == [f"T{n}" for n in range(20)]
    assert task_ids(path.read_text().splitlines()) == [f"T{n}" for n in range(20, 25)]
    stderr = capsys.readouterr().err.splitlines()
    assert all(line.startswith("audit: ") for line in stderr) and len(stderr) == 25
    # The journal's copy is the file's line, chain fields included.
    assert [line.removeprefix("audit: ") for line in stderr] == \
        (tmp_path / "audit.log.1").read_text().splitlines() + path.read_text().splitlines()
