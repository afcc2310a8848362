"""Local accounts: the user command, the file format, and the server's reload behaviour."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from conftest import Server, cli, write_config


def users_cmd(users: Path, *args: str, password: str | None = None):
    return cli("user", "--users-file", str(users), *args, input=None if password is None else password + "\n")


@pytest.mark.doc_rule("user-add-viewer")
def test_add_passwd_del_list(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert users_cmd(users, "add", "alice", "--role", "operator", password="alice-password-1").returncode == 0
    assert users_cmd(users, "add", "bob", password="bob-password-123").returncode == 0
    assert oct(users.stat().st_mode & 0o777) == oct(0o600)
    text = users.read_text()
    assert "alice-password-1" not in text and "alice:operator:$scrypt$n=32768,r=8,p=1$" in text
    listed = users_cmd(users, "list")
    assert listed.stdout.splitlines() == ["alice\toperator", "bob\tviewer"]

    dup = users_cmd(users, "add", "alice", password="another-password")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = users_cmd(users, "add", "carol", password="short")
    assert short.returncode == 1 and "at least 12" in short.stderr
    bad = users_cmd(users, "add", "bad:name", password="a-long-password")
    assert bad.returncode == 1 and "invalid user name" in bad.stderr

    before = users.read_text()
    users.chmod(0o640)
    assert users_cmd(users, "passwd", "bob", "--role", "worker", password="bob-new-password").returncode == 0
    assert users.read_text() != before and oct(users.stat().st_mode & 0o777) == oct(0o640)
    assert users_cmd(users, "list").stdout.splitlines() == ["alice\toperator", "bob\tworker"]
    assert users_cmd(users, "del", "alice").returncode == 0
    assert users_cmd(users, "list").stdout.splitlines() == ["bob\tworker"]
    missing = users_cmd(users, "del", "alice")
    assert missing.returncode == 1 and "no user alice" in missing.stderr


def test_password_from_file(tmp_path: Path) -> None:
    users, pw = tmp_path / "users", tmp_path / "pw"
    pw.write_text("from-a-file-password\n")
    pw.chmod(0o600)
    assert cli("user", "--users-file", str(users), "add", "dave", "--password-file", str(pw)).returncode == 0
    pw.chmod(0o644)
    refused = cli("user", "--users-file", str(users), "passwd", "dave", "--password-file", str(pw))
    assert refused.returncode == 1 and "others may access it" in refused.stderr


def test_malformed_users_file_names_every_bad_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert users_cmd(users, "add", "ok", password="ok-long-password").returncode == 0
    good = users.read_text().splitlines()[-1]
    users.write_text(f"# header\n{good}\nnocolons\nx:superuser:$scrypt$n=1,r=1,p=1$AA==$AA==\n"
                     f"{good}\ny:viewer:plaintext\n")
    result = users_cmd(users, "list")
    assert result.returncode == 1
    for line, text in ((3, "expected name:role:hash"), (4, "expected a role"), (5, "defined twice"),
                       (6, "expected a $scrypt$ hash")):
        assert f"{users}:{line}: " in result.stderr and text in result.stderr


def test_a_broken_users_file_on_reload_keeps_the_accounts(dev_server: Server) -> None:
    users = dev_server.state_dir / "users"
    users.write_text(users.read_text() + "garbage line\n")
    dev_server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "Keeping the previous accounts" not in dev_server.log():
        assert time.monotonic() < deadline, dev_server.log()
        time.sleep(0.1)
    assert dev_server.rpc("ping", worker="w").status_code == 200  # admin still works


@pytest.mark.doc_rule("reload-empties-cache")
def test_deleted_user_is_locked_out_after_reload_despite_the_cache(dev_server: Server) -> None:
    users = dev_server.state_dir / "users"
    assert users_cmd(users, "add", "temp", "--role", "worker", password="temp-long-password").returncode == 0
    dev_server.send(signal.SIGHUP)
    session = dev_server.session("temp", "temp-long-password")
    deadline = time.monotonic() + 10
    while dev_server.rpc("ping", session=session, worker="t").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert dev_server.rpc("ping", session=session, worker="t").status_code == 200  # now cached
    assert users_cmd(users, "del", "temp").returncode == 0
    dev_server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while dev_server.rpc("ping", session=session, worker="t").status_code != 401:
        assert time.monotonic() < deadline, "cached credentials survived the reload"
        time.sleep(0.1)


def test_config_from_environment_variable(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert users_cmd(users, "add", "e", password="e-long-password").returncode == 0
    conf = write_config(tmp_path / "env.conf", f"[auth]\nusers_file = {users}\n[server]\nlisten = 127.0.0.1:9999\n"
                        f"[state]\ndir = {tmp_path}/state\n[audit]\nfile = {tmp_path}/audit.log\n")
    shown = cli("config", "show", env={"LUIGI_APPLIANCE_CONFIG": str(conf)})
    assert shown.returncode == 0, shown.stderr
    assert f"# {conf}:4\nlisten = 127.0.0.1:9999\n" in shown.stdout


def test_user_commands_never_write_through_a_planted_symlink(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert users_cmd(users, "add", "alice", password="alice-password-1").returncode == 0
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    # Root runs `user ...` in a directory another account might write: the old code opened
    # `.users.tmp` with O_TRUNC (following a link) and chowned/chmodded it by path.
    (tmp_path / ".users.tmp").symlink_to(victim)
    (tmp_path / ".users.lock").unlink()
    (tmp_path / ".users.lock").symlink_to(victim)
    result = users_cmd(users, "add", "bob", password="bob-password-123")
    assert victim.read_text() == "root's file\n"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (tmp_path / ".users.lock").unlink()
    assert users_cmd(users, "add", "bob", password="bob-password-123").returncode == 0
    assert victim.read_text() == "root's file\n" and (tmp_path / ".users.tmp").is_symlink()
    assert users_cmd(users, "list").stdout.splitlines() == ["alice\tviewer", "bob\tviewer"]


def test_names_that_differ_only_in_case_are_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert users_cmd(users, "add", "bob", password="bob-password-123").returncode == 0
    result = users_cmd(users, "add", "Bob", password="bob-password-456")
    assert result.returncode == 1 and "differ only in case" in result.stderr
