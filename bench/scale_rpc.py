"""The over-the-network part of bench/scheduler_scale.py: RPC/s of a worker loop against a server
holding N pending tasks, ``luigi-appliance serve --dev`` (TLS, bearer token) and stock ``luigid``
(plain HTTP).

For each target and size a fresh server is started (rpc_throughput.py's helpers) and ``clients``
spawned processes, each a luigi client object with its own worker id, first pre-fill it: client
``c`` adds task ``i`` of the ``scale_workload`` population for every ``i % clients == c``, through
the client a luigi worker would use: luigi's makes one ``add_task`` RPC per task, the appliance's
gathers them into ``add_tasks`` batches where the server offers that. Then all clients start
together and, for ``duration`` seconds, repeat a worker's loop, every call its own round trip for
both targets (the appliance client's batching off): ``add_task`` a new pending task, ``get_work``
(handing out the best of the whole backlog), ``add_task`` DONE for what it was handed, ``ping``.
The backlog stays at N.

The loop is timed twice. First right after the pre-fill ("during the drain"): the appliance's
history writer (a thread of the server) may still be storing the pre-fill's events, one per task,
and competes with the loop for the GIL and the CPU. Then, once ``/history/metrics`` shows its
queue and spool empty, again ("steady"): the figure the flat-curve goal is about, RPC/s with N
tasks pending, not RPC/s while the scheduler digests having just been sent N tasks. For each
window the server's own CPU seconds and those of its reaped children (the forked state
snapshots, every 30 s) are reported too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import rpc_throughput as rpc
from scale_workload import latency_stats, task_spec

LOOP_START = 10**9  # indexes of the loop's new tasks: far beyond any pre-filled one
APPLIANCE_RPC_TIMEOUT = 120.0  # seconds per call to the appliance (see make_client)
FILL_TIMEOUT_PER_TASK = 0.05  # seconds: generous bound on one pre-fill add_task before giving up
# Longest wait for the history to drain before the steady window starts anyway (below the
# clients' own wait for the gate, rpc.START_TIMEOUT).
DRAIN_TIMEOUT = 90.0
WINDOWS = ("during_drain", "steady")


@dataclass(frozen=True)
class LoopJob:
    target: rpc.Target
    index: int
    clients: int
    size: int
    duration: float


@dataclass
class Window:
    """One client's timed loop."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    started: float = 0.0  # time.monotonic(), comparable between processes
    ended: float = 0.0

    @property
    def rpcs(self) -> int:
        return sum(len(values) for values in self.samples.values())


@dataclass
class LoopResult:
    index: int
    fill_s: float = 0.0
    windows: list[Window] = field(default_factory=list)  # in the order of WINDOWS
    error: str | None = None


def make_client(target: rpc.Target, *, batched: bool) -> Any:
    """The client object a luigi worker would use for ``target``, retrying nothing. The appliance's
    client may gather add_task calls into add_tasks batches: ``batched`` False turns that off, so
    that every add_task the loop times is a round trip of its own, as with luigi's client.
    The appliance's calls may take APPLIANCE_RPC_TIMEOUT: at 100k tasks it was seen to pause for
    more than luigi's 10 s (every client timing out at once; its 30 s state snapshot is the likely
    cause), and a pause should show in the figures rather than end the measurement."""
    if target.credentials_file is None:
        return rpc.make_scheduler(target)
    from luigi_appliance.client.credentials import load_credentials
    from luigi_appliance.client.remote import AuthenticatedRemoteScheduler

    batching = {"batch_tasks": 1} if "batch_tasks" in inspect.signature(AuthenticatedRemoteScheduler).parameters \
        and not batched else {}
    return AuthenticatedRemoteScheduler(target.url, load_credentials(Path(target.credentials_file)),
                                        Path(target.ca_file) if target.ca_file else None,
                                        connect_timeout=APPLIANCE_RPC_TIMEOUT,
                                        retry_attempts=1, retry_wait=0.0, use_token=target.use_token, **batching)


class Loop:
    """One client: pre-fills its share of the backlog, then runs a worker's loop over it."""

    def __init__(self, scheduler: Any, job: LoopJob):
        self.scheduler = scheduler
        self.job = job
        self.worker = f"bench-scale-{job.target.name}-{job.index}"
        self.host = f"bench-scale-host-{job.index}"
        self.n = 0

    def fill(self) -> None:
        """Add this client's share of the backlog, in add_tasks batches where the client makes them."""
        filler = make_client(self.job.target, batched=True)
        try:
            filler.add_worker(worker=self.worker, info=[("host", self.host), ("workers", 1)])
            for index in range(self.job.index, self.job.size, self.job.clients):
                filler.add_task(worker=self.worker, status="PENDING", **task_spec(index).add_task_kwargs())
            filler.ping(worker=self.worker)  # sends what a batching client still holds
        finally:
            filler.close()

    def iteration(self, rec: rpc.Recorder) -> None:
        spec = task_spec(LOOP_START + self.job.index + self.n * self.job.clients)
        rec.call("add_task", self.scheduler.add_task, worker=self.worker, status="PENDING", **spec.add_task_kwargs())
        reply = rec.call("get_work", self.scheduler.get_work, worker=self.worker, host=self.host)
        handed_out = reply.get("task_id") if isinstance(reply, dict) else None
        if handed_out:
            rec.call("add_task(DONE)", self.scheduler.add_task, worker=self.worker, task_id=handed_out,
                     status="DONE", runnable=False)
        rec.call("ping", self.scheduler.ping, worker=self.worker)
        self.n += 1


def run_loop(job: LoopJob, gates: list[rpc.StartGate]) -> LoopResult:
    result = LoopResult(job.index)
    try:
        scheduler = make_client(job.target, batched=False)
        loop = Loop(scheduler, job)
        started = time.perf_counter()
        loop.fill()
        result.fill_s = time.perf_counter() - started
    except Exception as exc:
        result.error = f"pre-fill failed: {type(exc).__name__}: {exc}"
        return result
    try:
        for gate in gates:
            if not gate.wait():
                result.error = "the timed loop was called off (another client failed or never got ready)"
                break
            window = Window()
            result.windows.append(window)
            rec = rpc.Recorder(window.samples, max_calls=rpc.DEFAULT_MAX_CALLS, seconds=job.duration)
            window.started = time.monotonic()
            with contextlib.suppress(rpc.BudgetExhausted):
                while not rec.exhausted:
                    loop.iteration(rec)
            window.ended = time.monotonic()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        scheduler.close()
    return result


def loop_main(job: LoopJob, gates: list[rpc.StartGate], results: multiprocessing.Queue[LoopResult]) -> None:
    """Entry point of a client process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    rpc.quiet_logging()
    results.put(run_loop(job, gates))


@dataclass
class ServerProbe:
    """What the parent watches on the server: its CPU, its reaped children's, the history's backlog."""

    target: rpc.Target
    pid: int

    def cpu(self) -> tuple[float, float] | None:
        """(own, reaped children's) user + system CPU seconds, from /proc."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            tick = os.sysconf("SC_CLK_TCK")
            return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick
        except (OSError, IndexError, ValueError):
            return None

    @functools.cached_property
    def _fetcher(self) -> Any:
        """The appliance's own client for /history/metrics, as the bench's account (one token)."""
        from luigi_appliance.client.credentials import load_credentials
        from luigi_appliance.client.remote import AuthenticatedFetcher

        assert self.target.credentials_file is not None
        return AuthenticatedFetcher.for_scheduler(
            self.target.url, load_credentials(Path(self.target.credentials_file)),
            Path(self.target.ca_file) if self.target.ca_file else None, APPLIANCE_RPC_TIMEOUT, self.target.use_token)

    def history_backlog(self) -> int | None:
        """Events the history still has to store (queue + spool); None without history (stock)."""
        if self.target.credentials_file is None:
            return None
        resp = self._fetcher.send("GET", self.target.url + "history/metrics", APPLIANCE_RPC_TIMEOUT)
        values = dict(line.rsplit(" ", 1) for line in resp.text.splitlines() if line and not line.startswith("#"))
        return round(float(values["luigi_appliance_history_queued_events"])
                     + float(values["luigi_appliance_history_spool_events"]))

    def wait_drained(self, timeout: float) -> tuple[int | None, float]:
        """Wait until the history backlog is empty, at most ``timeout``; (backlog left, seconds waited)."""
        started = time.monotonic()
        backlog = self.history_backlog()
        while backlog and time.monotonic() - started < timeout:
            time.sleep(0.5)
            backlog = self.history_backlog()
        return backlog, time.monotonic() - started


@dataclass
class WindowCpu:
    """The server's CPU seconds over one window, and what the history had left when it began
    (non-zero for the steady window only if DRAIN_TIMEOUT ran out)."""

    backlog_at_start: int | None = None
    drain_wait_s: float = 0.0
    server_cpu_s: float | None = None
    children_cpu_s: float | None = None


def open_windows(gates: list[rpc.StartGate], procs: list[multiprocessing.process.BaseProcess], probe: ServerProbe,
                 fill_timeout: float, collect_results: Callable[[], list[LoopResult]]) -> tuple[list[LoopResult],
                                                                                             list[WindowCpu]]:
    """Open each window's gate once every client is ready for it (a client ready for the second has
    ended the first): the first right after the pre-fill, the second once the history has drained.
    Returns the clients' results and the server's CPU over each window."""
    windows: list[WindowCpu] = []
    marks: list[tuple[float, float] | None] = []

    def start(name: str) -> None:
        marks.append(probe.cpu())  # the end of the previous window
        window = WindowCpu()
        if name == "steady":
            window.backlog_at_start, window.drain_wait_s = probe.wait_drained(DRAIN_TIMEOUT)
            window.drain_wait_s = round(window.drain_wait_s, 1)
        else:
            window.backlog_at_start = probe.history_backlog()
        windows.append(window)
        marks.append(probe.cpu())

    for name, gate, timeout in zip(WINDOWS, gates, (fill_timeout, rpc.START_TIMEOUT), strict=True):
        if not gate.open_when_ready(procs, timeout, before_go=functools.partial(start, name)):
            break
    results = collect_results()
    marks.append(probe.cpu())
    for i, window in enumerate(windows):
        begin, end = marks[2 * i + 1], marks[2 * i + 2]
        if begin is not None and end is not None:
            window.server_cpu_s, window.children_cpu_s = round(end[0] - begin[0], 2), round(end[1] - begin[1], 2)
    return results, windows


def run_clients(target: rpc.Target, probe: ServerProbe, size: int, clients: int,
                duration: float) -> tuple[list[LoopResult], list[WindowCpu]]:
    ctx = multiprocessing.get_context("spawn")
    # START_TIMEOUT in the clients bounds the wait for a gate: the pre-fill happens before the first.
    gates = [rpc.StartGate(ctx.Semaphore(0), ctx.Event(), ctx.Event()) for _ in WINDOWS]
    results: multiprocessing.Queue[LoopResult] = ctx.Queue()
    jobs = [LoopJob(target, i, clients, size, duration) for i in range(clients)]
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=loop_main, args=(job, gates, results), name=f"bench-scale-client-{job.index}", daemon=True)
        for job in jobs]
    fill_timeout = rpc.START_TIMEOUT + size * FILL_TIMEOUT_PER_TASK
    timeout = len(WINDOWS) * duration + DRAIN_TIMEOUT + rpc.RESULT_SLACK
    try:
        for proc in procs:
            proc.start()
        # rpc.collect is typed for its own result class; it only passes the objects through.
        collected, windows = open_windows(
            gates, procs, probe, fill_timeout,
            lambda: cast(list[LoopResult], rpc.collect(results, procs, timeout)))  # type: ignore[arg-type]
    finally:
        rpc.stop_clients(procs)
    errors = [f"client {c.index}: {c.error}" for c in collected if c.error]
    if len(collected) < len(procs):
        errors.append(f"only {len(collected)} of {len(procs)} clients reported back")
    if errors:
        raise rpc.BenchError(f"{target.name} at {size} pending: " + "; ".join(errors))
    return collected, windows


def window_figures(results: list[LoopResult], index: int, cpu: WindowCpu) -> dict[str, Any]:
    """RPC/s and latencies of window ``index`` over all clients, with the server's CPU in it."""
    windows = [r.windows[index] for r in results]
    seconds = max(w.ended for w in windows) - min(w.started for w in windows)
    rpcs = sum(w.rpcs for w in windows)
    by_method: dict[str, list[float]] = {}
    for window in windows:
        for label, values in window.samples.items():
            by_method.setdefault(label, []).extend(values)
    return {"rpcs": rpcs, "seconds": round(seconds, 3), "rpc_per_s": round(rpcs / seconds, 1) if seconds > 0 else 0.0,
            "history_backlog_at_start": cpu.backlog_at_start, "drain_wait_s": cpu.drain_wait_s,
            "server_cpu_s": cpu.server_cpu_s, "snapshot_children_cpu_s": cpu.children_cpu_s,
            # Less at the mercy of other load on the machine than RPC/s: compare these between sizes.
            "server_cpu_ms_per_rpc": round(cpu.server_cpu_s * 1000 / rpcs, 2) if cpu.server_cpu_s and rpcs else None,
            "all": latency_stats([v for values in by_method.values() for v in values]),
            "per_method": {label: latency_stats(values) for label, values in sorted(by_method.items())}}


def measure(target_name: str, size: int, clients: int, duration: float, bin_dir: Path) -> dict[str, Any]:
    """Start a fresh ``target_name`` server, pre-fill ``size`` tasks, time the loop during the
    history's drain and then steady; the figures as a dict, the steady window's at the top level."""
    start = rpc.SERVERS[target_name]
    with tempfile.TemporaryDirectory(prefix=f"scale-rpc-{target_name}-") as tmp, \
            start(Path(tmp), bin_dir) as (target, server):
        results, cpu = run_clients(target, ServerProbe(target, server.proc.pid), size, clients, duration)
    windows = {name: window_figures(results, i, cpu[i]) for i, name in enumerate(WINDOWS)}
    fill_s = max(r.fill_s for r in results)
    drain, steady = windows["during_drain"], windows["steady"]
    print(f"    {target_name} {size}: during the drain {drain['rpc_per_s']:.0f} RPC/s (history backlog "
          f"{drain['history_backlog_at_start']}, server CPU {drain['server_cpu_ms_per_rpc']} ms/RPC, snapshots "
          f"{drain['snapshot_children_cpu_s']} s); steady {steady['rpc_per_s']:.0f} RPC/s (after "
          f"{steady['drain_wait_s']} s of drain, server CPU {steady['server_cpu_ms_per_rpc']} ms/RPC, snapshots "
          f"{steady['snapshot_children_cpu_s']} s)", flush=True)
    return {"target": target_name, "size": size, "clients": clients,
            "fill_s": round(fill_s, 2), "fill_add_task_per_s": round(size / fill_s, 1) if fill_s > 0 else None,
            **steady, "during_drain": drain}
