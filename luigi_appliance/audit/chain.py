"""The audit trail's hash chain and its signed checkpoints: the format the writer produces and
``audit verify`` checks.

Every line of the audit file is one JSON object (a record) with, besides its own fields:

* ``seq``: 1, 2, 3, ... across the trail's whole life (restarts and logrotate's rotations
  continue it), so a verifier can tell a deletion (a gap) from a reordering (going back);
* ``prev``: the ``hash`` of the record before it (``GENESIS`` for seq 1);
* ``hash``: SHA-256 (hex) of ``prev`` followed by the record's canonical body (``body``).

An edit changes a record's body, so its ``hash`` no longer matches; an attacker who also
rewrites the hash breaks the next record's ``prev``. Only a key holder can hide that: every
checkpoint record (``event`` = ``CHECKPOINT``) carries an Ed25519 signature over its own seq,
the hash of the record before it and its time (``signed_message``), so each checkpoint vouches
for everything before it. A checkpoint is itself a chained record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64
CHECKPOINT = "audit_checkpoint"
# The fields the chain adds to every record; ``hash`` is not part of the body it covers.
CHAIN_FIELDS = ("seq", "prev", "hash")


def body(record: dict[str, Any]) -> str:
    """The canonical text a record's hash covers: every field but ``hash``, keys sorted, no
    spaces, ASCII only (so the same record always hashes the same, however it was written)."""
    fields = {name: value for name, value in record.items() if name != "hash"}
    return json.dumps(fields, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


def record_hash(record: dict[str, Any]) -> str:
    """The ``hash`` ``record`` must carry: SHA-256 of its ``prev`` then its body."""
    return hashlib.sha256((record["prev"] + body(record)).encode("ascii")).hexdigest()


def chain(record: dict[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """``record`` as a link after ``prev``: with ``seq``, ``prev`` and its ``hash``, in that order last."""
    linked = {**record, "seq": seq, "prev": prev}
    linked["hash"] = record_hash(linked)
    return linked


def signed_message(seq: int, prev: str, time: str) -> bytes:
    """What a checkpoint's Ed25519 signature covers: its own seq, the hash of the record before
    it (the chain head it vouches for) and its time field."""
    return f"luigi-appliance-audit-checkpoint:v1:{seq}:{prev}:{time}".encode("ascii")


def key_id(public_key_raw: bytes) -> str:
    """A public key's short name in checkpoints (16 hex digits of SHA-256 of its raw 32 bytes)."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]
