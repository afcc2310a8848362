"""The approvals pages (placeholder: being built)."""

from __future__ import annotations


def routes() -> list[tuple[str, type, dict]]:
    return []
