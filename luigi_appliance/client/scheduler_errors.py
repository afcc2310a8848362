"""Why a request to the scheduler failed, in one line, and whether trying again can help.

A final answer (the scheduler refused the credentials or the request, or its certificate is not
trusted) is raised as a ``SchedulerError`` and never retried: the same request with the same
credentials and the same CA gets the same answer, and luigi's retries would only spend a minute
(and, for a wrong password, count towards the account's lockout). Everything else (a connection
refused or reset, a timeout, a 5xx, 408 or 429) is luigi's to retry.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import luigi.rpc
import requests

from luigi_appliance.client.credentials import Credentials, Identity, SubjectToken
from luigi_appliance.errors import ApplianceError

# 4xx answers that are worth retrying: the server timed the request out, or asks us to slow down.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class SchedulerError(ApplianceError):
    """The scheduler could not be used for this run, and retrying will not change that."""


class SchedulerRefused(SchedulerError):
    """The scheduler answered 401/403: retrying with the same credentials cannot help."""


class SchedulerUntrusted(SchedulerError):
    """The scheduler's certificate failed verification against the configured CA."""


class SchedulerRejected(SchedulerError):
    """The scheduler answered a final 4xx other than 401/403 (404, 405, 413, ...)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class SchedulerUnreachable(SchedulerError):
    """The scheduler did not answer, every attempt luigi made (connection refused, timeouts, 5xx)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests wraps urllib3's errors, which wrap the socket's."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        pending += [a for a in current.args if isinstance(a, BaseException)]
        pending += [reason if isinstance(reason, BaseException) else None, current.__cause__, current.__context__]


def certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc``, if that is what it is."""
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)


def describe(exc: BaseException) -> str:
    """What went wrong with a request, in words (connection refused, host not found, ...)."""
    causes = list(_chain(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {cause.verify_message} ({cause.reason})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"host name not found ({cause.strerror})"
    for cause in causes:
        if isinstance(cause, (requests.Timeout, TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    return str(causes[-1]) or type(causes[-1]).__name__


def untrusted(url: str, verify: str | bool, exc: BaseException) -> SchedulerUntrusted:
    """The error for a certificate that failed verification on the way to ``url``."""
    trusted = (f"the CA certificate(s) in {verify} (ca_file)" if isinstance(verify, str)
               else "the system's CA certificates (no ca_file set)")
    return SchedulerUntrusted(f"the certificate of {url} is not trusted by {trusted}: {describe(exc)}; "
                              "give the CA that signed the scheduler's certificate with --ca-file or "
                              "ca_file in client.conf")


def refused(identity: Identity, what: str, status: int, why: str | None = None) -> SchedulerRefused:
    """The error for a 401/403 answer to ``what``, naming the account (never its password) or
    where the subject token came from (never the token), and ``why``: the scheduler's reason,
    when it gave one."""
    because = f": {why[:500]}" if why else ""
    if isinstance(identity, SubjectToken):
        who = f"the identity exchanged from {identity.source}"
        if status == 401:
            return SchedulerRefused(f"scheduler refused {what} for {who}: 401 authentication failed{because}; "
                                    "the scheduler no longer accepts the token it exchanged")
        return SchedulerRefused(f"scheduler refused {what} for {who}: {status} permission denied{because}")
    credentials: Credentials = identity
    if status == 401:
        where = f"credentials file {credentials.source}" if credentials.source else "the credentials"
        return SchedulerRefused(f"scheduler refused {what} for user {credentials.username!r}: "
                                f"401 authentication failed{because}; check the name and password in {where}")
    return SchedulerRefused(f"scheduler refused {what} for user {credentials.username!r}: "
                            f"{status} permission denied{because}")


def exchange_refused(subject: SubjectToken, url: str, resp: requests.Response) -> SchedulerRefused:
    """The error for a token exchange the scheduler refused (RFC 6749 section 5.2's answer: the
    error code and its description, which names the refusal class, never the token)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return SchedulerRefused(f"scheduler answered {resp.status_code} to the token exchange at {url}: "
                                f"{reason(resp) or resp.reason}")
    description = body.get("error_description")
    said = f": {description[:500]}" if isinstance(description, str) and description else ""
    return SchedulerRefused(f"scheduler refused the token exchange of the subject token from {subject.source}: "
                            f"{body['error'][:100]}{said}; check that the token's issuer and audience are "
                            "those of an [oidc.NAME] section with token_exchange = true on the scheduler")


def reason(resp: requests.Response) -> str | None:
    """The reason in the appliance's refusal body ``{"error": ..., "reason": ...}``, if any."""
    try:
        body = resp.json()
    except ValueError:
        return None
    why = body.get("reason") if isinstance(body, dict) else None
    return why if isinstance(why, str) else None


def is_final(status: int) -> bool:
    """Whether an HTTP status answers for good: a 4xx other than 408 and 429."""
    return 400 <= status < 500 and status not in RETRYABLE_CLIENT_ERRORS


def rejected(url: str, resp: requests.Response) -> SchedulerRejected:
    """The error for a final 4xx answer (not 401/403) from ``url``."""
    text = resp.text.strip()
    why = reason(resp) or (text.splitlines()[0][:200] if text else resp.reason)
    return SchedulerRejected(f"scheduler answered {resp.status_code} to {url}: {why}", resp.status_code)


def unreachable(exc: luigi.rpc.RPCError) -> SchedulerUnreachable:
    """The error for an RPC that failed every attempt luigi made (``exc`` names the URL)."""
    cause = exc.sub_exception
    why = f": {describe(cause)}" if cause is not None else ""
    return SchedulerUnreachable(f"cannot reach the scheduler: {exc}{why}; is it running, and is scheduler_url "
                                "(client.conf or --scheduler-url) right?")
