"""The worker side: credentials, an authenticated RemoteScheduler, and ``luigi-appliance run``.

From Python: ``luigi_appliance.client.build(tasks, ...)`` and ``scheduler_factory(...)`` (see
luigi_appliance/client/api.py and docs/python-api.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DagCheckFailed", "build", "scheduler_factory"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the rest of the package (settings, credentials) is used without luigi.
    if name in __all__:
        from luigi_appliance.client import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
