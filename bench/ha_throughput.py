"""HA cost: throughput and latency of state-changing RPCs with [ha] on (on the leader of two nodes) vs off.

In one run, on this machine, against one real PostgreSQL 15 cluster (tests/pg_cluster.py; each
phase gets a fresh database). The servers come from tests/ha_cluster.py, so both phases have the
same scheduler.conf (TLS with a test CA, a local admin account, shared signing keys) but for [ha]:

* ``ha-off``: one node, no [ha] section: a scheduler as today;
* ``ha-on``: two nodes with ``[ha] backend = postgresql`` (verify-full TLS to the database as its
  owner), the clients against the leader while the standby tails the journal. Every reply waits
  until the call's journal record is committed (group commit).

The workload is bench/rpc_throughput.py's (its helpers, imported): ``--clients`` processes, each
one luigi worker client (``AuthenticatedRemoteScheduler``, bearer token) repeating add_task
PENDING / get_work / add_task DONE / ping, all four state-changing (policy.py ``mutates``). The
worker client buffers add_task and sends it before the next other call, as in a real run, so an
add_task's round trip is counted in the time of the call after it (get_work, ping); the total
RPC count is one round trip per call either way.

It prints RPC/s, p50 and p99 of the calls that wait for a reply (get_work and ping, each with
the add_task sent first) per phase, every method's p50/p99, the journal rows the leader wrote and
what the standby applied, and the ha-on/ha-off throughput ratio per round and pooled (goal:
>= 0.7x). With ``--rounds`` the order alternates. It asserts nothing; the machine is shared, so
run it more than once.

    .venv/bin/python bench/ha_throughput.py --duration 10 --clients 4 --rounds 2
    .venv/bin/python bench/ha_throughput.py --duration 10 --clients 4 --rounds 2 --standby stopped
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

import rpc_throughput as rt  # noqa: E402
from ha_cluster import HaCluster, running_cluster  # noqa: E402
from pg_cluster import cluster  # noqa: E402

GOAL_RATIO = 0.7
PHASES = ("ha-off", "ha-on")
# The calls that wait for a reply: each also carries the add_task the client buffered before it.
ROUND_TRIPS = ("get_work", "ping")
STANDBY_CATCH_UP = 60.0  # seconds for the standby to apply the journal after the clients stopped


@contextlib.contextmanager
def phase_cluster(name: str, workdir: Path, lease_ttl: str) -> Iterator[HaCluster]:
    db = cluster().create_database(workdir)
    if name == "ha-on":
        with running_cluster(workdir / "nodes", db, lease_ttl=lease_ttl) as ha:
            yield ha
    else:
        with running_cluster(workdir / "nodes", db, ha=False, names=("a",)) as ha:
            yield ha


def journal_report(ha: HaCluster) -> dict[str, Any]:
    """Rows the leader wrote, and how far the standby got, once it has caught up (or given up)."""
    leader = ha.wait_for_leader(30)
    standby = ha.other(leader)
    rows = ha.journal_rows()
    last = rows[-1][0] if rows else 0
    deadline = time.monotonic() + STANDBY_CATCH_UP
    while time.monotonic() < deadline and standby.probe(timeout=5).body.get("applied_pos", 0) < last:
        time.sleep(0.2)
    return {"journal_rows": len(rows), "standby": standby.probe(timeout=5).body, "leader": leader.probe(timeout=5).body}


def run_phase(name: str, round_no: int, opts: argparse.Namespace) -> tuple[rt.PhaseResult, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix=f"ha-bench-{name}-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        with phase_cluster(name, workdir, opts.lease_ttl) as ha:
            node = ha.wait_for_leader(60) if ha.ha else ha.nodes["a"]
            if ha.ha and opts.standby == "stopped":
                # The leader's own cost: with the standby on another host (as deployed) it does
                # not share this machine's CPUs with the leader, the clients and PostgreSQL.
                ha.other(node).stop()
            assert node.proc is not None
            target = rt.Target(name, node.url + "/", str(node.state_dir), str(ha.credentials_file), str(ha.ca_file))
            try:
                clients, cpu = rt.run_clients(target, node.proc.pid, opts)
            except rt.BenchError as exc:
                raise rt.BenchError(f"{exc}\n{ha.logs()}") from None
            extra = journal_report(ha) if ha.ha and opts.standby == "running" else {}
    return rt.PhaseResult(name, round_no, clients, cpu), extra


def round_trips(by_method: dict[str, list[float]]) -> list[float]:
    """Latencies of the calls that wait for the scheduler (a buffered add_task returns at once)."""
    return [v for label in ROUND_TRIPS for v in by_method.get(label, [])]


def p(values: list[float], pct: int) -> str:
    return f"{rt.ms(rt.percentile(values, pct)):.2f}" if values else "-"


def print_phase(phase: rt.PhaseResult, extra: dict[str, Any]) -> None:
    lat = round_trips(phase.by_method())
    line = (f"  round {phase.round} {phase.target:<7}: {phase.rpcs} RPCs in {phase.window:.2f}s = {phase.rps:.0f} "
            f"RPC/s, p50 {p(lat, 50)} ms, p99 {p(lat, 99)} ms, server CPU {rt.fmt(phase.cpu_ms_per_rpc, '.3f')} ms/RPC")
    if extra:
        standby = extra["standby"]
        line += (f"; journal {extra['journal_rows']} rows, standby {standby.get('role')} at "
                 f"{standby.get('applied_pos')} (lag {standby.get('lag_records')})")
    print(line, flush=True)


def round_ratios(phases: list[rt.PhaseResult]) -> list[float]:
    ratios = []
    for round_no in sorted({ph.round for ph in phases}):
        rps = {ph.target: ph.rps for ph in phases if ph.round == round_no}
        if rps.get("ha-off") and "ha-on" in rps:
            ratios.append(rps["ha-on"] / rps["ha-off"])
    return ratios


def print_summary(summaries: list[rt.Summary], ratio: float, per_round: list[float]) -> None:
    print("\nSummary (all rounds pooled): every call state-changing; p50/p99 of get_work and ping, each with "
          "the add_task sent before it")
    print(f"{'phase':<8} {'RPCs':>9} {'RPC/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/RPC':>18}")
    for s in summaries:
        lat = round_trips(s.by_method)
        print(f"{s.target:<8} {s.rpcs:>9} {s.rps:>9.0f} {p(lat, 50):>8} {p(lat, 99):>8} "
              f"{rt.fmt(s.cpu_ms_per_rpc, '.3f'):>18}")
    print("\nPer method, p50 / p99 ms (add_task is sent with the next call: see the module docstring)")
    print(f"{'method':<16}" + "".join(f"{s.target:>22}" for s in summaries))
    for label in sorted({label for s in summaries for label in s.by_method}):
        cells = [f"{p(s.by_method.get(label, []), 50)} / {p(s.by_method.get(label, []), 99)}" for s in summaries]
        print(f"{label:<16}" + "".join(f"{cell:>22}" for cell in cells))
    off, on = summaries
    spread = (f"; per round {', '.join(f'{r:.2f}' for r in per_round)}, median {statistics.median(per_round):.2f}x"
              if len(per_round) > 1 else "")
    off_lat, on_lat = round_trips(off.by_method), round_trips(on.by_method)
    p99 = rt.percentile(on_lat, 99) / rt.percentile(off_lat, 99) if off_lat and on_lat else None
    verdict = "meets" if ratio >= GOAL_RATIO else "below"
    print(f"\nratio ha-on/ha-off throughput: {ratio:.2f}x (goal >= {GOAL_RATIO}x; {verdict} goal){spread}; "
          f"p99 {rt.fmt(p99)}x")


def write_json(path: Path, opts: argparse.Namespace, phases: list[rt.PhaseResult], extras: list[dict[str, Any]],
               summaries: list[rt.Summary], ratio: float, per_round: list[float]) -> None:
    report = {
        "config": {"clients": opts.clients, "duration_s": opts.duration, "warmup_iterations": opts.warmup,
                   "standby": opts.standby,
                   "rounds": opts.rounds, "lease_ttl": opts.lease_ttl, "cpus": os.cpu_count(),
                   "python": platform.python_version()},
        "rounds": [{"round": ph.round, "phase": ph.target, "rpcs": ph.rpcs, "seconds": round(ph.window, 4),
                    "rpc_per_s": round(ph.rps, 1),
                    "round_trip_p50_ms": rt.json_ms(rt.percentile(round_trips(ph.by_method()), 50)),
                    "round_trip_p99_ms": rt.json_ms(rt.percentile(round_trips(ph.by_method()), 99)), "ha": extra}
                   for ph, extra in zip(phases, extras, strict=True)],
        "summary": {s.target: s.as_dict() for s in summaries},
        "ratio_ha_on_over_off": round(ratio, 4),
        "ratio_per_round": [round(r, 4) for r in per_round],
        "goal_ratio": GOAL_RATIO,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=rt.positive_int, default=4, help="client processes per phase")
    parser.add_argument("--duration", type=rt.positive_float, default=10.0, help="timed seconds per phase")
    parser.add_argument("--warmup", type=rt.non_negative_int, default=5, help="untimed iterations per client")
    parser.add_argument("--rounds", type=rt.positive_int, default=1,
                        help="run both phases this many times, alternating which goes first")
    parser.add_argument("--lease-ttl", default="5s", help="[ha] lease_ttl of the ha-on nodes")
    parser.add_argument("--standby", choices=("running", "stopped"), default="running",
                        help="ha-on: keep the standby tailing the journal on this machine, or stop it once the "
                             "leader is elected (the leader's own cost, as with the standby on another host)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    opts = parser.parse_args(argv)
    opts.calls = rt.DEFAULT_MAX_CALLS
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    rt.quiet_logging()
    print(f"HA throughput, ha-off vs ha-on (on the leader; standby {opts.standby}): {opts.clients} client processes, "
          f"{opts.duration:g}s per phase, {opts.rounds} round(s), {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print("workload per iteration: add_task(PENDING, dep on previous) + get_work + add_task(DONE) + ping", flush=True)
    phases: list[rt.PhaseResult] = []
    extras: list[dict[str, Any]] = []
    try:
        for round_no in range(1, opts.rounds + 1):
            for name in PHASES if round_no % 2 else PHASES[::-1]:
                phase, extra = run_phase(name, round_no, opts)
                print_phase(phase, extra)
                phases.append(phase)
                extras.append(extra)
    except rt.BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    summaries = [rt.summarize(name, phases) for name in PHASES]
    ratio = summaries[1].rps / summaries[0].rps if summaries[0].rps else float("nan")
    per_round = round_ratios(phases)
    print_summary(summaries, ratio, per_round)
    if opts.json:
        write_json(opts.json, opts, phases, extras, summaries, ratio, per_round)
    return 0


if __name__ == "__main__":
    sys.exit(main())
