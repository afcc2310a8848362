"""LDAP accounts, bearer tokens, RBAC and the audit trail, against a real OpenLDAP ``slapd``.

Two slapd replicas (tests/ldap_server.py) with LDAPS and StartTLS under a test CA; the scheduler
is the real ``luigi-appliance serve`` subprocess; workers are real ``luigi-appliance run``.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ldap3
import pytest
import requests
from audit_records import caller_records
from cryptography.fernet import Fernet, MultiFernet
from ldap_server import AD_USER, BIND_PW, PEOPLE, SUFFIX, Directory, group_dn, person_dn
from test_http_guard import concrete_routes

from conftest import PIPELINES, Server, cli, client_conf, free_port, write_config
from luigi_appliance import policy
from luigi_appliance.auth import Role

ROLE_USERS = {Role.VIEWER: "victor", Role.WORKER: "wendy", Role.OPERATOR: "olga", Role.ADMIN: "alice"}


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    d = Directory(tmp_path_factory.mktemp("ldap"))
    yield d
    d.stop()


@pytest.fixture
def directory_up(directory: Directory) -> Iterator[Directory]:
    """The directory, with every replica running again after the test (some tests stop them)."""
    yield directory
    for server in directory.servers:
        if server.proc is None or server.proc.poll() is not None:
            server.start()


def bind_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "ldap-bind.password"
    path.write_text(BIND_PW + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def ldap_scheduler(configured_server, directory_up: Directory, tmp_path: Path):
    """Factory: a scheduler whose accounts come from the directory (and the local admin)."""
    def make(ldap_extra: str = "", extra: str = "", servers: str | None = None, start: bool = True) -> Server:
        conf = directory_up.config(servers=servers, extra=ldap_extra, bind_password_file=bind_password_file(tmp_path))
        return configured_server(conf + extra, start=start)
    return make


def session(server: Server, user: str, password: str | None = None) -> requests.Session:
    return server.session(user, password if password is not None else PEOPLE[user][0])


def bearer(server: Server, token: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def get_token(server: Server, user: str, password: str | None = None) -> str:
    resp = session(server, user, password).post(f"{server.url}/auth/token", timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    return body["access_token"]


def audit_lines(tmp_path: Path) -> list[dict]:
    return caller_records(tmp_path / "audit.log")


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


# ---- configuration ------------------------------------------------------------------------------

def test_insecure_or_incomplete_ldap_settings_are_refused(tmp_path: Path, directory: Directory) -> None:
    pw = bind_password_file(tmp_path)
    conf = write_config(tmp_path / "scheduler.conf", f"""
[auth]
backend = ldap
[ldap]
servers = {directory.servers[0].uri}
start_tls = false
bind_dn = uid=x,{SUFFIX}
bind_password_file = {pw}
user_filter = uid={{username}}
group_source = search
""")
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 1
    out = result.stderr
    assert "[ldap] start_tls:" in out and "sends passwords in clear" in out
    assert "[ldap] user_filter: expected an LDAP filter in parentheses" in out
    assert "[ldap] user_base:" in out and "[ldap] group_base:" in out
    assert "[roles]" in out and "nobody could log in" in out
    # Explicitly allowed plain LDAP passes the check, and serve warns about it.
    conf.write_text(conf.read_text().replace("start_tls = false", "start_tls = false\nallow_insecure = true")
                    .replace("uid={username}", "(uid={username})").replace("group_source = search", "")
                    + f"user_base = ou=people,{SUFFIX}\n[roles]\nluigi-admins = admin\n"
                    f"[audit]\nfile = {tmp_path / 'audit.log'}\n[state]\ndir = {tmp_path / 'state'}\n"
                    f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 0, result.stderr


# ---- ldap test command: schemas, nesting, escaping ---------------------------------------------

def ldap_test(tmp_path: Path, directory: Directory, *args: str, extra: str = "", servers: str | None = None,
              password: str | None = None):
    conf = write_config(tmp_path / "ldap.conf", directory.config(
        servers=servers, extra=extra, bind_password_file=bind_password_file(tmp_path), backend="ldap")
        + f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    return cli("--config", str(conf), "ldap", "test", *args, input=password)


def test_ldap_test_shows_nested_groups_role_and_allowlist(tmp_path: Path, directory: Directory) -> None:
    result = ldap_test(tmp_path, directory, "--user", "etl-bot")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"user: uid=etl-bot,ou=people,{SUFFIX}" in result.stdout
    # etl-bot is only in etl-services, which is nested in luigi-workers.
    assert "groups: etl_services, luigi_workers" in result.stdout
    assert "role: worker" in result.stdout
    assert "task families: Extract, Transform, Rep*" in result.stdout
    # A membership cycle (cycle-a <-> cycle-b) terminates, and still reaches luigi-viewers.
    result = ldap_test(tmp_path, directory, "--user", "carl")
    assert "groups: cycle_a, cycle_b, luigi_viewers" in result.stdout and "role: viewer" in result.stdout
    # The depth limit: with nesting off, etl-bot has no role at all.
    result = ldap_test(tmp_path, directory, "--user", "etl-bot", extra="nested_depth = 0")
    assert result.returncode == 1 and "groups: etl_services\n" in result.stdout and "role: (none" in result.stdout


def test_ldap_test_checks_a_password_without_echoing_it(tmp_path: Path, directory: Directory) -> None:
    result = ldap_test(tmp_path, directory, "--user", "alice", "--password", password=PEOPLE["alice"][0] + "\n")
    assert result.returncode == 0 and "password: accepted" in result.stdout
    assert PEOPLE["alice"][0] not in result.stdout + result.stderr
    result = ldap_test(tmp_path, directory, "--user", "alice", "--password", password="wrong-password\n")
    assert result.returncode == 1 and "password: refused" in result.stdout


def test_active_directory_style_sAMAccountName_login(tmp_path: Path, directory: Directory) -> None:
    sam, password, _ = AD_USER
    extra = "user_filter = (sAMAccountName={username})\n"
    conf = directory.config(extra=extra, bind_password_file=bind_password_file(tmp_path), backend="ldap")
    conf = conf.replace(f"user_base = ou=people,{SUFFIX}", f"user_base = ou=ad,{SUFFIX}")
    path = write_config(tmp_path / "ad.conf", conf + f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    result = cli("--config", str(path), "ldap", "test", "--user", sam, "--password", input=password + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"user: cn=Ada Admin,ou=ad,{SUFFIX}" in result.stdout and "role: admin" in result.stdout


def test_group_search_with_member_and_memberUid(tmp_path: Path, directory: Directory) -> None:
    extra = f"group_source = search\ngroup_base = ou=groups,{SUFFIX}\n"
    conf = directory.config(extra=extra, bind_password_file=bind_password_file(tmp_path), backend="ldap")
    conf = conf.replace("group_source = memberof\n", "")
    path = write_config(tmp_path / "search.conf", conf + f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    result = cli("--config", str(path), "ldap", "test", "--user", "olga")
    # luigi-operators lists olga as member=DN; legacy-ops (a posixGroup) as memberUid=olga.
    assert "groups: legacy_ops, luigi_operators" in result.stdout, result.stdout + result.stderr
    result = cli("--config", str(path), "ldap", "test", "--user", "etl-bot")
    assert "groups: etl_services, luigi_workers" in result.stdout and "role: worker" in result.stdout


@pytest.mark.parametrize("name", ["*", ")(uid=*", "alice)(uid=*", "\\00", "a" * 10_000, "alice*"])
def test_injection_names_find_nothing(tmp_path: Path, directory: Directory, name: str) -> None:
    # A pattern that lets everything through, so the RFC 4515 escaping alone must stop these.
    # (A NUL byte cannot be a command-line argument: the scheduler test sends one in Basic.)
    result = ldap_test(tmp_path, directory, "--user", name, extra="username_pattern = ^(?s:.{1,20000})$")
    assert result.returncode == 1
    assert "not found" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_starttls_and_certificate_checks(tmp_path: Path, directory: Directory) -> None:
    a = directory.servers[0]
    assert ldap_test(tmp_path, directory, "--user", "alice", servers=a.uri).returncode == 0  # StartTLS
    # A name that is not in the certificate: refused even though the CA is right.
    wrong_name = f"ldaps://127.0.0.2:{a.ldaps_port}"
    result = ldap_test(tmp_path, directory, "--user", "alice", servers=wrong_name)
    assert result.returncode == 1 and "no LDAP server reachable" in result.stderr
    # Without our CA (the system bundle instead): refused.
    conf = directory.config(bind_password_file=bind_password_file(tmp_path), backend="ldap").replace(
        f"ca_file = {directory.ca.ca_file}\n", "")
    path = write_config(tmp_path / "noca.conf", conf + f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n")
    result = cli("--config", str(path), "ldap", "test", "--user", "alice")
    assert result.returncode == 1 and "no LDAP server reachable" in result.stderr


# ---- the scheduler with LDAP accounts -----------------------------------------------------------

def test_every_route_and_method_for_every_kind_of_caller(ldap_scheduler, tmp_path: Path) -> None:
    # Wrong passwords are answered after a growing delay; a short window keeps this test fast.
    server = ldap_scheduler(ldap_extra="", extra="[auth]\nfailure_limit = 1000\nfailure_window = 1\n")
    keys = (server.state_dir / "token.keys").read_text().split()
    claims = json.dumps({"v": 1, "sub": "alice", "role": "ADMIN", "be": "ldap", "grp": [], "fam": None}).encode()
    expired = Fernet(keys[0]).encrypt_at_time(claims, int(time.time()) - 3600).decode()
    foreign = Fernet(Fernet.generate_key()).encrypt(claims).decode()
    callers: dict[str, tuple[requests.Session, Role | None]] = {
        "anonymous": (_anonymous(server), None),
        "wrong password": (session(server, "alice", "not-alice's-password"), None),
        "expired token": (bearer(server, expired), None),
        "unknown-key token": (bearer(server, foreign), None),
    }
    for role, user in ROLE_USERS.items():
        callers[str(role)] = (session(server, user), role)
        callers[f"{role} token"] = (bearer(server, get_token(server, user)), role)
    pages = [r for r in concrete_routes() if not r[0].startswith(("/api/", "/healthz", "/login", "/logout", "/auth/"))]
    checked = 0
    for label, (client, role) in callers.items():
        for path, http_method, route in pages:
            resp = client.request(http_method, server.url + path, allow_redirects=False, timeout=10)
            expect_ok = role is not None and route.role is not None and role >= route.role
            assert (resp.status_code not in (401, 403)) == expect_ok, (label, path, resp.status_code)
            if role is None:
                assert resp.status_code == 401, (label, path, resp.status_code)
            checked += 1
        for method, rule in policy.RPC_METHODS.items():
            if method in ("prune", "add_task", "add_task_batcher", "add_worker", "get_work", "ping"):
                # Exercised in test_allowlist_and_worker_binding with real arguments (the
                # allowlist refuses these without a family); prune would drop other tasks.
                continue
            resp = client.post(f"{server.url}/api/{method}", data={"data": "{}"}, timeout=10)
            if role is None:
                assert resp.status_code == 401, (label, method, resp.status_code)
            elif role < rule.role:
                assert resp.status_code == 403, (label, method, resp.status_code)
            else:
                assert resp.status_code not in (401, 403, 405), (label, method, resp.status_code)
            checked += 1
    assert checked > 12 * (len(pages) + 30)
    # Expired and foreign tokens are refused with a log line, without details of why.
    assert "Refused an invalid or expired bearer token" in server.log()


def _anonymous(server: Server) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(server.ca_file)
    return s


def test_tokens_only_for_passwords_and_rotation_keeps_old_tokens_valid(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler()
    token = get_token(server, "olga")
    # A token cannot mint another token (a stolen token would otherwise live forever).
    assert bearer(server, token).post(f"{server.url}/auth/token", timeout=10).status_code == 403
    assert _anonymous(server).post(f"{server.url}/auth/token", timeout=10).status_code == 401
    assert session(server, "olga").get(f"{server.url}/auth/token", timeout=10).status_code == 405
    conf = ["--config", str(tmp_path / "scheduler.conf")]
    # Rotation: the old token keeps working after the reload; new tokens use the new key.
    rotate = cli(*conf, "token", "rotate-key")
    assert rotate.returncode == 0, rotate.stderr
    server.send(signal.SIGHUP)
    assert wait_for(lambda: "Reloaded token keys" in server.log())
    assert server.rpc("task_list", session=bearer(server, token), status="", upstream_status="").status_code == 200
    newer = get_token(server, "olga")
    assert server.rpc("task_list", session=bearer(server, newer), status="", upstream_status="").status_code == 200
    # Three more rotations push the first key out of the file: its tokens are refused.
    for _ in range(3):
        assert cli(*conf, "token", "rotate-key").returncode == 0
    assert len((server.state_dir / "token.keys").read_text().split()) == 3
    server.send(signal.SIGHUP)
    assert wait_for(lambda: server.log().count("Reloaded token keys") >= 2)
    assert server.rpc("task_list", session=bearer(server, token), status="", upstream_status="").status_code == 401
    # token issue: a token for an account, without its password (root only: needs the keys).
    issued = cli(*conf, "token", "issue", "--user", "alice")
    assert issued.returncode == 0, issued.stderr
    resp = server.rpc("prune", session=bearer(server, issued.stdout.strip()))
    assert resp.status_code == 200  # prune needs admin: alice's role came from her groups
    assert cli(*conf, "token", "issue", "--user", "nobody").returncode == 1


def test_failover_outage_grace_and_fail_closed(ldap_scheduler, directory_up: Directory, tmp_path: Path) -> None:
    a, b = directory_up.servers
    server = ldap_scheduler(extra="[auth]\ncache_ttl = 1\n")
    a.stop()
    # The first server is down: the second answers.
    assert server.rpc("task_list", session=session(server, "alice"), status="", upstream_status="").status_code == 200
    assert f"LDAP server {a.ldaps_uri} unusable" in server.log()
    b.stop()
    time.sleep(1.2)  # past cache_ttl: alice's cached login is now only good for the outage grace
    resp = server.rpc("task_list", session=session(server, "alice"), status="", upstream_status="")
    assert resp.status_code == 200
    assert "Directory unavailable: accepting the cached login of 'alice'" in server.log()
    # A login that was never cached fails closed, with 503 and one clear line.
    resp = server.rpc("task_list", session=session(server, "victor"), status="", upstream_status="")
    assert resp.status_code == 503
    assert "Authentication backend unavailable: no LDAP server reachable" in server.log()
    # The local break-glass account still works while the directory is down.
    assert server.rpc("task_list", session=server.session("admin", "admin-password-123"),
                      status="", upstream_status="").status_code == 200
    a.start()
    assert server.rpc("task_list", session=session(server, "victor"), status="", upstream_status="").status_code == 200


def test_lockout_per_name_and_per_address(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler(extra="[auth]\nfailure_limit = 3\nlockout = 1h\n")
    ok = session(server, "olga")
    assert server.rpc("task_list", session=ok, status="", upstream_status="").status_code == 200  # now cached
    statuses = [server.rpc("task_list", session=session(server, "victor", f"wrong-{i}"),
                           status="", upstream_status="").status_code for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    # Locked out: even the right password is not checked now.
    resp = server.rpc("task_list", session=session(server, "victor"), status="", upstream_status="")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 3000
    # The address is locked too: another uncached login from it is refused...
    assert server.rpc("task_list", session=session(server, "alice"), status="", upstream_status="").status_code == 429
    # ...while an account already verified (cached) keeps working.
    assert server.rpc("task_list", session=ok, status="", upstream_status="").status_code == 200
    outcomes = [(line["principal"], line["outcome"]) for line in audit_lines(tmp_path) if line["event"] == "login"]
    assert outcomes.count(("victor", "failure")) == 2 and ("victor", "locked_out") in outcomes
    assert ("alice", "locked_out") in outcomes


def test_injection_names_are_refused_by_the_scheduler_without_leaking(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler(extra="[auth]\nfailure_limit = 1000\n")
    for name in ["*", ")(uid=*", "\x00", "a" * 10_000]:
        header = "Basic " + base64.b64encode(f"{name}:whatever-password".encode()).decode()
        resp = _anonymous(server).post(f"{server.url}/api/task_list", headers={"Authorization": header},
                                       data={"data": "{}"}, timeout=10)
        assert resp.status_code == 401, (name[:20], resp.status_code)
        assert "ldap" not in resp.text.lower()
    log = server.log()
    assert "Traceback" not in log and "LDAPInvalidFilterError" not in log
    assert "a" * 201 not in log  # a 10k-character name is clipped in the log and the audit line


def test_allowlist_and_worker_binding(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler()
    bot, wendy = session(server, "etl-bot"), session(server, "wendy")

    def add_task(client: requests.Session, family: str, worker: str) -> int:
        return server.rpc("add_task", session=client, task_id=f"{family}_1", family=family, worker=worker,
                          status="PENDING").status_code

    assert add_task(bot, "Extract", "bot-worker") == 200
    assert add_task(bot, "Report", "bot-worker") == 200   # Rep*
    assert add_task(bot, "Other", "bot-worker") == 403    # not in etl-services' allowlist
    assert add_task(wendy, "Extract", "wendy-worker") == 403  # a worker with no allowlist adds nothing
    # Admins and operators are not restricted by family.
    assert add_task(session(server, "alice"), "Other", "alice-worker") == 200
    # bot-worker is etl-bot's: wendy cannot ping it, take its work or report its tasks.
    assert server.rpc("ping", session=wendy, worker="bot-worker").status_code == 403
    assert server.rpc("get_work", session=wendy, worker="bot-worker").status_code == 403
    assert server.rpc("ping", session=bot, worker="bot-worker").status_code == 200
    families = {t["name"] for t in server.rpc("task_list", session=bot, status="PENDING",
                                               upstream_status="").json()["response"].values()}
    assert families == {"Extract", "Report", "Other"}
    refused = [line for line in audit_lines(tmp_path) if line["event"] == "rpc" and line["outcome"] == "refused:403"]
    assert {(r["principal"], r["method"], r.get("family")) for r in refused} >= {
        ("etl-bot", "add_task", "Other"), ("wendy", "add_task", "Extract"), ("wendy", "ping", None)}


def test_pipeline_runs_as_ldap_service_account_through_tokens(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler()
    creds = tmp_path / "etl-bot.credentials"
    creds.write_text(f"etl-bot:{PEOPLE['etl-bot'][0]}\n")
    creds.chmod(0o600)
    out = tmp_path / "out"
    result = cli("run", "--client-config", str(client_conf(tmp_path, server)), "--credentials-file", str(creds),
                 "--module", "diamond_pipeline", "Report", "--out-dir", str(out), "--workers", "2",
                 env={"PYTHONPATH": str(PIPELINES)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report.txt").exists()
    lines = audit_lines(tmp_path)
    # One password check against the directory for the whole run; every RPC carried the token.
    logins = [x for x in lines if x["event"] == "login" and x["principal"] == "etl-bot"]
    assert [x["outcome"] for x in logins] == ["success"] and logins[0]["backend"] == "ldap"
    assert [x["event"] for x in lines if x["principal"] == "etl-bot"].count("token") >= 1
    rpcs = [x for x in lines if x["event"] == "rpc"]
    added = {x["task_id"] for x in rpcs if x["method"] == "add_task" and x["outcome"] == "ok"}
    assert len(added) == 12 and all(x["principal"] == "etl-bot" for x in rpcs)
    assert all(x["source"] == "127.0.0.1" and x["time"].endswith("+00:00") for x in lines)
    # Nothing secret in any log: passwords, the bind password, tokens.
    issued = get_token(server, "etl-bot")
    server.stop()
    logs = server.log() + (tmp_path / "audit.log").read_text() + result.stderr + result.stdout
    for secret in [BIND_PW, issued, *(pw for pw, _ in PEOPLE.values())]:
        assert secret not in logs


# ---- tokens after a reload, a hanging directory, outages, names ----------------------------------

def on_every_replica(directory: Directory, change: Callable[[ldap3.Connection], None]) -> None:
    for replica in directory.servers:
        conn = replica.admin()
        try:
            change(conn)
        finally:
            conn.unbind()


def reads(server: Server, client: requests.Session) -> int:
    return server.rpc("task_list", session=client, status="", upstream_status="").status_code


@pytest.mark.doc_rule("token-follows-account")
def test_reload_revokes_and_demotes_directory_tokens(ldap_scheduler, directory_up: Directory) -> None:
    temporary = {"dora": "dora-Pw-10", "eli": "eli-Pw-11"}  # operators, for this test only

    def add(conn: ldap3.Connection) -> None:
        for name, password in temporary.items():
            conn.add(person_dn(name), ["inetOrgPerson"], {"uid": name, "cn": name, "sn": name,
                                                           "userPassword": password})
            conn.modify(group_dn("luigi-operators"), {"member": [(ldap3.MODIFY_ADD, [person_dn(name)])]})

    def change(conn: ldap3.Connection) -> None:
        conn.delete(person_dn("dora"))
        conn.modify(group_dn("luigi-operators"), {"member": [(ldap3.MODIFY_DELETE, [person_dn("eli")])]})
        conn.modify(group_dn("luigi-viewers"), {"member": [(ldap3.MODIFY_ADD, [person_dn("eli")])]})

    def remove(conn: ldap3.Connection) -> None:
        for name in temporary:  # memberof-refint drops their group memberships with them
            conn.raise_exceptions = False
            conn.delete(person_dn(name))

    server = ldap_scheduler()
    on_every_replica(directory_up, add)
    try:
        dora, eli = (bearer(server, get_token(server, name, password)) for name, password in temporary.items())
        assert [server.rpc("pause", session=t).status_code for t in (dora, eli)] == [200, 200]
        on_every_replica(directory_up, change)
        # Until the reload, the scheduler goes by what it read (tokens, like cached logins).
        assert server.rpc("unpause", session=dora).status_code == 200
        server.send(signal.SIGHUP)
        assert wait_for(lambda: "Reloaded token keys" in server.log())
        # dora's entry is gone: her token is refused right after the reload.
        assert reads(server, dora) == 401
        # eli is only a viewer now: his token reads, and may no longer pause.
        assert reads(server, eli) == 200
        assert server.rpc("pause", session=eli).status_code == 403
    finally:
        on_every_replica(directory_up, remove)


@pytest.fixture
def hanging_directory() -> Iterator[tuple[str, list[socket.socket]]]:
    """An LDAP URI whose server accepts connections and never answers (a wedged slapd)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"ldap://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()
    for conn in accepted:
        conn.close()


@pytest.mark.doc_rule("login-local-first")
def test_a_hanging_directory_does_not_hold_up_the_local_admin(ldap_scheduler, hanging_directory) -> None:
    uri, accepted = hanging_directory
    server = ldap_scheduler(servers=uri)  # receive_timeout = 5: each directory login hangs 5 s
    with ThreadPoolExecutor(2) as pool:
        directory_logins = [pool.submit(reads, server, session(server, user)) for user in ("victor", "olga")]
        assert wait_for(lambda: len(accepted) >= 2), "both directory logins are waiting on the directory"
        # The break-glass account is local: asked first, in threads of its own. (A client
        # timeout, far above the ~0.1 s it takes, so that waiting for the directory fails here.)
        admin = server.session("admin", "admin-password-123").post(
            f"{server.url}/api/task_list", data={"data": "{}"}, timeout=4)
        assert admin.status_code == 200
        assert not any(login.done() for login in directory_logins), "answered while the directory hangs"
        assert [login.result() for login in directory_logins] == [503, 503]


@pytest.mark.doc_rule("login-outage-throttled")
def test_directory_outages_count_against_the_name(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler(servers=f"ldap://127.0.0.1:{free_port()}",  # nothing listens there
                            extra="[auth]\nfailure_limit = 3\nlockout = 1h\n")
    statuses = [reads(server, session(server, "victor", f"guess-{i}")) for i in range(4)]
    # Each login that found the directory down counts: a client cannot keep it busy forever.
    assert statuses == [503, 503, 503, 429]
    # The name, not the address: the local admin at the same address still logs in.
    assert reads(server, server.session("admin", "admin-password-123")) == 200
    outcomes = [(x["principal"], x["outcome"]) for x in audit_lines(tmp_path) if x["event"] == "login"]
    assert outcomes.count(("victor", "unavailable")) == 3 and ("victor", "locked_out") in outcomes


@pytest.mark.doc_rule("login-name-spellings")
def test_directory_names_are_one_principal_whatever_the_case(ldap_scheduler, tmp_path: Path) -> None:
    server = ldap_scheduler()
    token = get_token(server, "ALICE", PEOPLE["alice"][0])
    keys = (server.state_dir / "token.keys").read_text().split()
    claims = json.loads(MultiFernet([Fernet(k) for k in keys]).decrypt(token.encode()))
    assert claims["sub"] == "alice"  # the directory found alice's entry: she is alice
    assert reads(server, bearer(server, token)) == 200
    # A trailing newline is refused before the directory, which would find alice for it too.
    header = "Basic " + base64.b64encode(f"alice\n:{PEOPLE['alice'][0]}".encode()).decode()
    resp = _anonymous(server).post(f"{server.url}/api/task_list", headers={"Authorization": header},
                                   data={"data": "{}"}, timeout=10)
    assert resp.status_code == 401
    logins = [(x["principal"], x["outcome"]) for x in audit_lines(tmp_path) if x["event"] == "login"]
    assert ("alice", "success") in logins and not any(p.startswith("ALICE") for p, _ in logins)
