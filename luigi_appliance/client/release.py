"""``luigi-appliance worker release ID``: ask the running scheduler to free a worker id.

Uses the same client.conf and credentials file as ``run`` (the account must have the operator
role) and posts to ``/appliance/workers/release`` through the operator commands' API client;
the scheduler audits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.errors import ApplianceError
from luigi_appliance.operator.api_client import ApiClient, ConnectionOptions, answer_error

RELEASE_PATH = "appliance/workers/release"


@dataclass(frozen=True)
class ReleaseOptions:
    worker: str
    scheduler_url: str | None
    ca_file: Path | None
    credentials_file: Path | None
    client_config: Path | None


def release_worker(options: ReleaseOptions) -> str:
    """Release ``options.worker``; returns the principal it was bound to. Raises ApplianceError."""
    client = ApiClient(ConnectionOptions(options.scheduler_url, options.ca_file, options.credentials_file,
                                         options.client_config))
    resp = client.post(RELEASE_PATH, {"worker": options.worker})
    if resp.status_code == 404:
        raise ApplianceError(f"worker id {options.worker!r} is not bound to any principal")
    if resp.status_code != 200:
        raise answer_error(resp, "the release")
    return str(resp.json()["released_from"])
