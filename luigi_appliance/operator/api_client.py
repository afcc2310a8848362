"""The scheduler's API as the operator commands call it.

Settings and credentials come exactly as for ``run`` (client.conf, ``--credentials-file``,
``$LUIGI_APPLIANCE_CREDENTIALS``, client.conf ``credentials_file``, ``$CREDENTIALS_DIRECTORY``),
and every request goes through the worker's authenticated fetcher (client/remote.py): the same
bearer token or Basic credentials, the same CA, the same one-line refusal for a 401 or 403.
Nothing is retried: an operator at a prompt wants the answer or the reason now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from luigi_appliance.client.credentials import Identity, load_identity
from luigi_appliance.client.remote import AuthenticatedFetcher
from luigi_appliance.client.scheduler_errors import describe, reason
from luigi_appliance.client.settings import load_client_settings
from luigi_appliance.errors import ApplianceError


@dataclass(frozen=True)
class ConnectionOptions:
    """The command-line options every operator command takes (None: from client.conf)."""

    scheduler_url: str | None = None
    ca_file: Path | None = None
    credentials_file: Path | None = None
    client_config: Path | None = None


def answer_error(resp: requests.Response, what: str) -> ApplianceError:
    """The error for an answer other than the one expected to ``what``."""
    why = reason(resp) or resp.text[:200].strip() or resp.reason
    return ApplianceError(f"scheduler answered {resp.status_code} to {what}: {why}")


class ApiClient:
    """One scheduler, one account; ``rpc`` for luigi's methods, ``post``/``get`` for the
    appliance's own routes."""

    def __init__(self, options: ConnectionOptions):
        overrides = {k: str(v) for k, v in (("scheduler_url", options.scheduler_url),
                                            ("ca_file", options.ca_file)) if v is not None}
        settings = load_client_settings(options.client_config, overrides)
        self.credentials: Identity = load_identity(settings, options.credentials_file)
        self.url = settings.scheduler_url
        self._timeout = settings.connect_timeout
        # Every node of an [ha] pair: the fetcher follows the standby's pointer to the leader.
        self._fetcher = AuthenticatedFetcher.for_scheduler(settings.scheduler_urls, self.credentials, settings.ca_file,
                                                           settings.connect_timeout, settings.auth == "token")

    def rpc(self, method: str, **arguments: Any) -> Any:
        """luigi's RPC ``method`` with ``arguments``, sent as luigi's client sends it; its response."""
        resp = self._send("POST", f"api/{method}", data={"data": json.dumps(arguments)})
        if resp.status_code != 200:
            raise answer_error(resp, method)
        try:
            return resp.json()["response"]
        except (ValueError, KeyError, TypeError):
            raise ApplianceError(f"scheduler's answer to {method} is not an RPC answer: {resp.text[:200]}") from None

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        """POST ``body`` as JSON to the appliance route ``path``; the answer, whatever its status
        (but a refusal: SchedulerRefused)."""
        return self._send("POST", path, data=json.dumps(body))

    def get(self, path: str, params: dict[str, Any]) -> requests.Response:
        """GET the route ``path``; the answer, whatever its status (but a refusal)."""
        return self._send("GET", path, params=params)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._fetcher.send(method, self.url + path, self._timeout, **kwargs)
        except requests.HTTPError as exc:  # the token request (its refusals are SchedulerRefused)
            if exc.response is None:
                raise ApplianceError(f"scheduler at {self.url}: {exc}") from None
            raise answer_error(exc.response, "the token request") from None
        except requests.RequestException as exc:
            raise ApplianceError(f"cannot reach the scheduler at {self.url}: {describe(exc)}") from None
