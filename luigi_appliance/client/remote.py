"""A luigi RemoteScheduler that authenticates and verifies the scheduler's certificate.

Credentials go in the Authorization header of a requests session, never in the URL: luigi logs
the URL on every retry and puts it in RPCError messages.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import luigi.interface
import luigi.rpc
import requests
import tenacity

from luigi_appliance.client.credentials import Credentials
from luigi_appliance.errors import ApplianceError

log = logging.getLogger(__name__)


class SchedulerRefused(ApplianceError):
    """The scheduler answered 401/403: retrying with the same credentials cannot help."""


class _Fetcher(luigi.rpc.RequestsFetcher):
    """luigi's fetcher, with our session settings reapplied after a fork (luigi makes a new session)."""

    def __init__(self, credentials: Credentials, verify: str | bool):
        self._credentials = credentials
        self._verify = verify
        super().__init__()
        self._configure()

    def _configure(self) -> None:
        self.session.auth = requests.auth.HTTPBasicAuth(self._credentials.username, self._credentials.password)

    def check_pid(self) -> None:
        if os.getpid() != self.process_id:
            super().check_pid()
            self._configure()

    def fetch(self, full_url: str, body: Any, timeout: float) -> str:
        self.check_pid()
        try:
            # verify per request: requests lets $REQUESTS_CA_BUNDLE override a session's verify.
            resp = self.session.post(full_url, data=body, timeout=timeout, verify=self._verify)
            resp.raise_for_status()
            return resp.text
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                reason = "authentication failed" if status == 401 else "permission denied"
                raise SchedulerRefused(f"scheduler refused {full_url.rsplit('/', 1)[-1]} for user "
                                       f"{self._credentials.username!r}: {status} {reason}") from None
            raise


class AuthenticatedRemoteScheduler(luigi.rpc.RemoteScheduler):
    def __init__(self, url: str, credentials: Credentials, ca_file: Path | None,
                 connect_timeout: float, retry_attempts: int, retry_wait: float):
        super().__init__(url=url, connect_timeout=connect_timeout)
        self._rpc_retry_attempts = retry_attempts
        self._rpc_retry_wait = retry_wait
        self._fetcher = _Fetcher(credentials, str(ca_file) if ca_file else True)

    def _get_retryer(self) -> tenacity.Retrying:
        return super()._get_retryer().copy(retry=tenacity.retry_if_not_exception_type(SchedulerRefused))


class WorkerSchedulerFactory(luigi.interface._WorkerSchedulerFactory):
    """Hands luigi our scheduler client whatever URL luigi's own configuration names."""

    def __init__(self, make_scheduler: Any):
        self._make_scheduler = make_scheduler

    def create_local_scheduler(self) -> Any:
        raise ApplianceError("luigi-appliance run always uses the central scheduler; "
                             "drop --local-scheduler (use plain luigi for local runs)")

    def create_remote_scheduler(self, url: str) -> AuthenticatedRemoteScheduler:
        return self._make_scheduler()
