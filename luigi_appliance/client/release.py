"""``luigi-appliance worker release ID``: ask the running scheduler to free a worker id.

Uses the same client.conf and credentials file as ``run`` (the account must have the operator
role) and posts to ``/appliance/workers/release``; the scheduler audits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from luigi_appliance.client.credentials import load_credentials
from luigi_appliance.client.remote import refused
from luigi_appliance.client.settings import load_client_settings
from luigi_appliance.errors import ApplianceError

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
    overrides = {k: str(v) for k, v in (("scheduler_url", options.scheduler_url),
                                        ("ca_file", options.ca_file)) if v is not None}
    settings = load_client_settings(options.client_config, overrides)
    credentials = load_credentials(options.credentials_file, settings.credentials_file)
    url = settings.scheduler_url + RELEASE_PATH
    try:
        resp = requests.post(url, json={"worker": options.worker},
                             auth=(credentials.username, credentials.password),
                             verify=str(settings.ca_file) if settings.ca_file else True,
                             timeout=settings.connect_timeout)
    except requests.RequestException as exc:
        raise ApplianceError(f"cannot reach the scheduler at {url}: {exc}") from None
    if resp.status_code == 404:
        raise ApplianceError(f"worker id {options.worker!r} is not bound to any principal")
    if resp.status_code in (401, 403):
        raise refused(credentials, "the release (it needs the operator role)", resp.status_code)
    if resp.status_code != 200:
        raise ApplianceError(f"scheduler answered {resp.status_code} to the release: {resp.text[:200]}")
    return str(resp.json()["released_from"])
