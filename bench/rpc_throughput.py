"""Loopback RPC throughput: stock ``luigid`` versus ``luigi-appliance serve``, and LDAP login latency.

What is measured
    Scheduler RPCs per second and per-call latency, seen by real luigi clients. Each target gets a
    freshly started server on 127.0.0.1 and the same workload:

    * stock: ``luigid`` 3.8.1, plain HTTP, no authentication, driven with
      ``luigi.rpc.RemoteScheduler``;
    * appliance: ``luigi-appliance serve --dev``, TLS (its self-signed certificate), the generated
      local ``admin`` account exchanged once for a bearer token (the worker client's default),
      driven with ``luigi_appliance.client.remote.AuthenticatedRemoteScheduler``;
    * appliance-basic: the same server, HTTP Basic with every call (client.conf auth = basic;
      the server verifies the password once and then finds it in its cache);
    * appliance-ldap: ``luigi-appliance serve`` with ``[auth] backend = ldap`` against a real
      OpenLDAP ``slapd`` over LDAPS (tests/ldap_server.py starts it), an LDAP service account in a
      nested group with a task-family allowlist, bearer tokens, the audit trail on.

    Cold LDAP login latency: ``--logins`` sequential POST /auth/token calls against an appliance
    with ``cache_ttl = 0``, so each one searches the directory and binds as the user over LDAPS
    (new connections each time); the local-account equivalent (scrypt) is shown beside it.

How
    ``--clients`` processes (spawned, default 4) each own one client object, one worker id and one
    keep-alive connection, like luigi workers. Each client repeats the lifecycle of a luigi worker
    running a chain of tasks:

    1. ``add_task`` a fresh task, PENDING, depending on this client's previous task;
    2. ``get_work``, which hands that task back (its dependency is done);
    3. ``add_task`` the task handed out, now DONE;
    4. ``ping``.

    Reporting tasks DONE keeps the set of pending tasks small, so both servers do the same amount of
    work per call however many calls they manage (an ever-growing pending set would slow the faster
    server more and pull the ratio towards 1).

    Before timing, every client calls ``add_worker`` (the "first call": TCP connect, TLS handshake
    and, on the appliance, the scrypt verification of the password that later calls find in the
    server's cache), then ``--warmup`` iterations of the workload. Those are reported separately.
    All clients then start the timed loop together (a start gate) and stop at ``--duration`` seconds or
    ``--calls`` RPCs each, whichever comes first. Each call is timed with ``time.perf_counter``.
    Throughput is all timed RPCs over the wall-clock window from the first client's start to the
    last client's end. Both clients retry nothing (one attempt, 10 s timeout per call).

    The script also reads the server process's CPU time (/proc) when the gate opens and when
    the last client has reported, and prints server CPU milliseconds per RPC: a figure that depends
    less on how much CPU the clients take away from the server on a small machine.

    With ``--rounds N`` the two targets alternate (stock first in odd rounds, appliance first in even
    rounds), each round against new servers; the summary pools all rounds.

Nothing here asserts on timing: the script prints the numbers (and writes them with ``--json``). The
goal is appliance throughput >= 0.8x stock, token-authenticated (appliance, appliance-ldap).
Clients and server share this machine's CPUs, so the client-side cost of TLS is part of what is
measured.

Example::

    .venv/bin/python bench/rpc_throughput.py --duration 5 --clients 4 --json /tmp/rpc.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

GOAL_RATIO = 0.8
LOOPBACK = "127.0.0.1"
FAMILY = "BenchTask"
CERT_FILE = "tls-selfsigned.crt"
CREDENTIALS_FILE = "admin-credentials"

RPC_TIMEOUT = 10.0  # seconds, per call (luigi's connect_timeout is the whole request's timeout)
STARTUP_TIMEOUT = 60.0  # seconds for a server to answer
STOP_TIMEOUT = 10.0  # seconds between terminate and kill
CLIENT_EXIT_GRACE = 2.0  # seconds for a client process to exit by itself after reporting
WARMUP_TIMEOUT = 60.0  # seconds for a client's first call and warm-up iterations
START_TIMEOUT = 120.0  # seconds for all clients to be ready (spawning imports luigi) and for the go
RESULT_SLACK = 60.0  # seconds beyond the timed run for results to come back
DEFAULT_MAX_CALLS = 1_000_000  # per client: the count bound when only --duration is given


class BenchError(Exception):
    """The benchmark could not run: a server did not start or a client failed."""


# ---- targets and servers ------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where the clients connect. ``credentials_file`` set means the appliance."""

    name: str
    url: str
    state_dir: str | None = None
    credentials_file: str | None = None
    ca_file: str | None = None
    use_token: bool = True


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.stderr_path}: {exc})"
        return text[-limit:] if text else "(empty)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LUIGI_CONFIG_PATH", None)  # the servers run with their own defaults
    return env


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it has not exited within STOP_TIMEOUT."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def wait_ready(server: ServerProcess, probe: Callable[[], bool], timeout: float) -> float:
    """Poll ``probe`` until it answers True; return the seconds it took. Raise if the server exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code = server.proc.poll()
        if code is not None:
            raise BenchError(f"{server.name} exited with code {code} before answering; stderr:\n"
                             f"{server.stderr_tail()}")
        if probe():
            return time.monotonic() - started
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not answer within {timeout:.0f}s; stderr:\n{server.stderr_tail()}")


@contextlib.contextmanager
def running_server(name: str, cmd: list[str], workdir: Path, probe: Callable[[], bool]) -> Iterator[ServerProcess]:
    """Start ``cmd`` (output to files in ``workdir``), wait for ``probe``, always stop it afterwards."""
    stdout_path, stderr_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=server_env())
        server = ServerProcess(name, proc, stderr_path)
        try:
            ready_in = wait_ready(server, probe, STARTUP_TIMEOUT)
            print(f"  {name} ready in {ready_in:.2f}s (pid {proc.pid})", flush=True)
            yield server
        finally:
            stop_process(proc)


def http_ok(url: str, *, verify: str | bool = True, accept: Callable[[int], bool] = lambda code: code == 200) -> bool:
    try:
        return accept(requests.get(url, verify=verify, timeout=2.0, allow_redirects=False).status_code)
    except (requests.RequestException, OSError):
        return False


@contextlib.contextmanager
def stock_server(workdir: Path, bin_dir: Path) -> Iterator[tuple[Target, ServerProcess]]:
    port = free_port()
    cmd = [str(bin_dir / "luigid"), "--port", str(port), "--address", LOOPBACK,
           "--state-path", str(workdir / "state.pickle"), "--logdir", str(workdir)]
    url = f"http://{LOOPBACK}:{port}/"
    # luigid redirects / to the visualiser: any non-5xx answer means it is serving.
    with running_server("luigid", cmd, workdir, lambda: http_ok(url, accept=lambda code: code < 500)) as server:
        yield Target("stock", url), server


@contextlib.contextmanager
def appliance_server(workdir: Path, bin_dir: Path, *, name: str = "appliance",
                     use_token: bool = True) -> Iterator[tuple[Target, ServerProcess]]:
    port = free_port()
    state_dir = workdir / "appliance-state"
    cmd = [str(bin_dir / "luigi-appliance"), "serve", "--dev", "--state-dir", str(state_dir), "--port", str(port)]
    url = f"https://{LOOPBACK}:{port}/"
    cert = state_dir / CERT_FILE

    def probe() -> bool:
        return cert.exists() and (state_dir / CREDENTIALS_FILE).exists() and http_ok(f"{url}healthz", verify=str(cert))

    with running_server("luigi-appliance", cmd, workdir, probe) as server:
        yield Target(name, url, str(state_dir), str(state_dir / CREDENTIALS_FILE), str(cert), use_token), server


@contextlib.contextmanager
def appliance_basic_server(workdir: Path, bin_dir: Path) -> Iterator[tuple[Target, ServerProcess]]:
    with appliance_server(workdir, bin_dir, name="appliance-basic", use_token=False) as running:
        yield running


LDAP_USER = "etl-bot"  # a worker through a nested group, with a task-family allowlist


@contextlib.contextmanager
def ldap_appliance_server(workdir: Path, bin_dir: Path, *, cache_ttl: str = "5m",
                          name: str = "appliance-ldap") -> Iterator[tuple[Target, ServerProcess]]:
    """``serve`` with LDAP accounts from a real slapd (started here, stopped afterwards)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ldap_server import BIND_PW, PEOPLE, Directory

    directory = Directory(workdir / "ldap")
    try:
        port = free_port()
        state_dir = workdir / "appliance-state"
        state_dir.mkdir(mode=0o750)
        bind_pw = workdir / "bind.password"
        bind_pw.write_text(BIND_PW + "\n")
        bind_pw.chmod(0o600)
        conf = directory.config(bind_password_file=bind_pw, backend="ldap").replace(
            "etl-services = Extract, Transform, Rep*", f"etl-services = {FAMILY}*")
        conf_path = workdir / "scheduler.conf"
        conf_path.write_text(f"[server]\nlisten = {LOOPBACK}:{port}\n[state]\ndir = {state_dir}\n"
                             f"[secrets]\nkey_file = {workdir / 'secret.key'}\n"
                             f"[audit]\nfile = {workdir / 'audit.log'}\nstderr = false\n"
                             + conf.replace("[auth]\n", f"[auth]\ncache_ttl = {cache_ttl}\n", 1))
        conf_path.chmod(0o640)
        creds = workdir / "ldap-credentials"
        creds.write_text(f"{LDAP_USER}:{PEOPLE[LDAP_USER][0]}\n")
        creds.chmod(0o600)
        cmd = [str(bin_dir / "luigi-appliance"), "--config", str(conf_path), "serve"]
        url = f"https://{LOOPBACK}:{port}/"
        cert = state_dir / CERT_FILE
        with running_server(name, cmd, workdir,
                            lambda: cert.exists() and http_ok(f"{url}healthz", verify=str(cert))) as server:
            yield Target(name, url, str(state_dir), str(creds), str(cert), True), server
    finally:
        directory.stop()


SERVERS: dict[str, Callable[[Path, Path], contextlib.AbstractContextManager[tuple[Target, ServerProcess]]]] = {
    "stock": stock_server,
    "appliance": appliance_server,
    "appliance-basic": appliance_basic_server,
    "appliance-ldap": ldap_appliance_server,
}


# ---- client processes ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientJob:
    target: Target
    index: int
    warmup: int
    duration: float
    max_calls: int


@dataclass
class ClientResult:
    index: int
    first_call: float | None = None  # seconds: add_worker on a new connection
    warmup: list[float] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # timed calls, seconds, per method
    started: float = 0.0  # time.monotonic(): one system-wide clock, comparable between processes
    ended: float = 0.0
    error: str | None = None

    @property
    def rpcs(self) -> int:
        return sum(len(values) for values in self.samples.values())


class BudgetExhausted(Exception):
    pass


class Recorder:
    """Times calls into ``samples`` and refuses any call past ``max_calls`` or ``deadline``."""

    def __init__(self, samples: dict[str, list[float]], max_calls: int, seconds: float):
        self.samples = samples
        self.max_calls = max_calls
        self.deadline = time.perf_counter() + seconds
        self.count = 0

    @property
    def exhausted(self) -> bool:
        return self.count >= self.max_calls or time.perf_counter() >= self.deadline

    def call(self, label: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        if self.exhausted:
            raise BudgetExhausted
        started = time.perf_counter()
        reply = method(**kwargs)
        self.samples.setdefault(label, []).append(time.perf_counter() - started)
        self.count += 1
        return reply


class Workload:
    """One luigi worker running a chain of tasks: add_task, get_work, add_task DONE, ping."""

    def __init__(self, scheduler: Any, target: Target, index: int):
        self.scheduler = scheduler
        self.index = index
        self.worker = f"bench-{target.name}-{index}-{os.getpid()}"
        self.host = f"bench-client-{index}"
        self.previous: str | None = None
        self.n = 0

    def register(self, rec: Recorder) -> None:
        info = [("host", self.host), ("workers", 1), ("pid", os.getpid()), ("bench", True)]
        rec.call("add_worker", self.scheduler.add_worker, worker=self.worker, info=info)

    def iteration(self, rec: Recorder) -> None:
        task_id = f"{FAMILY}_c{self.index}_{self.n:08d}"
        params = {"client": str(self.index), "n": str(self.n)}
        rec.call("add_task", self.scheduler.add_task, worker=self.worker, task_id=task_id, status="PENDING",
                 runnable=True, deps=[self.previous] if self.previous else [], family=FAMILY, params=params)
        reply = rec.call("get_work", self.scheduler.get_work, worker=self.worker, host=self.host)
        handed_out = reply.get("task_id") if isinstance(reply, dict) else None
        if handed_out:
            rec.call("add_task(DONE)", self.scheduler.add_task, worker=self.worker, task_id=handed_out,
                     status="DONE", runnable=False, family=FAMILY, params=reply.get("task_params") or {})
        rec.call("ping", self.scheduler.ping, worker=self.worker)
        self.previous = task_id
        self.n += 1


def quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("luigi", "luigi-interface", "luigi_appliance", "urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_scheduler(target: Target) -> Any:
    """The client object a luigi worker would use for ``target``, retrying nothing."""
    import luigi.rpc

    if target.credentials_file is None:
        scheduler = luigi.rpc.RemoteScheduler(url=target.url, connect_timeout=RPC_TIMEOUT)
        scheduler._rpc_retry_attempts = 1  # as the appliance client below: fail fast, no 30 s waits
        scheduler._rpc_retry_wait = 0
        return scheduler
    from luigi_appliance.client.credentials import load_credentials
    from luigi_appliance.client.remote import AuthenticatedRemoteScheduler

    return AuthenticatedRemoteScheduler(target.url, load_credentials(Path(target.credentials_file)),
                                        Path(target.ca_file) if target.ca_file else None,
                                        connect_timeout=RPC_TIMEOUT, retry_attempts=1, retry_wait=0.0,
                                        use_token=target.use_token)


def warm_up(workload: Workload, job: ClientJob, result: ClientResult) -> None:
    first: dict[str, list[float]] = {}
    workload.register(Recorder(first, max_calls=1, seconds=WARMUP_TIMEOUT))
    result.first_call = first["add_worker"][0]
    warm: dict[str, list[float]] = {}
    rec = Recorder(warm, max_calls=job.warmup * 4, seconds=WARMUP_TIMEOUT)
    with contextlib.suppress(BudgetExhausted):
        for _ in range(job.warmup):
            workload.iteration(rec)
    result.warmup = [value for values in warm.values() for value in values]


def timed_run(workload: Workload, job: ClientJob, result: ClientResult) -> None:
    rec = Recorder(result.samples, max_calls=job.max_calls, seconds=job.duration)
    result.started = time.monotonic()
    with contextlib.suppress(BudgetExhausted):
        while not rec.exhausted:  # bounded: every iteration makes at least 3 counted calls
            workload.iteration(rec)
    result.ended = time.monotonic()


@dataclass
class StartGate:
    """Warm clients each release ``ready`` and wait for ``go``; ``abort`` set with it means do not run."""

    ready: Any  # multiprocessing.Semaphore
    go: Any  # multiprocessing.Event
    abort: Any  # multiprocessing.Event

    def open_when_ready(self, procs: list[multiprocessing.process.BaseProcess], timeout: float,
                        before_go: Callable[[], None] | None = None) -> bool:
        """In the parent: open the gate once every client is ready (after ``before_go``, if given);
        abort it if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        ready = 0
        while ready < len(procs):
            if self.ready.acquire(timeout=0.2):
                ready += 1
            elif any(proc.exitcode is not None for proc in procs) or time.monotonic() > deadline:
                self.abort.set()
                self.go.set()
                return False
        if before_go is not None:
            before_go()
        self.go.set()
        return True

    def wait(self) -> bool:
        """In a client: True when the timed run may start."""
        self.ready.release()
        return self.go.wait(timeout=START_TIMEOUT) and not self.abort.is_set()


def run_client(job: ClientJob, gate: StartGate) -> ClientResult:
    result = ClientResult(job.index)
    try:
        scheduler = make_scheduler(job.target)
        workload = Workload(scheduler, job.target, job.index)
        warm_up(workload, job, result)
    except Exception as exc:
        result.error = f"warm-up failed: {type(exc).__name__}: {exc}"  # exiting makes the parent abort the gate
        return result
    try:
        if gate.wait():
            timed_run(workload, job, result)
        else:
            result.error = "the timed run was called off (another client failed or never got ready)"
    except Exception as exc:
        result.ended = time.monotonic()
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        scheduler.close()
    return result


def client_main(job: ClientJob, gate: StartGate, results: multiprocessing.Queue[ClientResult]) -> None:
    """Entry point of a client process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    quiet_logging()
    results.put(run_client(job, gate))


# ---- one phase: one target, one fresh server, all clients ---------------------------------------

@dataclass
class PhaseResult:
    target: str
    round: int
    clients: list[ClientResult]
    server_cpu: float | None  # server CPU seconds during the timed run (None: not measurable)

    @property
    def cpu_ms_per_rpc(self) -> float | None:
        return cpu_per_rpc_ms(self.server_cpu, self.rpcs)

    @property
    def rpcs(self) -> int:
        return sum(client.rpcs for client in self.clients)

    @property
    def window(self) -> float:
        return max(c.ended for c in self.clients) - min(c.started for c in self.clients)

    @property
    def rps(self) -> float:
        return self.rpcs / self.window if self.window > 0 else 0.0

    def latencies(self) -> list[float]:
        return [v for client in self.clients for values in client.samples.values() for v in values]

    def by_method(self) -> dict[str, list[float]]:
        merged: dict[str, list[float]] = {}
        for client in self.clients:
            for label, values in client.samples.items():
                merged.setdefault(label, []).extend(values)
        return merged


def stop_clients(procs: list[multiprocessing.process.BaseProcess]) -> None:
    """Clients exit by themselves once they have reported; stragglers are terminated, then killed."""
    for proc in procs:
        proc.join(timeout=CLIENT_EXIT_GRACE)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=STOP_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=STOP_TIMEOUT)


def collect(results: multiprocessing.Queue[ClientResult], procs: list[multiprocessing.process.BaseProcess],
            timeout: float) -> list[ClientResult]:
    """Read one result per client, giving up at ``timeout`` or when no client is left to send one."""
    collected: list[ClientResult] = []
    deadline = time.monotonic() + timeout
    while len(collected) < len(procs) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(proc.is_alive() for proc in procs):
                break
    return collected


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where that is unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15: utime, stime
    except (OSError, IndexError, ValueError):
        return None


def server_cpu_during(gate: StartGate, procs: list[multiprocessing.process.BaseProcess], server_pid: int,
                      collect_results: Callable[[], list[ClientResult]]) -> tuple[list[ClientResult], float | None]:
    """Open the gate and run ``collect_results``; also return the server's CPU seconds in between."""
    before = None  # stays None when a client failed: collect_results reports it
    if gate.open_when_ready(procs, START_TIMEOUT + WARMUP_TIMEOUT):
        before = process_cpu_seconds(server_pid)
    results = collect_results()
    after = process_cpu_seconds(server_pid)
    return results, (after - before if before is not None and after is not None else None)


def run_clients(target: Target, server_pid: int, opts: argparse.Namespace) -> tuple[list[ClientResult], float | None]:
    """Run every client process against ``target``; return their results and the server's CPU seconds."""
    ctx = multiprocessing.get_context("spawn")
    gate = StartGate(ctx.Semaphore(0), ctx.Event(), ctx.Event())
    results: multiprocessing.Queue[ClientResult] = ctx.Queue()
    jobs = [ClientJob(target, i, opts.warmup, opts.duration, opts.calls) for i in range(opts.clients)]
    procs = [ctx.Process(target=client_main, args=(job, gate, results), name=f"bench-client-{job.index}",
                         daemon=True) for job in jobs]
    try:
        for proc in procs:
            proc.start()
        timeout = opts.duration + RESULT_SLACK
        collected, server_cpu = server_cpu_during(gate, procs, server_pid, lambda: collect(results, procs, timeout))
    finally:
        stop_clients(procs)
    errors = [f"client {c.index}: {c.error}" for c in collected if c.error]
    if len(collected) < len(procs):
        errors.append(f"only {len(collected)} of {len(procs)} clients reported back")
    if errors:
        raise BenchError(f"{target.name}: " + "; ".join(errors))
    return sorted(collected, key=lambda c: c.index), server_cpu


def run_phase(name: str, round_no: int, opts: argparse.Namespace) -> PhaseResult:
    with tempfile.TemporaryDirectory(prefix=f"rpc-bench-{name}-") as tmp, \
            SERVERS[name](Path(tmp), opts.bin_dir) as (target, server):
        try:
            clients, server_cpu = run_clients(target, server.proc.pid, opts)
        except BenchError as exc:
            code = server.proc.poll()
            status = "still running" if code is None else f"exited with code {code}"
            raise BenchError(f"{exc}\n{server.name} ({status}) stderr:\n{server.stderr_tail()}") from None
    return PhaseResult(name, round_no, clients, server_cpu)


# ---- statistics and output ----------------------------------------------------------------------

def percentile(values: list[float], pct: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def json_ms(seconds: float) -> float | None:
    """Milliseconds rounded for the report; None instead of NaN (no samples), which JSON lacks."""
    return None if seconds != seconds else round(ms(seconds), 3)


@dataclass
class Summary:
    target: str
    rpcs: int
    seconds: float
    latencies: list[float]
    by_method: dict[str, list[float]]
    first_calls: list[float]
    warmup: list[float]
    server_cpu: float | None

    @property
    def cpu_ms_per_rpc(self) -> float | None:
        return cpu_per_rpc_ms(self.server_cpu, self.rpcs)

    @property
    def rps(self) -> float:
        return self.rpcs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rpcs": self.rpcs,
            "seconds": round(self.seconds, 4),
            "rpc_per_s": round(self.rps, 1),
            "p50_ms": json_ms(percentile(self.latencies, 50)),
            "p99_ms": json_ms(percentile(self.latencies, 99)),
            "first_call_ms": {"median": json_ms(statistics.median(self.first_calls)),
                              "max": json_ms(max(self.first_calls))},
            "warmup_p50_ms": json_ms(percentile(self.warmup, 50)),
            "server_cpu_s": None if self.server_cpu is None else round(self.server_cpu, 3),
            "server_cpu_ms_per_rpc": rounded(self.cpu_ms_per_rpc),
            "per_method": {label: {"calls": len(values), "p50_ms": json_ms(percentile(values, 50)),
                                   "p99_ms": json_ms(percentile(values, 99))}
                           for label, values in sorted(self.by_method.items())},
        }


def summarize(name: str, phases: list[PhaseResult]) -> Summary:
    mine = [p for p in phases if p.target == name]
    by_method: dict[str, list[float]] = {}
    for phase in mine:
        for label, values in phase.by_method().items():
            by_method.setdefault(label, []).extend(values)
    clients = [c for p in mine for c in p.clients]
    return Summary(name, sum(p.rpcs for p in mine), sum(p.window for p in mine),
                   [v for p in mine for v in p.latencies()], by_method,
                   [c.first_call for c in clients if c.first_call is not None],
                   [v for c in clients for v in c.warmup], total_cpu([p.server_cpu for p in mine]))


def total_cpu(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def cpu_per_rpc_ms(cpu: float | None, rpcs: int) -> float | None:
    return None if cpu is None or not rpcs else cpu * 1000.0 / rpcs


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_phase(phase: PhaseResult, rounds: int) -> None:
    lat = phase.latencies()
    first = [c.first_call for c in phase.clients if c.first_call is not None]
    print(f"  round {phase.round}/{rounds} {phase.target:<9}: {phase.rpcs} RPCs in {phase.window:.2f}s = "
          f"{phase.rps:.0f} RPC/s, p50 {ms(percentile(lat, 50)):.2f} ms, p99 {ms(percentile(lat, 99)):.2f} ms, "
          f"first call max {ms(max(first)):.1f} ms, server CPU {fmt(phase.cpu_ms_per_rpc, '.3f')} ms/RPC",
          flush=True)


def round_ratios(phases: list[PhaseResult], target: str) -> list[float]:
    """target/stock throughput within each round: less exposed to drift on a busy machine."""
    ratios = []
    for round_no in sorted({p.round for p in phases}):
        rps = {p.target: p.rps for p in phases if p.round == round_no}
        if rps.get("stock") and target in rps:
            ratios.append(rps[target] / rps["stock"])
    return ratios


def print_summary(summaries: list[Summary], ratios: dict[str, float], per_round: dict[str, list[float]]) -> None:
    print("\nSummary (all rounds pooled)")
    print(f"{'target':<16} {'RPCs':>9} {'RPC/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'first call ms (median/max)':>28} "
          f"{'server CPU ms/RPC':>18}")
    for s in summaries:
        first = f"{ms(statistics.median(s.first_calls)):.1f} / {ms(max(s.first_calls)):.1f}"
        print(f"{s.target:<16} {s.rpcs:>9} {s.rps:>9.0f} {ms(percentile(s.latencies, 50)):>8.2f} "
              f"{ms(percentile(s.latencies, 99)):>8.2f} {first:>28} {fmt(s.cpu_ms_per_rpc, '.3f'):>18}")
    print("\nPer method, p50 / p99 ms")
    labels = sorted({label for s in summaries for label in s.by_method})
    print(f"{'method':<16}" + "".join(f"{s.target:>22}" for s in summaries))
    for label in labels:
        cells = []
        for s in summaries:
            values = s.by_method.get(label, [])
            cells.append(f"{ms(percentile(values, 50)):.2f} / {ms(percentile(values, 99)):.2f}" if values else "-")
        print(f"{label:<16}" + "".join(f"{cell:>22}" for cell in cells))
    stock_cpu = summaries[0].cpu_ms_per_rpc
    print()
    for s in summaries[1:]:
        ratio = ratios[s.target]
        rounds = per_round[s.target]
        spread = (f"; per round {', '.join(f'{r:.2f}' for r in rounds)}, median {statistics.median(rounds):.2f}x"
                  if len(rounds) > 1 else "")
        cpu = (f"; server CPU per RPC {s.cpu_ms_per_rpc / stock_cpu:.2f}x stock"
               if stock_cpu and s.cpu_ms_per_rpc else "")
        verdict = "meets" if ratio >= GOAL_RATIO else "below"
        print(f"ratio {s.target}/stock throughput: {ratio:.2f}x (goal >= {GOAL_RATIO}x; {verdict} goal){spread}{cpu}")


def write_json(path: Path, opts: argparse.Namespace, phases: list[PhaseResult], summaries: list[Summary],
               ratios: dict[str, float], per_round: dict[str, list[float]], logins: dict[str, Any]) -> None:
    report = {
        "config": {"clients": opts.clients, "duration_s": opts.duration, "max_calls_per_client": opts.calls,
                   "warmup_iterations": opts.warmup, "rounds": opts.rounds, "cpus": os.cpu_count(),
                   "python": platform.python_version()},
        "rounds": [{"round": p.round, "target": p.target, "rpcs": p.rpcs, "seconds": round(p.window, 4),
                    "rpc_per_s": round(p.rps, 1), "p50_ms": json_ms(percentile(p.latencies(), 50)),
                    "p99_ms": json_ms(percentile(p.latencies(), 99)),
                    "server_cpu_ms_per_rpc": rounded(p.cpu_ms_per_rpc)} for p in phases],
        "summary": {s.target: s.as_dict() for s in summaries},
        "ratio_over_stock": {name: round(r, 4) for name, r in ratios.items()},
        "ratio_per_round": {name: [round(r, 4) for r in rs] for name, rs in per_round.items()},
        "goal_ratio": GOAL_RATIO,
        "cold_login_ms": logins,
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


# ---- main ---------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=positive_int, default=4, help="client processes per target")
    parser.add_argument("--duration", type=positive_float, default=10.0, help="timed seconds per target and round")
    parser.add_argument("--calls", type=positive_int, default=DEFAULT_MAX_CALLS,
                        help="at most this many timed RPCs per client (whichever of --duration/--calls ends first)")
    parser.add_argument("--warmup", type=non_negative_int, default=5,
                        help="untimed workload iterations per client before timing")
    parser.add_argument("--rounds", type=positive_int, default=1, help="run every target this many times, "
                        "rotating their order")
    parser.add_argument("--targets", default="stock,appliance,appliance-basic,appliance-ldap",
                        help=f"comma-separated, stock first; from {', '.join(SERVERS)}")
    parser.add_argument("--logins", type=non_negative_int, default=30,
                        help="cold logins timed per account kind (0: skip the login latency measurement)")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                        help="directory holding the luigid and luigi-appliance console scripts")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    opts = parser.parse_args(argv)
    opts.targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    unknown = [t for t in opts.targets if t not in SERVERS]
    if unknown or not opts.targets or opts.targets[0] != "stock" or len(set(opts.targets)) != len(opts.targets):
        parser.error(f"--targets: expected stock first, then any of {', '.join(list(SERVERS)[1:])}, each once")
    return opts


def phase_order(targets: list[str], round_no: int) -> list[str]:
    """Each round starts with a different target, so none always runs on a cold (or hot) machine."""
    shift = (round_no - 1) % len(targets)
    return targets[shift:] + targets[:shift]


def run(opts: argparse.Namespace) -> int:
    import luigi

    print(f"RPC throughput, stock luigid {luigi.__version__} vs {', '.join(opts.targets[1:])}: "
          f"{opts.clients} client processes, "
          f"{opts.duration:g}s or {opts.calls} calls per client, {opts.rounds} round(s), {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print("workload per iteration: add_task(PENDING, dep on previous) + get_work + add_task(DONE) + ping")
    if opts.clients >= (os.cpu_count() or 1):
        print(f"note: {opts.clients} client processes share {os.cpu_count()} CPUs with the server; client-side "
              "costs (requests, TLS) are part of the measurement")
    sys.stdout.flush()
    phases: list[PhaseResult] = []
    for round_no in range(1, opts.rounds + 1):
        for name in phase_order(opts.targets, round_no):
            phase = run_phase(name, round_no, opts)
            print_phase(phase, opts.rounds)
            phases.append(phase)
    summaries = [summarize(name, phases) for name in opts.targets]
    stock_rps = summaries[0].rps
    ratios = {s.target: (s.rps / stock_rps if stock_rps else float("nan")) for s in summaries[1:]}
    per_round = {s.target: round_ratios(phases, s.target) for s in summaries[1:]}
    print_summary(summaries, ratios, per_round)
    logins = measure_logins(opts) if opts.logins else {}
    if opts.json:
        write_json(opts.json, opts, phases, summaries, ratios, per_round, logins)
    return 0


# ---- cold login latency -------------------------------------------------------------------------

def time_logins(target: Target, count: int) -> list[float]:
    """``count`` sequential POST /auth/token with the target's name and password, each a new connection."""
    name, _, password = Path(target.credentials_file or "").read_text().strip().partition(":")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        resp = requests.post(f"{target.url}auth/token", auth=(name, password), verify=target.ca_file, timeout=30)
        samples.append(time.perf_counter() - started)
        if resp.status_code != 200:
            raise BenchError(f"{target.name}: /auth/token answered {resp.status_code}: {resp.text[:200]}")
    return samples


def measure_logins(opts: argparse.Namespace) -> dict[str, Any]:
    """Cold logins (nothing cached: cache_ttl 0 / a local scrypt check each time), LDAP and local."""
    print(f"\nCold login latency: {opts.logins} sequential POST /auth/token per kind, nothing cached, "
          "new TLS connection each")
    report: dict[str, Any] = {}
    kinds = {"ldap": lambda d: ldap_appliance_server(d, opts.bin_dir, cache_ttl="0", name="ldap-logins"),
             "local": lambda d: local_cold_server(d, opts.bin_dir)}
    for kind, start in kinds.items():
        with tempfile.TemporaryDirectory(prefix=f"login-bench-{kind}-") as tmp, start(Path(tmp)) as (target, _):
            samples = time_logins(target, opts.logins)
        report[kind] = {"p50": json_ms(percentile(samples, 50)), "p95": json_ms(percentile(samples, 95)),
                        "max": json_ms(max(samples))}
        print(f"  {kind:<6} p50 {ms(percentile(samples, 50)):.1f} ms, p95 {ms(percentile(samples, 95)):.1f} ms, "
              f"max {ms(max(samples)):.1f} ms")
    return report


@contextlib.contextmanager
def local_cold_server(workdir: Path, bin_dir: Path) -> Iterator[tuple[Target, ServerProcess]]:
    """A local-account appliance with cache_ttl = 0: every login runs scrypt."""
    state_dir = workdir / "appliance-state"
    subprocess.run([str(bin_dir / "luigi-appliance"), "user", "--users-file", str(workdir / "users"), "add",
                    "bench", "--role", "worker"], input="bench-password-123\n", text=True, check=True,
                   capture_output=True)
    creds = workdir / "credentials"
    creds.write_text("bench:bench-password-123\n")
    creds.chmod(0o600)
    port = free_port()
    conf = workdir / "scheduler.conf"
    conf.write_text(f"[server]\nlisten = {LOOPBACK}:{port}\n[state]\ndir = {state_dir}\n[auth]\n"
                    f"users_file = {workdir / 'users'}\ncache_ttl = 0\n[secrets]\nkey_file = {workdir / 'secret.key'}\n"
                    f"[audit]\nfile = {workdir / 'audit.log'}\nstderr = false\n")
    conf.chmod(0o640)
    url = f"https://{LOOPBACK}:{port}/"
    cert = state_dir / CERT_FILE
    cmd = [str(bin_dir / "luigi-appliance"), "--config", str(conf), "serve"]
    with running_server("local-logins", cmd, workdir,
                        lambda: cert.exists() and http_ok(f"{url}healthz", verify=str(cert))) as server:
        yield Target("local-logins", url, str(state_dir), str(creds), str(cert), True), server


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # SIGTERM becomes SystemExit so the finally blocks stop the servers and clients.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    quiet_logging()
    try:
        return run(opts)
    except BenchError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
