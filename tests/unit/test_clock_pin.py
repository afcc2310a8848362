"""luigi_internals/clock.py: the scheduler modules' clock and ids pinned for one call, nothing else."""

from __future__ import annotations

import ast
import importlib
import time
import uuid
from pathlib import Path

import luigi.scheduler
import pytest

from luigi_appliance.approvals import book
from luigi_appliance.luigi_internals import clock
from luigi_appliance.luigi_internals.clock import SECRETS_MODULES, TIME_MODULES, UUID_MODULES, pinned
from luigi_appliance.scheduler import tasks, work

PACKAGE = Path(__file__).resolve().parents[2] / "luigi_appliance"
UID = "0f8b6e1c-3b7a-4d2e-9c1f-5a6b7c8d9e0f"


def test_the_listed_modules_read_the_pinned_time_and_the_global_clock_is_untouched() -> None:
    with pinned(1234.5, None):
        assert luigi.scheduler.time.time() == work.time.time() == tasks.time.time() == 1234.5
        assert clock.now() == 1234.5 and clock.is_pinned()
        assert time.time() > 1_700_000_000  # other threads keep the real clock
        assert luigi.scheduler.time.monotonic() > 0  # the rest is the real module's
    assert luigi.scheduler.time is time and work.time is time and not clock.is_pinned()


def test_a_task_made_while_pinned_has_the_pinned_time() -> None:
    with pinned(99.0, None):
        task = tasks.IndexedTask("t", "PENDING", [])
        stock = luigi.scheduler.Task("t", "PENDING", [])
    assert task.time == task.updated == stock.time == 99.0


def test_nested_pins_keep_the_outer_time_and_take_the_inner_ids() -> None:
    with pinned(10.0, None):
        with pinned(20.0, UID):
            assert luigi.scheduler.time.time() == 10.0
            assert str(luigi.scheduler.uuid.uuid4()) == UID
        assert luigi.scheduler.time.time() == 10.0
        assert str(luigi.scheduler.uuid.uuid4()) != UID  # the real uuid4 again
    assert luigi.scheduler.uuid is uuid


def test_ids_are_drawn_from_the_uid_the_same_way_every_time() -> None:
    def draw() -> list[str]:
        with pinned(1.0, UID):
            return [str(luigi.scheduler.uuid.uuid4()) for _ in range(3)] + [book.secrets.token_hex(6)]

    first = draw()
    assert first == draw()
    assert first[0] == UID and len(set(first)) == 4 and len(first[3]) == 12
    assert uuid.UUID(first[1]).version == 4


def test_everything_is_restored_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), pinned(5.0, UID):
        raise RuntimeError("boom")
    assert luigi.scheduler.time is time and luigi.scheduler.uuid is uuid and not clock.is_pinned()
    assert book.secrets.token_hex(6) != book.secrets.token_hex(6)


def test_a_uid_that_is_no_uuid_is_refused_before_anything_is_pinned() -> None:
    with pytest.raises(ValueError, match="hexadecimal"), pinned(5.0, "not-a-uuid"):
        pass
    assert not clock.is_pinned()


def _uses(path: Path) -> set[str]:
    """Which of time.time, uuid.*, secrets.*, random.* the module's source reaches."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "time" and node.attr in ("time", "time_ns"):
                found.add("time")
            elif node.value.id in ("uuid", "secrets", "random"):
                found.add(node.value.id)
        elif isinstance(node, ast.ImportFrom) and node.module in ("time", "uuid", "secrets", "random"):
            found.add(f"from {node.module}")
    return found


def _state_modules() -> list[tuple[str, Path]]:
    paths = [*sorted((PACKAGE / "scheduler").glob("*.py")), *sorted((PACKAGE / "approvals").glob("*.py")),
             PACKAGE / "luigi_internals" / "scheduler.py"]
    return [(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts), p) for p in paths]


@pytest.mark.parametrize(("module", "path"), _state_modules(), ids=lambda v: str(v).rsplit("/", 1)[-1])
def test_every_module_that_reads_the_clock_or_draws_ids_is_pinned(module: str, path: Path) -> None:
    uses = _uses(path)
    if module == "luigi_appliance.scheduler.journalled":
        uses -= {"uuid"}  # draws the leader's uid itself, before pinning
    assert not {u for u in uses if u.startswith("from ")}, f"{module}: import the module, not its function"
    assert "random" not in uses, f"{module} draws random numbers: a standby could not replay them"
    if "time" in uses:
        assert module in TIME_MODULES, f"{module} calls time.time(): add it to clock.TIME_MODULES"
    if "uuid" in uses:
        assert module in UUID_MODULES, f"{module} draws uuids: add it to clock.UUID_MODULES"
    if "secrets" in uses:
        assert module in SECRETS_MODULES, f"{module} draws secrets: add it to clock.SECRETS_MODULES"


def test_the_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import time, secrets\nfrom uuid import uuid4\nx = time.time() + len(secrets.token_hex(2))\n")
    assert _uses(source) == {"time", "secrets", "from uuid"}


def test_luigis_scheduler_reads_no_other_clock() -> None:
    # luigi.scheduler is not ours to scan as the others: its ids and times must come from the
    # two module attributes pinned (no datetime.now, no from-imports of time or uuid).
    assert _uses(Path(luigi.scheduler.__file__)) <= {"time", "uuid"}
    for name in TIME_MODULES + UUID_MODULES + SECRETS_MODULES:
        importlib.import_module(name)  # every listed module exists
