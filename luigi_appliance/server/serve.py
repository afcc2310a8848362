"""``luigi-appliance serve``: the scheduler process.

Owns the IOLoop, the HTTPS server, periodic pruning and signed snapshots, signals and the
systemd notifications. Blocking work (fsync of snapshots, password hashing) runs in worker threads
so the scheduler's single loop thread keeps answering RPCs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import luigi.configuration
import luigi.scheduler
import tornado.httpserver
import tornado.netutil
from tornado.ioloop import PeriodicCallback

from luigi_appliance import state, systemd, tls
from luigi_appliance.audit import AuditLog
from luigi_appliance.auth.basic import BasicAuthenticator, PasswordVerifier
from luigi_appliance.auth.ldap import LdapVerifier
from luigi_appliance.auth.local import LocalVerifier, UsersFile
from luigi_appliance.auth.throttle import LoginThrottle
from luigi_appliance.auth.tokens import BearerAuthenticator, TokenService, default_keys_file
from luigi_appliance.config import Settings, read_hmac_key
from luigi_appliance.errors import ApplianceError, StateError
from luigi_appliance.history.runtime import HistoryRuntime
from luigi_appliance.secret_values import remove_stale_temporaries
from luigi_appliance.server.app import build_app
from luigi_appliance.server.client_address import ClientAddresses
from luigi_appliance.server.cycles import CycleAwareScheduler
from luigi_appliance.server.limits import DRAIN_LIMIT, BodyLimit
from luigi_appliance.server.rpc_access import RpcAccess
from luigi_appliance.server.session import SessionAuthenticator
from luigi_appliance.server.worker_bindings import WorkerBindings

log = logging.getLogger(__name__)

PRUNE_INTERVAL_MS = 60_000


class Snapshotter:
    """Writes signed snapshots: pickled on the loop (a consistent view), written in a thread."""

    def __init__(self, scheduler: Any, store: state.StateStore, bindings: WorkerBindings):
        self._scheduler = scheduler
        self._store = store
        self._bindings = bindings
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._busy = False
        self.healthy = True

    async def periodic(self) -> None:
        if self._busy:
            return  # the previous write is still fsyncing; never queue them up
        self._busy = True
        try:
            encoded = self._store.encode(self._scheduler, self._bindings.export())
            await asyncio.get_running_loop().run_in_executor(self._writer, self._store.write, encoded)
            self._mark(True)
        except (StateError, OSError) as exc:
            self._mark(False, exc)
        finally:
            self._busy = False

    def final(self) -> None:
        self._writer.shutdown(wait=True)
        try:
            self._store.write(self._store.encode(self._scheduler, self._bindings.export()))
            log.info("Saved final state snapshot %s", self._store.path)
        except (StateError, OSError) as exc:
            log.error("Final state snapshot failed: %s", exc)

    def _mark(self, ok: bool, exc: Exception | None = None) -> None:
        if not ok:
            log.error("State snapshot failed (will retry at the next interval): %s", exc)
        elif not self.healthy:
            log.info("State snapshots are being written again")
        self.healthy = ok


@dataclass
class _TLS:
    context: ssl.SSLContext
    pair: tls.CertPair


def _isolate_luigi_config() -> None:
    """Luigi would also read /etc/luigi/luigi.cfg, ./luigi.cfg and LUIGI_CONFIG_PATH; the
    appliance's configuration is the only source of truth, so drop whatever luigi loaded."""
    parser = luigi.configuration.get_config()
    ignored = parser.sections()
    for section in ignored:
        parser.remove_section(section)
    if ignored:
        log.warning("Ignoring luigi's own configuration sections %s: configure the appliance in its "
                    "scheduler.conf instead", ", ".join(ignored))


def _state_dir_files(settings: Settings) -> list[Path]:
    """The files the scheduler itself opens in its state directory."""
    directory = settings.state.dir
    return [settings.state.snapshot_path, settings.state.generation_path, settings.state.default_key_path,
            directory / tls.SELF_SIGNED_CERT, directory / tls.SELF_SIGNED_KEY, default_keys_file(directory)]


def _prepare_state_dir(settings: Settings) -> None:
    """Create the state directory if needed; refuse one others may access, or any symbolic link
    there (the directory itself included): a link would send the scheduler's reads and writes
    to a file outside the directory it owns."""
    state.refuse_symlink(settings.state.dir)
    settings.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    mode = settings.state.dir.stat().st_mode & 0o777
    if mode & 0o007:
        raise ApplianceError(f"state directory {settings.state.dir} has mode {mode:04o}: others may "
                             "access it; expected 0750 or stricter")
    for path in _state_dir_files(settings):
        state.refuse_symlink(path)
    for path in remove_stale_temporaries(settings.state.dir):
        log.warning("Removed %s, a temporary file left by a crash while writing", path)


def _open_store(settings: Settings) -> state.StateStore:
    key = read_hmac_key(settings.state)
    if key is None:
        key = state.load_or_create_key(settings.state.default_key_path)
    return state.StateStore(state.SignedSnapshotFile(settings.state.snapshot_path, key),
                            state.GenerationFile(settings.state.generation_path),
                            refuse_stale=settings.state.refuse_stale_snapshot)


def _make_scheduler(settings: Settings, history: HistoryRuntime | None = None) -> Any:
    # Luigi's own pickle path is never used: snapshots go through SignedSnapshotFile.
    cfg = luigi.scheduler.scheduler(**{**settings.scheduler, "state_path": os.devnull})
    scheduler = CycleAwareScheduler(config=cfg, resources=dict(settings.resources))
    if history is not None:
        history.attach(scheduler)  # task history: enqueue-only on this loop, see history/service.py
    return scheduler


def _password_authenticator(settings: Settings, audit: AuditLog) -> BasicAuthenticator:
    """Names and passwords, checked by the [auth] backends in their configured order."""
    verifiers: list[PasswordVerifier] = []
    for backend in settings.auth.backends:
        if backend == "local":
            verifiers.append(LocalVerifier(UsersFile(settings.auth.users_file), settings.auth))
        else:
            verifiers.append(LdapVerifier(settings.ldap, settings.auth))
    throttle = LoginThrottle(settings.auth.failure_limit, settings.auth.failure_window, settings.auth.lockout)
    return BasicAuthenticator(verifiers, ttl=settings.auth.cache_ttl, grace=settings.ldap.outage_grace,
                              throttle=throttle, audit=audit)


def _setup_tls(settings: Settings) -> _TLS | None:
    if settings.server.insecure_http:
        log.warning("INSECURE: serving plain HTTP on %s ([server] insecure_http = true); credentials "
                    "cross this socket in clear", settings.server.listen)
        return None
    host = settings.server.listen.host
    # A wildcard address is no name a client connects to; the certificate gets the FQDN instead.
    hosts = [host] if host and not ipaddress_is_unspecified(host) else []
    pair = tls.resolve_pair(settings.tls, settings.state.dir, hosts)
    context = tls.server_context(settings.tls, pair, settings.state.dir)
    log.info("TLS certificate %s, SHA-256 fingerprint %s", pair.cert_file, tls.fingerprint(pair.cert_file))
    return _TLS(context, pair)


def ipaddress_is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _bind(settings: Settings) -> list:
    listen = settings.server.listen
    if listen.unix_path is not None:
        return [tornado.netutil.bind_unix_socket(str(listen.unix_path), mode=0o660)]
    return tornado.netutil.bind_sockets(listen.port, address=listen.host)


class _Server:
    def __init__(self, settings: Settings):
        self.settings = settings
        _prepare_state_dir(settings)
        _isolate_luigi_config()
        self.store = _open_store(settings)
        self.history = HistoryRuntime(settings.history, settings.state.dir)
        self.scheduler = _make_scheduler(settings, self.history)
        # Who owns which worker id; a binding of a worker luigi still knows is never dropped.
        self.bindings = WorkerBindings(functools.partial(state.is_live_worker, self.scheduler))
        restored = self.store.load()
        if restored is not None:
            state.restore(self.scheduler, restored)
            self.bindings.load(restored.worker_bindings)
        self.audit = AuditLog(settings.audit)
        self.authenticator = _password_authenticator(settings, self.audit)
        self.tokens = TokenService(settings.tokens.keys_file or default_keys_file(settings.state.dir),
                                   settings.tokens.ttl)
        # Tokens are checked against the accounts as of the last reload; while the directory is
        # down they keep their issued principal only if cached logins may too (outage grace).
        self.bearer = BearerAuthenticator(self.tokens, self.authenticator,
                                          keep_during_outage=settings.ldap.outage_grace > 0)
        self.tls = _setup_tls(settings)
        self.snapshotter = Snapshotter(self.scheduler, self.store, self.bindings)
        # Browser sessions from /login (in memory only); their passwords go through the same check.
        self.sessions = SessionAuthenticator(settings.session.idle_timeout, settings.session.absolute_timeout,
                                             self.authenticator, secure=self.tls is not None)
        self.app = build_app(self.scheduler, [self.sessions, self.bearer, self.authenticator],
                             tls=self.tls is not None, hsts_max_age=settings.server.hsts_max_age,
                             health_checks=[lambda: self.snapshotter.healthy, self.history.healthy],
                             history_routes=self.history.routes(),
                             tokens=self.tokens, passwords=self.authenticator,
                             rpc_access=RpcAccess(self.audit, self.bindings),
                             client_addresses=ClientAddresses(settings.server.trusted_proxies))
        self.stopping = asyncio.Event()

    def reload(self) -> None:
        """SIGHUP: re-read users and the TLS certificate; scheduler state is untouched."""
        log.info("SIGHUP: reloading users file, LDAP search password, token keys and TLS certificate")
        # Also a new account generation: each bearer token is checked against the accounts again
        # at its next use (refused for a deleted account, the new role for a changed one).
        self.authenticator.reload()
        self.tokens.reload()
        # Browser sessions carry the role they had at login: end them, so a removed account or a
        # lowered role takes effect now (browsers log in again).
        self.sessions.reload()
        if self.tls is not None:
            pair = self.tls.pair
            try:
                # The checks config check applies and a trial load first; the live context only
                # gets a pair that passed them.
                problem = tls.reload_pair(self.tls.context, self.settings.tls, pair, self.settings.state.dir)
            except (OSError, ssl.SSLError, ValueError) as exc:
                problem = f"cannot load {pair.cert_file}: {exc}"
            if problem is None:
                log.info("Reloaded TLS certificate %s (SHA-256 %s)", pair.cert_file, tls.fingerprint(pair.cert_file))
            else:
                log.error("Keeping the previous TLS certificate: %s", problem)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        headers = self.app.settings["appliance_guard"].headers
        server = tornado.httpserver.HTTPServer(
            BodyLimit(self.app, self.settings.server.max_body_bytes, headers),
            ssl_options=self.tls.context if self.tls else None,
            max_body_size=DRAIN_LIMIT,
            idle_connection_timeout=300,
            body_timeout=60,
            decompress_request=False,
        )
        self.history.start()  # never waits for the database: it may be down
        server.add_sockets(_bind(self.settings))
        scheme = "http" if self.tls is None else "https"
        log.info("Scheduler listening on %s://%s/", scheme, self.settings.server.listen)

        periodic = [
            PeriodicCallback(self.scheduler.prune, PRUNE_INTERVAL_MS),
            PeriodicCallback(self.snapshotter.periodic, self.settings.state.snapshot_interval * 1000),
        ]
        watchdog = systemd.watchdog_interval()
        if watchdog:
            # Pinged from the loop itself: a wedged loop stops the pings and systemd restarts us.
            periodic.append(PeriodicCallback(lambda: systemd.notify("WATCHDOG=1"), watchdog * 1000))
        for callback in periodic:
            callback.start()

        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        systemd.notify(f"READY=1\nSTATUS=Scheduling on {self.settings.server.listen}")

        await self.stopping.wait()
        started = time.monotonic()
        systemd.notify("STOPPING=1")
        log.info("Stopping: no new connections, saving state")
        server.stop()
        for callback in periodic:
            callback.stop()
        self.snapshotter.final()
        self.history.close()  # the queued events go to the database or the spool
        self.authenticator.close()
        self.audit.close()
        log.info("Stopped cleanly in %.2fs", time.monotonic() - started)


def serve(settings: Settings) -> int:
    """Run the scheduler until SIGTERM/SIGINT; return the process exit code."""
    async def main() -> None:
        await _Server(settings).run()

    asyncio.run(main())
    return 0
