"""Why a task failed, as the scheduler holds it, for the history pages.

The history database records events (status, time, principal, host), not the error a worker
sent with a failure; the scheduler keeps that error with the task (what the visualiser's "Show
error" and the fetch_error RPC show) while the task is FAILED. The history pages show it for a
task whose latest run failed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tornado.web
from luigi.task_status import FAILED

from luigi_appliance.luigi_internals.scheduler import task_record

# The Application setting holding the lookup (app.build_app puts it there).
SETTING = "appliance_task_failures"

FailureLookup = Callable[[str], "str | None"]


def current_failure(scheduler: Any, task_id: str) -> str | None:
    """The error the worker reported for ``task_id`` if the scheduler holds it as FAILED."""
    record = task_record(scheduler, task_id)
    if record is None or record.status != FAILED or not record.expl:
        return None
    return str(record.expl)


def lookup_for(scheduler: Any) -> FailureLookup:
    return functools.partial(current_failure, scheduler)


def failure_lookup(handler: tornado.web.RequestHandler) -> FailureLookup:
    """The application's lookup; an app built without a scheduler knows no failures."""
    return handler.application.settings.get(SETTING) or (lambda task_id: None)


def summary(error: str) -> str:
    """The line that says what went wrong: a traceback's last line (the exception)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
