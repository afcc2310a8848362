"""The release-1 RPMs of this checkout, built once per test session, shared across xdist workers.

tests/system/test_rpm.py builds release 1 with ``make rpm RPM_RELEASE=1 PYTHON=python3`` in the
checkout (about 2 minutes on CI's 2 cores, most of the booted test's budget). This is that same
command, behind a lock in the session's shared temporary directory, so that every module asking
for release 1 in one session gets the one build: the first caller builds, the others wait for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = re.search(r'__version__ = "(.+)"', (REPO / "luigi_appliance" / "__init__.py").read_text())[1]  # type: ignore[index]
timings: dict[str, float] = {"build_seconds": 0.0}  # this process's build, for the test's report


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory every xdist worker of this session sees: the parent of a worker's basetemp
    (pytest-xdist's documented pattern), the basetemp itself without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def release_1(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"src", "main", "selinux"}``: the release-1 packages in the checkout's dist/, built by this
    session (once) with the command test_rpm.py uses. ``timings["build_seconds"]`` says how long the
    build took, 0 when another module had already built it."""
    shared = shared_dir(tmp_path_factory)
    record = shared / "rpm-release-1.json"
    with open(shared / "rpm-release-1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not record.exists():
            started = time.monotonic()
            proc = subprocess.run(["make", "rpm", "RPM_RELEASE=1", "PYTHON=python3"], cwd=REPO,
                                  capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                raise AssertionError(f"make rpm exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
                                     f"{proc.stderr[-4000:]}")
            timings["build_seconds"] = time.monotonic() - started
            dist = REPO / "dist"
            paths = {"src": dist / f"luigi-appliance-{VERSION}-1.src.rpm",
                     "main": dist / f"luigi-appliance-{VERSION}-1.x86_64.rpm",
                     "selinux": dist / f"luigi-appliance-selinux-{VERSION}-1.noarch.rpm"}
            record.write_text(json.dumps({kind: str(path) for kind, path in paths.items()}))
    return {kind: Path(path) for kind, path in json.loads(record.read_text()).items()}

