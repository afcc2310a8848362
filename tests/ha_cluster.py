"""Two real ``luigi-appliance serve`` nodes on loopback sharing one PostgreSQL database: the HA harness.

``HaCluster`` writes one scheduler.conf per node (own port, state dir, audit trail and log; the
same users file, TLS certificate, secrets key, token signing keys and ``[state] hmac_key_file``,
as two hosts of one installation would have) with ``[ha] backend = postgresql`` on a database of the session's
cluster (tests/pg_cluster.py), ``node_name`` a and b, ``advertise_url`` each node's own https URL
and a short lease (2 s) so that failovers fit in a test. The nodes connect as the database's
owner: the scheduler creates its ``luigi_ha`` schema itself.

``AckLoad`` is the steady load: threads of real luigi clients (``luigi.rpc.RemoteScheduler`` with
the appliance's Basic-auth fetcher) adding tasks and reporting them DONE against whichever node
leads, following a standby's 503 and its ``X-Luigi-Appliance-Leader`` header (or trying the other
node), and remembering every change whose reply was a 200: what must survive any failover.
``LeaderSampler`` asks both nodes' ``/healthz/leader`` at the same moment every ~100 ms, so a test
can prove there never were two leaders.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import luigi.rpc
import requests
from cryptography.fernet import Fernet
from pg_cluster import Database, _write_test_ca, as_postgres, pg_bin

from conftest import Server, cli, free_port, write_config
from luigi_appliance.client.credentials import Credentials
from luigi_appliance.client.remote import AuthenticatedFetcher

NAMES = ("a", "b")
SCHEMA = "luigi_ha"
LEADER_HEADER = "X-Luigi-Appliance-Leader"
ADMIN_PASSWORD = "ha-admin-password-123"  # a throwaway account of a test cluster
PROBE_TIMEOUT = 0.5  # seconds for one /healthz/leader answer: a stopped node must not stall a sample
RPC_TIMEOUT = 2.0  # seconds per load RPC: a SIGSTOPped leader accepts connections but never answers


@dataclass(frozen=True)
class Probe:
    """One node's /healthz/leader answer: the HTTP status (None: no answer) and its JSON body."""

    status: int | None
    body: dict[str, Any]

    @property
    def leading(self) -> bool:
        return self.status == 200


class HaNode(Server):
    """One HA node: a Server (tests/conftest.py) trusting the cluster's test CA."""

    def __init__(self, name: str, conf: Path, state_dir: Path, port: int, log_path: Path, ca: Path):
        super().__init__(["--config", str(conf), "serve"], state_dir, port, log_path)
        self.name = name
        self.conf = conf
        self._ca = ca

    @property
    def ca_file(self) -> Path:
        return self._ca

    @property
    def admin_password(self) -> str:
        return ADMIN_PASSWORD

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def probe(self, timeout: float = PROBE_TIMEOUT) -> Probe:
        """``GET /healthz/leader`` (no authentication), once."""
        try:
            response = requests.get(f"{self.url}/healthz/leader", verify=str(self.ca_file), timeout=timeout)
        except (requests.RequestException, OSError):
            return Probe(None, {})
        try:
            body = response.json()
        except ValueError:
            body = {"text": response.text[:200]}
        return Probe(response.status_code, body if isinstance(body, dict) else {"json": body})

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.stop(signal.SIGKILL)

    def sigstop(self) -> None:
        self.send(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.send(signal.SIGCONT)

    def log_mark(self) -> int:
        """The current length of this node's log, for ``log_since``."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        with self.log_path.open("rb") as fh:
            fh.seek(mark)
            return fh.read().decode(errors="replace")

    def write(self, task_id: str, timeout: float = RPC_TIMEOUT) -> int | None:
        """One add_task straight to this node: its HTTP status (None: no answer)."""
        data = {"worker": "ha-probe", "task_id": task_id, "status": "PENDING", "family": "HaProbe"}
        try:
            return self.rpc_status("add_task", timeout, **data)
        except (requests.RequestException, OSError):
            return None

    def rpc_status(self, method: str, timeout: float, **data: Any) -> int:
        session = self.session(password=ADMIN_PASSWORD)
        with session:
            response = session.post(f"{self.url}/api/{method}", data={"data": json.dumps(data)}, timeout=timeout)
            return response.status_code


@dataclass(frozen=True)
class Lease:
    """The lease row, with its expiry by the database's clock (negative: expired)."""

    node: str
    url: str
    epoch: int
    expires_in: float


class HaCluster:
    """Two nodes (or one, ``ha=False``: the same configuration without [ha]) on ``db``."""

    def __init__(self, root: Path, db: Database, *, lease_ttl: str = "2s", ha: bool = True,
                 names: tuple[str, ...] = NAMES, extra: str = ""):
        self.root = root
        self.db = db
        self.ha = ha
        self.lease_ttl = lease_ttl
        self.extra = extra
        tls = root / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        self.ca_file, self.cert_file, self.key_file = _write_test_ca(tls)
        self.key_file.chmod(0o600)
        self.users = root / "users"
        result = cli("user", "--users-file", str(self.users), "add", "admin", "--role", "admin",
                     input=ADMIN_PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        self.hmac_key_file = write_config(root / "state-hmac.key", secrets.token_hex(32) + "\n")
        self.hmac_key_file.chmod(0o600)
        # Shared too: a worker's bearer token from one node must be accepted by the other.
        self.token_keys_file = write_config(root / "token.keys", Fernet.generate_key().decode() + "\n")
        self.token_keys_file.chmod(0o600)
        self.credentials_file = write_config(root / "admin-credentials", f"admin:{ADMIN_PASSWORD}\n")
        self.credentials_file.chmod(0o600)
        self.nodes = {name: self._node(name) for name in names}

    # ---- configuration ------------------------------------------------------------------------

    def ha_section(self, name: str, url: str) -> str:
        """[ha] for node ``name``: the database's owner over TLS (verify-full), a short lease, no
        compaction during a test (the journal rows are what the fencing checks read)."""
        if not self.ha:
            return ""
        db = self.db
        return (f"[ha]\nbackend = postgresql\nhost = localhost\nport = {db.cluster.port}\ndbname = {db.name}\n"
                f"user = {db.owner}\npassword_file = {db.owner_password_file}\nsslmode = verify-full\n"
                f"sslrootcert = {db.cluster.ca_file}\nschema = {SCHEMA}\nnode_name = {name}\n"
                f"advertise_url = {url}/\nlease_ttl = {self.lease_ttl}\ncompact_interval = 1d\n")

    def render(self, name: str, port: int, state_dir: Path) -> str:
        """Node ``name``'s scheduler.conf."""
        node_root = self.root / name
        return (f"[server]\nlisten = 127.0.0.1:{port}\n"
                f"[tls]\ncert_file = {self.cert_file}\nkey_file = {self.key_file}\n"
                f"[state]\ndir = {state_dir}\nhmac_key_file = {self.hmac_key_file}\n"
                f"[auth]\nusers_file = {self.users}\n[tokens]\nkeys_file = {self.token_keys_file}\n"
                f"[secrets]\nkey_file = {self.root / 'secret.key'}\n"
                f"[audit]\nfile = {node_root / 'audit.log'}\n"
                + self.ha_section(name, f"https://127.0.0.1:{port}") + self.extra)

    def _node(self, name: str) -> HaNode:
        node_root = self.root / name
        node_root.mkdir(parents=True, exist_ok=True)
        state_dir = node_root / "state"
        port = free_port()
        conf = write_config(node_root / "scheduler.conf", self.render(name, port, state_dir))
        return HaNode(name, conf, state_dir, port, node_root / "server.log", self.ca_file)

    # ---- processes ----------------------------------------------------------------------------

    def start(self, *names: str) -> None:
        """Start the named nodes (all by default) together, then wait until each answers /healthz."""
        chosen = [self.nodes[n] for n in names or self.nodes]
        for node in chosen:
            node.start(wait=False)
        for node in chosen:
            node.wait_ready()

    def other(self, node: HaNode) -> HaNode:
        return next(n for n in self.nodes.values() if n is not node)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None:
                with contextlib.suppress(OSError):
                    node.sigcont()  # a stopped process cannot act on SIGTERM
                node.stop()

    # ---- who leads ----------------------------------------------------------------------------

    def probe_all(self) -> dict[str, Probe]:
        """Every running node's /healthz/leader, asked at the same time."""
        running = [n for n in self.nodes.values() if n.running]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            answers = dict(zip([n.name for n in running], pool.map(HaNode.probe, running), strict=True))
        return {name: answers.get(name, Probe(None, {"down": True})) for name in self.nodes}

    def leader(self) -> HaNode | None:
        """The node answering 200 on /healthz/leader when exactly one does; else None."""
        leading = [name for name, probe in self.probe_all().items() if probe.leading]
        return self.nodes[leading[0]] if len(leading) == 1 else None

    def wait_for_leader(self, timeout: float = 30, other_than: HaNode | None = None) -> HaNode:
        """Poll until exactly one node leads (and it is not ``other_than``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.leader()
            if node is not None and node is not other_than:
                return node
            time.sleep(0.05)
        raise AssertionError(f"no single leader within {timeout}s: {self.probe_all()}\n{self.logs()}")

    def wait_for_first_write(self, node: HaNode, timeout: float, prefix: str = "probe") -> float:
        """Send add_task to ``node`` until one is answered 200; the monotonic time it was."""
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            if node.write(f"{prefix}-{n}", timeout=1.0) == 200:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{node.name} acknowledged no write within {timeout}s: {self.probe_all()}\n{self.logs()}")

    def logs(self, limit: int = 4000) -> str:
        """The tail of every node's log, for assertion messages, without the access log lines of the
        leader polling (several a second) and the audit records."""
        def useful(text: str) -> str:
            return "\n".join(line for line in text.splitlines()
                             if "/healthz/leader" not in line and not line.startswith("audit: "))[-limit:]
        return "\n".join(f"--- node {n.name} log (tail) ---\n{useful(n.log())}" for n in self.nodes.values())

    # ---- the database -------------------------------------------------------------------------

    def lease(self) -> Lease:
        ((node, url, epoch, expires_in),) = self.db.query(
            f"SELECT node, url, epoch, extract(epoch FROM expires_at - now())::float8 FROM {SCHEMA}.lease "  # noqa: S608
            "WHERE id = 1")  # SCHEMA is this module's constant
        return Lease(node, url, int(epoch), float(expires_in) if expires_in is not None else float("-inf"))

    def wait_lease_expired(self, epoch: int, timeout: float = 30) -> Lease:
        """Wait until the lease of ``epoch`` has expired by the database's clock (or was taken over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lease = self.lease()
            if lease.epoch != epoch or lease.expires_in < 0:
                return lease
            time.sleep(min(0.1, max(lease.expires_in, 0.01)))
        raise AssertionError(f"lease of epoch {epoch} still valid after {timeout}s: {self.lease()}")

    @contextlib.contextmanager
    def journal_locked(self) -> Iterator[None]:
        """Hold an EXCLUSIVE lock on the journal table while the block runs: reads go on, every
        append waits in the database (its statement is sent, not yet executed) until the block ends."""
        with self.db.cluster.connect(self.db.name) as conn, conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"LOCK TABLE {SCHEMA}.journal IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                cur.execute("ROLLBACK")

    def appends_waiting(self) -> int:
        """Journal appends waiting for a lock in the database now."""
        ((count,),) = self.db.query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = "
                                    "'Lock' AND query ILIKE %s", self.db.name, "%INSERT INTO %journal%")
        return int(count)

    def journal_rows(self, epoch: int | None = None) -> list[tuple[int, int, int]]:
        """(pos, epoch, seq) of the journal, ordered by pos; only ``epoch``'s when given."""
        where, args = ("WHERE epoch = %s", (epoch,)) if epoch is not None else ("", ())
        rows = self.db.query(f"SELECT pos, epoch, seq FROM {SCHEMA}.journal {where} ORDER BY pos", *args)  # noqa: S608
        return [(int(p), int(e), int(s)) for p, e, s in rows]

    def fenced_writes(self, old_epoch: int, new_epoch: int) -> int:
        """Journal rows of ``old_epoch`` after the first row of ``new_epoch``: writes that should
        have been refused."""
        ((count,),) = self.db.query(
            f"SELECT count(*) FROM {SCHEMA}.journal WHERE epoch = %s AND pos > "  # noqa: S608
            f"(SELECT min(pos) FROM {SCHEMA}.journal WHERE epoch = %s)", old_epoch, new_epoch)
        return int(count)

    def restart_postgres(self) -> None:
        """``pg_ctl restart -m immediate``: every connection cut, no shutdown checkpoint."""
        pg = self.db.cluster
        as_postgres(pg_bin("pg_ctl"), "-D", str(pg.data), "-l", str(pg.log_file), "-m", "immediate", "-w", "-t", "60",
                    "restart")

    # ---- clients ------------------------------------------------------------------------------

    def client(self, timeout: float = RPC_TIMEOUT) -> LeaderFollowingClient:
        return LeaderFollowingClient([n.url + "/" for n in self.nodes.values()], self.ca_file, timeout)

    def tasks_on(self, node: HaNode, prefix: str) -> dict[str, str]:
        """task id -> status of the tasks whose id starts with ``prefix``, as ``node`` has them."""
        remote = remote_scheduler(node.url + "/", self.ca_file, 10.0)
        try:
            found: dict[str, str] = {}
            for status in ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED"):
                # luigi makes its RPC methods at import: mypy cannot see them. Its search matches the
                # pretty id (family and parameters), not the task id: filter here instead.
                listed = remote.task_list(status=status, upstream_status="")  # type: ignore[attr-defined]
                assert "num_tasks" not in listed, f"task_list truncated: {listed}"
                found.update({tid: info["status"] for tid, info in listed.items() if tid.startswith(prefix)})
            return found
        finally:
            remote.close()


def remote_scheduler(url: str, ca_file: Path, timeout: float) -> luigi.rpc.RemoteScheduler:
    """luigi's own client for ``url``: Basic auth as admin, the test CA, one attempt per call."""
    scheduler = luigi.rpc.RemoteScheduler(url=url, connect_timeout=timeout)
    scheduler._fetcher = AuthenticatedFetcher.for_scheduler(url, Credentials("admin", ADMIN_PASSWORD), ca_file, timeout,
                                                            use_token=False)
    scheduler._rpc_retry_attempts = 1
    scheduler._rpc_retry_wait = 0
    return scheduler


class LeaderFollowingClient:
    """One luigi RemoteScheduler per node; each call goes to the node believed to lead. A failed
    call moves to the node a 503's leader header names, or else to the next node."""

    def __init__(self, urls: list[str], ca_file: Path, timeout: float):
        self.urls = urls
        self._clients = {url: remote_scheduler(url, ca_file, timeout) for url in urls}
        self.current = urls[0]

    def call(self, method: str, **kwargs: Any) -> Any:
        """One attempt at the current node; raises what luigi raises (not acknowledged)."""
        url = self.current
        try:
            return getattr(self._clients[url], method)(**kwargs)
        except Exception as exc:
            self.current = self._next(url, exc)
            raise

    def _next(self, url: str, exc: Exception) -> str:
        cause = getattr(exc, "sub_exception", None) or exc
        response = getattr(cause, "response", None)
        named = response.headers.get(LEADER_HEADER) if response is not None else None
        if named:
            named = named if named.endswith("/") else named + "/"
            if named in self._clients and named != url:
                return named
        return self.urls[(self.urls.index(url) + 1) % len(self.urls)]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


@dataclass
class AckLoad:
    """Threads adding tasks ``<prefix>_<thread>_<n>`` (PENDING) and reporting each DONE, every call
    repeated until acknowledged (a 200). ``acked`` holds the latest acknowledged status per task;
    ``in_doubt`` the change a thread was still trying when stopped (it may or may not have been
    applied). Every call's outcome goes to ``log`` as (monotonic time, node URL, acknowledged)."""

    cluster: HaCluster
    prefix: str
    threads: int = 2
    pause: float = 0.02
    acked: dict[str, str] = field(default_factory=dict)
    in_doubt: dict[str, str] = field(default_factory=dict)
    log: list[tuple[float, str, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> AckLoad:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), name=f"ack-load-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self._workers), "a load thread did not stop"

    @property
    def task_prefix(self) -> str:
        """What every task id of this load starts with (and nothing else's does)."""
        return f"{self.prefix}_"

    def acknowledged(self, status: str | None = None) -> set[str]:
        with self._lock:
            return {tid for tid, s in self.acked.items() if status is None or s == status}

    def acks_after(self, since: float) -> list[tuple[float, str]]:
        with self._lock:
            return [(t, url) for t, url, ok in self.log if ok and t > since]

    def wait_acks(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` more changes were acknowledged than now."""
        target = len(self.acknowledged()) + count
        deadline = time.monotonic() + timeout
        while len(self.acknowledged()) < target:
            assert time.monotonic() < deadline, f"load: fewer than {count} acknowledgements in {timeout}s"
            time.sleep(0.05)

    def _run(self, index: int) -> None:
        client = self.cluster.client()
        worker = f"ha-load-{self.prefix}-{index}"
        try:
            n = 0
            while not self._stop.is_set():
                task_id = f"{self.task_prefix}{index}_{n}"
                for status in ("PENDING", "DONE"):
                    if not self._until_acked(client, worker, task_id, status):
                        return
                n += 1
        finally:
            client.close()

    def _until_acked(self, client: LeaderFollowingClient, worker: str, task_id: str, status: str) -> bool:
        tried = False
        while not self._stop.is_set():
            url = client.current
            tried = True
            try:
                client.call("add_task", worker=worker, task_id=task_id, status=status, runnable=status == "PENDING",
                            family="HaLoad", params={"id": task_id})
            except Exception:  # any failure means "not acknowledged"
                with self._lock:
                    self.log.append((time.monotonic(), url, False))
                time.sleep(self.pause * 5)
                continue
            with self._lock:
                self.acked[task_id] = status
                self.log.append((time.monotonic(), url, True))
            time.sleep(self.pause)
            return True
        if tried:  # refused or unanswered: the node may still have applied it
            with self._lock:
                self.in_doubt[task_id] = status
        return False


def lost_changes(load: AckLoad, present: dict[str, str]) -> list[str]:
    """Acknowledged changes that ``present`` (task id -> status on the leader) lacks: a task never
    seen, or one acknowledged DONE that is not DONE."""
    lost = []
    for task_id, status in sorted(load.acked.items()):
        have = present.get(task_id)
        if have is None or (status == "DONE" and have != "DONE"):
            lost.append(f"{task_id}: acknowledged {status}, leader has {have}")
    return lost


def unexplained_changes(load: AckLoad, present: dict[str, str]) -> list[str]:
    """Changes on the leader that no acknowledged or in-doubt call explains (beyond the counts)."""
    extra = []
    for task_id, have in sorted(present.items()):
        if have != load.acked.get(task_id) and have != load.in_doubt.get(task_id):
            extra.append(f"{task_id}: leader has {have}, acknowledged {load.acked.get(task_id)}, "
                         f"in doubt {load.in_doubt.get(task_id)}")
    return extra


@dataclass
class LeaderSampler:
    """Asks every node's /healthz/leader together every ``interval`` seconds while running."""

    cluster: HaCluster
    interval: float = 0.1
    samples: list[tuple[float, dict[str, Probe]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaderSampler:
        self._thread = threading.Thread(target=self._run, name="leader-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append((started, self.cluster.probe_all()))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def split_brain(self) -> list[str]:
        """Every sample in which more than one node answered 200."""
        return [f"t={t:.2f}: " + ", ".join(f"{n}={p.status} {p.body}" for n, p in probes.items())
                for t, probes in self.samples if sum(p.leading for p in probes.values()) > 1]

    def leaders(self) -> list[tuple[float, str | None]]:
        """(time, the single leader's name or None) per sample."""
        out = []
        for t, probes in self.samples:
            leading = [n for n, p in probes.items() if p.leading]
            out.append((t, leading[0] if len(leading) == 1 else None))
        return out


@contextlib.contextmanager
def running_cluster(root: Path, db: Database, start: bool = True, **kwargs: Any) -> Iterator[HaCluster]:
    """An HaCluster, started (both nodes) unless ``start`` is False, always stopped afterwards."""
    ha = HaCluster(root, db, **kwargs)
    try:
        if start:
            ha.start()
        yield ha
    finally:
        ha.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float, interval: float = 0.1) -> float:
    """Poll ``predicate``; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
