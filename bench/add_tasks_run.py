"""``luigi-appliance run`` of a wide graph against ``serve --dev``: how long until the worker has
told the scheduler about every task, and until the first task runs, with add_task batched
(add_tasks, the default), one add_task per task, and luigi's parallel scheduling on top.

    .venv/bin/python bench/add_tasks_run.py [--sizes 10000,100000] [--modes batched,single,...]

Each measurement starts a fresh ``serve --dev`` and one worker on tests/pipelines/wide_pipeline.py
(ReportWide over N ReportLeaf tasks in groups of 1000, none complete: N + N/1000 + 1 tasks to
schedule, each leaf's complete() a file check, or slower with --check-ms). Times are from
starting the worker process, read off its log lines as they arrive: "scheduled" is luigi's "Done
scheduling tasks" (its add() returned), "first task" the first "running" line (the buffer went
out before get_work). The worker is stopped after its first task.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "luigi-appliance"
PIPELINES = REPO / "tests" / "pipelines"

# mode -> (add_task calls per add_tasks batch, luigi's parallel scheduling)
MODES = {"batched": (500, False), "single": (1, False), "batched+parallel": (500, True), "single+parallel": (1, True)}

WORKER = """
import sys
from pathlib import Path
from luigi_appliance.client.run import RunOptions, run
conf, creds = sys.argv[1], sys.argv[2]
sys.exit(run(RunOptions(None, None, Path(creds), Path(conf), sys.argv[3:], dag_check=False)))
"""


@dataclass
class Figures:
    scheduled: float
    first_task: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(state: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(state.parent / "server.log", "ab")
    proc = subprocess.Popen([str(BIN), "serve", "--dev", "--state-dir", str(state), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", verify=str(state / "tls-selfsigned.crt"), timeout=2).ok:
                return proc, url
        except (requests.ConnectionError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"serve --dev did not come up; see {state.parent / 'server.log'}")


def measure(size: int, mode: str, work: Path, check_ms: int, processes: int) -> Figures:
    batch, parallel = MODES[mode]
    luigi_args = ["--parallel-scheduling", "--parallel-scheduling-processes", str(processes)] if parallel else []
    if check_ms:
        luigi_args += ["--ReportLeaf-check-ms", str(check_ms)]
    state = work / "var"
    server, url = start_server(state)
    try:
        conf = work / "client.conf"
        conf.write_text(f"[client]\nscheduler_url = {url}/\nca_file = {state / 'tls-selfsigned.crt'}\n"
                        f"add_task_batch = {batch}\n")
        args = ["--module", "wide_pipeline", "ReportWide", "--out-dir", str(work / "out"), "--size", str(size),
                "--group-size", "1000", "--workers", "1", "--log-level", "INFO", *luigi_args]
        path = os.pathsep.join(filter(None, [str(PIPELINES), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(conf), str(state / "admin-credentials"),
                                   *args], stderr=subprocess.PIPE, text=True, env=env)
        scheduled = None
        last: collections.deque[str] = collections.deque(maxlen=20)
        assert worker.stderr is not None
        for line in worker.stderr:
            last.append(line)
            if "Done scheduling tasks" in line:
                scheduled = time.monotonic() - started
            elif " running   " in line:
                first = time.monotonic() - started
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
                assert scheduled is not None
                return Figures(scheduled, first)
        raise SystemExit(f"the worker ended before running a task (exit {worker.wait()}):\n{''.join(last)}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000", help="comma-separated leaf counts")
    parser.add_argument("--modes", default="batched,single", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--check-ms", type=int, default=0, help="each leaf's complete() sleeps this long")
    parser.add_argument("--parallel-processes", type=int, default=2, help="luigi's parallel-scheduling-processes")
    options = parser.parse_args()
    print(f"complete() takes {options.check_ms} ms; parallel scheduling with {options.parallel_processes} processes")
    print(f"{'tasks':>8} {'mode':<18} {'all scheduled':>14} {'first task':>11}")
    results: dict[tuple[int, str], Figures] = {}
    for size in (int(s) for s in options.sizes.split(",")):
        for mode in options.modes.split(","):
            with tempfile.TemporaryDirectory(prefix="add-tasks-bench-") as tmp:
                figures = results[size, mode] = measure(size, mode, Path(tmp), options.check_ms,
                                                        options.parallel_processes)
            tasks = size + -(-size // 1000) + 1
            print(f"{tasks:>8} {mode:<18} {figures.scheduled:>13.1f}s {figures.first_task:>10.1f}s", flush=True)
        base = results.get((size, "single"))
        if base is not None:
            for (n, mode), figures in results.items():
                if n == size and mode != "single":
                    ratio = base.first_task / figures.first_task
                    print(f"{'':>8} {mode:<18} first task {ratio:.1f}x sooner than single")


if __name__ == "__main__":
    main()
