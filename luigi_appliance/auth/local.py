"""The local users file: ``name:role:$scrypt$...`` per line, ``#`` comments allowed.

Managed with ``luigi-appliance user add|passwd|del|list``; re-read on SIGHUP. Edits are atomic
(temporary file + rename, under a lock) and keep the file's mode and owner.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.groups import families_for
from luigi_appliance.auth.passwords import dummy_hash, hash_password, is_valid_hash, verify_password
from luigi_appliance.auth.registry import register_backend
from luigi_appliance.auth.settings import AuthSettings
from luigi_appliance.config import Settings
from luigi_appliance.errors import UsersFileError
from luigi_appliance.secret_values import secret_file_problem, write_private_file

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
BACKEND = "local"
_HEADER = "# luigi-appliance users: name:role:scrypt-hash. Edit with 'luigi-appliance user'.\n"


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: Role
    password_hash: str


def check_username(name: str) -> str:
    if not USERNAME.match(name):
        raise UsersFileError(f"invalid user name {name!r}: expected 1-64 characters of "
                             "letters, digits, '_', '.', '@', '-', starting with a letter or digit")
    return name


def parse_users(text: str, origin: str) -> dict[str, UserRecord]:
    """Parse a users file; raise UsersFileError listing every bad line."""
    users: dict[str, UserRecord] = {}
    problems: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            problems.append(f"{origin}:{lineno}: expected name:role:hash")
            continue
        name, role_text, pw_hash = parts
        if not USERNAME.match(name):
            problems.append(f"{origin}:{lineno}: invalid user name {name!r}")
            continue
        try:
            role = Role.parse(role_text)
        except ValueError as exc:
            problems.append(f"{origin}:{lineno}: user {name}: {exc}")
            continue
        if not is_valid_hash(pw_hash):
            problems.append(f"{origin}:{lineno}: user {name}: expected a $scrypt$ hash")
            continue
        if name in users:
            problems.append(f"{origin}:{lineno}: user {name} is defined twice")
            continue
        users[name] = UserRecord(name, role, pw_hash)
    if problems:
        raise UsersFileError("\n".join(problems))
    return users


def local_principal(record: UserRecord, auth: AuthSettings) -> Principal:
    """The principal of a local account: the role from the users file, and the task families of
    an account in no group under the [families] rule every backend shares."""
    return Principal(record.name, record.role, BACKEND,
                     families=families_for(record.role, frozenset(), auth))


def render_users(users: dict[str, UserRecord]) -> str:
    return _HEADER + "".join(f"{u.name}:{u.role}:{u.password_hash}\n" for u in users.values())


class UsersFile:
    """Reads and edits one users file."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, UserRecord]:
        problem = secret_file_problem(self.path)
        if problem:
            raise UsersFileError(problem)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise UsersFileError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise UsersFileError(f"{self.path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
        return parse_users(text, str(self.path))

    @contextmanager
    def _locked(self) -> Iterator[dict[str, UserRecord]]:
        # Root runs this (user add|passwd|del): nothing here may follow a planted symlink.
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(lock_path, flags, 0o600)
        except OSError as exc:
            raise UsersFileError(f"cannot open the lock file {lock_path}: {exc.strerror} "
                                 "(it must be a regular file, not a symbolic link)") from None
        with os.fdopen(fd, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self.read() if self.path.exists() else {}
            yield users
            self._write(users)

    def _write(self, users: dict[str, UserRecord]) -> None:
        """Replace the file atomically, keeping its mode and owner (set on the new descriptor)."""
        try:
            st = self.path.lstat()
            mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            mode, owner = 0o600, None
        try:
            write_private_file(self.path, render_users(users).encode("utf-8"), mode=mode, owner=owner)
        except OSError as exc:
            raise UsersFileError(f"cannot write {self.path}: {exc.strerror}") from None

    def add(self, name: str, role: Role, password: str) -> None:
        check_username(name)
        with self._locked() as users:
            if name in users:
                raise UsersFileError(f"user {name} already exists in {self.path}; use 'user passwd'")
            # Logins are throttled per case-folded name (auth/names.py): two accounts differing
            # only in case would share one lockout counter.
            same = [other for other in users if other.casefold() == name.casefold()]
            if same:
                raise UsersFileError(f"user {same[0]} already exists in {self.path} (names differ only in case)")
            users[name] = UserRecord(name, role, hash_password(password))

    def set_password(self, name: str, password: str, role: Role | None = None) -> None:
        with self._locked() as users:
            old = users.get(name)
            if old is None:
                raise UsersFileError(f"no user {name} in {self.path}")
            # Not ``role or old.role``: Role.METRICS is 0, and so falsy.
            users[name] = UserRecord(name, old.role if role is None else role, hash_password(password))

    def delete(self, name: str) -> None:
        with self._locked() as users:
            if users.pop(name, None) is None:
                raise UsersFileError(f"no user {name} in {self.path}")


class LocalVerifier:
    """The ``local`` account backend: name/password pairs checked against the users file held
    in memory."""

    backend = BACKEND

    def __init__(self, users_file: UsersFile, auth: AuthSettings):
        self._file = users_file
        self._auth = auth
        self._users = users_file.read()
        log.info("Loaded %d local accounts from %s", len(self._users), users_file.path)

    def reload(self) -> None:
        """Re-read the file; on error keep the accounts we have (a typo must not lock everyone out)."""
        try:
            users = self._file.read()
        except (UsersFileError, OSError) as exc:
            log.error("Keeping the previous accounts: cannot reload %s: %s", self._file.path, exc)
            return
        self._users = users
        log.info("Reloaded %d local accounts from %s", len(users), self._file.path)

    def verify(self, name: str, password: str) -> Principal | None:
        """Blocking (scrypt): call from a worker thread, never from the IOLoop."""
        record = self._users.get(name)
        ok = verify_password(password, record.password_hash if record else dummy_hash())
        if record is None or not ok:
            return None
        return local_principal(record, self._auth)

    def principal(self, name: str) -> Principal | None:
        """The account's principal as the users file read at the last (re)load says, without a
        password (re-checking a token after a reload); None if there is no such account."""
        record = self._users.get(name)
        return None if record is None else local_principal(record, self._auth)

    def knows(self, name: str) -> bool:
        """The name is a local account (in memory: asked before any directory)."""
        return name in self._users

    def check_username(self, name: str) -> bool:
        return bool(USERNAME.fullmatch(name))


def local_backend(settings: Settings) -> LocalVerifier:
    """``[auth] backend = local``: the accounts of ``[auth] users_file``."""
    return LocalVerifier(UsersFile(settings.auth.users_file), settings.auth)


register_backend(BACKEND, local_backend)
