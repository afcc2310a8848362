"""``luigi-appliance serve``: the scheduler process.

Composes the daemon's parts from the settings (``_Server``), in the order they start; SIGHUP
reloads them in that order, SIGTERM/SIGINT closes them in reverse (lifecycle.py). Owns the
IOLoop, the HTTPS listener, signals and the systemd notifications. Blocking work (fsync of
snapshots, password hashing) runs in worker threads so the scheduler's single loop thread keeps
answering RPCs.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import socket
import time

import luigi.configuration
import luigi.scheduler
import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.ioloop import PeriodicCallback

from luigi_appliance import state, systemd
from luigi_appliance.approvals.notify import NotifyCommand
from luigi_appliance.approvals.rules import ApprovalRules
from luigi_appliance.audit.signing import open_audit_log
from luigi_appliance.auth.basic import password_authenticator
from luigi_appliance.auth.oidc.issuers import issuers_for
from luigi_appliance.auth.registry import SchemeContext, credential_schemes
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha.node import HaNode
from luigi_appliance.history.runtime import HistoryRuntime
from luigi_appliance.luigi_internals.scheduler import is_live_worker, prometheus_registry
from luigi_appliance.metrics.collectors import Sources, collectors
from luigi_appliance.metrics.registry import SchedulerMetrics
from luigi_appliance.scheduler import Scheduler
from luigi_appliance.scheduler.approval_gate import Approvals
from luigi_appliance.server.app import build_app
from luigi_appliance.server.certificate import ServerCertificate
from luigi_appliance.server.client_address import ClientAddresses
from luigi_appliance.server.leadership import Leadership, Solo
from luigi_appliance.server.lifecycle import Component, Components, Hooks
from luigi_appliance.server.limits import DRAIN_LIMIT, BodyLimit
from luigi_appliance.server.page_header import banner_of
from luigi_appliance.server.rpc_access import RpcAccess
from luigi_appliance.server.snapshots import Snapshotter
from luigi_appliance.server.state_dir import open_store, prepare_state_dir
from luigi_appliance.server.worker_bindings import WorkerBindings
from luigi_appliance.state_settings import read_hmac_key

log = logging.getLogger(__name__)

PRUNE_INTERVAL_MS = 60_000


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


def _make_scheduler(settings: Settings, history: HistoryRuntime, metrics: SchedulerMetrics) -> Scheduler:
    # Luigi's own pickle path is never used: snapshots go through SignedSnapshotFile. The task
    # history is enqueue-only on this loop (history/recorder.py); record_task_history only
    # answers the has_task_history RPC (the visualiser shows its history link when it is true).
    task_history = history.task_history
    cfg = luigi.scheduler.scheduler(**{**settings.scheduler, "state_path": os.devnull,
                                       "record_task_history": task_history is not None})
    # Approval gates ([approval.NAME], [approvals] propose_only): none configured, none applied.
    gates = Approvals(ApprovalRules(settings.approvals)) if settings.approvals.enabled else None
    return Scheduler(config=cfg, resources=dict(settings.resources), task_history_impl=task_history,
                     get_work_timer=metrics.get_work_timed, approvals=gates)


def _bind(settings: Settings) -> list[socket.socket]:
    """The listening sockets, or an error naming the address, where it was configured and why."""
    listen = settings.server.listen
    try:
        if listen.unix_path is not None:
            return [tornado.netutil.bind_unix_socket(str(listen.unix_path), mode=0o660)]
        assert listen.port is not None  # a TCP listen address always has one (server/settings.py)
        return tornado.netutil.bind_sockets(listen.port, address=listen.host)
    except (OSError, ValueError) as exc:  # ValueError: tornado's "exists and is not a socket"
        origin = settings.effective.get(("server", "listen"), ("", "default"))[1]
        where = "the command line" if origin.startswith("<command line>") else origin
        code = exc.errno if isinstance(exc, OSError) else None
        hint = {errno.EADDRINUSE: "another process listens there (ss -ltnp shows which); stop it or choose "
                                  "another address",
                errno.EADDRNOTAVAIL: "no interface of this host has that address",
                errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE (or another port)"}.get(code or 0)
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise ApplianceError(f"cannot listen on {listen} ([server] listen, {where}): {why}"
                             f"{'; ' + hint if hint else ''}") from None


def _ping_watchdog() -> None:
    systemd.notify("WATCHDOG=1")


class _Housekeeping(Component):
    """luigi's pruning of workers and tasks, and the systemd watchdog pings, on the loop."""

    name = "housekeeping"

    def __init__(self, scheduler: Scheduler, leadership: Leadership):
        def prune() -> None:
            # Only the leader prunes (a journalled change, scheduler/journalled.py): a standby
            # applies the leader's prunes with the leader's clock.
            if leadership.serving():
                scheduler.prune()

        self._timers = [PeriodicCallback(prune, PRUNE_INTERVAL_MS)]
        watchdog = systemd.watchdog_interval()
        if watchdog:
            # Pinged from the loop itself: a wedged loop stops the pings and systemd restarts us.
            self._timers.append(PeriodicCallback(_ping_watchdog, watchdog * 1000))

    def start(self) -> None:
        for timer in self._timers:
            timer.start()

    def close(self) -> None:
        for timer in self._timers:
            timer.stop()


class _Listener(Component):
    """The HTTP(S) server on the configured socket: the last part to start, the first to stop."""

    name = "listener"

    def __init__(self, settings: Settings, app: tornado.web.Application, certificate: ServerCertificate | None,
                 sockets: list[socket.socket]):
        self._settings = settings
        self._certificate = certificate
        self._sockets = sockets
        headers = app.settings["appliance_guard"].headers
        self._server = tornado.httpserver.HTTPServer(
            BodyLimit(app, settings.server.max_body_bytes, headers),
            ssl_options=certificate.context if certificate else None,
            max_body_size=DRAIN_LIMIT,
            idle_connection_timeout=300,
            body_timeout=60,
            decompress_request=False,
        )

    def start(self) -> None:
        self._server.add_sockets(self._sockets)
        scheme = "http" if self._certificate is None else "https"
        log.info("Scheduler listening on %s://%s/", scheme, self._settings.server.listen)

    def close(self) -> None:
        self._server.stop()  # no new connections


class _Server:
    """The daemon, composed from the settings: its parts in ``components``, in start order."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.components = Components()
        # Bound before anything else: a second scheduler (or another program) on the address
        # stops this one before it reads or writes any state. Connections wait in the backlog
        # until the listener starts.
        sockets = _bind(settings)
        prepare_state_dir(settings)
        _isolate_luigi_config()
        self.store = open_store(settings)
        self.history = HistoryRuntime(settings.history, settings.state.dir)
        # What /metrics serves: fed by the guard, the scheduler and the credential schemes.
        self.metrics = SchedulerMetrics()
        self.scheduler = _make_scheduler(settings, self.history, self.metrics)
        # Who owns which worker id; a binding of a worker luigi still knows is never dropped.
        self.bindings = WorkerBindings(functools.partial(is_live_worker, self.scheduler))
        self.audit = open_audit_log(settings)
        self.components.add(Hooks("audit", on_close=self.audit.close))  # closed last: the others may still audit
        # [ha]: the state lives in PostgreSQL (snapshot + journal), loaded by the node once the
        # loop runs; without it, in the signed snapshot file of the state directory.
        self.ha = self._ha_node(settings) if settings.ha.enabled else None
        self.leadership: Leadership = self.ha if self.ha is not None else Solo()
        if self.ha is None:
            restored = self.store.load()
            if restored is not None:
                state.restore(self.scheduler, restored)
                self.bindings.load(restored.worker_bindings)
        if self.scheduler.approvals is not None:
            self._wire_approvals(self.scheduler.approvals)
        # Names and passwords, checked by the [auth] backends (auth/registry.py) in their order.
        self.authenticator = password_authenticator(settings, self.audit, self.metrics)
        self.components.add(Hooks("passwords", on_close=self.authenticator.close))
        self.tls = ServerCertificate.for_settings(settings)
        # With [ha] the node's compaction writes the snapshots (into PostgreSQL) instead.
        self.snapshotter: Snapshotter | None = None
        snapshot_stats = self.ha.snapshot_stats if self.ha is not None else None
        if snapshot_stats is None:
            self.snapshotter = Snapshotter(self.scheduler, self.store, self.bindings, settings.state.snapshot_interval)
            snapshot_stats = self.snapshotter.stats
        # Session cookie, bearer token, Basic (auth/registry.py SCHEMES); every password any of
        # them takes goes through the same check. On reload sessions end (they carry the role
        # they had at login), bearer re-reads its keys, and Basic its backends: a new account
        # generation, against which each bearer token is checked again at its next use.
        self.schemes = credential_schemes(SchemeContext(settings, self.authenticator, secure=self.tls is not None,
                                                        outcomes=self.metrics))
        for name, scheme in self.schemes.items():
            self.components.add(Hooks(f"{name} scheme", on_reload=scheme.reload))
        if self.tls is not None:
            self.components.add(self.tls)
        self.oidc = issuers_for(settings)  # [oidc.NAME]: None when no issuer is configured
        if self.oidc is not None:
            self.components.add(Hooks("oidc issuers", on_reload=self.oidc.reload))
        self.components.add(Hooks("history", on_start=self.history.start, on_close=self.history.close,
                                  on_healthy=self.history.healthy))
        # Closed before the history (its final snapshot first) and after the listener.
        if self.snapshotter is not None:
            self.components.add(self.snapshotter)
        if self.ha is not None:
            self.components.add(self.ha)  # its close hands the lease over, after the listener stopped
        self.components.add(_Housekeeping(self.scheduler, self.leadership))
        for collector in collectors(Sources(self.scheduler, self.history.status, snapshot_stats,
                                            self.audit.stats, self.authenticator.throttle, self.leadership.status)):
            self.metrics.add(collector)
        luigi_metrics = prometheus_registry(self.scheduler)  # [scheduler] metrics_collector = prometheus
        if luigi_metrics is not None:
            self.metrics.add(luigi_metrics)
        self.app = build_app(self.scheduler, list(self.schemes.values()),
                             tls=self.tls is not None, hsts_max_age=settings.server.hsts_max_age,
                             health_checks=[self.components.healthy],
                             history_routes=self.history.routes(),
                             rpc_access=RpcAccess(self.audit, self.bindings),
                             client_addresses=ClientAddresses(settings.server.trusted_proxies),
                             banner=banner_of(settings.server), metrics=self.metrics, oidc=self.oidc,
                             fresh_login_window=settings.approvals.settings.fresh_login,
                             leadership=self.leadership)
        self.components.add(_Listener(settings, self.app, self.tls, sockets))
        self.stopping = asyncio.Event()

    def _ha_node(self, settings: Settings) -> HaNode:
        key = read_hmac_key(settings.state)
        assert key is not None  # [ha] requires a configured [state] key (ha/settings.py)
        node = HaNode(settings.ha, self.scheduler, self.bindings, key, settings.state.dir, audit=self.audit)
        node.on_commit = self.metrics.journal_committed
        return node

    def _wire_approvals(self, approvals: Approvals) -> None:
        """Approval events to the audit trail, and new requests to [approvals] notify_command."""
        approvals.events.audit = self.audit
        command = self.settings.approvals.settings.notify_command
        if command is not None:
            notifier = NotifyCommand(command, self.settings.approvals.settings.notify_timeout)
            approvals.events.notifier = notifier
            self.components.add(Hooks("approval notifications", on_close=notifier.close))

    def reload(self) -> None:
        """SIGHUP: re-read users and the TLS certificate; scheduler state is untouched."""
        log.info("SIGHUP: reloading users file, LDAP search password, token keys and TLS certificate")
        self.components.reload()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.components.start()  # the history never waits for the database: it may be down
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        systemd.notify(f"READY=1\nSTATUS=Scheduling on {self.settings.server.listen}")

        await self.stopping.wait()
        started = time.monotonic()
        systemd.notify("STOPPING=1")
        log.info("Stopping: no new connections, saving state")
        if self.ha is not None:
            await self.ha.drain(timeout=5.0)
        # Listener, timers, final snapshot, history (its queue to the database or the spool),
        # password backends, audit trail.
        self.components.close()
        log.info("Stopped cleanly in %.2fs", time.monotonic() - started)


def serve(settings: Settings) -> int:
    """Run the scheduler until SIGTERM/SIGINT; return the process exit code."""
    async def main() -> None:
        await _Server(settings).run()

    asyncio.run(main())
    return 0
