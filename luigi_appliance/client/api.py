"""luigi's ``build()`` from Python against the appliance, with ``run``'s client and preflight.

    import luigi_appliance.client

    luigi_appliance.client.build([DailyReport(date=day)], workers=2)      # True if scheduled

    # or luigi's own build() with the appliance's worker-scheduler factory:
    luigi.build([DailyReport(date=day)], worker_scheduler_factory=luigi_appliance.client.scheduler_factory())

Both find the scheduler, its CA and the worker's credentials as ``luigi-appliance run`` does
(client.conf from ``client_config``, $LUIGI_APPLIANCE_CLIENT_CONFIG or
/etc/luigi-appliance/client.conf; credentials from ``credentials_file``,
$LUIGI_APPLIANCE_CREDENTIALS, client.conf's ``credentials_file`` or systemd's credentials
directory, or with client.conf's ``auth = oidc-exchange`` its subject token). docs/python-api.md
has the details.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import luigi

from luigi_appliance.client.approval_wait import ApprovalWatch
from luigi_appliance.client.credentials import Identity, load_identity
from luigi_appliance.client.remote import AuthenticatedRemoteScheduler, WorkerSchedulerFactory
from luigi_appliance.client.settings import ClientSettings, load_client_settings
from luigi_appliance.dag.check import DagReport, check_task
from luigi_appliance.dag.render import render_problems
from luigi_appliance.errors import ApplianceError
from luigi_appliance.luigi_internals.worker import (
    AnsweringWorker,
    TaskAnswers,
    config_parser_chosen_once,
    get_params_cache,
)


class DagCheckFailed(ApplianceError):
    """``build``'s preflight found problems in a task's graph; nothing was scheduled."""

    def __init__(self, report: DagReport):
        super().__init__(f"the dependency preflight found problems in {report.name(report.root_id)}'s graph; "
                         f"nothing was scheduled:\n{render_problems(report)}")
        self.report = report


class ApplianceWorkerFactory(WorkerSchedulerFactory):
    """luigi's worker-scheduler factory for the appliance: the authenticated scheduler client,
    and a worker that uses the preflight's answers (``answers``: root task id -> the walk's
    complete()/deps() answers) instead of asking those tasks again."""

    def __init__(self, make_scheduler: Callable[[], AuthenticatedRemoteScheduler],
                 answers: dict[str, TaskAnswers] | None = None):
        super().__init__(make_scheduler)
        self.answers = dict(answers or {})

    def create_worker(self, scheduler: Any, worker_processes: int, assistant: bool = False) -> AnsweringWorker:
        answers, self.answers = self.answers, {}  # a walk's answers are for one worker's add()
        return AnsweringWorker(scheduler=scheduler, worker_processes=worker_processes, assistant=assistant,
                               answers_by_root=answers)


def scheduler_client(settings: ClientSettings, identity: Identity,
                     approvals: ApprovalWatch | None = None) -> Callable[[], AuthenticatedRemoteScheduler]:
    """What makes ``run``'s scheduler client from client.conf's settings (``approvals``: where
    it records the tasks held for approval; None: a watch of its own, waiting for decisions)."""

    def make_scheduler() -> AuthenticatedRemoteScheduler:
        return AuthenticatedRemoteScheduler(settings.scheduler_urls, identity, settings.ca_file,
                                            settings.connect_timeout, settings.retry_attempts, settings.retry_wait,
                                            use_token=settings.auth == "token", batch_tasks=settings.add_task_batch,
                                            approvals=approvals)

    return make_scheduler


def scheduler_factory(*, client_config: Path | None = None, credentials_file: Path | None = None,
                      scheduler_url: str | None = None, ca_file: Path | None = None) -> ApplianceWorkerFactory:
    """A worker-scheduler factory for ``luigi.build(tasks, worker_scheduler_factory=...)``.

    Settings and credentials are looked up as ``luigi-appliance run`` looks them up (the
    arguments are its ``--client-config``, ``--credentials-file``, ``--scheduler-url`` (one URL,
    or an HA pair's, separated by commas or spaces) and ``--ca-file``); errors are raised here,
    before luigi starts, as ``ApplianceError`` with one line naming the file or key. luigi's
    ``local_scheduler=True`` is refused: the appliance's client always talks to the central
    scheduler. No dependency preflight (``build`` has one).
    """
    overrides = {name: str(value) for name, value in (("scheduler_url", scheduler_url), ("ca_file", ca_file))
                 if value is not None}
    settings = load_client_settings(Path(client_config) if client_config else None, overrides)
    identity = load_identity(settings, Path(credentials_file) if credentials_file else None)
    return ApplianceWorkerFactory(scheduler_client(settings, identity))


def build(tasks: Iterable[luigi.Task], *, client_config: Path | None = None, credentials_file: Path | None = None,
          scheduler_url: str | None = None, ca_file: Path | None = None, dag_check: bool = True,
          detailed_summary: bool = False, **env_params: Any) -> Any:
    """``luigi.build(tasks, ...)`` against the appliance, as ``luigi-appliance run`` runs one task.

    The keyword arguments after the client's are luigi's own (``workers=4``, ``log_level="INFO"``,
    ``detailed_summary=True``...; see ``luigi.build``); the answer is luigi's: True when every
    task was scheduled (or its LuigiRunResult with ``detailed_summary``). With ``dag_check``
    (the default) each task's graph is first checked as ``run`` checks it, walking below
    incomplete tasks only; problems raise ``DagCheckFailed`` (its ``report`` has them) before
    anything is scheduled, and the walk's complete() and deps() answers are handed to luigi's
    worker, which then does not ask those tasks again.
    """
    tasks = list(tasks)
    factory = scheduler_factory(client_config=client_config, credentials_file=credentials_file,
                                scheduler_url=scheduler_url, ca_file=ca_file)
    with ExitStack() as stack:
        stack.enter_context(config_parser_chosen_once())
        stack.enter_context(get_params_cache())
        if dag_check:
            for task in tasks:
                report = check_task(task, as_worker=True)
                if not report.ok:
                    raise DagCheckFailed(report)
                factory.answers[task.task_id] = report.answers
        return luigi.build(tasks, worker_scheduler_factory=factory, detailed_summary=detailed_summary, **env_params)
