"""audit/verify.py's judgement on trails built here with chain.py and a key made here: the cases
the system tests (tests/system/test_audit_verify.py, the real writer and CLI) do not make: file
order from names, logrotate's sibling names, xz and bzip2, a damaged gzip, a moved block, a
restarted chain, lines from before the chain, a crash the writer acknowledged, a rotated key."""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from luigi_appliance.audit import chain
from luigi_appliance.audit.verify import (
    EXIT_INTACT,
    EXIT_TAMPERED,
    EXIT_UNSEALED,
    load_public_keys,
    order_files,
    read_file,
    rotated_siblings,
    verify,
)


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Chain:
    """A trail as the writer makes it: records and signed checkpoints, from seq 1."""

    def __init__(self, key: Ed25519PrivateKey):
        self.key = key
        self.seq, self.prev = 0, chain.GENESIS
        self.lines: list[str] = []

    def add(self, **fields: Any) -> str:
        self.seq += 1
        linked = chain.chain({"time": f"2026-01-01T00:00:{self.seq:02d}.000+00:00", "event": "rpc",
                              "principal": "alice", "source": "192.0.2.1", "outcome": "ok", **fields},
                             self.seq, self.prev)
        self.prev = linked["hash"]
        self.lines.append(json.dumps(linked))
        return self.lines[-1]

    def checkpoint(self) -> str:
        stamp = f"2026-01-01T00:00:{self.seq + 1:02d}.000+00:00"
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        signature = self.key.sign(chain.signed_message(self.seq + 1, self.prev, stamp))
        self.seq += 1
        linked = chain.chain({"time": stamp, "event": chain.CHECKPOINT, "principal": None, "source": "scheduler",
                              "outcome": "signed", "reason": "interval", "key_id": chain.key_id(raw),
                              "signature": base64.b64encode(signature).decode()}, self.seq, self.prev)
        self.prev = linked["hash"]
        self.lines.append(json.dumps(linked))
        return self.lines[-1]

    def records(self, count: int) -> None:
        for _ in range(count):
            self.add()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys(*private: Ed25519PrivateKey) -> dict:
    return load_public_keys((f"key {i}", pem(k)) for i, k in enumerate(private))


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("".join(line + end for line in lines))
    return path


def kinds(report) -> list[tuple[str, int | None]]:
    return [(p.kind, p.at.line if p.at else None) for p in report.problems]


def test_files_without_records_keep_their_place_by_name(tmp_path: Path) -> None:
    names = ["audit.log", "audit.log.1", "audit.log.10.gz", "audit.log.2.gz", "audit.log-20240102",
             "audit.log-20231231.gz"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    ordered, how = order_files([read_file(tmp_path / n, n) for n in names])
    assert [f.shown for f in ordered] == ["audit.log-20231231.gz", "audit.log-20240102", "audit.log.10.gz",
                                          "audit.log.2.gz", "audit.log.1", "audit.log"]
    assert how == "name"


def test_rotated_siblings_are_logrotate_s_names_only(tmp_path: Path) -> None:
    for name in ["audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.3.xz", "audit.log-20240102.gz",
                 "audit-20240103.log", "audit.log.bak", "other.log", "audit.log.1.swp"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in rotated_siblings(tmp_path / "audit.log")] == [
        "audit-20240103.log", "audit.log", "audit.log-20240102.gz", "audit.log.1", "audit.log.2.gz",
        "audit.log.3.xz"]


def test_xz_and_bzip2_files_are_read(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(3)
    trail.checkpoint()
    first, second = trail.lines[:2], trail.lines[2:]
    (tmp_path / "audit.log.2.xz").write_bytes(lzma.compress("".join(x + "\n" for x in first).encode()))
    (tmp_path / "audit.log.1.bz2").write_bytes(bz2.compress("".join(x + "\n" for x in second).encode()))
    report = verify([tmp_path / "audit.log.1.bz2", tmp_path / "audit.log.2.xz"], keys(key))
    assert report.problems == [] and report.exit_code == EXIT_INTACT and report.ordered_by == "seq"
    assert [f.path.name for f in report.files] == ["audit.log.2.xz", "audit.log.1.bz2"]


def test_a_damaged_gzip_keeps_what_came_before(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(200)
    data = gzip.compress("".join(x + "\n" for x in trail.lines).encode())
    path = tmp_path / "audit.log.2.gz"
    path.write_bytes(data[: len(data) // 2])
    report = verify([path], keys(key))
    assert report.exit_code == EXIT_TAMPERED
    assert "damaged" in [kind for kind, _ in kinds(report)]
    assert 0 < len(report.records) < 200


def test_a_moved_block_is_named_once(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(20)
    trail.checkpoint()
    lines = trail.lines
    moved = lines[:3] + lines[8:15] + lines[3:8] + lines[15:]  # seq 4..8 after 15
    report = verify([write(tmp_path / "audit.log", moved)], keys(key))
    assert [str(p) for p in report.problems] == [
        f"reordered: 5 record(s) out of order at {tmp_path}/audit.log:11..15 (seq 4..8): after "
        f"{tmp_path}/audit.log:10 (seq 15), they belong after {tmp_path}/audit.log:3 (seq 3)"]


def test_a_restarted_chain(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    old, new = Chain(key), Chain(key)
    old.records(3)
    old.checkpoint()
    new.records(2)
    new.checkpoint()
    report = verify([write(tmp_path / "audit.log", old.lines + new.lines)], keys(key))
    assert kinds(report) == [("restart", 5)] and report.exit_code == EXIT_TAMPERED


def test_lines_from_before_the_chain_are_not_sealed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(2)
    trail.checkpoint()
    before = [json.dumps({"time": "2025-01-01T00:00:00+00:00", "event": "login", "principal": "bob",
                          "source": "192.0.2.9", "outcome": "success"})] * 2
    old = write(tmp_path / "audit.log.1", before)
    report = verify([write(tmp_path / "audit.log", before + trail.lines), old], keys(key))
    assert report.ordered_by == "seq and name"
    assert [str(p) for p in report.problems] == [
        f"unchained: 4 record(s) without a hash chain before it begins ({tmp_path}/audit.log.1:1.."
        f"{tmp_path}/audit.log:2): written before the trail was chained, not verifiable"]
    assert report.exit_code == EXIT_UNSEALED


def test_a_crash_the_writer_acknowledged_is_not_a_break(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(3)
    torn = trail.lines[-1][:30]
    trail.seq, trail.prev = 2, json.loads(trail.lines[1])["hash"]  # the writer continues after seq 2
    lines = [*trail.lines[:2], torn]
    trail.lines = []
    trail.checkpoint()  # the start checkpoint comes first
    trail.add(event="audit_damaged_tail", after_seq=2, bytes=31)
    trail.checkpoint()
    report = verify([write(tmp_path / "audit.log", lines + trail.lines)], keys(key))
    assert kinds(report) == [("damaged-tail", 3)] and report.exit_code == EXIT_UNSEALED
    # The same bytes without the writer's word for them: torn.
    lines_alone = [*lines, trail.lines[0], trail.lines[2]]
    assert ("torn", 3) in kinds(verify([write(tmp_path / "audit.log", lines_alone)], keys(key)))


def test_checkpoints_of_a_rotated_key_verify_with_both_keys(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(2)
    trail.checkpoint()
    new_key = Ed25519PrivateKey.generate()
    trail.key = new_key
    trail.records(2)
    trail.checkpoint()
    path = write(tmp_path / "audit.log", trail.lines)
    assert verify([path], keys(key, new_key)).exit_code == EXIT_INTACT
    only_new = verify([path], keys(new_key))
    assert kinds(only_new) == [("unknown-key", 3)] and only_new.exit_code == EXIT_TAMPERED


def test_journal_lines_anywhere_in_a_line_and_forged_ones(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    trail = Chain(key)
    trail.records(2)
    trail.checkpoint()
    trail.records(2)
    last = trail.checkpoint()
    path = write(tmp_path / "audit.log", trail.lines[:3])
    forger = Chain(Ed25519PrivateKey.generate())
    forger.records(6)
    journal = tmp_path / "journal.txt"
    journal.write_text(f"Dec 02 06:00:00 host luigi-appliance[12]: audit checkpoint: {last}\n"
                       f"Dec 02 06:00:01 host luigi-appliance[12]: audit checkpoint: {forger.checkpoint()}\n"
                       "Dec 02 06:00:02 host luigi-appliance[12]: something else\n")
    report = verify([path], keys(key), journal)
    assert kinds(report) == [("truncated", 1), ("journal", 2)]
    assert "at least 3 record(s) are gone" in str(report.problems[0])


def test_an_empty_trail_is_not_sealed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    report = verify([write(tmp_path / "audit.log", [])], keys(key))
    assert kinds(report) == [("empty", None)] and report.exit_code == EXIT_UNSEALED
    assert report.summary().startswith("intact, not all sealed: 0 record(s), 0 checkpoint(s), 1 file(s)")
