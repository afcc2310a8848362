"""A luigi RemoteScheduler that authenticates and verifies the scheduler's certificate.

Credentials go in the Authorization header of a requests session, never in the URL: luigi logs
the URL on every retry and puts it in RPCError messages. With ``auth = token`` (the default) the
name and password are sent once, to ``/auth/token``, and every RPC carries the short-lived bearer
token instead; it is renewed before it expires, and once more if the scheduler refuses it (key
rotated, scheduler restarted with new keys). A pipeline run thus binds to LDAP once, not per RPC.
With ``auth = oidc-exchange`` the token comes from an OAuth 2.0 token exchange (RFC 8693) of the
subject token (a JWT of an OpenID issuer, read again for each exchange) instead, renewed the
same way. A final answer (401/403, a refused exchange, an untrusted certificate, another 4xx but
408 and 429: see scheduler_errors.py) is raised at once and never retried; luigi retries the rest.

With several scheduler URLs (the nodes of an HA pair) every request, the token's included, goes
to the node that leads, as client/leader.py finds it: a standby's 503 names the leader, which is
asked at once instead of after luigi's retry wait. A token one node issued may not verify on the
other: its 401 fetches one fresh token from the node asked.

The worker's add_task calls are sent in batches, as the appliance's ``add_tasks`` (one round trip
for up to 500 tasks instead of one each, see ``AuthenticatedRemoteScheduler``), from a background
thread while the worker builds the rest of the graph; a scheduler that does not offer it (luigi's
luigid, an older appliance) gets one add_task per task.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import luigi.rpc
import luigi.scheduler
import luigi.worker
import requests
import tenacity
from luigi.task_status import RUNNING

from luigi_appliance.client.approval_wait import ApprovalWatch
from luigi_appliance.client.batch_sender import BatchSender
from luigi_appliance.client.credentials import Credentials, Identity, SubjectToken
from luigi_appliance.client.leader import Leader
from luigi_appliance.client.scheduler_errors import (
    SchedulerError,
    SchedulerRejected,
    certificate_failure,
    describe,
    exchange_refused,
    is_final,
    reason,
    refused,
    rejected,
    untrusted,
)
from luigi_appliance.client.task_batches import DEFAULT_BATCH_TASKS, Batch, TaskBuffer
from luigi_appliance.errors import ApplianceError, CredentialsError
from luigi_appliance.luigi_internals.worker import ConfiguredRemoteScheduler, LuigiSchedulerFactory

log = logging.getLogger(__name__)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant type name
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a token type name


class TokenAuth(requests.auth.AuthBase):
    """``Authorization: Bearer`` with a token from ``/auth/token``, fetched and renewed as needed:
    for the name and password (HTTP Basic), or for the subject token (a token exchange). The
    token comes from the node the request goes to (``leader``: the configured URLs)."""

    # Renew when this much of the token's lifetime is left, so a slow RPC never carries a token
    # that expires in flight.
    RENEW_FRACTION = 0.2

    TOKEN_PATH = "auth/token"  # noqa: S105 - a route

    def __init__(self, leader: Leader, identity: Identity, verify: str | bool, timeout: float):
        self._leader = leader
        self._identity = identity
        self._verify = verify
        self._timeout = timeout
        self._token: str | None = None
        self._renew_at = 0.0
        # luigi's keep-alive thread pings while the main thread schedules.
        self._lock = threading.Lock()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        where = self._leader.split(request.url or "")
        request.headers["Authorization"] = f"Bearer {self.current(where[0] if where else self._leader.current)}"
        return request

    def current(self, base: str) -> str:
        """The token, fetched from the scheduler at ``base`` if there is none or it is due for renewal."""
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._fetch(base + self.TOKEN_PATH)
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _request(self) -> dict[str, Any]:
        """The token request's own arguments: Basic credentials, or the exchange's form."""
        if isinstance(self._identity, Credentials):
            return {"auth": requests.auth.HTTPBasicAuth(self._identity.username, self._identity.password)}
        try:
            subject_token = self._identity.read()
        except CredentialsError as exc:
            # Final: luigi must not retry, and the run ends with this line (exit 3).
            raise SchedulerError(str(exc)) from None
        return {"data": {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token,
                         "subject_token_type": JWT_TOKEN_TYPE}}

    def _fetch(self, url: str) -> None:
        request = self._request()
        try:
            resp = requests.post(url, verify=self._verify, timeout=self._timeout, **request)
        except requests.RequestException as exc:
            if certificate_failure(exc) is not None:
                raise untrusted(url, self._verify, exc) from None
            # Connection problems are luigi's to retry, like any RPC's. The URL holds no secret.
            raise requests.ConnectionError(f"cannot get a token from {url}: {describe(exc)}") from exc
        if resp.status_code in (401, 403):
            raise refused(self._identity, "the token request", resp.status_code, reason(resp))
        if isinstance(self._identity, SubjectToken) and resp.status_code == 400:
            raise exchange_refused(self._identity, url, resp)
        if is_final(resp.status_code):
            raise rejected(url, resp)
        resp.raise_for_status()  # a standby's 503 among them: the leader is followed (Leader.call)
        try:
            body = resp.json()
            lifetime = float(body["expires_in"])
            token = str(body["access_token"])
        except (ValueError, TypeError, KeyError):
            raise SchedulerRejected(f"{url} answered {resp.status_code} without a token: is scheduler_url "
                                    "the appliance's?", resp.status_code) from None
        self._token = token
        self._renew_at = time.monotonic() + lifetime * (1 - self.RENEW_FRACTION)
        log.debug("Got a scheduler token valid for %.0fs", lifetime)


class AuthenticatedFetcher(luigi.rpc.RequestsFetcher):
    """luigi's fetcher, with our session settings reapplied after a fork (luigi makes a new session).

    Also the operator commands' client (luigi_appliance/operator/api_client.py): ``send`` any
    request with the same credentials, CA and refusals. A request under one of the configured
    URLs (``leader``) goes to the leader among them (client/leader.py).
    """

    def __init__(self, identity: Identity, verify: str | bool, token_auth: TokenAuth | None, leader: Leader):
        self._identity = identity
        self._verify = verify
        self._token_auth = token_auth
        self.leader = leader
        super().__init__()
        self._configure()

    @classmethod
    def for_scheduler(cls, url: str | Sequence[str], identity: Identity, ca_file: Path | None, timeout: float,
                      use_token: bool = True) -> AuthenticatedFetcher:
        """The fetcher for the scheduler at ``url`` (or the HA pair at several): a bearer token from
        its /auth/token (always, for a subject token), or Basic."""
        verify: str | bool = str(ca_file) if ca_file else True
        leader = Leader([url] if isinstance(url, str) else url)
        token_auth = (TokenAuth(leader, identity, verify, timeout)
                      if use_token or isinstance(identity, SubjectToken) else None)
        return cls(identity, verify, token_auth, leader)

    def _configure(self) -> None:
        if self._token_auth is not None:
            self.session.auth = self._token_auth
        else:
            assert isinstance(self._identity, Credentials)
            self.session.auth = requests.auth.HTTPBasicAuth(self._identity.username, self._identity.password)

    def check_pid(self) -> None:
        if os.getpid() != self.process_id:
            super().check_pid()
            self._configure()

    def fetch(self, full_url: str, body: Any, timeout: float) -> str:
        resp = self.send("POST", full_url, timeout, data=body)
        if is_final(resp.status_code):
            raise rejected(resp.url or full_url, resp)
        resp.raise_for_status()  # 5xx, 408, 429: luigi retries
        return resp.text

    def send(self, method: str, full_url: str, timeout: float, **kwargs: Any) -> requests.Response:
        """The answer to one request, from the leader (see the class); SchedulerRefused for a 401
        or 403 (naming the last part of the URL's path), SchedulerUntrusted for a certificate
        that fails verification, any other answer as it came."""
        self.check_pid()

        def attempt(url: str) -> requests.Response:
            resp = self._request(method, url, timeout, **kwargs)
            if resp.status_code == 401 and self._token_auth is not None:
                # The token was refused (expired early, keys rotated, issued by the other node of
                # an HA pair): one fresh token from this node, one retry.
                self._token_auth.invalidate()
                resp = self._request(method, url, timeout, **kwargs)
            return resp

        resp = self.leader.call(attempt, full_url)
        if resp.status_code in (401, 403):
            what = full_url.split("?", 1)[0].rsplit("/", 1)[-1]
            raise refused(self._identity, what, resp.status_code, reason(resp))
        return resp

    def _request(self, method: str, full_url: str, timeout: float, **kwargs: Any) -> requests.Response:
        try:
            # verify per request: requests lets $REQUESTS_CA_BUNDLE override a session's verify.
            return self.session.request(method, full_url, timeout=timeout, verify=self._verify, **kwargs)
        except requests.RequestException as exc:
            if certificate_failure(exc) is not None:
                raise untrusted(full_url, self._verify, exc) from None
            raise


class _NotOffered(Exception):
    """The scheduler has no add_tasks (404 or 405)."""


class _TooLarge(Exception):
    """The scheduler refused a batch as too large (413: its body limit or its batch limit)."""


_ADD_TASK_ARGUMENTS = list(inspect.signature(luigi.scheduler.Scheduler.add_task).parameters)[1:]
_GET_WORK = inspect.signature(luigi.scheduler.Scheduler.get_work)


class AuthenticatedRemoteScheduler(ConfiguredRemoteScheduler):
    """luigi's RemoteScheduler for the appliance: credentials, the CA, and batched add_task.

    add_task calls made in the process and thread that created this client (luigi's worker loop:
    scheduling, and each task's outcome) are buffered, never those of luigi's keep-alive thread or
    of task processes, and never a RUNNING report (a tracking URL is for while the task runs).
    The buffer goes as one ``add_tasks`` call when it holds ``batch_tasks`` tasks, and before any
    other RPC of that thread and at ``close``: the scheduler sees the calls in the order luigi
    made them. luigi's worker ignores add_task's answer (None), so nothing waits for it: full
    batches go from a background sender (``BatchSender``) while luigi goes on, and that thread's
    next other RPC, and ``close``, first wait until all are sent. A batch that fails (a refusal,
    the retries exhausted) stops the sending, and the worker's next add_task or other RPC raises
    its error, as if that batch had been sent there: nothing after it is sent. With
    ``batch_tasks`` 1, or once the scheduler answered add_tasks with 404 or 405, every add_task
    goes on its own, and so does a batch of one.

    The tasks add_task and add_tasks answer are held for approval are recorded in ``approvals``
    (approval_wait.py), and get_work waits for their decision (see ``get_work``).
    """

    def __init__(self, url: str | Sequence[str], identity: Identity, ca_file: Path | None,
                 connect_timeout: float, retry_attempts: int, retry_wait: float, use_token: bool = True,
                 batch_tasks: int = DEFAULT_BATCH_TASKS, approvals: ApprovalWatch | None = None):
        fetcher = AuthenticatedFetcher.for_scheduler(url, identity, ca_file, connect_timeout, use_token)
        first = fetcher.leader.urls[0]  # luigi's URLs start here; the fetcher sends them to the leader
        # A refusal or an untrusted certificate is final: retrying cannot help.
        super().__init__(first, connect_timeout, fetcher, retry_attempts, retry_wait, never_retry=SchedulerError)
        self._batch_fetcher = fetcher
        self._api_url = first + "api/"
        self._batch_url = self._api_url + "add_tasks"
        self._batch_timeout = connect_timeout
        self._batch_attempts = retry_attempts
        self._batch_wait = retry_wait
        self._buffer = TaskBuffer(batch_tasks) if batch_tasks > 1 else None
        self._sender = BatchSender(self._send)
        self._buffer_owner = (os.getpid(), threading.get_ident())
        self._offers_add_tasks = True  # until it answers 404 or 405
        self.approvals = approvals if approvals is not None else ApprovalWatch()
        self._approval_poll: float | None = None  # luigi's [worker] wait_interval, read when first needed
        self._approval_jitter = 0.0

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        """Buffer the call (see the class), or send it with luigi's add_task."""
        kwargs = {**dict(zip(_ADD_TASK_ARGUMENTS, args, strict=False)), **kwargs}
        if self._buffer is None or not self._offers_add_tasks or not self._owns_buffer() \
                or kwargs.get("status") == RUNNING:
            self.flush_tasks()
            answer = super().add_task(**kwargs)  # type: ignore[misc]
            self.approvals.record_add_task(kwargs.get("task_id"), answer)
            return answer
        for batch in self._buffer.add(kwargs):
            self._sender.submit(batch)
        return None

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        """luigi's get_work; but when it has nothing for a worker that runs nothing either while
        tasks of this run await approval, asked again (every ``[worker] wait_interval`` plus up to
        ``wait_jitter``, as luigi's keep-alive waits) until it hands out a task or none of their
        requests is pending any more. ``run --no-wait``: never asked again."""
        self.flush_tasks()
        call = _GET_WORK.bind(None, *args, **kwargs)
        idle = not call.arguments.get("current_tasks") and not call.arguments.get("assistant")
        while True:
            answer = super().get_work(*args, **kwargs)  # type: ignore[misc]
            handed = [answer.get("task_id"), *(answer.get("batch_task_ids") or [])]
            if any(handed):
                self.approvals.handed_out(t for t in handed if isinstance(t, str))
                return answer
            if (not idle or not self.approvals.wait or answer.get("worker_state") == "disabled"
                    or not self.approvals.held):
                return answer
            progress = self.approvals.follow(self._pending_requests, self._request_of)
            if not progress.waiting and not progress.released:
                return answer
            if not progress.released:  # an approved task is for the next get_work, at once
                time.sleep(self._approval_poll_seconds())

    def _pending_requests(self) -> set[str]:
        answer = self._appliance_rpc("approvals_list", {"state": "pending"})
        found = answer.get("requests") if isinstance(answer, dict) else None
        return {r["id"] for r in found or [] if isinstance(r, dict) and isinstance(r.get("id"), str)}

    def _request_of(self, request_id: str) -> dict[str, Any] | None:
        try:
            answer = self._appliance_rpc("approval_show", {"request_id": request_id})
        except SchedulerRejected as exc:
            if exc.status == 404:
                return None
            raise
        request = answer.get("request") if isinstance(answer, dict) else None
        return request if isinstance(request, dict) else None

    def _approval_poll_seconds(self) -> float:
        if self._approval_poll is None:
            config = luigi.worker.worker()
            self._approval_poll = config.wait_interval
            self._approval_jitter = config.wait_jitter
        return self._approval_poll + random.uniform(0, self._approval_jitter)  # noqa: S311 - not a secret

    def _appliance_rpc(self, method: str, arguments: dict[str, Any]) -> Any:
        """One of the appliance's own RPCs (luigi's client has no method for them), retried
        as luigi retries an RPC; its response."""
        text = self._fetch_retried(self._api_url + method, {"data": json.dumps(arguments)})
        return _rpc_response(text, method)

    def _fetch_retried(self, url: str, body: dict[str, str]) -> str:
        retrying = tenacity.Retrying(wait=tenacity.wait_fixed(self._batch_wait),
                                     stop=tenacity.stop_after_attempt(self._batch_attempts),
                                     retry=tenacity.retry_if_exception_type(requests.RequestException), reraise=True)
        try:
            return str(retrying(self._batch_fetcher.fetch, url, body, self._batch_timeout))
        except requests.RequestException as exc:
            raise _rpc_error(url, self._batch_attempts, exc) from None

    def flush_tasks(self) -> None:
        """Send what this thread's buffer holds and wait until all is sent (nothing from another
        thread or process)."""
        if self._buffer is not None and self._owns_buffer():
            batch = self._buffer.take()
            if batch is not None:
                self._sender.submit(batch)
            self._sender.drain()

    def close(self) -> None:
        try:
            self.flush_tasks()
        finally:
            if self._owns_buffer():
                self._sender.stop()
            super().close()

    def _owns_buffer(self) -> bool:
        return (os.getpid(), threading.get_ident()) == self._buffer_owner

    def _send(self, batch: Batch) -> None:
        # A lone task (each outcome while running: get_work comes next) goes as the add_task it is.
        if self._offers_add_tasks and len(batch.tasks) > 1:
            try:
                self._post(batch)
                return
            except _NotOffered:
                log.warning("the scheduler does not offer add_tasks (luigid or an older appliance): "
                            "sending one add_task per task")
                self._offers_add_tasks = False
            except _TooLarge:
                for half in batch.halves():
                    self._send(half)
                return
        for task in batch.tasks:
            answer = super().add_task(worker=batch.worker, **task)  # type: ignore[misc]
            self.approvals.record_add_task(task.get("task_id"), answer)

    def _post(self, batch: Batch) -> None:
        """One add_tasks call, retried as luigi retries an RPC (never a final answer)."""
        try:
            text = self._fetch_retried(self._batch_url, {"data": batch.data()})
        except SchedulerRejected as exc:
            if exc.status in (404, 405):
                raise _NotOffered() from None
            if exc.status == 413:
                raise _TooLarge() from None
            raise
        self.approvals.record_add_tasks(_rpc_response(text, "add_tasks"))


def _rpc_response(text: str, method: str) -> Any:
    """The ``response`` of an RPC answer."""
    try:
        return json.loads(text)["response"]
    except (ValueError, KeyError, TypeError):
        raise SchedulerError(f"the scheduler's answer to {method} is not an RPC answer: {text[:200]!r}") from None


def _rpc_error(url: str, attempts: int, exc: Exception) -> luigi.rpc.RPCError:
    """luigi's error for an RPC that failed every attempt (its worker reports these)."""
    return luigi.rpc.RPCError(f"Errors ({attempts} attempts) when connecting to remote scheduler "
                              f"{url.rsplit('/api/', 1)[0]!r}", exc)


def _flushing(name: str) -> Callable[..., Any]:
    """luigi's RPC method ``name``, sending the buffered add_task calls first."""
    luigi_method = getattr(ConfiguredRemoteScheduler, name)

    @functools.wraps(luigi_method)
    def method(self: AuthenticatedRemoteScheduler, *args: Any, **kwargs: Any) -> Any:
        self.flush_tasks()
        return luigi_method(self, *args, **kwargs)

    return method


# Every other RPC method luigi's client has (as luigi itself sets them on RemoteScheduler); those
# the class defines itself flush first themselves.
for _name in luigi.scheduler.RPC_METHODS:
    if _name not in vars(AuthenticatedRemoteScheduler):
        setattr(AuthenticatedRemoteScheduler, _name, _flushing(_name))


class _NoTracebackForSchedulerErrors(logging.Filter):
    """Drops the traceback luigi's worker logs with a scheduler failure ("unexpected framework
    error while scheduling", "Failed connecting to remote scheduler"): the command ends with a
    line saying what failed and what to do, and the traceback shows only luigi's and our code.
    luigi also logs its retries with exc_info outside any except block: "NoneType: None"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (record.exc_info[1] is None
                                or isinstance(record.exc_info[1], (SchedulerError, luigi.rpc.RPCError))):
            record.exc_info = None
            record.exc_text = None
        return True


_LUIGI_LOGGER = logging.getLogger("luigi-interface")
_NO_TRACEBACK = _NoTracebackForSchedulerErrors()


class WorkerSchedulerFactory(LuigiSchedulerFactory):
    """Hands luigi our scheduler client whatever URL luigi's own configuration names."""

    def __init__(self, make_scheduler: Any):
        self._make_scheduler = make_scheduler
        _LUIGI_LOGGER.addFilter(_NO_TRACEBACK)  # a filter is added once, however often this is called

    def create_local_scheduler(self) -> Any:
        raise ApplianceError("luigi-appliance run always uses the central scheduler; "
                             "drop --local-scheduler (use plain luigi for local runs)")

    def create_remote_scheduler(self, url: str) -> AuthenticatedRemoteScheduler:
        return self._make_scheduler()
