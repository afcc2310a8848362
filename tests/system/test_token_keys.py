"""``luigi-appliance token rotate-key`` run as root in the state directory, which the service
account controls: the keys file's owner and mode are set on the new file's descriptor, never by
path, and a keys file that is a symbolic link is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from conftest import cli, write_config
from luigi_appliance.auth import tokens

# nobody, in our own group (a secret file may be group-readable only by a trusted group):
# stands in for the service account.
SERVICE_UID, SERVICE_GID = 65534, os.getegid()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def config(tmp_path: Path) -> Path:
    users = tmp_path / "users"
    result = cli("user", "--users-file", str(users), "add", "admin", "--role", "admin", input="admin-password-123\n")
    assert result.returncode == 0, result.stderr
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    return write_config(tmp_path / "scheduler.conf", f"[state]\ndir = {state}\n[auth]\nusers_file = {users}\n"
                                                     f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")


def victim(tmp_path: Path) -> tuple[Path, os.stat_result]:
    """A root-owned file that happens to look like a keys file (so nothing else stops the command)."""
    path = tmp_path / "root-only"
    path.write_bytes(Fernet.generate_key() + b"\n")
    path.chmod(0o600)
    return path, path.stat()


def unchanged(path: Path, before: os.stat_result, content: bytes) -> bool:
    after = path.stat()
    return (after.st_uid, after.st_gid, after.st_mode, path.read_bytes()) == (
        before.st_uid, before.st_gid, before.st_mode, content)


@pytest.mark.doc_rule("rotate-key-no-symlink")
def test_rotate_key_refuses_a_symlinked_keys_file(tmp_path: Path) -> None:
    conf = config(tmp_path)
    target, before = victim(tmp_path)
    content = target.read_bytes()
    keys = tmp_path / "state" / "token.keys"
    keys.symlink_to(target)
    result = cli("--config", str(conf), "token", "rotate-key")
    assert result.returncode == 1
    assert f"token keys file {keys} is a symbolic link: refusing to rotate it" in result.stderr
    assert "Traceback" not in result.stderr
    assert keys.is_symlink() and unchanged(target, before, content)


@needs_root
def test_rotate_key_keeps_owner_and_mode(tmp_path: Path) -> None:
    conf = config(tmp_path)
    keys = tmp_path / "state" / "token.keys"
    keys.write_bytes(Fernet.generate_key() + b"\n")
    os.chown(keys, SERVICE_UID, SERVICE_GID)
    keys.chmod(0o600)
    result = cli("--config", str(conf), "token", "rotate-key")
    assert result.returncode == 0, result.stderr
    st = keys.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, SERVICE_GID, 0o600)
    assert len(keys.read_bytes().split()) == 2


@pytest.mark.doc_rule("rotate-key-no-symlink")
@needs_root
def test_a_swap_after_the_write_cannot_make_root_chown_another_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The service account swaps the new keys file for a link to a root file right after root
    wrote it. That race cannot be won on demand by a real second process, so the swap is made
    at that moment from inside the write (the only stand-in in this test)."""
    keys = tmp_path / "token.keys"
    keys.write_bytes(Fernet.generate_key() + b"\n")
    os.chown(keys, SERVICE_UID, SERVICE_GID)
    keys.chmod(0o640)
    target, before = victim(tmp_path)
    target.chmod(0o644)
    before = target.stat()
    content = target.read_bytes()
    real_write = tokens.write_private_file
    written: list[os.stat_result] = []

    def write_then_swap(path: Path, data: bytes, *args, **kwargs) -> None:
        real_write(path, data, *args, **kwargs)
        written.append(path.stat())
        link = path.with_name("planted")
        link.symlink_to(target)
        os.replace(link, path)

    monkeypatch.setattr(tokens, "write_private_file", write_then_swap)
    tokens.rotate_keys(keys)
    assert unchanged(target, before, content), "root changed the file the link points to"
    # The keys file had its owner and mode before the rename, so nothing was left to do after.
    [st] = written
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, SERVICE_GID, 0o640)
