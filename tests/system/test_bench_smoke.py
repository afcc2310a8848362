"""bench/scheduler_scale.py still runs end to end: every part, both targets, at a tiny size.

Nothing here looks at a timing; only that each part produced figures for stock and for ours and
printed its table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SIZE = 200
TARGETS = {"stock", "ours"}


def test_scheduler_scale_runs_every_part_for_both_targets(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "scheduler_scale.py"), "--sizes", str(SIZE),
                           "--quick", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["stopped"] == [], figures["stopped"]
    assert {row["target"] for row in figures["inprocess"]} == TARGETS
    for row in figures["inprocess"]:
        assert row["size"] == SIZE and row["bytes_per_task"] is not None
        assert all(op["n"] >= 1 and op["p50_ms"] is not None for op in row["ops"].values()), row
    assert {row["target"] for row in figures["rpc"]} == TARGETS
    assert all(row["rpcs"] > 0 and row["size"] == SIZE for row in figures["rpc"])
    assert {row["target"] for row in figures["run"]} == TARGETS
    assert all(row["stopped"] is None and row["first_task_s"] is not None for row in figures["run"])

    titles = ("In process (", "Over the network (", "Run of a generated DAG (")
    report = done.stdout.split("\nwrote ", 1)[0]
    tables = re.split(r"\n\n(?=" + "|".join(re.escape(t) for t in titles) + ")", report)[1:]
    assert len(tables) == 3, done.stdout
    assert all(table.startswith(title) for table, title in zip(tables, titles, strict=True)), done.stdout
    for table in tables:
        header, *rows = [line.split() for line in table.strip().splitlines()[1:]]
        assert header[:2] in (["size", "target"], ["tasks", "target"]), table
        # A row per target and one of ratios, each starting with the size.
        assert {row[0] for row in rows} == {str(SIZE)}, table
        assert {row[1] for row in rows} == TARGETS | {"ours/stock" if "network" in table[:20] else "speedup"}, table
