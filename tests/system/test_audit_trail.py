"""A real ``luigi-appliance serve`` writes a tamper-evident audit trail: every line chained from
seq 1, a checkpoint signed with the state directory's key (generated 0600, its public key 0644)
at start and after SIGTERM, each checkpoint also in the journal (stderr); a SIGKILLed scheduler
restarted continues the chain, as it does across a real logrotate run while it runs and one
while it is stopped; the key can be a systemd credential; and ``config check`` refuses, like
serve, a signing key serve could not use, naming the file, without creating anything.

Verification here is independent of ``audit verify``: chain.py's format checked by hand, the
signatures with ``cryptography``.
"""

from __future__ import annotations

import base64
import grp
import gzip
import hashlib
import json
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conftest import REPO, Server, cli, free_port, write_config

PASSWORD = "admin-password-123"
CHECKPOINT_PREFIX = "luigi_appliance.audit: audit checkpoint: "


def make_server(tmp_path: Path, audit_keys: str = "", env: dict[str, str] | None = None) -> tuple[Server, Path]:
    """A scheduler from a real scheduler.conf, its audit log in tmp_path/log (not yet started)."""
    state_dir, users, log_dir = tmp_path / "state", tmp_path / "users", tmp_path / "log"
    if not users.exists():
        added = cli("user", "--users-file", str(users), "add", "admin", "--role", "admin", input=f"{PASSWORD}\n")
        assert added.returncode == 0, added.stderr
        state_dir.mkdir(mode=0o750)
        (state_dir / "admin-password").write_text(f"{PASSWORD}\n")
        log_dir.mkdir(mode=0o750)
    port = free_port()
    conf = write_config(tmp_path / "scheduler.conf", f"""[server]
listen = 127.0.0.1:{port}
[state]
dir = {state_dir}
[auth]
users_file = {users}
[secrets]
key_file = {tmp_path / 'secret.key'}
[audit]
file = {log_dir / 'audit.log'}
{audit_keys}
""")
    return Server(["--config", str(conf), "serve"], state_dir, port, tmp_path / "server.log", env=env), conf


def add_task(server: Server, task_id: str) -> None:
    answer = server.rpc("add_task", worker="w1", task_id=task_id, status="PENDING")
    assert answer.status_code == 200, answer.text


def lines_of(*paths: Path) -> list[str]:
    return [line for path in paths for line in path.read_text().splitlines()]


def verify(lines: list[str], public: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The records, after checking seq 1, 2, ..., each prev and hash, and every checkpoint's
    signature (chain.py's format, written out here)."""
    records = [json.loads(line) for line in lines]
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    prev = "0" * 64
    for seq, record in enumerate(records, start=1):
        assert (record["seq"], record["prev"]) == (seq, prev), record
        body = json.dumps({k: v for k, v in record.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
        assert record["hash"] == hashlib.sha256((prev + body).encode()).hexdigest(), record
        if record["event"] == "audit_checkpoint":
            assert (record["key_id"], record["outcome"]) == (hashlib.sha256(raw).hexdigest()[:16], "signed")
            public.verify(base64.b64decode(record["signature"], validate=True),
                          f"luigi-appliance-audit-checkpoint:v1:{seq}:{prev}:{record['time']}".encode())
        prev = record["hash"]
    return records


def public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    return key


def outline(records: list[dict[str, Any]]) -> list[str]:
    """Checkpoints by reason, add_task calls by task id; the rest (logins) left out."""
    return [x["reason"] if x["event"] == "audit_checkpoint" else x["task_id"]
            for x in records if x["event"] == "audit_checkpoint" or x.get("method") == "add_task"]


def wait_for_record(path: Path, task_id: str) -> None:
    deadline = time.monotonic() + 10
    while f'"task_id": "{task_id}"' not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{task_id} not in {path}"
        time.sleep(0.05)


def test_serve_signs_its_trail_at_start_and_at_sigterm_and_journals_the_checkpoints(tmp_path: Path) -> None:
    server, _ = make_server(tmp_path)
    server.start()
    add_task(server, "A1")
    assert server.stop() == 0

    key, public = server.state_dir / "audit-signing.key", server.state_dir / "audit-signing.pub"
    assert (key.stat().st_mode & 0o777, public.stat().st_mode & 0o777) == (0o600, 0o644)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey) and key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    lines = lines_of(tmp_path / "log" / "audit.log")
    records = verify(lines, public_key(public))
    assert outline(records) == ["start", "A1", "shutdown"]
    assert (records[0]["reason"], records[-1]["reason"]) == ("start", "shutdown")
    # The journal's copy (stderr, a log line) is the file's line exactly.
    journal = [line.split(CHECKPOINT_PREFIX, 1)[1] for line in server.log().splitlines() if CHECKPOINT_PREFIX in line]
    assert journal == [lines[0], lines[-1]]
    assert json.loads((server.state_dir / "audit-chain.head").read_text()) == {"seq": len(lines),
                                                                               "hash": records[-1]["hash"]}


def test_a_sigkilled_scheduler_restarted_continues_the_chain(tmp_path: Path) -> None:
    server, _ = make_server(tmp_path)
    audit_log = tmp_path / "log" / "audit.log"
    server.start()
    add_task(server, "K1")
    wait_for_record(audit_log, "K1")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown checkpoint
    server.start()
    add_task(server, "K2")
    assert server.stop() == 0
    records = verify(lines_of(audit_log), public_key(server.state_dir / "audit-signing.pub"))
    assert outline(records) == ["start", "K1", "start", "K2", "shutdown"]


def logrotate(tmp_path: Path) -> None:
    """A forced run of the packaged logrotate rule, pointed at tmp_path/log, as this account (the
    luigi account does not exist here)."""
    text = (REPO / "etc" / "logrotate.d" / "luigi-appliance").read_text()
    account = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    config = tmp_path / "logrotate.conf"
    config.write_text(text.replace("/var/log/luigi-appliance", str(tmp_path / "log")).replace("luigi luigi", account))
    config.chmod(0o644)
    result = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chain_goes_on_across_logrotate_while_running_and_while_stopped(tmp_path: Path) -> None:
    server, _ = make_server(tmp_path)
    log_dir = tmp_path / "log"
    server.start()
    add_task(server, "R1")
    wait_for_record(log_dir / "audit.log", "R1")
    logrotate(tmp_path)  # audit.log -> audit.log.1, a new empty audit.log
    add_task(server, "R2")
    assert server.stop() == 0
    logrotate(tmp_path)  # while stopped: audit.log.1 -> .2.gz, audit.log -> .1, a new empty one
    assert (log_dir / "audit.log").read_text() == ""
    server.start()  # the live file is empty: the head file says where the chain is
    add_task(server, "R3")
    assert server.stop() == 0

    rotated = gzip.decompress((log_dir / "audit.log.2.gz").read_bytes()).decode().splitlines()
    lines = rotated + lines_of(log_dir / "audit.log.1", log_dir / "audit.log")
    records = verify(lines, public_key(server.state_dir / "audit-signing.pub"))
    assert outline(records) == ["start", "R1", "R2", "shutdown", "start", "R3", "shutdown"]


def test_a_systemd_credential_is_the_signing_key_when_there_is_one(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    key = Ed25519PrivateKey.generate()
    (credentials / "audit-signing-key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (credentials / "audit-signing-key").chmod(0o400)  # as systemd makes it
    server, _ = make_server(tmp_path, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    server.start()
    add_task(server, "C1")
    assert server.stop() == 0
    records = verify(lines_of(tmp_path / "log" / "audit.log"), key.public_key())
    assert outline(records) == ["start", "C1", "shutdown"]
    assert not (server.state_dir / "audit-signing.key").exists()


def _pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# (file content, mode, what the refusal says)
BAD_KEYS = {
    "readable-by-others": (_pem(Ed25519PrivateKey.generate()), 0o644, "has mode 0644: others may access it"),
    "not-pem": (b"garbage\n", 0o600, "is not a PEM private key"),
    "not-ed25519": (_pem(ec.generate_private_key(ec.SECP256R1())), 0o600, "is not an Ed25519 key"),
}


def _tree(root: Path) -> set[tuple[str, int]]:
    return {(str(p), p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(BAD_KEYS))
@pytest.mark.parametrize("where", ["signing_key_file", "state_dir"])
def test_config_check_and_serve_refuse_a_signing_key_they_cannot_use(tmp_path: Path, case: str, where: str) -> None:
    content, mode, message = BAD_KEYS[case]
    key_file = tmp_path / ("audit-signing.key" if where == "signing_key_file" else "state/audit-signing.key")
    server, conf = make_server(tmp_path, f"signing_key_file = {key_file}" if where == "signing_key_file" else "")
    key_file.write_bytes(content)
    key_file.chmod(mode)
    if where == "signing_key_file":
        at = f"{conf}:{conf.read_text().splitlines().index(f'signing_key_file = {key_file}') + 1}: " \
             "[audit] signing_key_file: "
    else:
        at = f"{conf}:4: [state] dir: "
    before = _tree(tmp_path)
    check = cli("--config", str(conf), "config", "check", timeout=60)
    serve = cli(*server.args, timeout=60)
    assert _tree(tmp_path) == before, "config check or serve created or changed a file"
    for result in (check, serve):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert any(line.startswith(f"  {at}") and str(key_file) in line and message in line
                   for line in result.stderr.splitlines()), result.stderr


def test_config_check_and_serve_refuse_a_head_file_that_is_no_head(tmp_path: Path) -> None:
    server, conf = make_server(tmp_path)
    head = server.state_dir / "audit-chain.head"
    head.write_text("{half a head")  # the live audit log has no line: serve would continue from it
    line = conf.read_text().splitlines().index(f"file = {tmp_path / 'log' / 'audit.log'}") + 1
    before = _tree(tmp_path)
    check = cli("--config", str(conf), "config", "check", timeout=60)
    serve = cli(*server.args, timeout=60)
    assert _tree(tmp_path) == before, "config check or serve created or changed a file"
    for result in (check, serve):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"  {conf}:{line}: [audit] file: {head} does not hold the audit chain's head" in result.stderr, \
            result.stderr
