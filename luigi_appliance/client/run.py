"""``luigi-appliance run``: a real luigi worker against the appliance, authenticated."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from luigi.execution_summary import LuigiStatusCode

from luigi_appliance.client.api import ApplianceWorkerFactory, scheduler_client
from luigi_appliance.client.approval_wait import ApprovalWatch
from luigi_appliance.client.credentials import Identity, load_identity
from luigi_appliance.client.settings import ClientSettings, load_client_settings
from luigi_appliance.dag.command import preflight
from luigi_appliance.luigi_internals.worker import TaskAnswers, config_parser_chosen_once, get_params_cache, run_luigi

log = logging.getLogger(__name__)

# Exit codes, documented in README.md.
EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_NOT_COMPLETE = 3  # scheduling failed, not run, or external data missing
EXIT_PREFLIGHT = 4  # the dependency preflight found a cycle or a broken graph; nothing was scheduled
EXIT_AWAITING_APPROVAL = 5  # submitted; tasks await approval (run --no-wait), the rest ran

_OK = {LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY}
_FAILED = {LuigiStatusCode.FAILED, LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED}


@dataclass(frozen=True)
class RunOptions:
    scheduler_url: str | None  # one URL, or an HA pair's separated by commas or spaces
    ca_file: Path | None
    credentials_file: Path | None
    client_config: Path | None
    luigi_args: list[str]
    dag_check: bool = True
    wait: bool = True  # for the decision on tasks held for approval (False: run --no-wait)


def run(options: RunOptions) -> int:
    """Run the pipeline named in ``luigi_args``; the exit code says whether it completed."""
    overrides = {k: str(v) for k, v in (("scheduler_url", options.scheduler_url),
                                        ("ca_file", options.ca_file)) if v is not None}
    settings = load_client_settings(options.client_config, overrides)
    identity = load_identity(settings, options.credentials_file)
    # luigi's get_params and its config parser lookup, several of each per task, dominate
    # building a large graph.
    with get_params_cache(), config_parser_chosen_once():
        return _checked_run(options, settings, identity)


def _checked_run(options: RunOptions, settings: ClientSettings, identity: Identity) -> int:
    luigi_args = list(options.luigi_args)
    if not any(a == "--log-level" or a.startswith("--log-level=") for a in luigi_args):
        # luigi's default is DEBUG: every RPC and every dependency check ends up in the journal.
        luigi_args += ["--log-level", "INFO"]
    answers: dict[str, TaskAnswers] = {}
    if options.dag_check:
        checked = preflight(luigi_args)
        if not checked.ok:
            return EXIT_PREFLIGHT
        if checked.root_id is not None and checked.answers is not None:
            # The graph was walked as luigi's worker walks it: its worker takes the answers
            # instead of calling each task's complete() and requires() a second time.
            answers[checked.root_id] = checked.answers
    approvals = ApprovalWatch(wait=options.wait)
    result = run_luigi(luigi_args, ApplianceWorkerFactory(scheduler_client(settings, identity, approvals), answers))
    if approvals.ended:
        # Denied or expired: the scheduler failed the task, though this worker never ran it.
        return EXIT_TASK_FAILED
    if result.status in _OK and result.scheduling_succeeded:
        return EXIT_OK
    if result.status in _FAILED:
        return EXIT_TASK_FAILED
    if approvals.held:
        log.warning("%d task(s) await approval; run the same command again once approved (%s)",
                    len(approvals.held), ", ".join(sorted({t.request_id for t in approvals.held})))
        return EXIT_AWAITING_APPROVAL
    return EXIT_NOT_COMPLETE
