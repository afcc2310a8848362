# Filters of the luigi_appliance.appliance collection (run on the controller).
#
# ini_value: a variable's value as luigi-appliance's INI reader takes it (one line, no quotes).
# users_file: the local users file (name:role:$scrypt$...), hashing passwords with scrypt exactly
#   as `luigi-appliance user add` does, and keeping an existing hash that still matches its
#   password so that a second run writes the same file (scrypt salts are random).
#
# Licensed Apache-2.0, like luigi-appliance.

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from ansible.errors import AnsibleFilterError

# The users file format and scrypt parameters of luigi_appliance/auth/{local,passwords}.py. The
# tests render a users file with this filter and load it with the installed program.
_HEADER = "# luigi-appliance users: name:role:scrypt-hash. Edit with 'luigi-appliance user'.\n"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ROLES = ("metrics", "viewer", "worker", "operator", "admin")
_HASH = re.compile(r"^\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")
_N = 2**15
_R = 8
_P = 1
_DKLEN = 32
_MAXMEM = 64 * 1024 * 1024


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen)


def _hash(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _N, _R, _P, _DKLEN)
    return f"$scrypt$n={_N},r={_R},p={_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _matches(password: str, encoded: str) -> bool:
    m = _HASH.match(encoded)
    if not m:
        return False
    n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    salt, expected = base64.b64decode(m.group(4)), base64.b64decode(m.group(5))
    if (n, r, p) != (_N, _R, _P):
        return False  # re-hash with today's parameters
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(expected)), expected)


def _existing_hashes(text: str) -> dict[str, str]:
    hashes = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parts = line.split(":", 2)
            if len(parts) == 3:
                hashes[parts[0]] = parts[2]
    return hashes


def users_file(users, existing_text=""):
    """Render the users file for ``users`` ([{name, role, password|password_hash}]).

    Error messages name the account, never a password or hash.
    """
    if not isinstance(users, list):
        raise AnsibleFilterError("users_file: expected a list of {name, role, password|password_hash}")
    old = _existing_hashes(existing_text)
    lines, seen = [], set()
    for index, user in enumerate(users):
        if not isinstance(user, dict) or "name" not in user:
            raise AnsibleFilterError(f"users_file: entry {index} has no name")
        name = str(user["name"])
        if not _USERNAME.match(name):
            raise AnsibleFilterError(f"users_file: invalid user name {name!r}: expected 1-64 letters, digits, "
                                     "'_', '.', '@', '-', starting with a letter or digit")
        if name in seen:
            raise AnsibleFilterError(f"users_file: user {name} is listed twice")
        seen.add(name)
        role = str(user.get("role", "viewer")).lower()
        if role not in _ROLES:
            raise AnsibleFilterError(f"users_file: user {name}: role must be one of {', '.join(_ROLES)}")
        password, password_hash = user.get("password"), user.get("password_hash")
        if bool(password) == bool(password_hash):
            raise AnsibleFilterError(f"users_file: user {name}: give exactly one of password or password_hash")
        if password_hash:
            if not _HASH.match(str(password_hash)):
                raise AnsibleFilterError(f"users_file: user {name}: password_hash is not a $scrypt$ hash "
                                         "as `luigi-appliance user` writes it")
            encoded = str(password_hash)
        else:
            password = str(password)
            if len(password) < 12:
                raise AnsibleFilterError(f"users_file: user {name}: password too short (at least 12 characters, "
                                         "as `luigi-appliance user add` requires)")
            previous = old.get(name, "")
            encoded = previous if _matches(password, previous) else _hash(password)
        lines.append(f"{name}:{role}:{encoded}\n")
    return _HEADER + "".join(lines)


def ini_value(value, key="value"):
    """One INI value for scheduler.conf/client.conf: booleans as true/false, lists joined with ", "."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise AnsibleFilterError(f"{key}: no value (null); leave the key out instead")
    if isinstance(value, (list, tuple)):
        text = ", ".join(ini_value(item, key) for item in value)
    else:
        text = str(value)
    if "\n" in text or "\r" in text:
        raise AnsibleFilterError(f"{key}: a value must be one line (the INI reader has no continuation lines)")
    if text != text.strip():
        raise AnsibleFilterError(f"{key}: leading or trailing blanks would be dropped by the INI reader")
    return text


class FilterModule:
    def filters(self):
        return {"users_file": users_file, "ini_value": ini_value}
