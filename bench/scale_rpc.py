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
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import rpc_throughput as rpc
from scale_workload import latency_stats, task_spec

LOOP_START = 10**9  # indexes of the loop's new tasks: far beyond any pre-filled one
APPLIANCE_RPC_TIMEOUT = 120.0  # seconds per call to the appliance (see make_client)
FILL_TIMEOUT_PER_TASK = 0.05  # seconds: generous bound on one pre-fill add_task before giving up


@dataclass(frozen=True)
class LoopJob:
    target: rpc.Target
    index: int
    clients: int
    size: int
    duration: float


@dataclass
class LoopResult:
    index: int
    fill_s: float = 0.0
    samples: dict[str, list[float]] = field(default_factory=dict)
    started: float = 0.0  # time.monotonic(), comparable between processes
    ended: float = 0.0
    error: str | None = None

    @property
    def rpcs(self) -> int:
        return sum(len(values) for values in self.samples.values())


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


def run_loop(job: LoopJob, gate: rpc.StartGate) -> LoopResult:
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
        if gate.wait():
            rec = rpc.Recorder(result.samples, max_calls=rpc.DEFAULT_MAX_CALLS, seconds=job.duration)
            result.started = time.monotonic()
            with contextlib.suppress(rpc.BudgetExhausted):
                while not rec.exhausted:
                    loop.iteration(rec)
            result.ended = time.monotonic()
        else:
            result.error = "the timed loop was called off (another client failed or never got ready)"
    except Exception as exc:
        result.ended = time.monotonic()
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        scheduler.close()
    return result


def loop_main(job: LoopJob, gate: rpc.StartGate, results: multiprocessing.Queue[LoopResult]) -> None:
    """Entry point of a client process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    rpc.quiet_logging()
    results.put(run_loop(job, gate))


def run_clients(target: rpc.Target, size: int, clients: int, duration: float) -> list[LoopResult]:
    ctx = multiprocessing.get_context("spawn")
    # START_TIMEOUT in the clients bounds the wait for the gate: the pre-fill happens before it.
    gate = rpc.StartGate(ctx.Semaphore(0), ctx.Event(), ctx.Event())
    results: multiprocessing.Queue[LoopResult] = ctx.Queue()
    jobs = [LoopJob(target, i, clients, size, duration) for i in range(clients)]
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=loop_main, args=(job, gate, results), name=f"bench-scale-client-{job.index}", daemon=True)
        for job in jobs]
    fill_timeout = rpc.START_TIMEOUT + size * FILL_TIMEOUT_PER_TASK
    try:
        for proc in procs:
            proc.start()
        gate.open_when_ready(procs, fill_timeout)
        # rpc.collect is typed for its own result class; it only passes the objects through.
        collected = cast(list[LoopResult], rpc.collect(results, procs, duration + rpc.RESULT_SLACK))  # type: ignore[arg-type]
    finally:
        rpc.stop_clients(procs)
    errors = [f"client {c.index}: {c.error}" for c in collected if c.error]
    if len(collected) < len(procs):
        errors.append(f"only {len(collected)} of {len(procs)} clients reported back")
    if errors:
        raise rpc.BenchError(f"{target.name} at {size} pending: " + "; ".join(errors))
    return collected


def measure(target_name: str, size: int, clients: int, duration: float, bin_dir: Path) -> dict[str, Any]:
    """Start a fresh ``target_name`` server, pre-fill ``size`` tasks, time the loop; the figures as a dict."""
    start = rpc.SERVERS[target_name]
    with tempfile.TemporaryDirectory(prefix=f"scale-rpc-{target_name}-") as tmp, \
            start(Path(tmp), bin_dir) as (target, _server):
        results = run_clients(target, size, clients, duration)
    window = max(r.ended for r in results) - min(r.started for r in results)
    rpcs = sum(r.rpcs for r in results)
    by_method: dict[str, list[float]] = {}
    for result in results:
        for label, values in result.samples.items():
            by_method.setdefault(label, []).extend(values)
    fill_s = max(r.fill_s for r in results)
    return {"target": target_name, "size": size, "clients": clients,
            "fill_s": round(fill_s, 2), "fill_add_task_per_s": round(size / fill_s, 1) if fill_s > 0 else None,
            "rpcs": rpcs, "seconds": round(window, 3), "rpc_per_s": round(rpcs / window, 1) if window > 0 else 0.0,
            "all": latency_stats([v for values in by_method.values() for v in values]),
            "per_method": {label: latency_stats(values) for label, values in sorted(by_method.items())}}
