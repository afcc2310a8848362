"""luigi 3.8.1's own scheduler tests pass with our scheduler wherever they pass with luigi's (issue 14).

The tests come from luigi's sdist (``pip download luigi==3.8.1 --no-binary :all: --no-deps``,
checked against its PyPI sha256, cached in ~/.cache/luigi-appliance-tests; nothing is vendored):
``test/scheduler_api_test.py``, ``test/scheduler_test.py``, ``test/rpc_test.py`` (scheduler_api_test
again, through luigi's RemoteScheduler over HTTP) and ``test/scheduler_visualisation_test.py``. They
run twice, in pytest subprocesses loading tests/luigi_upstream_plugin.py: once as they are (stock),
once with ``luigi.scheduler.Scheduler`` replaced by ``luigi_appliance.scheduler.Scheduler`` and the
HTTP tests served by the appliance's guarded app (authentication, policy, argument checks, worker
bindings, audit), as the admin of a local users file. Every test that passes with stock must pass
with ours, except those in ``EXPECTED_DIFFERENCES``, each with the reason; a listed test that
passes with ours again must leave the list.

A failed download fails this test (it never skips): CI has PyPI access.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

import pytest

LUIGI_VERSION = "3.8.1"
SDIST = f"luigi-{LUIGI_VERSION}.tar.gz"
SDIST_SHA256 = "2fa5eb5d3474e495de09bd964f502936c08f8b1eb6e0f3ca3c8a69116c38d0c3"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "luigi-appliance-tests"
TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FILES = ("scheduler_api_test.py", "scheduler_test.py", "rpc_test.py", "scheduler_visualisation_test.py")

# Upstream test id -> why it passes with stock luigi and, on purpose, not with the appliance.
EXPECTED_DIFFERENCES: dict[str, str] = {}
# Tests that start a scheduler and worker processes and sleep, assuming these are up by then: on a
# loaded machine they can fail either way. One that passed with stock and not with ours is run
# once more, alone; it must pass then.
_COOLDOWN = "scheduler_test.py::StableDoneCooldownSecsTest::"
TIMING_DEPENDENT = frozenset({
    _COOLDOWN + "test_sending_same_task_twice_with_cooldown_does_not_lead_to_double_run",
    _COOLDOWN + "test_sending_same_task_twice_without_cooldown_leads_to_double_run",
})


def sdist() -> Path:
    """luigi's sdist from the cache, downloaded first if needed; fails (never skips) if it cannot be had."""
    tarball = CACHE / SDIST
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as download:
            result = subprocess.run([sys.executable, "-m", "pip", "download", f"luigi=={LUIGI_VERSION}",
                                     "--no-binary", ":all:", "--no-deps", "--disable-pip-version-check",
                                     "-d", download], capture_output=True, text=True, timeout=600)
            if result.returncode != 0 or not (Path(download) / SDIST).exists():
                pytest.fail(f"cannot download luigi {LUIGI_VERSION}'s sdist (its tests are run from it): "
                            f"pip download exited {result.returncode}: {result.stderr.strip()[-2000:]}")
            os.replace(Path(download) / SDIST, tarball)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        tarball.unlink()
        pytest.fail(f"{tarball}: sha256 {digest}, expected {SDIST_SHA256} (PyPI's); removed, run again")
    return tarball


@pytest.fixture(scope="module")
def upstream_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """luigi's test/ directory, freshly unpacked."""
    root = tmp_path_factory.mktemp("luigi-sdist")
    with tarfile.open(sdist()) as tar:
        # The archive is PyPI's (its sha256 is checked); extraction filters came in 3.11.4 / 3.10.12.
        tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))  # noqa: S202
    return root / f"luigi-{LUIGI_VERSION}" / "test"


def run_upstream(test_dir: Path, scheduler: str, work: Path, tests: Iterable[str] = FILES) -> subprocess.Popen:
    """Start luigi's ``tests`` against ``scheduler`` ("stock" or "appliance"); junit XML in ``work``."""
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUIGI_", "PYTEST_"))}
    # This checkout's package (not whichever one is installed) and the plugin.
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               LUIGI_UPSTREAM_STATE_DIR=str(work / "state"), TMPDIR=str(work))
    command = [sys.executable, "-m", "pytest", "-p", "luigi_upstream_plugin", "--scheduler-under-test", scheduler,
               "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rfE", "--junitxml", str(work / "junit.xml"),
               *tests]
    with open(work / "output.txt", "w") as output:  # the child has its own copy of the file
        return subprocess.Popen(command, cwd=test_dir, env=env, stdout=output, stderr=subprocess.STDOUT)


def outcomes(work: Path) -> dict[str, str]:
    """Test id (file::Class::test) -> passed / failed / error / skipped, from the run's junit XML."""
    junit = work / "junit.xml"
    if not junit.exists():
        pytest.fail(f"luigi's tests did not run:\n{(work / 'output.txt').read_text()[-5000:]}")
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - written by our own subprocess
        module, _, cls = case.get("classname", "").rpartition(".")
        test_id = f"{module.rpartition('.')[2]}.py::{cls}::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[test_id] = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
    return results


@pytest.fixture(scope="module")
def runs(upstream_tests: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Both runs' outcomes; the two run side by side (much of their time is waiting). Timing-dependent
    tests that passed with stock and not with ours are run once more, alone."""
    work = tmp_path_factory.mktemp("luigi-upstream")
    started = time.monotonic()
    procs = {name: run_upstream(upstream_tests, name, work / name) for name in ("stock", "appliance")}
    took = {}
    while len(took) < len(procs) and time.monotonic() < started + 1200:
        took.update({name: time.monotonic() - started for name, proc in procs.items()
                     if name not in took and proc.poll() is not None})
        time.sleep(0.5)
    results = {}
    for name, proc in procs.items():
        if proc.poll() is None:
            proc.kill()
            pytest.fail(f"luigi's tests against {name} still running after 20 minutes")
        results[name] = outcomes(work / name)
        # For the CI budget (shown with -s): the two runs overlap, so the longer is what it costs.
        print(f"luigi {LUIGI_VERSION} tests, {name}: {len(results[name])} run, "
              f"{sum(o == 'passed' for o in results[name].values())} passed, {took[name]:.0f} s")
    again = sorted(test_id for test_id in TIMING_DEPENDENT
                   if results["stock"].get(test_id) == "passed" and results["appliance"].get(test_id) != "passed")
    if again:
        run_upstream(upstream_tests, "appliance", work / "again", again).wait(timeout=300)
        results["appliance"].update(outcomes(work / "again"))
    return results


def test_every_upstream_test_that_passes_with_stock_passes_with_ours(runs: dict[str, dict[str, str]]) -> None:
    stock, ours = runs["stock"], runs["appliance"]
    assert set(stock) == set(ours), "both runs collect the same tests"
    for name in FILES:
        assert any(test_id.startswith(name + "::") for test_id in stock), f"no test of {name} ran"
    regressions = {test_id: ours[test_id] for test_id, outcome in stock.items()
                   if outcome == "passed" and ours[test_id] != "passed" and test_id not in EXPECTED_DIFFERENCES}
    assert not regressions, f"pass with stock luigi, not with ours: {regressions}"


def test_each_expected_difference_still_differs(runs: dict[str, dict[str, str]]) -> None:
    stale = [test_id for test_id in EXPECTED_DIFFERENCES
             if runs["stock"].get(test_id) != "passed" or runs["appliance"].get(test_id) == "passed"]
    assert not stale, f"no longer a difference, remove from EXPECTED_DIFFERENCES: {stale}"
