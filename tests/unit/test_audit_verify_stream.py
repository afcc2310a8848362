"""audit verify streams the trail: the checks keep no record (only the one before, the lines
after the last link that are no link yet, and findings), they judge exactly as the whole-trail
checks do, and the records an export reads again stop where verification stopped."""

from __future__ import annotations

import base64
import gc
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from luigi_appliance.audit import chain, chain_check
from luigi_appliance.audit.trail_files import Entry, TrailFile, order_files, read_file
from luigi_appliance.audit.verify import EXIT_INTACT, EXIT_TAMPERED, MAX_FINDINGS, load_public_keys, verify
from luigi_appliance.errors import ApplianceError

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)


def keys() -> dict:
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return load_public_keys([("test key", pem)])


def trail(count: int, checkpoint_every: int = 50, start: int = 1, prev: str = chain.GENESIS) -> list[str]:
    """``count`` records as the writer chains them, a signed checkpoint every ``checkpoint_every``."""
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    lines = []
    for seq in range(start, start + count):
        stamp = f"2026-01-01T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.000+00:00"
        if seq % checkpoint_every == 0:
            signature = base64.b64encode(KEY.sign(chain.signed_message(seq, prev, stamp))).decode()
            fields = {"time": stamp, "event": chain.CHECKPOINT, "principal": None, "source": "scheduler",
                      "outcome": "signed", "reason": "interval", "key_id": chain.key_id(raw), "signature": signature}
        else:
            fields = {"time": stamp, "event": "rpc", "principal": "alice", "source": "192.0.2.1", "outcome": "ok"}
        linked = chain.chain(fields, seq, prev)
        prev = linked["hash"]
        lines.append(json.dumps(linked))
    return lines


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


class Watched(TrailFile):
    """A real trail file whose lines, as the checks consume them, are counted against the Entry
    objects alive at that moment (an observation point, not a stand-in: the file is read as usual)."""

    most_alive = 0

    def entries(self, keep_lines: bool = False, limit: int | None = None) -> Iterator[Entry]:
        for number, entry in enumerate(super().entries(keep_lines, limit), 1):
            if number % 5000 == 0:
                alive = sum(1 for o in gc.get_objects() if isinstance(o, Entry))
                Watched.most_alive = max(Watched.most_alive, alive)
            yield entry


def test_the_checks_keep_no_record(tmp_path: Path) -> None:
    lines = trail(30_000)
    path = write(tmp_path / "audit.log", lines)
    Watched.most_alive = 0
    outcome = chain_check.check([Watched(path, "audit.log", first_seq=1)], keys(), None)
    assert outcome.problems == [] and outcome.records == 30_000 and outcome.held is None
    # The record before, the last segment's first one, its sealer, the tail's ends: a handful.
    assert 0 < Watched.most_alive < 20


def _variants(tmp_path: Path) -> Iterator[list[Path]]:
    """Trails whose seqs increase (the streamed checks judge them), each damaged differently."""
    base = trail(120)
    edited = list(base)
    edited[10] = edited[10].replace("alice", "mallo")
    yield [write(tmp_path / "edited.log", edited)]
    yield [write(tmp_path / "deleted.log", base[:30] + base[33:])]
    rehashed = list(base)
    record = json.loads(rehashed[60])
    record["principal"] = "eve"
    rehashed[60] = json.dumps(chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS},
                                          record["seq"], record["prev"]))
    yield [write(tmp_path / "rehashed.log", rehashed)]
    yield [write(tmp_path / "restart.log", base[:40] + trail(5) + base[40:])]
    yield [write(tmp_path / "torn.log", [*base[:20], base[20][:30], json.dumps({"event": "x"}), *base[20:]])]
    yield [write(tmp_path / "unchained.log", [json.dumps({"event": "old"})] * 3 + base[5:])]
    rotated = tmp_path / "rot.log.1.gz"
    rotated.write_bytes(gzip.compress("".join(line + "\n" for line in base[:70]).encode())[:-12])
    yield [write(tmp_path / "rot.log", base[70:]), rotated]
    incomplete = tmp_path / "incomplete.log"
    incomplete.write_text("".join(line + "\n" for line in base[:-1]) + base[-1][:40])
    yield [incomplete]


def test_streamed_checks_judge_as_the_whole_trail_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "journal.txt"
    marks = [line for line in trail(160) if chain.CHECKPOINT in line] + ["{not json"]
    journal.write_text("".join(f"host luigi-appliance[1]: audit checkpoint: {m}\n" for m in marks))
    for paths in _variants(tmp_path):
        files, _how = order_files([read_file(p, p.name) for p in paths])
        streamed = chain_check.check(files, keys(), chain_check.read_journal(journal))
        assert streamed.held is None and streamed.problems, paths

        def out_of_order(_files: list[TrailFile], _tally: object) -> None:
            raise chain_check._OutOfOrder  # the whole-trail checks, for the same trail

        with monkeypatch.context() as patched:
            patched.setattr(chain_check, "_stream", out_of_order)
            whole = chain_check.check(files, keys(), chain_check.read_journal(journal))
        assert whole.held is not None
        assert ([str(p) for p in streamed.problems], streamed.records, streamed.seq_range, streamed.time_range,
                streamed.checkpoints, streamed.sealed_through) == (
            [str(p) for p in whole.problems], whole.records, whole.seq_range, whole.time_range, whole.checkpoints,
            whole.sealed_through), paths
        assert [(p.at, p.seq) for p in streamed.problems] == [(p.at, p.seq) for p in whole.problems]


def test_records_read_again_stop_where_verification_stopped(tmp_path: Path) -> None:
    lines = trail(100)
    path = write(tmp_path / "audit.log", lines)
    report = verify([path], keys())
    assert report.exit_code == EXIT_INTACT and len(report.records) == 100
    with path.open("a") as live:  # the scheduler goes on writing after verification
        live.write("".join(line + "\n" for line in trail(5, start=101, prev=json.loads(lines[-1])["hash"])))
    assert [e.raw for e in report.records] == lines


def test_findings_beyond_the_cap_are_counted_not_kept(tmp_path: Path) -> None:
    base = trail(60, checkpoint_every=30)  # sealed to its end: the torn lines are all there is to find
    torn = [base[0][:25]] * (MAX_FINDINGS + 234)
    path = write(tmp_path / "audit.log", [*base[:10], *torn, *base[10:]])
    report = verify([path], keys())
    assert len(report.problems) == MAX_FINDINGS and report.more == 234 and report.exit_code == EXIT_TAMPERED
    assert [p.at.line for p in report.problems if p.at] == list(range(11, 11 + MAX_FINDINGS))
    assert report.problem_lines()[-1] == f"234 more finding(s) not listed: only the first {MAX_FINDINGS} are kept"
    assert report.as_json()["problems_not_listed"] == 234


def test_records_read_again_from_a_file_changed_since_are_refused(tmp_path: Path) -> None:
    lines = trail(100)
    path = write(tmp_path / "audit.log", lines)
    report = verify([path], keys())
    assert report.exit_code == EXIT_INTACT
    # logrotate moved the verified file away and the scheduler began a new one, as long.
    write(path, trail(100, start=101, prev=json.loads(lines[-1])["hash"]))
    with pytest.raises(ApplianceError, match=r"changed since it was verified \(.*audit.log:1\): rotated"):
        list(report.records)
