"""The findings of ``audit verify``: their kinds' weight, their form, and the checks and wording
the streamed checks (chain_check.py) and the whole-trail ones (reorder_check.py) share."""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from luigi_appliance.audit import chain
from luigi_appliance.audit.trail_files import Entry, Position


class Severity(enum.IntEnum):
    """How much a finding weighs; the worst one decides the exit status."""

    INFO = 0  # said, changes nothing (where the given trail starts)
    UNSEALED = 1  # intact as far as it can be told, but not all of it is vouched for by a signature
    TAMPERED = 2  # the trail is not what the scheduler wrote


@dataclass(frozen=True)
class Problem:
    """One finding: its kind (a short word scripts can match), where, and what it means."""

    kind: str
    severity: Severity
    message: str
    at: Position | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def signature_problem(record: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> tuple[str, str] | None:
    """(kind, why) when this checkpoint record is not signed by one of ``keys``; None when it is."""
    key_id, signature, time = record.get("key_id"), record.get("signature"), record.get("time")
    if not (isinstance(key_id, str) and isinstance(signature, str) and isinstance(time, str)):
        return "bad-signature", "a checkpoint without key_id, signature or time"
    key = keys.get(key_id)
    if key is None:
        known = ", ".join(sorted(keys))
        return "unknown-key", (f"signed with key_id {key_id}, not the public key given ({known}): "
                               "forged with another key, or signed by a key not given (--public-key)")
    try:
        key.verify(base64.b64decode(signature, validate=True),
                   chain.signed_message(int(record["seq"]), str(record["prev"]), time))
    except (InvalidSignature, binascii.Error, ValueError):
        return "bad-signature", ("the signature does not verify: forged, or the records before it were "
                                 "rewritten after it was signed")
    return None


def finding(kind: str, severity: Severity, message: str, entry: Entry | None = None) -> Problem:
    """A finding about ``entry`` (its place, and its seq when it is chained)."""
    return Problem(kind, severity, message, entry.at if entry else None,
                   entry.seq if entry is not None and entry.chained else None)


def span(entries: Sequence[Entry]) -> str:
    """Where ``entries`` (adjacent, or a run's first and last) are: FILE:LINE[..LINE]."""
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        return str(first.at)
    return f"{first.at}..{last.at.line}" if first.at.file == last.at.file else f"{first.at}..{last.at}"


def is_checkpoint(entry: Entry) -> bool:
    """Whether the entry is a checkpoint record."""
    return entry.event == chain.CHECKPOINT
