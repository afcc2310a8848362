"""Short-lived bearer tokens for workers, so a pipeline run binds to LDAP once, not per RPC.

This module issues and verifies tokens and keeps their keys; the ``bearer`` scheme that accepts
them on requests is ``auth/bearer.py``.

``POST /auth/token`` with name and password (HTTP Basic) returns a token. A token is a Fernet
token (AES-128-CBC + HMAC-SHA256, from ``cryptography``) over the principal (name, role, groups,
task-family patterns) with its issue time; the scheduler accepts it for ``[tokens] ttl``.

A token names an account; what the account may do is what it may do now. On every use the
token's account is checked against the current accounts (auth/bearer.py): once per
account after each reload (SIGHUP) and at start, then remembered until the next reload, so a
deleted or demoted account's token is refused or demoted right after the reload, like its
browser sessions and Basic logins, while a call costs a few dictionary lookups (no decryption).

The keys file holds one Fernet key per line, newest first. New tokens are signed with the first
key; every key in the file verifies, so ``luigi-appliance token rotate-key`` (prepend a new key,
keep the previous ones, drop the oldest beyond ``KEEP_KEYS``) followed by a reload rotates
without logging anybody out. A token from a key no longer in the file is refused.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from luigi_appliance.auth import Principal, Role
from luigi_appliance.errors import ApplianceError, SecretError
from luigi_appliance.secret_values import read_secret_file, secret_file_problem, write_private_file

if TYPE_CHECKING:
    from luigi_appliance.config import Settings

log = logging.getLogger(__name__)

KEEP_KEYS = 3
MAX_VERIFIED = 10_000
TOKEN_BACKEND_PREFIX = "token:"  # noqa: S105 - a label, not a secret
_VERSION = 1


class TokenKeyError(ApplianceError):
    """The keys file is missing, unreadable or malformed."""


def _parse_keys(raw: bytes, path: Path) -> list[bytes]:
    keys = [line.strip() for line in raw.splitlines() if line.strip() and not line.startswith(b"#")]
    if not keys:
        raise TokenKeyError(f"token keys file {path} holds no key")
    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise TokenKeyError(f"token keys file {path}: key {number} is not a Fernet key "
                                "(32 url-safe base64-encoded bytes)") from None
    return keys


def read_keys(path: Path) -> list[bytes]:
    try:
        return _parse_keys(read_secret_file(path), path)
    except SecretError as exc:
        raise TokenKeyError(str(exc)) from None


def ensure_keys(path: Path) -> list[bytes]:
    """The keys in ``path``, creating it (mode 0600) with one new key on first use."""
    if not path.exists():
        write_private_file(path, Fernet.generate_key() + b"\n")
        log.info("Generated token signing key file %s", path)
    return read_keys(path)


def _symlink_refusal(path: Path) -> TokenKeyError:
    return TokenKeyError(f"token keys file {path} is a symbolic link: refusing to rotate it (root would "
                         "write through a link the service account may have planted); replace it with the "
                         "keys file itself")


def _read_for_rotation(path: Path) -> tuple[list[bytes], int, tuple[int, int] | None]:
    """The keys in ``path`` with the mode and owner the rotated file keeps; nothing if absent.

    Opened with O_NOFOLLOW and examined through the descriptor: root runs this in a directory
    the service account controls, where the path could be a link to any file.
    """
    if path.is_symlink():
        raise _symlink_refusal(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], 0o600, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_refusal(path) from None
        raise TokenKeyError(f"cannot read token keys file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenKeyError(f"token keys file {path} is not a regular file")
        problem = secret_file_problem(path)
        if problem:
            raise TokenKeyError(problem)
        raw = fh.read()
    # Never more than owner read-write, group read: the scheduler's account reads it.
    return _parse_keys(raw, path), stat.S_IMODE(st.st_mode) & 0o640, (st.st_uid, st.st_gid)


def rotate_keys(path: Path) -> int:
    """Prepend a new signing key; keep at most KEEP_KEYS. Returns how many keys remain.

    The new file (temporary file + rename, never readable by others) gets the previous file's
    owner and mode on its descriptor before the rename, never by path afterwards.
    """
    keys, mode, owner = _read_for_rotation(path)
    keys = [Fernet.generate_key(), *keys][:KEEP_KEYS]
    write_private_file(path, b"".join(k + b"\n" for k in keys), mode=mode, owner=owner)
    return len(keys)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


class TokenService:
    """Issues and verifies tokens; ``reload()`` re-reads the keys file (SIGHUP).

    A worker sends the same token with every call for minutes, so verified tokens are remembered
    until they expire (decrypting and checking the HMAC each time cost the scheduler's loop about
    50 us per call). The memory holds tokens that are bearer secrets anyway, only in this process,
    and is emptied when the keys are reloaded, so a token of a dropped key stops working at once.
    """

    def __init__(self, keys_file: Path, ttl: float, *, create: bool = True):
        self.keys_file = keys_file
        self.ttl = ttl
        self._verified: dict[str, tuple[Principal, float]] = {}
        # Only the scheduler creates the file: created by root (the CLI), its account could not read it.
        keys = ensure_keys(keys_file) if create else read_keys(keys_file)
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def issue(self, principal: Principal, ttl: float | None = None) -> IssuedToken:
        """A token for ``principal``, accepted for ``[tokens] ttl``, or for ``ttl`` when that is
        shorter (a token exchanged for an issuer's JWT ends with that JWT: server/token.py)."""
        lifetime = int(self.ttl) if ttl is None else max(1, min(int(ttl), int(self.ttl)))
        claims: dict[str, object] = {
            "v": _VERSION,
            "sub": principal.name,
            "role": principal.role.name,
            "be": principal.backend,
            "grp": sorted(principal.groups),
            "fam": list(principal.families) if principal.families is not None else None,
        }
        if lifetime < int(self.ttl):
            claims["exp"] = int(time.time()) + lifetime
        token = self._fernet.encrypt(json.dumps(claims, separators=(",", ":")).encode())
        return IssuedToken(token.decode("ascii"), lifetime)

    def verify(self, token: str) -> Principal | None:
        """The principal in a valid, unexpired token signed by a known key; else None."""
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        try:
            raw = token.encode("ascii")
            claims = json.loads(self._fernet.decrypt(raw, ttl=int(self.ttl)))
            if claims.get("v") != _VERSION:
                return None
            families = claims["fam"]
            principal = Principal(claims["sub"], Role[claims["role"]], TOKEN_BACKEND_PREFIX + claims["be"],
                                  frozenset(claims["grp"]), tuple(families) if families is not None else None)
            expires = self._fernet.extract_timestamp(raw) + int(self.ttl)
            if "exp" in claims:
                expires = min(expires, int(claims["exp"]))
        except (InvalidToken, UnicodeEncodeError, ValueError, KeyError, TypeError):
            return None
        if expires <= time.time():
            return None
        if len(self._verified) >= MAX_VERIFIED:
            now = time.time()
            self._verified = {t: v for t, v in self._verified.items() if v[1] > now}
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def reload(self) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k) for k in read_keys(self.keys_file)])
            self._verified.clear()
            log.info("Reloaded token keys from %s", self.keys_file)
        except TokenKeyError as exc:
            log.error("Keeping the previous token keys: %s", exc)


def default_keys_file(state_dir: Path) -> Path:
    return state_dir / "token.keys"


def keys_file(settings: Settings) -> Path:
    """``[tokens] keys_file``, by default ``token.keys`` in the state directory."""
    return settings.tokens.keys_file or default_keys_file(settings.state.dir)

