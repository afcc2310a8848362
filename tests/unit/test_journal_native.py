"""journald's native protocol against a real datagram socket: the fields of a log record and of
an audit line, multi-line and binary values, a 1 MB entry through a sealed memfd, the fallback to
today's stderr lines when the socket is missing, refuses, or goes away; and the catalog's ids."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from journal_socket import FakeJournal, parse

from luigi_appliance import logsetup
from luigi_appliance.audit import AuditLog
from luigi_appliance.audit.settings import AuditSettings
from luigi_appliance.journald import fields
from luigi_appliance.journald.handler import JournalHandler
from luigi_appliance.journald.native import SOCKET_ENV, encode

CATALOG = Path(__file__).resolve().parents[2] / "etc" / "systemd" / "catalog" / "luigi-appliance.catalog"


@pytest.fixture
def journal() -> Iterator[FakeJournal]:
    fake = FakeJournal()
    yield fake
    fake.close()


@pytest.fixture
def native(journal: FakeJournal, monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """A logger whose records go through the handler logsetup installs for ``format = journal``."""
    monkeypatch.setenv(SOCKET_ENV, journal.path)
    handler = logsetup.choose_handler("journal")
    assert isinstance(handler, JournalHandler)
    logger = logging.getLogger("test.journal")
    logger.handlers[:], logger.propagate, logger.level = [handler], False, logging.DEBUG
    yield logger
    logger.handlers[:], logger.propagate = [], True
    handler.close()


def test_encoding_is_the_protocol() -> None:
    assert encode([("MESSAGE", "hello"), ("PRIORITY", "6")]) == b"MESSAGE=hello\nPRIORITY=6\n"
    # A value with a newline: KEY, newline, little-endian u64 length, value, newline.
    assert encode([("MESSAGE", "a\nb")]) == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"
    assert parse(encode([("A", b"\x00\xff\n="), ("B", "x=y")])) == {"A": b"\x00\xff\n=", "B": b"x=y"}
    for bad in ("message", "_PID", "1ST", "A-B", "X" * 65, ""):
        with pytest.raises(ValueError, match="not a journal field name"):
            encode([(bad, "v")])


def test_a_record_arrives_with_its_fields(native: logging.Logger, journal: FakeJournal) -> None:
    native.warning("Login failed for %s\nsecond line", "alice", extra=fields.of_kind(
        "login_failure", PRINCIPAL="alice", REMOTE_ADDR="192.0.2.7", OUTCOME="failure", TASK_ID=None))
    line = sys._getframe().f_lineno - 2
    entry = journal.receive()
    assert entry["MESSAGE"] == b"Login failed for alice\nsecond line"
    assert entry["PRIORITY"] == b"4"
    assert entry["SYSLOG_IDENTIFIER"] == b"luigi-appliance"
    assert entry["LOGGER"] == b"test.journal"
    assert entry["CODE_FILE"] == __file__.encode() and entry["CODE_LINE"] == str(line).encode()
    assert entry["CODE_FUNC"] == b"test_a_record_arrives_with_its_fields"
    assert entry["MESSAGE_ID"] == fields.KINDS["login_failure"].message_id.encode()
    assert (entry["PRINCIPAL"], entry["REMOTE_ADDR"], entry["OUTCOME"]) == (b"alice", b"192.0.2.7", b"failure")
    assert "TASK_ID" not in entry  # None: left out


def test_a_traceback_is_one_entry_and_binary_values_arrive_intact(native: logging.Logger,
                                                                   journal: FakeJournal) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        native.exception("failed", extra={"TASK_ID": "T\x00\xff\u00e9"})
    entry = journal.receive()
    assert entry["PRIORITY"] == b"3"
    assert entry["MESSAGE"].startswith(b"failed\nTraceback (most recent call last):\n")
    assert entry["MESSAGE"].endswith(b"RuntimeError: boom")
    assert entry["TASK_ID"] == "T\x00\xff\u00e9".encode()


def test_a_megabyte_goes_through_a_sealed_memfd(native: logging.Logger, journal: FakeJournal) -> None:
    big = "".join(f"line {n:07d} " + "x" * 40 + "\n" for n in range(20000))  # ~1 MB, newlines in it
    assert len(big) > 1_000_000
    native.info(big)
    native.info("small")
    entry = journal.receive()
    assert journal.memfds == 1
    assert entry["MESSAGE"] == big.encode() and entry["LOGGER"] == b"test.journal"
    assert journal.receive()["MESSAGE"] == b"small"
    assert journal.memfds == 1, "a small entry is a plain datagram"


def _no_journal(tmp_path: Path) -> list[str]:
    """Paths where nothing takes datagrams: none, a socket nobody reads, a stream socket."""
    missing = str(tmp_path / "missing")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(tmp_path / "dead"))
    dead.close()  # the file stays, nobody reads it: ECONNREFUSED
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(tmp_path / "stream"))
    stream.listen()
    return [missing, str(tmp_path / "dead"), str(tmp_path / "stream")]


def test_without_a_journal_socket_stderr_has_todays_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths: sun_path holds 108 bytes, tmp_path may be longer
    for path in _no_journal(Path(".")):
        monkeypatch.setenv(SOCKET_ENV, path)
        handler = logsetup.choose_handler("journal")
        assert not isinstance(handler, JournalHandler), path
        handler.handle(logging.makeLogRecord({"name": "x.y", "levelno": logging.WARNING, "msg": "one\ntwo"}))
        assert capsys.readouterr().err == "<4>x.y: one\n<4>two\n"


def test_text_never_uses_the_socket(journal: FakeJournal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOCKET_ENV, journal.path)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert not isinstance(logsetup.choose_handler("text"), JournalHandler)
    assert not isinstance(logsetup.choose_handler("auto"), JournalHandler), "stderr is not the journal"
    assert isinstance(logsetup.choose_handler("journal"), JournalHandler)


def test_records_that_cannot_be_sent_go_to_stderr(journal: FakeJournal, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SOCKET_ENV, journal.path)
    handler = logsetup.choose_handler("journal")  # made now: its fallback writes to capsys's stderr
    assert isinstance(handler, JournalHandler)
    native = logging.getLogger("test.journal.lost")
    monkeypatch.setattr(native, "handlers", [handler])
    monkeypatch.setattr(native, "propagate", False)
    native.warning("before")
    assert journal.receive()["MESSAGE"] == b"before"
    journal.sock.close()  # journald went away
    for n in range(3):
        native.error("lost? %d", n)  # must not raise
    assert capsys.readouterr().err.splitlines() == [f"<3>test.journal.lost: lost? {n}" for n in range(3)]
    # The audit trail's copy of a line (trail.py) falls back the same way.
    handler.send_line(logging.getLogger("luigi_appliance.audit.events"), logging.WARNING, "audit: {}",
                      {"MESSAGE_ID": fields.KINDS["lockout"].message_id})
    assert capsys.readouterr().err == "<4>luigi_appliance.audit.events: audit: {}\n"
    assert handler.failures == 4
    # A record that cannot even be formatted still does not raise into the caller.
    native.error("%d", "not a number")


def test_audit_lines_arrive_with_their_fields(native: logging.Logger, journal: FakeJournal, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    handler = native.handlers[0]
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # as logsetup.setup leaves it
    log = AuditLog(AuditSettings(file=tmp_path / "audit.log", stderr=True))
    log.record("login", principal="mallory", source="192.0.2.9", outcome="locked_out")
    log.record("rpc", principal="bob", source="192.0.2.10", outcome="refused:403", method="add_task",
               family="Secret", task_id="Secret_1", worker="w1", status="DONE")
    log.record("approval", principal="carol", source="192.0.2.11", outcome="break_glass", request="r1",
               task_id="Deploy_1", family="Deploy")
    log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    entries = [e for e in journal.receive_all() if e.get("AUDIT_EVENT") != b"audit_checkpoint"]
    assert [e["MESSAGE"].decode() for e in entries] == [f"audit: {line}" for line in lines]
    lockout, rpc, glass = entries
    assert lockout["MESSAGE_ID"] == fields.KINDS["lockout"].message_id.encode()
    assert (lockout["PRINCIPAL"], lockout["REMOTE_ADDR"], lockout["OUTCOME"]) == \
        (b"mallory", b"192.0.2.9", b"locked_out")
    assert lockout["PRIORITY"] == b"4" and lockout["LOGGER"] == b"luigi_appliance.audit.events"
    assert rpc["MESSAGE_ID"] == fields.KINDS["rpc_refused"].message_id.encode()
    assert (rpc["TASK_ID"], rpc["TASK_FAMILY"], rpc["RPC_METHOD"], rpc["OUTCOME"]) == \
        (b"Secret_1", b"Secret", b"add_task", b"refused:403")
    assert rpc["AUDIT_SEQ"] == str(json.loads(lines[1])["seq"]).encode()
    assert glass["MESSAGE_ID"] == fields.KINDS["break_glass"].message_id.encode()
    assert (glass["PRINCIPAL"], glass["TASK_FAMILY"]) == (b"carol", b"Deploy")


@pytest.mark.parametrize(("event", "outcome", "kind"), [
    ("login", "success", "login_success"), ("login", "failure", "login_failure"),
    ("login", "refused", "login_failure"), ("login", "locked_out", "lockout"),
    ("login", "unavailable", "login_unavailable"), ("rpc", "ok", "rpc_ok"), ("rpc", "refused:409", "rpc_refused"),
    ("token", "issued", "token_issued"), ("token_exchange", "refused", "token_refused"),
    ("approval", "requested", "approval_requested"), ("approval", "approved", "approval_granted"),
    ("approval", "denied", "approval_denied"), ("approval", "run_done", "approval_event"),
    ("user_unlock", "refused:400", "action_refused"), ("user_unlock", "ok", "user_unlock"),
    ("worker_release", "not_bound", "worker_release"), ("something_new", "ok", "audit_other"),
])
def test_each_audit_event_has_its_kind(event: str, outcome: str, kind: str) -> None:
    assert fields.audit_kind(event, outcome) is fields.KINDS[kind]


def test_message_ids_are_distinct_random_ids() -> None:
    ids = [kind.message_id for kind in fields.KINDS.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", i) for i in ids), "uuid4().hex"


def catalog_entries(text: str) -> dict[str, str]:
    """The catalog's entries by id (journald's format: ``-- ID [LANG]`` opens one)."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        head = re.fullmatch(r"-- ([0-9a-f]{32})( \S+)?", line)
        if head:
            assert head[1] not in entries, f"{head[1]} twice"
            current = entries[head[1]] = []
        elif current is not None:
            current.append(line)
        else:
            assert not line.strip() or line.startswith("#"), f"text before the first entry: {line!r}"
    return {message_id: "\n".join(body) for message_id, body in entries.items()}


def test_the_catalog_has_every_catalogued_kind_and_no_other() -> None:
    entries = catalog_entries(CATALOG.read_text())
    catalogued = {kind.message_id: kind.name for kind in fields.KINDS.values() if kind.catalogued}
    assert set(entries) == set(catalogued), {catalogued.get(i, i) for i in set(entries) ^ set(catalogued)}
    for message_id, body in entries.items():
        headers = dict(re.findall(r"^([A-Z][A-Za-z-]+): (.+)$", body.split("\n\n")[0], re.M))
        assert {"Subject", "Defined-By", "Support", "Documentation"} <= set(headers), message_id
        assert headers["Defined-By"] == "luigi-appliance"
        for name in re.findall(r"@([A-Z0-9_]+)@", body):
            assert name in fields.FIELDS or name == "MESSAGE", f"{catalogued[message_id]}: @{name}@"
