"""Worker ids bound to principals: kept across restarts, capped per principal without evicting
live workers, released by an operator (audited). Real scheduler processes and luigi's scheduler."""

from __future__ import annotations

import functools
import signal
from pathlib import Path

import luigi.scheduler
import pytest
import requests
from audit_records import caller_records

from conftest import Server, cli, client_conf
from luigi_appliance.luigi_internals.scheduler import is_live_worker
from luigi_appliance.server.worker_bindings import WorkerBindings

PASSWORD = "worker-password-123"
MAX_PER_PRINCIPAL = 1000  # as docs/access-control.md states it


def add_users(tmp_path: Path, **roles: str) -> None:
    for name, role in roles.items():
        result = cli("user", "--users-file", str(tmp_path / "users"), "add", name, "--role", role,
                     input=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr


def scheduler_with(configured_server, tmp_path: Path, extra: str = "", **roles: str) -> Server:
    server = configured_server(extra, start=False)  # creates the users file with admin
    add_users(tmp_path, **roles)
    return server.start()


def as_user(server: Server, name: str) -> requests.Session:
    return server.session(name, PASSWORD)


def ping(server: Server, session: requests.Session, worker: str) -> requests.Response:
    return server.rpc("ping", session=session, worker=worker)


def audit_lines(tmp_path: Path) -> list[dict]:
    return caller_records(tmp_path / "audit.log", settle=False)


@pytest.mark.doc_rule("bindings-survive-restart")
def test_bindings_survive_a_restart_so_a_squatter_is_refused(configured_server, tmp_path: Path) -> None:
    server = scheduler_with(configured_server, tmp_path, alice="worker", mallory="worker")
    alice, mallory = as_user(server, "alice"), as_user(server, "mallory")
    assert ping(server, alice, "alice-worker").status_code == 200
    assert server.stop(signal.SIGTERM) == 0

    server.start()
    # worker_list shows the id to everyone; claiming it first after the restart gets nothing.
    refused = ping(server, mallory, "alice-worker")
    assert refused.status_code == 403 and "another principal" in refused.json()["reason"]
    assert server.rpc("get_work", session=mallory, worker="alice-worker").status_code == 403
    assert ping(server, alice, "alice-worker").status_code == 200
    assert "1 worker bindings from the signed snapshot" in server.log()


@pytest.mark.doc_rule("bindings-capped")
def test_a_principal_minting_ids_is_capped_without_evicting_live_workers(configured_server, tmp_path: Path) -> None:
    server = scheduler_with(configured_server, tmp_path, "[scheduler]\nworker_disconnect_delay = 0\n",
                            alice="worker", mallory="worker")
    alice, mallory = as_user(server, "alice"), as_user(server, "mallory")
    assert ping(server, alice, "alice-worker").status_code == 200
    for i in range(MAX_PER_PRINCIPAL):
        assert ping(server, mallory, f"fresh-{i}").status_code == 200, i
    over = ping(server, mallory, f"fresh-{MAX_PER_PRINCIPAL}")
    assert over.status_code == 403 and "limit per principal" in over.json()["reason"]
    # Nobody else lost anything: alice keeps her id and can bind new ones; mallory's live ids stay hers.
    assert ping(server, mallory, "alice-worker").status_code == 403
    assert ping(server, alice, "alice-worker-2").status_code == 200
    assert ping(server, alice, "fresh-7").status_code == 403

    # Once luigi has pruned mallory's workers (no ping within worker_disconnect_delay), their
    # bindings may go, and mallory can bind a new id again.
    assert server.rpc("prune").status_code == 200
    assert ping(server, mallory, f"fresh-{MAX_PER_PRINCIPAL}").status_code == 200


@pytest.mark.doc_rule("bindings-capped")
def test_full_table_drops_only_bindings_of_workers_luigi_no_longer_knows() -> None:
    # The limits (1000 per principal, 100,000 in all) with small numbers, against luigi's own scheduler.
    scheduler = luigi.scheduler.Scheduler(worker_disconnect_delay=3600)
    bindings = WorkerBindings(functools.partial(is_live_worker, scheduler), per_principal=3, total=4)
    for worker, principal in [("a1", "alice"), ("b1", "bob"), ("b2", "bob"), ("gone", "bob")]:
        assert bindings.claim(worker, principal) is None
    for worker in ("a1", "b1", "b2"):
        scheduler.ping(worker=worker)  # "gone" never reached luigi: no live worker has that id
    assert bindings.claim("b3", "bob") is None  # bob was at his limit: "gone" made room
    scheduler.ping(worker="b3")
    assert bindings.owner("gone") is None
    assert "limit per principal" in (bindings.claim("b4", "bob") or "")
    assert "global limit" in (bindings.claim("c1", "carol") or "")
    assert [bindings.owner(w) for w in ("a1", "b1", "b2", "b3", "b4", "c1")] == [
        "alice", "bob", "bob", "bob", None, None]


@pytest.mark.doc_rule("worker-release")
def test_an_operator_releases_a_binding_and_it_is_audited(configured_server, tmp_path: Path) -> None:
    server = scheduler_with(configured_server, tmp_path, alice="worker", bob="worker", olivia="operator")
    alice, bob = as_user(server, "alice"), as_user(server, "bob")
    worker_id = "Worker(salt=1, workers=1, host=h1, username=alice, pid=42)"
    assert ping(server, alice, worker_id).status_code == 200
    assert ping(server, bob, worker_id).status_code == 403

    def release(user: str, worker: str) -> object:
        creds = tmp_path / f"{user}.credentials"
        creds.write_text(f"{user}:{PASSWORD}\n")
        creds.chmod(0o600)
        return cli("worker", "release", worker, "--client-config", str(client_conf(tmp_path, server)),
                   "--credentials-file", str(creds))

    denied = release("bob", worker_id)  # a worker account may not release ids
    assert denied.returncode == 1 and "403 permission denied" in denied.stderr
    done = release("olivia", worker_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"released worker id {worker_id} (it was bound to alice)"
    assert ping(server, bob, worker_id).status_code == 200  # free: the next caller binds it
    unbound = release("olivia", "never-bound")
    assert unbound.returncode == 1 and "not bound to any principal" in unbound.stderr

    server.stop()
    lines = [line for line in audit_lines(tmp_path) if line["event"] == "worker_release"]
    assert [(x["principal"], x["outcome"], x["worker"], x.get("owner")) for x in lines] == [
        ("bob", "refused:403", worker_id, None),  # refused by the guard for bob's role: audited too
        ("olivia", "ok", worker_id, "alice"), ("olivia", "not_bound", "never-bound", None)]
    assert all(x["source"] == "127.0.0.1" for x in lines)


@pytest.mark.doc_rule("worker-release")
def test_release_route_refuses_a_malformed_body(configured_server) -> None:
    server = configured_server()
    for body in [b"", b"[]", b'{"worker": 7}', b'{"worker": ""}']:
        resp = server.session().post(f"{server.url}/appliance/workers/release", data=body, timeout=10)
        assert resp.status_code == 400 and resp.json()["error"] == 400, body
