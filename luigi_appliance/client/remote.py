"""A luigi RemoteScheduler that authenticates and verifies the scheduler's certificate.

Credentials go in the Authorization header of a requests session, never in the URL: luigi logs
the URL on every retry and puts it in RPCError messages. With ``auth = token`` (the default) the
name and password are sent once, to ``/auth/token``, and every RPC carries the short-lived bearer
token instead; it is renewed before it expires, and once more if the scheduler refuses it (key
rotated, scheduler restarted with new keys). A pipeline run thus binds to LDAP once, not per RPC.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import luigi.rpc
import requests

from luigi_appliance.client.credentials import Credentials
from luigi_appliance.errors import ApplianceError
from luigi_appliance.luigi_internals.worker import ConfiguredRemoteScheduler, LuigiSchedulerFactory

log = logging.getLogger(__name__)


class SchedulerRefused(ApplianceError):
    """The scheduler answered 401/403: retrying with the same credentials cannot help."""


def refused(credentials: Credentials, what: str, status: int) -> SchedulerRefused:
    """The error for a 401/403 answer to ``what``, naming the account (never its password)."""
    reason = "authentication failed" if status == 401 else "permission denied"
    return SchedulerRefused(f"scheduler refused {what} for user {credentials.username!r}: {status} {reason}")


class TokenAuth(requests.auth.AuthBase):
    """``Authorization: Bearer`` with a token from ``/auth/token``, fetched and renewed as needed."""

    # Renew when this much of the token's lifetime is left, so a slow RPC never carries a token
    # that expires in flight.
    RENEW_FRACTION = 0.2

    def __init__(self, token_url: str, credentials: Credentials, verify: str | bool, timeout: float):
        self._url = token_url
        self._credentials = credentials
        self._verify = verify
        self._timeout = timeout
        self._token: str | None = None
        self._renew_at = 0.0
        # luigi's keep-alive thread pings while the main thread schedules.
        self._lock = threading.Lock()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.current()}"
        return request

    def current(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self) -> None:
        basic = requests.auth.HTTPBasicAuth(self._credentials.username, self._credentials.password)
        try:
            resp = requests.post(self._url, auth=basic, verify=self._verify, timeout=self._timeout)
        except requests.RequestException as exc:
            # Connection problems are luigi's to retry, like any RPC's.
            # The URL holds no secret; the exception text says why (e.g. CERTIFICATE_VERIFY_FAILED).
            raise requests.ConnectionError(f"cannot get a token from {self._url}: {exc}") from None
        if resp.status_code in (401, 403):
            raise refused(self._credentials, "the token request", resp.status_code)
        resp.raise_for_status()
        body = resp.json()
        lifetime = float(body["expires_in"])
        self._token = body["access_token"]
        self._renew_at = time.monotonic() + lifetime * (1 - self.RENEW_FRACTION)
        log.debug("Got a scheduler token valid for %.0fs", lifetime)


class _Fetcher(luigi.rpc.RequestsFetcher):
    """luigi's fetcher, with our session settings reapplied after a fork (luigi makes a new session)."""

    def __init__(self, credentials: Credentials, verify: str | bool, token_auth: TokenAuth | None):
        self._credentials = credentials
        self._verify = verify
        self._token_auth = token_auth
        super().__init__()
        self._configure()

    def _configure(self) -> None:
        if self._token_auth is not None:
            self.session.auth = self._token_auth
        else:
            self.session.auth = requests.auth.HTTPBasicAuth(self._credentials.username, self._credentials.password)

    def check_pid(self) -> None:
        if os.getpid() != self.process_id:
            super().check_pid()
            self._configure()

    def fetch(self, full_url: str, body: Any, timeout: float) -> str:
        self.check_pid()
        # verify per request: requests lets $REQUESTS_CA_BUNDLE override a session's verify.
        resp = self.session.post(full_url, data=body, timeout=timeout, verify=self._verify)
        if resp.status_code == 401 and self._token_auth is not None:
            # The token was refused (expired early, keys rotated): one fresh token, one retry.
            self._token_auth.invalidate()
            resp = self.session.post(full_url, data=body, timeout=timeout, verify=self._verify)
        if resp.status_code in (401, 403):
            raise refused(self._credentials, full_url.rsplit("/", 1)[-1], resp.status_code)
        resp.raise_for_status()
        return resp.text


class AuthenticatedRemoteScheduler(ConfiguredRemoteScheduler):
    def __init__(self, url: str, credentials: Credentials, ca_file: Path | None,
                 connect_timeout: float, retry_attempts: int, retry_wait: float, use_token: bool = True):
        verify: str | bool = str(ca_file) if ca_file else True
        token_url = url.rstrip("/") + "/auth/token"
        token_auth = TokenAuth(token_url, credentials, verify, connect_timeout) if use_token else None
        # A refusal is final: retrying with the same credentials cannot help.
        super().__init__(url, connect_timeout, _Fetcher(credentials, verify, token_auth), retry_attempts,
                         retry_wait, never_retry=SchedulerRefused)


class WorkerSchedulerFactory(LuigiSchedulerFactory):
    """Hands luigi our scheduler client whatever URL luigi's own configuration names."""

    def __init__(self, make_scheduler: Any):
        self._make_scheduler = make_scheduler

    def create_local_scheduler(self) -> Any:
        raise ApplianceError("luigi-appliance run always uses the central scheduler; "
                             "drop --local-scheduler (use plain luigi for local runs)")

    def create_remote_scheduler(self, url: str) -> AuthenticatedRemoteScheduler:
        return self._make_scheduler()
