"""Scheduler scaling: stock ``luigi.scheduler.Scheduler`` versus ``luigi_appliance.scheduler.Scheduler``
(whatever that class is when this runs) from a thousand to a million pending tasks.

Three parts, each stock against ours on the same machine in one run (``--parts``):

in process (bench/scale_inprocess.py)
    For each ``--sizes`` N, in a fresh process per class: build N pending tasks (4 workers, 5 families,
    a quarter of them schedulable, priorities 0..9, some needing a resource: bench/scale_workload.py),
    report the build time and the growth of the resident set size per task, then time get_work,
    add_task (new tasks and re-adds), count_pending, task_list(status=PENDING) with luigi's default
    max_shown_tasks, and prune: p50/p99 over at most ``--calls`` calls each within a share of
    ``--budget`` seconds. A class stops at the first size where the previous size's get_work p50,
    scaled by the growth in tasks, leaves no room for MIN_GET_WORK calls in its budget share (the
    table says where and why; nothing is extrapolated into the figures), or where the measuring
    process fails or overruns.

over HTTPS (bench/scale_rpc.py)
    For each ``--rpc-sizes`` N: a fresh ``luigi-appliance serve --dev`` (TLS, the dev admin account,
    bearer token) and a fresh stock ``luigid`` (plain HTTP), each pre-filled with the same N pending
    tasks by ``--clients`` processes through each side's worker client (luigi's: one add_task RPC
    per task; ours: add_tasks batches where the server offers them), then RPC/s of those clients
    running a worker loop (add_task, get_work, add_task DONE, ping; one round trip per call) for
    ``--duration`` seconds. Reported: RPC/s per size and ratio to the first size (the goal: at 100k
    >= 0.8x at 1k, a flat curve). A target skips a size whose pre-fill, scaled from its previous
    size, would exceed ``--fill-budget``.

run of a big DAG (bench/scale_run.py)
    For each ``--run-sizes`` N: a generated DAG of about N tasks run by ``luigi-appliance run``
    against ``serve --dev`` and by stock ``luigi`` against ``luigid``; seconds from the command's
    start to the whole graph scheduled and to the first task running. A target stops at a size when
    the previous size's scheduling time, scaled by the growth in tasks, exceeds ``--run-budget``
    (scheduling is at least linear in tasks), or when a run does not get a task running within it.

Ratios are ours/stock speedups (stock time / our time; our RPC/s / stock RPC/s); memory is
ours/stock bytes. Nothing is asserted: this prints figures and writes them with ``--json``.

Example::

    .venv/bin/python bench/scheduler_scale.py --json /tmp/scale.json
    .venv/bin/python bench/scheduler_scale.py --sizes 200 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rpc_throughput as rpc
import scale_rpc
import scale_run
from scale_inprocess import SHARES
from scale_workload import size_label

BENCH_DIR = Path(__file__).resolve().parent
TARGETS = ("stock", "ours")
SERVER_OF = {"stock": "stock", "ours": "appliance"}  # rpc_throughput.py's server names
PARTS = ("inprocess", "rpc", "run")
MIN_GET_WORK = 3  # get_work calls a size must leave room for in its budget share to be attempted
CHILD_SLACK = 120.0  # seconds beyond the budget for a measuring process: start, imports, result
BUILD_SECONDS_PER_TASK = 1e-3  # generous bound on building the state, to size the child's timeout
GOAL_FLAT = 0.8
OPS = (("get_work", "get_work"), ("add_task_new", "add_task new"), ("add_task_readd", "add_task re-add"),
       ("count_pending", "count_pending"), ("task_list_pending", "task_list PENDING"), ("prune", "prune"),
       ("worker_list", "worker_list"), ("inverse_dep_graph", "inverse_dep_graph"), ("first_get_work", "1st get_work"))
QUICK = {"budget": 4.0, "calls": 20, "duration": 2.0, "run_budget": 120.0}


@dataclass
class Results:
    inprocess: list[dict[str, Any]] = field(default_factory=list)
    rpc: list[dict[str, Any]] = field(default_factory=list)
    run: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # part, target, size, reason

    def stop(self, part: str, target: str, size: int, reason: str) -> None:
        self.stopped.append({"part": part, "target": target, "size": size, "reason": reason})
        print(f"  {target} stopped at {size_label(size)} ({part}): {reason}", flush=True)


# ---- in process ---------------------------------------------------------------------------------

def inprocess_child(target: str, size: int, opts: argparse.Namespace, calls: int) -> dict[str, Any]:
    """Measure one class at one size in a fresh process (raises BenchError on failure or overrun);
    ``calls`` 0 measures the memory of the state only."""
    timeout = opts.budget * 2 + CHILD_SLACK + size * BUILD_SECONDS_PER_TASK
    cmd = [sys.executable, str(BENCH_DIR / "scale_inprocess.py"), target, str(size), str(opts.budget), str(calls)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=rpc.server_env())
    except subprocess.TimeoutExpired:
        raise rpc.BenchError(f"did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise rpc.BenchError(f"exited with code {done.returncode}: {done.stderr.strip()[-1500:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def too_big(previous: dict[str, Any], size: int, budget: float) -> str | None:
    """Why ``size`` is not attempted after ``previous``'s figures, or None to attempt it."""
    per_call = (previous["ops"]["get_work"]["p50_ms"] or 0.0) / 1000.0
    growth = size / previous["size"]
    room = budget * SHARES["get_work"]
    if per_call * growth * MIN_GET_WORK <= room:
        return None
    return (f"{size_label(previous['size'])} took {per_call * 1000:.0f} ms per get_work; at {growth:g}x the tasks "
            f"{MIN_GET_WORK} calls would not fit its {room:.0f} s get_work budget")


def run_inprocess(opts: argparse.Namespace, results: Results) -> None:
    print(f"\nIn process: {', '.join(size_label(s) for s in opts.sizes)} pending tasks; "
          f"{opts.budget:g} s of timed calls per class and size, at most {opts.calls} calls per operation",
          flush=True)
    for target in opts.targets:
        previous: dict[str, Any] | None = None
        for size in opts.sizes:
            reason = too_big(previous, size, opts.budget) if previous else None
            if reason:
                results.stop("inprocess", target, size, reason)
                memory_only(target, size, opts, results)
                break
            started = time.monotonic()
            try:
                previous = inprocess_child(target, size, opts, opts.calls)
            except rpc.BenchError as exc:
                results.stop("inprocess", target, size, str(exc))
                break
            results.inprocess.append(previous)
            print(f"  {target:<5} {size_label(size):>5}: built in {previous['build_s']:.1f} s, "
                  f"get_work p50 {previous['ops']['get_work']['p50_ms']:.3f} ms "
                  f"({time.monotonic() - started:.0f} s)", flush=True)


def memory_only(target: str, size: int, opts: argparse.Namespace, results: Results) -> None:
    """The bytes per task at a size too big for the timed calls: building it takes no get_work."""
    try:
        row = inprocess_child(target, size, opts, 0)
    except rpc.BenchError as exc:
        print(f"  {target:<5} {size_label(size):>5}: memory not measured either: {exc}", flush=True)
        return
    results.inprocess.append(row)
    print(f"  {target:<5} {size_label(size):>5}: memory only, built in {row['build_s']:.1f} s", flush=True)


# ---- over HTTPS ---------------------------------------------------------------------------------

def run_rpc(opts: argparse.Namespace, results: Results) -> None:
    print(f"\nOver the network: {', '.join(size_label(s) for s in opts.rpc_sizes)} pending tasks pre-filled by "
          f"{opts.clients} clients (stock: one add_task RPC per task; ours: add_tasks batches where offered), "
          f"then {opts.duration:g} s of the worker loop, one round trip per call; "
          "ours = serve --dev (HTTPS, bearer token), stock = luigid (plain HTTP)", flush=True)
    previous: dict[str, dict[str, Any]] = {}
    stopped: set[str] = set()
    for size in opts.rpc_sizes:
        for target in opts.targets:
            if target in stopped:
                continue
            # Pre-filling is at least linear in tasks: the previous size bounds this one from below.
            last = previous.get(target)
            if last and last["fill_s"] * size / last["size"] > opts.fill_budget:
                results.stop("rpc", target, size, f"pre-filling {size_label(last['size'])} took "
                             f"{last['fill_s']:.0f} s; {size_label(size)} would not fit the {opts.fill_budget:g} s "
                             "pre-fill budget")
                stopped.add(target)
                continue
            try:
                figures = scale_rpc.measure(SERVER_OF[target], size, opts.clients, opts.duration, opts.bin_dir)
            except rpc.BenchError as exc:
                results.stop("rpc", target, size, str(exc))
                stopped.add(target)
                continue
            figures["target"] = target
            previous[target] = figures
            results.rpc.append(figures)
            print(f"  {target:<5} {size_label(size):>5}: pre-filled in {figures['fill_s']:.1f} s, "
                  f"{figures['rpc_per_s']:.0f} RPC/s", flush=True)


# ---- run of a big DAG ---------------------------------------------------------------------------

def run_dags(opts: argparse.Namespace, results: Results) -> None:
    print(f"\nRun of a generated DAG of {', '.join(size_label(s) for s in opts.run_sizes)} tasks, "
          f"{opts.run_budget:g} s budget per run; ours = luigi-appliance run + serve --dev, "
          "stock = luigi + luigid", flush=True)
    for target in opts.targets:
        previous: dict[str, Any] | None = None
        for size in opts.run_sizes:
            # Scheduling is at least linear in tasks: the previous size bounds this one from below.
            took = previous and (previous["scheduled_s"] or previous["first_task_s"])
            if previous and took and took * size / previous["tasks"] > opts.run_budget:
                results.stop("run", target, size, f"{previous['tasks']} tasks took {took:.1f} s to schedule; "
                             f"{size_label(size)} would not fit the {opts.run_budget:g} s budget")
                break
            try:
                previous = scale_run.measure(SERVER_OF[target], size, opts.run_budget, opts.bin_dir)
            except rpc.BenchError as exc:
                results.stop("run", target, size, str(exc))
                break
            previous["target"] = target
            results.run.append(previous)
            if previous["stopped"]:
                results.stop("run", target, size, previous["stopped"])
                break
            print(f"  {target:<5} {size_label(size):>5}: scheduled in {previous['scheduled_s']} s, "
                  f"first task at {previous['first_task_s']} s", flush=True)


# ---- report -------------------------------------------------------------------------------------

def fnum(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def find(rows: list[dict[str, Any]], target: str, size: int, key: str = "size") -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r[key] == size), None)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:  # the first column left-aligned, figures right-aligned
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    print(f"\n{title}")
    for row in [header, *rows]:
        print(line(row))


def pair(op: dict[str, Any] | None) -> str:
    return "-" if op is None else f"{fnum(op['p50_ms'])}/{fnum(op['p99_ms'])}"


def speedup(stock: dict[str, Any] | None, ours: dict[str, Any] | None) -> str:
    if stock is None or ours is None:
        return "-"
    return f"{ratio(stock['p50_ms'], ours['p50_ms'])}/{ratio(stock['p99_ms'], ours['p99_ms'])}"


def report_inprocess(results: Results, sizes: list[int]) -> None:
    header = ["size", "target", "bytes/task"] + [f"{label} p50/p99 ms" for _, label in OPS]
    rows = []
    for size in sizes:
        found = {t: find(results.inprocess, t, size) for t in TARGETS}
        for target, row in found.items():
            if row is not None:
                rows.append([size_label(size), target, fnum(row["bytes_per_task"], ".0f")]
                            + [pair(row["ops"].get(key)) for key, _ in OPS])
        stock, ours = found["stock"], found["ours"]
        if stock and ours:
            rows.append([size_label(size), "speedup", ratio(ours["bytes_per_task"], stock["bytes_per_task"])]
                        + [speedup(stock["ops"].get(k), ours["ops"].get(k)) for k, _ in OPS])
    print_table("In process (latency in ms; speedup = stock/ours time, memory = ours/stock bytes; "
                "bytes/task = RSS growth while building / tasks)", header, rows)


def report_rpc(results: Results, sizes: list[int]) -> None:
    header = ["size", "target", "pre-fill s", "RPC/s", "p50 ms", "p99 ms", "get_work p50/p99 ms", "vs 1st size"]
    rows = []
    for size in sizes:
        found = {t: find(results.rpc, t, size) for t in TARGETS}
        for target, row in found.items():
            if row is not None:
                first = find(results.rpc, target, sizes[0])
                rows.append([size_label(size), target, fnum(row["fill_s"], ".1f"), fnum(row["rpc_per_s"], ".0f"),
                             fnum(row["all"]["p50_ms"], ".2f"), fnum(row["all"]["p99_ms"], ".2f"),
                             pair(row["per_method"].get("get_work")),
                             ratio(row["rpc_per_s"], first["rpc_per_s"] if first else None)])
        if found["stock"] and found["ours"]:
            rows.append([size_label(size), "ours/stock", "", ratio(found["ours"]["rpc_per_s"],
                                                                    found["stock"]["rpc_per_s"]), "", "", "", ""])
    print_table("Over the network (ours: HTTPS + bearer token; stock: plain HTTP)", header, rows)
    measured = [row for row in results.rpc if row["target"] == "ours"]
    first, last = find(results.rpc, "ours", sizes[0]), max(measured, key=lambda row: row["size"], default=None)
    if first and last and last is not first:
        flat = last["rpc_per_s"] / first["rpc_per_s"] if first["rpc_per_s"] else 0.0
        on_goal = sizes[0] <= 1000 and last["size"] >= 100_000  # the goal's own sizes, or wider
        verdict = ("meets goal" if flat >= GOAL_FLAT else "below goal") if on_goal else "not the goal's sizes"
        print(f"ours RPC/s at {size_label(last['size'])} / at {size_label(sizes[0])}: {flat:.2f}x "
              f"(goal >= {GOAL_FLAT}x at 100k vs 1k; {verdict})")


def report_run(results: Results, sizes: list[int]) -> None:
    header = ["tasks", "target", "graph scheduled s", "first task running s", "note"]
    rows = []
    for size in sizes:
        for target in TARGETS:
            row = find(results.run, target, scale_run.task_count(scale_run.leaves_for(size)), key="tasks")
            if row is not None:
                rows.append([size_label(size), target, fnum(row["scheduled_s"], ".1f"),
                             fnum(row["first_task_s"], ".1f"), row["stopped"] or ""])
        stock = find(results.run, "stock", scale_run.task_count(scale_run.leaves_for(size)), key="tasks")
        ours = find(results.run, "ours", scale_run.task_count(scale_run.leaves_for(size)), key="tasks")
        if stock and ours:
            rows.append([size_label(size), "speedup", ratio(stock["scheduled_s"], ours["scheduled_s"]),
                         ratio(stock["first_task_s"], ours["first_task_s"]), ""])
    print_table("Run of a generated DAG (seconds from the command's start)", header, rows)


def report(opts: argparse.Namespace, results: Results) -> None:
    if "inprocess" in opts.parts:
        report_inprocess(results, opts.sizes)
    if "rpc" in opts.parts:
        report_rpc(results, opts.rpc_sizes)
    if "run" in opts.parts:
        report_run(results, opts.run_sizes)
    if results.stopped:
        print("\nWhere a target stopped")
        for stop in results.stopped:
            print(f"  {stop['target']} skipped at {size_label(stop['size'])} ({stop['part']}): {stop['reason']}")


def write_json(path: Path, opts: argparse.Namespace, results: Results) -> None:
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(opts).items()}
    document = {"config": {**config, "cpus": os.cpu_count(), "python": platform.python_version()},
                "inprocess": results.inprocess, "rpc": results.rpc, "run": results.run, "stopped": results.stopped}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}")


# ---- main ---------------------------------------------------------------------------------------

def sizes(text: str) -> list[int]:
    values = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("expected comma-separated task counts >= 1")
    return values


def parts(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(part not in PARTS for part in chosen):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(PARTS)}")
    return chosen


def targets(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(part not in TARGETS for part in chosen):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(TARGETS)}")
    return [t for t in TARGETS if t in chosen]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=sizes, default="1000,10000,100000,1000000",
                        help="pending tasks, in process")
    parser.add_argument("--budget", type=rpc.positive_float, default=40.0,
                        help="seconds of timed calls per class and size, in process")
    parser.add_argument("--calls", type=rpc.positive_int, default=200, help="at most this many timed calls per "
                        "operation, in process (task_list and prune: 5%% of it)")
    parser.add_argument("--rpc-sizes", type=sizes, default="1000,10000,100000",
                        help="pending tasks over the network")
    parser.add_argument("--fill-budget", type=rpc.positive_float, default=600.0,
                        help="seconds the network part's pre-fill of one size may take")
    parser.add_argument("--clients", type=rpc.positive_int, default=4, help="client processes over the network")
    parser.add_argument("--duration", type=rpc.positive_float, default=10.0,
                        help="timed seconds of the worker loop per target and size")
    parser.add_argument("--run-sizes", type=sizes, default="10000,100000", help="tasks in the generated DAG")
    parser.add_argument("--run-budget", type=rpc.positive_float, default=300.0,
                        help="seconds a DAG run may take to get its first task running")
    parser.add_argument("--parts", type=parts, default=",".join(PARTS), help="which parts to run")
    parser.add_argument("--targets", type=targets, default=",".join(TARGETS),
                        help="measure stock, ours or both (ratios need both)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: every part at --sizes, few calls "
                        f"({', '.join(f'{k}={v:g}' for k, v in QUICK.items())})")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                        help="directory holding the luigi, luigid and luigi-appliance console scripts")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    opts = parser.parse_args(argv)
    if opts.quick:
        vars(opts).update(QUICK, rpc_sizes=opts.sizes, run_sizes=opts.sizes)
    return opts


def run(opts: argparse.Namespace) -> int:
    import luigi

    print(f"Scheduler scaling: stock luigi {luigi.__version__} Scheduler vs luigi_appliance.scheduler.Scheduler; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}", flush=True)
    results = Results()
    steps: dict[str, Callable[[argparse.Namespace, Results], None]] = {
        "inprocess": run_inprocess, "rpc": run_rpc, "run": run_dags}
    for part in opts.parts:
        steps[part](opts, results)
    report(opts, results)
    if opts.json:
        write_json(opts.json, opts, results)
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # SIGTERM becomes SystemExit so the finally blocks stop the servers and clients.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rpc.quiet_logging()
    try:
        return run(opts)
    except rpc.BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
