"""Secrets in configuration: ``*_file`` paths, ``enc:`` values, and file-permission checks.

A secret never appears in clear in a configuration file. It is either in a file of its own that
only root and the service account can read, or encrypted with a key file (Fernet, from
``cryptography``) so the configuration itself can be group-readable and kept in version control.
"""

from __future__ import annotations

import grp
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from luigi_appliance.errors import SecretError

ENC_PREFIX = "enc:"
SERVICE_GROUP = "luigi"


def trusted_gids() -> set[int]:
    """Groups that may be given read access to a secret file.

    Packaged files are 0640 root:luigi, so the service account's group may read; any other group
    or "other" having access makes the file too open.
    """
    gids = {os.getegid()}
    try:
        gids.add(grp.getgrnam(SERVICE_GROUP).gr_gid)
    except KeyError:
        pass
    return gids


def secret_file_problem(path: Path) -> str | None:
    """Return why ``path`` is unfit to hold a secret, or None when it is fine."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist"
    except OSError as exc:
        return f"cannot stat secret file {path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"secret file {path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        return (f"secret file {path} has mode {mode:04o}: others may access it; "
                f"expected 0600 or 0640 (chmod o-rwx {path})")
    if mode & 0o070 and (mode & 0o030 or st.st_gid not in trusted_gids()):
        return (f"secret file {path} has mode {mode:04o} and group id {st.st_gid}: only the service "
                f"account's group may read it, and nobody but the owner may write it")
    if not os.access(path, os.R_OK, effective_ids=True):
        return (f"secret file {path} (owner uid {st.st_uid}, group id {st.st_gid}, mode {mode:04o}) is not "
                f"readable by this account (uid {os.geteuid()})")
    return None


def read_secret_file(path: Path) -> bytes:
    """Read a secret file after checking its permissions; raise SecretError otherwise."""
    problem = secret_file_problem(path)
    if problem:
        raise SecretError(problem)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None


def secret_text(value: bytes | None, path: Path | None) -> str | None:
    """A password given inline (decrypted ``enc:`` bytes) or in a secret file, read now (a rotated
    file is picked up at the next connection); None when neither is set."""
    if value is not None:
        return value.decode()
    if path is not None:
        return read_secret_file(path).decode().strip("\r\n")
    return None


def write_private_file(path: Path, data: bytes, mode: int = 0o600,
                       owner: tuple[int, int] | None = None) -> None:
    """Create ``path`` atomically with ``mode`` (and ``owner`` as uid, gid) from the start.

    The temporary file gets a random name and is created with O_EXCL|O_NOFOLLOW, and its mode and
    owner are set on the open descriptor: root may be writing into a directory the service account
    controls, where a path could be swapped for a symlink between two calls.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # the umask may have removed bits we asked for
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{16}")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files ``write_private_file`` left in ``directory`` when the process
    died between creating and renaming one (the random names never get reused); returns them."""
    removed = []
    for path in directory.iterdir():
        if _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)  # unlinks a link itself, never its target
            removed.append(path)
    return removed


def load_or_create_key(path: Path) -> bytes:
    """Return the Fernet key in ``path``, creating it (0600) when absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(path, Fernet.generate_key() + b"\n")
    return read_secret_file(path).strip()


def encrypt_value(plaintext: str, key_file: Path) -> str:
    """Encrypt ``plaintext`` for use as an ``enc:`` configuration value."""
    token = Fernet(load_or_create_key(key_file)).encrypt(plaintext.encode("utf-8"))
    return ENC_PREFIX + token.decode("ascii")


def decrypt_value(value: str, key_file: Path) -> str:
    """Decrypt an ``enc:`` value; the error names the key file, never the value."""
    if not value.startswith(ENC_PREFIX):
        raise SecretError("value does not start with 'enc:'")
    key = read_secret_file(key_file).strip()
    try:
        return Fernet(key).decrypt(value[len(ENC_PREFIX):].encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError, UnicodeError):
        raise SecretError(f"cannot decrypt the enc: value with the key in {key_file} "
                          "(wrong key, or the value was altered)") from None
