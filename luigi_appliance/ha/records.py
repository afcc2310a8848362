"""Journal records: what the [ha] leader writes for each state change, as JSON-ready dicts.

Two kinds (docs: ha-brief "Records"):

- ``{"k": "call", "m": method, "a": arguments, "t": at, "u": uid, "c": caller, "r": result, "x": raised}``:
  one journalled scheduler call (scheduler/journalled.py), its arguments by name, the leader's
  clock and id seed (luigi_internals/clock.py), the caller (auth/context.py), the result digest
  (get_work: the task id handed out, or the batch id of a batch) and whether it raised.
- ``{"k": "bind" | "release", "w": worker, "p": principal, "t": at}``: a worker binding
  (server/worker_bindings.py).

Values are JSON with a few tagged objects, so that a value comes back exactly as the leader's
call had it and PostgreSQL's jsonb takes every record: a Principal (``{"$principal": ...}``), a
float that is not finite (``{"$float": "nan"}``), a string jsonb refuses (a NUL, a lone
surrogate: ``{"$str": [code points]}``), and a dict whose own keys start with ``$``
(``{"$dict": ...}``, so a client's ``{"$principal": ...}`` parameter stays a dict). Anything else
(a set, bytes, an object) raises RecordError before the call runs.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.context import Caller

CALL = "call"
BINDINGS = ("bind", "release")


class RecordError(ValueError):
    """A record (or a value in one) that cannot be written or applied; the message says which."""


@dataclass(frozen=True)
class CallRecord:
    method: str
    arguments: dict[str, Any]
    at: float
    uid: str
    caller: Caller | None
    result: str | None
    raised: bool


@dataclass(frozen=True)
class BindingRecord:
    op: str
    worker_id: str
    principal: str
    at: float


# -- writing -------------------------------------------------------------------------------------

def call(method: str, arguments: dict[str, Any], at: float, uid: str, caller: Caller | None,
         result: str | None, raised: bool) -> dict[str, Any]:
    """The record of one journalled call; ``arguments`` by name, as ``encode_value`` made them
    (before the call ran)."""
    rec: dict[str, Any] = {"k": CALL, "m": method, "a": arguments, "t": at, "u": uid,
                           "c": encode_caller(caller), "r": result}
    if raised:
        rec["x"] = True
    return rec


def binding(op: str, worker_id: str, principal: str, at: float) -> dict[str, Any]:
    """The record of a worker binding made ("bind") or dropped ("release")."""
    return {"k": op, "w": worker_id, "p": principal, "t": at}


def encode_caller(caller: Caller | None) -> dict[str, Any] | None:
    if caller is None:
        return None
    return {"principal": encode_principal(caller.principal), "remote_ip": caller.remote_ip}


def encode_principal(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role.name.lower(), "backend": principal.backend,
            "groups": sorted(principal.groups),
            "families": list(principal.families) if principal.families is not None else None}


def encode_value(value: Any) -> Any:
    """``value`` as JSON jsonb takes, tagged where plain JSON would lose it (module docstring)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, str):
        return value if _plain(value) else {"$str": [ord(c) for c in value]}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, Principal):
        return {"$principal": encode_principal(value)}
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _plain(key):
                raise RecordError(f"cannot journal a dict key {key!r}: keys must be plain strings")
            encoded[key] = encode_value(item)
        return {"$dict": encoded} if any(key.startswith("$") for key in encoded) else encoded
    raise RecordError(f"cannot journal a value of type {type(value).__name__} ({value!r:.80}): only JSON "
                      "values and principals are recorded")


def _plain(text: str) -> bool:
    """Whether jsonb stores ``text`` as it is (no NUL, valid UTF-8)."""
    if text.isascii():
        return "\x00" not in text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- reading -------------------------------------------------------------------------------------

def parse(rec: Any) -> CallRecord | BindingRecord:
    """The record ``rec`` (a decoded JSON object from the journal), checked; RecordError if it is
    not one this version writes."""
    if not isinstance(rec, dict):
        raise RecordError(f"a journal record is a JSON object, not {type(rec).__name__}")
    kind = rec.get("k")
    at = rec.get("t")
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        raise RecordError(f"journal record {_short(rec)} has no time 't'")
    if kind in BINDINGS:
        worker_id, principal = rec.get("w"), rec.get("p")
        if not isinstance(worker_id, str) or not isinstance(principal, str):
            raise RecordError(f"binding record {_short(rec)} needs a worker 'w' and a principal 'p'")
        return BindingRecord(kind, worker_id, principal, float(at))
    if kind != CALL:
        raise RecordError(f"journal record {_short(rec)} is of an unknown kind {kind!r}")
    method, arguments, uid, result = rec.get("m"), rec.get("a"), rec.get("u"), rec.get("r")
    if not isinstance(method, str) or not isinstance(arguments, dict) or not isinstance(uid, str):
        raise RecordError(f"call record {_short(rec)} needs a method 'm', arguments 'a' and an id 'u'")
    try:
        uuid.UUID(uid)
    except ValueError:
        raise RecordError(f"call record {_short(rec)} has an id 'u' that is not a uuid") from None
    if result is not None and not isinstance(result, str):
        raise RecordError(f"call record {_short(rec)} has a result 'r' that is not a string")
    decoded = decode_value(arguments)
    if not isinstance(decoded, dict):
        raise RecordError(f"call record {_short(rec)} has arguments that are not an object")
    return CallRecord(method, decoded, float(at), uid, decode_caller(rec.get("c")), result, rec.get("x") is True)


def decode_caller(data: Any) -> Caller | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("remote_ip"), str):
        raise RecordError(f"a record's caller is not readable: {data!r:.200}")
    return Caller(decode_principal(data.get("principal")), data["remote_ip"])


def decode_principal(data: Any) -> Principal:
    if not isinstance(data, dict):
        raise RecordError(f"a recorded principal is not an object: {data!r:.200}")
    name, role, backend = data.get("name"), data.get("role"), data.get("backend")
    groups, families = data.get("groups", []), data.get("families")
    if (not isinstance(name, str) or not isinstance(role, str) or not isinstance(backend, str)
            or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
            or not (families is None or (isinstance(families, list) and all(isinstance(f, str) for f in families)))):
        raise RecordError(f"a recorded principal is incomplete: {data!r:.200}")
    try:
        parsed_role = Role[role.upper()]
    except KeyError:
        raise RecordError(f"a recorded principal has an unknown role {role!r}") from None
    return Principal(name, parsed_role, backend, frozenset(groups),
                     tuple(families) if families is not None else None)


def decode_value(value: Any) -> Any:
    """The value ``encode_value`` was given."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == "$dict" and isinstance(inner, dict):
            return {key: decode_value(item) for key, item in inner.items()}
        if tag == "$principal":
            return decode_principal(inner)
        if tag == "$float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        if tag == "$str" and isinstance(inner, list):
            try:
                return "".join(map(chr, inner))
            except (TypeError, ValueError):
                raise RecordError(f"a recorded string is not readable: {inner!r:.200}") from None
    if any(key.startswith("$") for key in value):
        raise RecordError(f"a recorded value has an unknown tag: {value!r:.200}")
    return {key: decode_value(item) for key, item in value.items()}


def _short(rec: dict[str, Any]) -> str:
    return repr(rec)[:200]
