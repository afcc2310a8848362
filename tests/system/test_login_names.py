"""User names as typed: one lockout counter per name whatever its spelling, names with control
characters refused before any backend, and a password typed as the user name never in the log
or the audit trail. Real ``serve``, HTTP Basic and the browser login form.

The failures come from distinct loopback addresses (tests/raw_http.py), so the per-address
lockout cannot be what locks the name out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from audit_records import caller_records
from raw_http import basic, over_https
from test_login import browser, login

from conftest import Server

ADMIN_PASSWORD = "admin-password-123"  # what tests/conftest.py's configured_server creates


def audit_lines(server: Server) -> list[dict]:
    return caller_records(server.state_dir.parent / "audit.log")


def task_list(server: Server, user: str, password: str, source: str) -> int:
    return over_https(server.port, server.ca_file, "POST", "/api/task_list", basic(user, password), "data={}",
                      source=source).status


@pytest.mark.doc_rule("login-name-spellings")
def test_every_spelling_of_a_name_counts_against_the_same_lockout(configured_server: Callable[..., Server]) -> None:
    server = configured_server("[auth]\nfailure_limit = 3\nlockout = 1h\n")
    spellings = ["admin\n", "ADMIN", "Admin "]
    statuses = [task_list(server, name, "wrong-password", f"127.0.0.{i + 2}") for i, name in enumerate(spellings)]
    assert statuses == [401, 401, 401]
    # Three failures of "admin", from three addresses: admin is locked out, from anywhere.
    assert task_list(server, "admin", ADMIN_PASSWORD, "127.0.0.9") == 429
    logins = [(line["principal"], line["outcome"]) for line in audit_lines(server) if line["event"] == "login"]
    assert ("ADMIN", "failure") in logins and ("admin", "locked_out") in logins
    # "admin\n" and "Admin " never reached the users file, and are not written as typed.
    assert not {"admin\n", "Admin "} & {name for name, _ in logins}


@pytest.mark.doc_rule("login-name-redacted")
def test_a_password_typed_as_the_user_name_is_never_written(configured_server: Callable[..., Server]) -> None:
    server = configured_server("[auth]\nfailure_limit = 100\n")
    typed = ["correct horse battery staple", "Tr0ub4dor&3!", "x" * 300]
    for i, name in enumerate(typed):
        for source in (f"127.0.1.{i}", f"127.0.2.{i}"):  # no growing delay per address
            assert task_list(server, name, "anything", source) == 401
    s = browser(server)
    assert login(server, s, user="Hunter2 is my password", password="x").status_code == 401
    lines = [line for line in audit_lines(server) if line["event"] == "login"]
    written = server.log() + json.dumps(lines)
    for name in [*typed, "Hunter2 is my password"]:
        assert name not in written
    assert "Tr0ub4dor" not in written and "x" * 65 not in written
    # A fixed placeholder and a keyed hash: the same name gives the same hash, so repeated
    # attempts can be told apart and correlated.
    shown = [line["principal"] for line in lines]
    assert all(re.fullmatch(r"<invalid user name [0-9a-f]{12}>", p) for p in shown), shown
    assert len(shown) == 7 and len(set(shown)) == 4
    assert shown[0] == shown[1] and shown[2] == shown[3] and shown[0] != shown[2]
    assert re.search(r"Authentication failed for user '<invalid user name [0-9a-f]{12}>' from 127\.0\.1\.0",
                     server.log())
    # A valid name is shown as it is.
    assert task_list(server, "nobody-here", "anything", "127.0.0.2") == 401
    assert "Authentication failed for user 'nobody-here'" in server.log()


@pytest.mark.parametrize(("name", "problem"), [
    ("alice", None), ("alice\n", "control character"), ("ali\u200bce", "control character"),
    (" alice", "leading or trailing blank"), ("", "empty"), ("a" * 257, "too long"),
])
def test_name_problems(name: str, problem: str | None) -> None:
    from luigi_appliance.auth.names import name_problem

    assert name_problem(name) == problem


def test_throttle_keys_fold_every_spelling() -> None:
    from luigi_appliance.auth.names import throttle_key

    assert {throttle_key(n) for n in ("alice", "ALICE", "alice\n", " Alice\r\n", "al\u200bice")} == {"alice"}
