"""Bearer tokens follow the accounts: a reload (SIGHUP) revokes a deleted account's token and
gives a changed account's token its new role, as it ends sessions and Basic logins.

Real ``serve`` with a users file changed by ``luigi-appliance user`` and a real SIGHUP. (The
directory's side, with slapd, is in test_ldap.py.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from conftest import Server, cli


def users_cmd(users: Path, *args: str, password: str | None = None):
    result = cli("user", "--users-file", str(users), *args, input=None if password is None else password + "\n")
    assert result.returncode == 0, result.stderr
    return result


def token_for(server: Server, user: str, password: str) -> requests.Session:
    resp = server.session(user, password).post(f"{server.url}/auth/token", timeout=30)
    assert resp.status_code == 200, resp.text
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    s.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return s


def reload_and_wait(server: Server) -> None:
    done = server.log().count("Reloaded ")
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log().count("Reloaded ") <= done:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def status(server: Server, client: requests.Session, method: str) -> int:
    data = {"status": "", "upstream_status": ""} if method == "task_list" else {}
    return server.rpc(method, session=client, **data).status_code


@pytest.mark.doc_rule("token-follows-account")
def test_reload_revokes_and_changes_local_tokens(configured_server: Callable[..., Server], tmp_path: Path) -> None:
    server = configured_server(start=False)
    users = tmp_path / "users"
    for name, role in (("bob", "operator"), ("carol", "operator"), ("dave", "viewer")):
        users_cmd(users, "add", name, "--role", role, password=f"{name}-password-1")
    server.start()
    bob, carol, dave = (token_for(server, name, f"{name}-password-1") for name in ("bob", "carol", "dave"))
    assert [status(server, t, "pause") for t in (bob, carol, dave)] == [200, 200, 403]
    assert status(server, bob, "unpause") == 200

    users_cmd(users, "del", "bob")
    users_cmd(users, "passwd", "carol", "--role", "viewer", password="carol-password-1")
    users_cmd(users, "passwd", "dave", "--role", "operator", password="dave-password-1")
    reload_and_wait(server)

    # bob is gone: his token is refused at once, not when it expires.
    assert status(server, bob, "task_list") == 401
    # carol is a viewer now: her token reads, and may no longer pause.
    assert status(server, carol, "task_list") == 200
    assert status(server, carol, "pause") == 403
    # dave's token carries his new role too (it names the account; the account decides).
    assert status(server, dave, "pause") == 200
    assert "Refused the bearer token of 'bob'" in server.log()
    # Unchanged accounts' tokens keep working across reloads.
    reload_and_wait(server)
    assert status(server, dave, "unpause") == 200
