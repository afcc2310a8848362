"""``luigi-appliance audit export`` through the real CLI, on a trail the real writer wrote: the
window's boundaries (since inclusive, until exclusive, offsets honoured), JSONL as the trail's
own lines, CSV's fixed columns, a new 0600 output file, and the refusal of a tampered trail."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import stat
import subprocess
import time
from pathlib import Path

from test_audit_verify import Writer, rewrite, writer  # noqa: F401 (fixture)

from conftest import cli
from luigi_appliance.audit.export import COLUMNS


def runs_apart(writer: Writer) -> list[str]:  # noqa: F811 (the fixture's name)
    """Three runs of the real writer, a few milliseconds apart so that each run's first line has a
    time of its own: lines 1, 13 and 25 open the runs, seq 1..36."""
    for _ in range(3):
        writer.run()
        time.sleep(0.02)
    lines = writer.file.read_text().splitlines()
    times = [json.loads(line)["time"] for line in lines]
    assert times[11] < times[12] and times[23] < times[24]
    return lines


def export(writer: Writer, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:  # noqa: F811
    return cli("audit", "export", "--public-key", str(writer.public_key), *args, str(writer.file), cwd=cwd)


def test_jsonl_is_the_window_s_own_lines(writer: Writer) -> None:  # noqa: F811
    lines = runs_apart(writer)
    since, until = json.loads(lines[12])["time"], json.loads(lines[24])["time"]
    result = export(writer, "--since", since, "--until", until)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines[12:24]  # the second run, its checkpoints included
    assert result.stderr.startswith("exported 12 record(s) of 36 (intact: ")


def test_the_window_honours_offsets_and_dates(writer: Writer) -> None:  # noqa: F811
    lines = runs_apart(writer)
    since = dt.datetime.fromisoformat(json.loads(lines[24])["time"]).astimezone(dt.timezone(dt.timedelta(hours=2)))
    result = export(writer, "--since", since.isoformat())
    assert result.returncode == 0 and result.stdout.splitlines() == lines[24:]
    # A time without an offset is UTC; a date is its midnight.
    naive = since.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds")
    assert export(writer, "--since", naive).stdout.splitlines() == lines[24:]
    today = dt.date.fromisoformat(json.loads(lines[0])["time"][:10])
    assert export(writer, "--until", today.isoformat()).stdout == ""
    assert export(writer, "--since", today.isoformat()).stdout.splitlines() == lines
    bad = export(writer, "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr == ("luigi-appliance: error: --since: expected an ISO 8601 date or time "
                                                  "(2024-05-01, 2024-05-01T13:00:00+02:00), got 'yesterday'\n")


def test_csv_has_fixed_columns_and_no_checkpoints(writer: Writer) -> None:  # noqa: F811
    lines = runs_apart(writer)
    since, until = json.loads(lines[12])["time"], json.loads(lines[24])["time"]
    result = export(writer, "--format", "csv", "--since", since, "--until", until)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == COLUMNS == ("time", "seq", "event", "outcome", "principal", "source", "method",
                                         "task_id", "family", "worker", "details")
    assert len(rows) == 1 + 10 and {row[2] for row in rows[1:]} == {"rpc"}
    first = json.loads(lines[13])
    assert rows[1] == [first["time"], "14", "rpc", "ok", "user0", "192.0.2.7", "add_task", "Task_2_0", "Task", "w1",
                       '{"status": "PENDING"}']


def test_output_file_is_new_and_private(writer: Writer, tmp_path: Path) -> None:  # noqa: F811
    lines = runs_apart(writer)
    result = export(writer, "--output", "evidence.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "evidence.jsonl"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().splitlines() == lines and result.stdout == ""
    again = export(writer, "--output", str(out))
    assert again.returncode == 2 and "exists (--output)" in again.stderr and out.read_text().splitlines() == lines


def test_a_tampered_trail_is_not_exported(writer: Writer) -> None:  # noqa: F811
    lines = runs_apart(writer)
    lines[5] = lines[5].replace("user", "usEr", 1)
    rewrite(writer.file, lines)
    result = export(writer, "--format", "csv")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[0] == (f"edited: {writer.file}:6 (seq 6): its hash does not match its content: "
                                             "the record was edited")
    assert result.stderr.splitlines()[-1].endswith("): nothing exported")


def test_an_unsealed_window_is_exported_with_exit_3(writer: Writer) -> None:  # noqa: F811
    lines = runs_apart(writer)
    rewrite(writer.file, lines[:30])  # the third run still going: 25 is its last checkpoint
    sealed = export(writer, "--until", json.loads(lines[24])["time"])
    assert sealed.returncode == 0 and sealed.stdout.splitlines() == lines[:24]
    result = export(writer)
    assert result.returncode == 3 and result.stdout.splitlines() == lines[:30]
    assert "note: 5 of them (from seq 26) come after the last checkpoint" in result.stderr
