"""``luigi-appliance run`` of a wide graph against ``serve --dev``: how long until the worker has
told the scheduler about every task, and until the first task runs, with add_task batched
(add_tasks, the default), one add_task per task, and luigi's parallel scheduling on top.

    .venv/bin/python bench/add_tasks_run.py [--sizes 10000,100000] [--modes batched,single,...]

A mode is ``batched`` or ``single``, with any of: ``+parallel`` (luigi's parallel scheduling),
``+nocache`` (luigi's own get_params, without run's cache), ``+serial`` (each batch sent while
the worker waits, instead of from run's background sender), ``+preflight`` (run's dependency
preflight on, as by default; off otherwise, to time the scheduling alone). The client before
both were added is ``batched+nocache+serial``.

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

BASES = {"batched": 500, "single": 1}  # add_task calls per add_tasks batch
OPTIONS = ("parallel", "nocache", "serial", "preflight")

WORKER = """
import contextlib, sys
from pathlib import Path
import luigi_appliance.client.run as client_run
conf, creds, options = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
if "nocache" in options:
    client_run.get_params_cache = contextlib.nullcontext
if "serial" in options:
    import luigi_appliance.client.remote as remote

    class SerialSender:
        def __init__(self, send):
            self.submit = send
        def drain(self):
            pass
        def stop(self):
            pass
    remote.BatchSender = SerialSender
run_options = client_run.RunOptions(None, None, Path(creds), Path(conf), sys.argv[4:], dag_check="preflight" in options)
sys.exit(client_run.run(run_options))
"""


@dataclass(frozen=True)
class Mode:
    batch: int
    options: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Mode:
        base, *options = text.split("+")
        unknown = [o for o in options if o not in OPTIONS]
        if base not in BASES or unknown:
            raise SystemExit(f"unknown mode {text!r}: {' or '.join(BASES)}, then any of +{', +'.join(OPTIONS)}")
        return cls(BASES[base], tuple(options))


@dataclass
class Figures:
    scheduled: float
    first_task: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(state: Path, server_tree: Path | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(state.parent / "server.log", "ab")
    # Another checkout's scheduler, e.g. a `git worktree` of HEAD: the same server for every mode
    # while the working tree's scheduler changes under other work.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(server_tree or ""),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([str(BIN), "serve", "--dev", "--state-dir", str(state), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
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


def measure(size: int, mode: str, work: Path, check_ms: int, processes: int, server_tree: Path | None) -> Figures:
    parsed = Mode.parse(mode)
    parallel = "parallel" in parsed.options
    luigi_args = ["--parallel-scheduling", "--parallel-scheduling-processes", str(processes)] if parallel else []
    if check_ms:
        luigi_args += ["--ReportLeaf-check-ms", str(check_ms)]
    state = work / "var"
    server, url = start_server(state, server_tree)
    try:
        conf = work / "client.conf"
        conf.write_text(f"[client]\nscheduler_url = {url}/\nca_file = {state / 'tls-selfsigned.crt'}\n"
                        f"add_task_batch = {parsed.batch}\n")
        args = ["--module", "wide_pipeline", "ReportWide", "--out-dir", str(work / "out"), "--size", str(size),
                "--group-size", "1000", "--workers", "1", "--log-level", "INFO", *luigi_args]
        path = os.pathsep.join(filter(None, [str(PIPELINES), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(conf), str(state / "admin-credentials"),
                                   ",".join(parsed.options), *args], stderr=subprocess.PIPE, text=True, env=env)
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
    parser.add_argument("--modes", default="single,batched",
                        help=f"comma-separated: {' or '.join(BASES)}, then any of +{', +'.join(OPTIONS)}")
    parser.add_argument("--check-ms", type=int, default=0, help="each leaf's complete() sleeps this long")
    parser.add_argument("--parallel-processes", type=int, default=2, help="luigi's parallel-scheduling-processes")
    parser.add_argument("--server-tree", type=Path, help="run the scheduler from this checkout (the worker: this one)")
    options = parser.parse_args()
    for mode in options.modes.split(","):
        Mode.parse(mode)
    print(f"complete() takes {options.check_ms} ms; parallel scheduling with {options.parallel_processes} processes")
    print(f"{'tasks':>8} {'mode':<26} {'all scheduled':>14} {'first task':>11} {'load (1 min)':>13}")
    results: dict[tuple[int, str], Figures] = {}
    for size in (int(s) for s in options.sizes.split(",")):
        for mode in options.modes.split(","):
            with tempfile.TemporaryDirectory(prefix="add-tasks-bench-") as tmp:
                figures = results[size, mode] = measure(size, mode, Path(tmp), options.check_ms,
                                                        options.parallel_processes, options.server_tree)
            tasks = size + -(-size // 1000) + 1
            print(f"{tasks:>8} {mode:<26} {figures.scheduled:>13.1f}s {figures.first_task:>10.1f}s "
                  f"{os.getloadavg()[0]:>13.1f}", flush=True)
        reference = options.modes.split(",")[0]
        base = results[size, reference]
        for (n, mode), figures in results.items():
            if n == size and mode != reference:
                ratio = base.first_task / figures.first_task
                print(f"{'':>8} {mode:<26} first task {ratio:.2f}x sooner than {reference}")


if __name__ == "__main__":
    main()
