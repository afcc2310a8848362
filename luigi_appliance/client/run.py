"""``luigi-appliance run``: a real luigi worker against the appliance, authenticated."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from luigi.execution_summary import LuigiStatusCode

from luigi_appliance.client.credentials import Credentials, load_credentials
from luigi_appliance.client.remote import AuthenticatedRemoteScheduler, WorkerSchedulerFactory
from luigi_appliance.client.settings import ClientSettings, load_client_settings
from luigi_appliance.dag.command import preflight
from luigi_appliance.luigi_internals.worker import get_params_cache, run_luigi

log = logging.getLogger(__name__)

# Exit codes, documented in README.md.
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_NOT_COMPLETE = 3  # scheduling failed, not run, or external data missing
EXIT_PREFLIGHT = 4  # the dependency preflight found a cycle or a broken graph; nothing was scheduled

_OK = {LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY}
_FAILED = {LuigiStatusCode.FAILED, LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED}


@dataclass(frozen=True)
class RunOptions:
    scheduler_url: str | None
    ca_file: Path | None
    credentials_file: Path | None
    client_config: Path | None
    luigi_args: list[str]
    dag_check: bool = True


def run(options: RunOptions) -> int:
    """Run the pipeline named in ``luigi_args``; the exit code says whether it completed."""
    overrides = {k: str(v) for k, v in (("scheduler_url", options.scheduler_url),
                                        ("ca_file", options.ca_file)) if v is not None}
    settings = load_client_settings(options.client_config, overrides)
    credentials = load_credentials(options.credentials_file, settings.credentials_file)
    # luigi's get_params, called several times per task, dominates building a large graph.
    with get_params_cache():
        return _checked_run(options, settings, credentials)


def _checked_run(options: RunOptions, settings: ClientSettings, credentials: Credentials) -> int:
    if options.dag_check and preflight(options.luigi_args) is not None:
        return EXIT_PREFLIGHT
    luigi_args = list(options.luigi_args)
    if not any(a == "--log-level" or a.startswith("--log-level=") for a in luigi_args):
        # luigi's default is DEBUG: every RPC and every dependency check ends up in the journal.
        luigi_args += ["--log-level", "INFO"]

    def make_scheduler() -> AuthenticatedRemoteScheduler:
        return AuthenticatedRemoteScheduler(settings.scheduler_url, credentials, settings.ca_file,
                                            settings.connect_timeout, settings.retry_attempts, settings.retry_wait,
                                            use_token=settings.auth == "token", batch_tasks=settings.add_task_batch)

    result = run_luigi(luigi_args, WorkerSchedulerFactory(make_scheduler))
    if result.status in _OK and result.scheduling_succeeded:
        return EXIT_OK
    if result.status in _FAILED:
        return EXIT_TASK_FAILED
    return EXIT_NOT_COMPLETE
