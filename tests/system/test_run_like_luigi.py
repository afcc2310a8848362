"""``luigi-appliance run`` behaves as luigi's own worker wherever the pipeline is right: its
preflight walks the graph as luigi's worker does (nothing below a complete task), accepts what
luigi accepts, and luigi's worker then asks no task a second time (tests/pipelines/worker_walk_cases.py)."""

from __future__ import annotations

import collections
import os
import subprocess
from pathlib import Path

from conftest import BIN, PIPELINES, Server, cli, client_conf

LUIGI = BIN.parent / "luigi"
ENV = {"PYTHONPATH": str(PIPELINES)}


def run(tmp_path: Path, server: Server, *task: str, env: dict[str, str] | None = None):
    return cli("run", "--client-config", str(client_conf(tmp_path, server)),
               "--credentials-file", str(server.state_dir / "admin-credentials"),
               "--module", "worker_walk_cases", *task, env={**ENV, **(env or {})}, cwd=tmp_path)


def test_complete_tasks_are_not_walked(dev_server: Server, tmp_path: Path) -> None:
    # Cleaned is complete and its raw inputs were purged: its requires() raises, luigi never calls it.
    purged = tmp_path / "purged"
    purged.mkdir()
    (purged / "cleaned").write_text("cleaned earlier\n")
    result = run(tmp_path, dev_server, "Report", "--root", str(purged))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (purged / "report").read_text() == "report\n"
    # A recursion with no base case, ended by day 3 being done: days 4 and 5 run.
    days = tmp_path / "days"
    days.mkdir()
    (days / "day-3").write_text("3\n")
    result = run(tmp_path, dev_server, "Day", "--root", str(days), "--n", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in days.iterdir()) == ["day-3", "day-4", "day-5"]
    # A complete root: luigi asks nothing else, and neither does the preflight.
    (purged / "report").write_text("report\n")
    assert run(tmp_path, dev_server, "Report", "--root", str(purged)).returncode == 0
    # Below an incomplete task the preflight still walks, and still refuses what luigi would not run.
    broken = tmp_path / "broken"
    broken.mkdir()
    result = run(tmp_path, dev_server, "Report", "--root", str(broken))
    assert result.returncode == 4
    assert f"ERROR: requires_error: Cleaned(root={broken}): requires() raised: FileNotFoundError" in result.stderr


def test_what_luigi_accepts_the_preflight_accepts(dev_server: Server, tmp_path: Path) -> None:
    result = run(tmp_path, dev_server, "Optionals", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "optionals").read_text() == "(None, None, None, None, None)\n"
    # A dependency's parameter given only on the command line, as luigi's --Task-param option.
    result = run(tmp_path, dev_server, "NeedsSized", "--root", str(tmp_path), "--Sized-size", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sized-7").read_text() == "7\n"


def _calls(tmp_path: Path, name: str, argv: list[str]) -> list[str]:
    """Run ``argv`` on Logged in a fresh directory (its base done already); the calls it logged."""
    root = tmp_path / name
    root.mkdir()
    (root / "logged-0").write_text("0\n")
    log = tmp_path / f"{name}.calls"
    result = subprocess.run([*argv, "--root", str(root)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, **ENV, "CALL_LOG": str(log)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir()) == [f"logged-{i}" for i in range(4)]
    return [line.replace(str(root), "ROOT") for line in log.read_text().splitlines()]


def test_each_complete_and_requires_call_is_luigis(dev_server: Server, tmp_path: Path) -> None:
    """The same pipeline under stock luigi and under run: the same calls of complete() and
    requires(), as many of each, and while the graph is scheduled in the same order (the
    preflight's walk is luigi's, and luigi's worker takes its answers instead of asking again).

    Once tasks run, the order is get_work's: parts 1 and 2 of the diamond are ready together, and
    CI saw ours run part 1 first once where stock ran part 2 first, so the run phase is compared
    as counts only."""
    task = ["--module", "worker_walk_cases", "Logged", "--workers", "1"]
    stock = _calls(tmp_path, "stock", [str(LUIGI), *task, "--local-scheduler", "--no-lock"])
    ours = _calls(tmp_path, "ours", [str(BIN), "run", "--client-config", str(client_conf(tmp_path, dev_server)),
                                     "--credentials-file", str(dev_server.state_dir / "admin-credentials"), *task])
    assert stock[:2] == ["complete Logged(root=ROOT, part=3)", "requires Logged(root=ROOT, part=3)"]
    # The walk asks each task's complete() and each incomplete task's requires() once, before
    # anything runs: its calls are the first ones, all distinct.
    walk = len(set(stock))
    assert len(set(stock[:walk])) == walk
    assert ours[:walk] == stock[:walk]
    assert collections.Counter(ours) == collections.Counter(stock)
