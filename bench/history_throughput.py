"""Task history cost: RPC throughput with and without history, and history page latency.

In one run, on this machine, against a real PostgreSQL 15 cluster (tests/pg_cluster.py: TLS,
scram; each server gets a fresh database):

1. RPC throughput, the workload of bench/rpc_throughput.py (its helpers, imported): ``--clients``
   processes each repeating add_task / get_work / add_task DONE / ping, for
   * ``stock``: luigid 3.8.1, no history;
   * ``stock+pg-history``: luigid with ``record_task_history = true`` and luigi's own
     DbTaskHistory on PostgreSQL (a luigi.cfg in its working directory);
   * ``appliance+pg-history``: ``luigi-appliance serve`` with [history] backend = postgresql
     (verify-full TLS to the database), TLS and authentication to the clients;
   * ``appliance``: the same configuration without [history], to separate the history's cost
     from the rest of the appliance (TLS, authentication, audit);
   printing RPC/s and the ratios to stock without history (goal: appliance+pg-history >= 0.9x).
   After the appliance phase, its history status shows that every emitted event was written.
2. Page latency with ``--events`` events (default 1,000,000) bulk-loaded with COPY into one
   database that both servers read: p50/p95 of ``GET /history`` and ``GET /tasklist/<name>``,
   ``--page-requests`` each, stock luigid's pages against the appliance's.

Nothing is asserted; the machine is shared, so the numbers are noisy: run it more than once.

    .venv/bin/python bench/history_throughput.py --duration 10 --events 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

import rpc_throughput as rt  # noqa: E402
from pg_cluster import Database, cluster  # noqa: E402

GOAL_RATIO = 0.9
PAGE_TIMEOUT = 600.0
PASSWORD = "bench-admin-password"  # noqa: S105 - a throwaway account of a throwaway server


def stock_luigi_cfg(workdir: Path, db: Database) -> None:
    """luigid reads ./luigi.cfg: its own history on PostgreSQL, over TLS as the owner."""
    (workdir / "luigi.cfg").write_text(f"[scheduler]\nrecord_task_history = true\n"
                                       f"[task_history]\ndb_connection = {db.url(owner=True)}\n")


@contextlib.contextmanager
def stock_history_server(workdir: Path, bin_dir: Path, db: Database) -> Iterator[tuple[rt.Target, rt.ServerProcess]]:
    stock_luigi_cfg(workdir, db)
    port = rt.free_port()
    cmd = [str(bin_dir / "luigid"), "--port", str(port), "--address", rt.LOOPBACK,
           "--state-path", str(workdir / "state.pickle"), "--logdir", str(workdir)]
    url = f"http://{rt.LOOPBACK}:{port}/"
    with rt.running_server("luigid+history", cmd, workdir, lambda: rt.http_ok(url, accept=lambda c: c < 500)) as server:
        yield rt.Target("stock+pg-history", url), server


def appliance_config(workdir: Path, bin_dir: Path, db: Database | None) -> tuple[Path, Path, int]:
    """scheduler.conf with [history] on ``db``, an admin account, a worker credentials file;
    the schema made by ``db upgrade``."""
    users, creds = workdir / "users", workdir / "admin-credentials"
    exe = str(bin_dir / "luigi-appliance")
    subprocess.run([exe, "user", "--users-file", str(users), "add", "admin", "--role", "admin"],
                   input=f"{PASSWORD}\n", text=True, check=True, capture_output=True)
    creds.write_text(f"admin:{PASSWORD}\n")
    creds.chmod(0o600)
    state = workdir / "appliance-state"
    state.mkdir(mode=0o750)
    port = rt.free_port()
    conf = workdir / "scheduler.conf"
    conf.write_text(f"[server]\nlisten = {rt.LOOPBACK}:{port}\n[state]\ndir = {state}\n[auth]\nusers_file = {users}\n"
                    f"[secrets]\nkey_file = {workdir / 'secret.key'}\n[audit]\nfile = {workdir / 'audit.log'}\n"
                    + (db.history_section() if db else ""))
    conf.chmod(0o640)
    if db is not None:
        subprocess.run([exe, "--config", str(conf), "db", "upgrade"], check=True, capture_output=True)
    return conf, creds, port


@contextlib.contextmanager
def appliance_history_server(workdir: Path, bin_dir: Path,
                             db: Database | None) -> Iterator[tuple[rt.Target, rt.ServerProcess]]:
    with serving_appliance(workdir, bin_dir, *appliance_config(workdir, bin_dir, db)) as running:
        yield running


@contextlib.contextmanager
def serving_appliance(workdir: Path, bin_dir: Path, conf: Path, creds: Path,
                      port: int) -> Iterator[tuple[rt.Target, rt.ServerProcess]]:
    state = workdir / "appliance-state"
    cert = state / rt.CERT_FILE
    url = f"https://{rt.LOOPBACK}:{port}/"
    cmd = [str(bin_dir / "luigi-appliance"), "--config", str(conf), "serve"]

    def probe() -> bool:
        return cert.exists() and rt.http_ok(f"{url}healthz", verify=str(cert))

    with rt.running_server("luigi-appliance+history", cmd, workdir, probe) as server:
        yield rt.Target("appliance+pg-history", url, str(state), str(creds), str(cert)), server


def history_status(target: rt.Target) -> dict:
    response = requests.get(f"{target.url}history/api/status", auth=("admin", PASSWORD), verify=target.ca_file,
                            timeout=10)
    response.raise_for_status()
    return response.json()


def rpc_phase(name: str, opts: argparse.Namespace) -> rt.PhaseResult:
    with tempfile.TemporaryDirectory(prefix=f"history-bench-{name}-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        db = cluster().create_database(workdir)
        servers = {"stock": lambda: rt.stock_server(workdir, opts.bin_dir),
                   "stock+pg-history": lambda: stock_history_server(workdir, opts.bin_dir, db),
                   "appliance+pg-history": lambda: appliance_history_server(workdir, opts.bin_dir, db),
                   # The same appliance configuration without [history]: what the history itself costs.
                   "appliance": lambda: appliance_history_server(workdir, opts.bin_dir, None)}
        with servers[name]() as (target, server):
            clients, cpu = rt.run_clients(target, server.proc.pid, opts)
            if name == "appliance+pg-history":
                deadline = time.monotonic() + 60
                while (status := history_status(target))["written"] < status["emitted"] and time.monotonic() < deadline:
                    time.sleep(0.2)
                stored = db.query("SELECT count(*) FROM task_events")[0][0]
                print(f"  appliance history: {status['emitted']} events emitted, {status['written']} written "
                      f"({stored} rows in task_events), {status['spool_events']} in the spool, "
                      f"{status['dropped']} dropped", flush=True)
            elif name == "stock+pg-history":
                rows = db.query("SELECT count(*) FROM task_events")[0][0]
                print(f"  stock history: {rows} rows in task_events", flush=True)
    return rt.PhaseResult(name, 1, clients, cpu)


def stock_schema(db: Database) -> None:
    """luigi's own tables (migration 0001 is exactly what its DbTaskHistory creates), no alembic_version."""
    import sqlalchemy as sa
    from alembic import command

    from luigi_appliance.history.migrate import BASELINE, alembic_config

    engine = sa.create_engine(db.url(owner=True))
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), BASELINE)
        connection.execute(sa.text("DROP TABLE alembic_version"))
    engine.dispose()


def bulk_load(db: Database, events: int, *, stock: bool = False) -> str:
    """``events`` events (4 per task, 40 families, one task a second into the past); returns the
    family the /tasklist page asks for. ``stock``: luigi's columns, naive local timestamps."""
    tasks = events // 4
    now = dt.datetime.now(dt.timezone.utc)
    with db.cluster.connect(db.name) as conn, conn.cursor() as cur:
        for start in range(1, tasks + 1, 50_000):
            rows_t, rows_p, rows_e = io.StringIO(), io.StringIO(), io.StringIO()
            for i in range(start, min(start + 50_000, tasks + 1)):
                family = f"Family{i % 40:02d}"
                rows_t.write(f"{i}\t{family}_{i}\t{family}\thost{i % 7}\n")
                rows_p.write(f"{i}\tday\t2026-01-{i % 28 + 1:02d}\n")
                base = now - dt.timedelta(seconds=i)
                for k, (name, offset) in enumerate((("PENDING", 0), ("RUNNING", 1), ("DONE", 30), ("PENDING", 40))):
                    eid = (i - 1) * 4 + k + 1
                    ts = base + dt.timedelta(seconds=offset)
                    if stock:
                        rows_e.write(f"{eid}\t{i}\t{name}\t{ts.astimezone().replace(tzinfo=None).isoformat()}\n")
                    else:
                        rows_e.write(f"{eid}\t{i}\t{name}\t{ts.isoformat()}\t{eid:032x}\tetl\t\\N\n")
            for table, data, cols in (("tasks", rows_t, "id, task_id, name, host"),
                                      ("task_parameters", rows_p, "task_id, name, value"),
                                      ("task_events", rows_e, "id, task_id, event_name, ts" if stock
                                       else "id, task_id, event_name, ts, uid, principal, worker_host")):
                data.seek(0)
                cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN", data)
        cur.execute("SELECT setval('tasks_id_seq', %s), setval('task_events_id_seq', %s)", (tasks, tasks * 4))
        cur.execute("VACUUM ANALYZE")
    return "Family07"


def page_latencies(base: str, paths: list[str], requests_per_path: int, **kw: object) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for path in paths:
        samples = []
        for _ in range(requests_per_path):
            started = time.perf_counter()
            try:
                response = requests.get(f"{base}{path}", timeout=PAGE_TIMEOUT, **kw)
                ok = response.status_code == 200
            except requests.Timeout:
                ok = False
            elapsed = time.perf_counter() - started
            samples.append(elapsed if ok else float("inf"))
            if elapsed > 120:
                break  # one more sample of a page that slow adds minutes and no information
        out[path] = samples
    return out


def pages(opts: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="history-bench-pages-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        db = cluster().create_database(workdir)
        config = appliance_config(workdir, opts.bin_dir, db)  # the schema before loading
        # The same rows for stock luigid, in its own schema (it cannot read timestamptz on its pages).
        stock_db = cluster().create_database(workdir)
        stock_schema(stock_db)
        started = time.monotonic()
        family = bulk_load(db, opts.events)
        bulk_load(stock_db, opts.events, stock=True)
        print(f"\nloaded {opts.events} events twice in {time.monotonic() - started:.1f}s", flush=True)
        paths = ["/history", f"/tasklist/{family}"]
        with serving_appliance(workdir, opts.bin_dir, *config) as (target, _server):
            ours = page_latencies(target.url.rstrip("/"), paths, opts.page_requests, auth=("admin", PASSWORD),
                                  verify=target.ca_file)
        stock_dir = workdir / "stock"
        stock_dir.mkdir()
        with stock_history_server(stock_dir, opts.bin_dir, stock_db) as (target, _server):
            stock = page_latencies(target.url.rstrip("/"), paths, opts.page_requests)
    print(f"\nPage latency with {opts.events} events, ms (p50 / p95, n requests)")
    print(f"{'page':<22}{'stock luigid':>30}{'appliance':>30}")
    for path in paths:
        cells = []
        for samples in (stock[path], ours[path]):
            finite = [s for s in samples if s != float("inf")]
            failed = len(samples) - len(finite)
            text = (f"{rt.ms(rt.percentile(finite, 50)):.0f} / {rt.ms(rt.percentile(finite, 95)):.0f}"
                    if finite else "-") + f" (n={len(samples)}" + (f", {failed} failed)" if failed else ")")
            cells.append(text)
        print(f"{path:<22}{cells[0]:>30}{cells[1]:>30}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=rt.positive_int, default=4, help="client processes per target")
    parser.add_argument("--duration", type=rt.positive_float, default=10.0, help="timed seconds per target")
    parser.add_argument("--warmup", type=rt.non_negative_int, default=5, help="untimed iterations per client")
    parser.add_argument("--events", type=rt.non_negative_int, default=1_000_000,
                        help="events loaded for the page latency part (0: skip it)")
    parser.add_argument("--page-requests", type=rt.positive_int, default=10, help="requests per page and server")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent,
                        help="directory holding the luigid and luigi-appliance console scripts")
    opts = parser.parse_args(argv)
    opts.calls = rt.DEFAULT_MAX_CALLS
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    rt.quiet_logging()
    results = []
    for name in ("stock", "stock+pg-history", "appliance+pg-history", "appliance"):
        print(f"\n{name}", flush=True)
        phase = rpc_phase(name, opts)
        latencies = phase.latencies()
        print(f"  {phase.rpcs} RPCs in {phase.window:.2f}s: {phase.rps:.0f} RPC/s, p50 "
              f"{rt.ms(rt.percentile(latencies, 50)):.2f} ms, p99 {rt.ms(rt.percentile(latencies, 99)):.2f} ms",
              flush=True)
        results.append(phase)
    base = results[0].rps
    print(f"\nRPC throughput ({opts.clients} clients, {opts.duration:g}s each, {os.cpu_count()} CPUs, "
          "a shared machine)")
    for phase in results:
        print(f"  {phase.target:<22}{phase.rps:8.0f} RPC/s  {phase.rps / base:5.2f}x stock without history")
    ours, stock_h = results[2].rps, results[1].rps
    verdict = "meets" if ours / base >= GOAL_RATIO else "below"
    print(f"  appliance+pg-history / stock+pg-history: {ours / stock_h:.2f}x; "
          f"/ stock without history: {ours / base:.2f}x (goal >= {GOAL_RATIO}x: {verdict}); "
          f"/ appliance without history: {ours / results[3].rps:.2f}x")
    if opts.events:
        pages(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
