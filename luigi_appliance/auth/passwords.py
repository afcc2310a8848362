"""Password hashing with scrypt (hashlib, OpenSSL): ``$scrypt$n=N,r=R,p=P$salt$hash``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets

# 2**15 * 8 * 128 bytes = 32 MiB and ~50-100 ms per verification on a server core: costly enough
# for an offline attacker, and the credential cache keeps it off the per-request path.
N, R, P = 2**15, 8, 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024
_FORMAT = re.compile(r"^\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=N, r=R, p=P, maxmem=_MAXMEM, dklen=_DKLEN)
    return f"$scrypt$n={N},r={R},p={P}${_b64(salt)}${_b64(digest)}"


def is_valid_hash(encoded: str) -> bool:
    return _FORMAT.match(encoded) is not None


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against an encoded scrypt hash."""
    m = _FORMAT.match(encoded)
    if not m:
        return False
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    salt, expected = base64.b64decode(m.group(4)), base64.b64decode(m.group(5))
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM,
                            dklen=len(expected))
    return hmac.compare_digest(digest, expected)


@functools.cache
def dummy_hash() -> str:
    """Verifying against this for unknown users makes "no such user" cost as much as "wrong password"."""
    return hash_password(secrets.token_urlsafe(16))
