"""``luigi-appliance audit verify`` through the real CLI, on trails the real writer
(luigi_appliance.audit.AuditLog, signing its checkpoints) wrote: each kind of tampering is
named at its FILE:LINE with exit 1, an intact trail passes with 0, an unsealed tail is 3; and a
trail rotated by the real logrotate binary (compressing, with delaycompress) while the writer
runs, and across restarts, verifies across its .gz files."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import REPO, cli
from luigi_appliance.audit import AuditLog, chain
from luigi_appliance.audit.settings import AuditSettings

RECORDS_PER_RUN = 10


@dataclass
class Writer:
    """The real writer, run as serve runs it: one AuditLog per scheduler run (a checkpoint at its
    start and at its close), the chain's head kept beside it, the journal's checkpoint lines
    captured as ``journalctl -o cat | grep 'audit checkpoint: '`` would give them."""

    dir: Path
    key: Ed25519PrivateKey
    journal: Path
    runs: int = 0

    @property
    def file(self) -> Path:
        return self.dir / "audit.log"

    @property
    def public_key(self) -> Path:
        return self.dir / "audit-signing.pub"

    def open(self) -> AuditLog:
        self.runs += 1
        return AuditLog(AuditSettings(file=self.file, stderr=False), signing_key=self.key,
                        head_file=self.dir / "audit-chain.head")

    def run(self, records: int = RECORDS_PER_RUN) -> None:
        """One scheduler run that audits ``records`` calls."""
        log = self.open()
        for n in range(records):
            log.record("rpc", principal=f"user{n % 3}", source="192.0.2.7", outcome="ok", method="add_task",
                       task_id=f"Task_{self.runs}_{n}", family="Task", worker="w1", status="PENDING")
        log.close()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    trail_dir = tmp_path / "trail"
    trail_dir.mkdir(mode=0o700)
    key = Ed25519PrivateKey.generate()
    w = Writer(trail_dir, key, tmp_path / "journal.txt")
    w.public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    handler = logging.FileHandler(w.journal)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: record.getMessage().startswith("audit checkpoint: "))
    journal = logging.getLogger("luigi_appliance.audit")
    journal.addHandler(handler)
    level = journal.level
    journal.setLevel(logging.INFO)
    yield w
    journal.removeHandler(handler)
    journal.setLevel(level)
    handler.close()


def three_runs(writer: Writer) -> list[str]:
    """audit.log of three runs: per run a start checkpoint, 10 records, a shutdown checkpoint
    (seq 1..36; checkpoints at lines 1, 12, 13, 24, 25, 36)."""
    for _ in range(3):
        writer.run()
    lines = writer.file.read_text().splitlines()
    assert len(lines) == 3 * (RECORDS_PER_RUN + 2)
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    return lines


def verify(writer: Writer, *files: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    paths = files or (writer.file,)
    return cli("audit", "verify", "--public-key", str(writer.public_key), *extra, *map(str, paths))


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def problems(result: subprocess.CompletedProcess) -> list[str]:
    """The problem lines of a text report (all but the summary)."""
    return result.stdout.splitlines()[:-1]


def test_an_intact_sealed_trail_passes(writer: Writer) -> None:
    three_runs(writer)
    result = verify(writer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result) == []
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("intact: 36 record(s), 6 checkpoint(s), 1 file(s)") and "seq 1..36" in summary


def test_json_report(writer: Writer) -> None:
    lines = three_runs(writer)
    rewrite(writer.file, lines[:20])  # records 21..36 gone: 13 was the last checkpoint
    result = verify(writer, extra=("--format", "json"))
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "unsealed" and report["exit_code"] == 3 and report["sealed_through_seq"] == 13
    assert [(p["kind"], p["line"], p["seq"]) for p in report["problems"]] == [("unsealed", 14, 14)]
    assert report["seq_range"] == [1, 20] and report["files"] == [
        {"file": str(writer.file), "lines": 20, "first_seq": 1}]


def test_edit_one_byte(writer: Writer) -> None:
    lines = three_runs(writer)
    lines[6] = lines[6].replace("user", "usEr", 1)
    rewrite(writer.file, lines)
    result = verify(writer)
    assert result.returncode == 1, result.stdout
    assert problems(result) == [f"edited: {writer.file}:7 (seq 7): its hash does not match its content: "
                                "the record was edited"]
    assert result.stdout.splitlines()[-1].startswith("TAMPERED: ")


def test_edit_and_rehash_is_a_chain_break_and_a_broken_signature(writer: Writer) -> None:
    lines = three_runs(writer)
    record = json.loads(lines[6])
    record["principal"] = "mallory"
    lines[6] = json.dumps(chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS},
                                      record["seq"], record["prev"]))
    rewrite(writer.file, lines)
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [
        f"chain-break: {writer.file}:8 (seq 8): its prev is not the hash of {writer.file}:7 (seq 7): "
        "that record was rewritten (edited and re-hashed) or replaced"]


def test_rewriting_the_rest_of_the_chain_breaks_the_next_checkpoint(writer: Writer) -> None:
    lines = three_runs(writer)
    rechained, prev = [], json.loads(lines[5])["hash"]
    for line in lines[6:]:
        record = json.loads(line)
        if record["seq"] == 7:
            record["principal"] = "mallory"
        linked = chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS}, record["seq"], prev)
        prev = linked["hash"]
        rechained.append(json.dumps(linked))
    rewrite(writer.file, lines[:6] + rechained)
    result = verify(writer)
    assert result.returncode == 1
    found = problems(result)
    assert found[0].startswith(f"bad-signature: checkpoint {writer.file}:12 (seq 12): the signature does not verify")
    # Every later checkpoint too (each vouches for everything before it): only seq 1 is sealed.
    assert [line.split(" (seq")[0] for line in found[1:5]] == [
        f"bad-signature: checkpoint {writer.file}:{n}" for n in (13, 24, 25, 36)]
    assert found[5].startswith(f"unsealed: 35 record(s) after the last good checkpoint, {writer.file}:1 (seq 1)")
    assert found[5].endswith(f"are not sealed by a signature ({writer.file}:2..36, seq 2..36)")


def test_delete_a_line(writer: Writer) -> None:
    lines = three_runs(writer)
    rewrite(writer.file, lines[:8] + lines[9:])
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [f"missing: 1 record(s) missing before {writer.file}:9 (seq 9)"]


def test_delete_lines(writer: Writer) -> None:
    lines = three_runs(writer)
    rewrite(writer.file, lines[:4] + lines[9:])
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [f"missing: 5 record(s) missing before {writer.file}:5 (seq 5..9)"]


def test_swap_two_lines(writer: Writer) -> None:
    lines = three_runs(writer)
    lines[4], lines[5] = lines[5], lines[4]
    rewrite(writer.file, lines)
    result = verify(writer)
    assert result.returncode == 1
    # The fewest moves that explain the order: one of the two records (the first, here) moved.
    assert problems(result) == [f"reordered: 1 record(s) out of order at {writer.file}:5 (seq 6): after "
                                f"{writer.file}:4 (seq 4), it belongs after {writer.file}:6 (seq 5)"]


def test_insert_a_line(writer: Writer) -> None:
    lines = three_runs(writer)
    # A forger's best: a record linked to the one before it, with the seq that comes next.
    before = json.loads(lines[9])
    forged = chain.chain({"time": before["time"], "event": "rpc", "principal": "admin", "source": "10.0.0.1",
                          "outcome": "ok", "method": "set_task_status"}, before["seq"] + 1, before["hash"])
    rewrite(writer.file, [*lines[:10], json.dumps(forged), *lines[10:]])
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [f"inserted: 1 record(s) inserted at {writer.file}:11 (seq 11): the chain has "
                                f"other records with these seqs at {writer.file}:12"]


def test_insert_a_line_without_chain_fields(writer: Writer) -> None:
    lines = three_runs(writer)
    plain = json.dumps({"time": "2026-01-01T00:00:00.000+00:00", "event": "rpc", "principal": "admin",
                        "source": "10.0.0.1", "outcome": "ok"})
    rewrite(writer.file, [*lines[:10], plain, *lines[10:]])
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [f"inserted: {writer.file}:11: a record without seq, prev and hash inside the "
                                "chain: inserted"]


def test_torn_line(writer: Writer) -> None:
    lines = three_runs(writer)
    lines[20] = lines[20][:40]
    rewrite(writer.file, lines)
    result = verify(writer)
    assert result.returncode == 1
    assert problems(result) == [
        f"torn: {writer.file}:21: not a complete JSON record (torn, truncated or edited)",
        f"missing: 1 record(s) missing before {writer.file}:22 (seq 21)"]


def test_truncated_tail_without_and_with_the_journal(writer: Writer) -> None:
    lines = three_runs(writer)
    journal = writer.journal.read_text().splitlines()
    assert len(journal) == 6 and all(line.startswith("audit checkpoint: {") for line in journal)
    # Cut right after a checkpoint: the files alone cannot tell (they end sealed).
    rewrite(writer.file, lines[:24])
    alone = verify(writer)
    assert alone.returncode == 0, alone.stdout
    with_journal = verify(writer, extra=("--checkpoints", str(writer.journal)))
    assert with_journal.returncode == 1
    assert problems(with_journal) == [
        f"truncated: the journal has checkpoint seq 36 of {json.loads(lines[35])['time']} ({writer.journal}:6), "
        f"the files end at seq 24 ({writer.file}:24): the trail was cut, at least 12 record(s) are gone"]
    # Cut in the middle of a run: an unsealed tail without the journal, a cut with it.
    rewrite(writer.file, lines[:18])
    assert verify(writer).returncode == 3
    assert "at least 18 record(s) are gone" in verify(writer, extra=("--checkpoints", str(writer.journal))).stdout


def test_truncated_mid_line(writer: Writer) -> None:
    lines = three_runs(writer)
    writer.file.write_text("".join(line + "\n" for line in lines[:30]) + lines[30][:50])
    result = verify(writer)
    assert result.returncode == 3
    assert problems(result)[0] == (f"incomplete: {writer.file}:31: the last line is not complete "
                                   "(being written now, or cut off)")
    assert verify(writer, extra=("--checkpoints", str(writer.journal))).returncode == 1


def test_a_record_replaced_in_place_of_a_journaled_checkpoint(writer: Writer) -> None:
    """The writer continues after the last intact record: a shutdown checkpoint damaged while the
    scheduler is stopped is re-used as a seq by the next run; the journal still has the original."""
    lines = three_runs(writer)
    rewrite(writer.file, [*lines[:35], "{garbage"])
    writer.run(2)
    result = verify(writer, extra=("--checkpoints", str(writer.journal)))
    assert result.returncode == 1
    assert f"journal-mismatch: {writer.file}:37 (seq 36) is not the checkpoint the journal has for seq 36" \
        in result.stdout
    alone = verify(writer)
    assert alone.returncode == 3  # damage the writer acknowledged: not vouched for, not a break
    assert problems(alone)[0].startswith(f"damaged-tail: {writer.file}:36: no record (a crash while writing")


def test_forged_checkpoint_with_another_key(writer: Writer) -> None:
    lines = three_runs(writer)
    other = Ed25519PrivateKey.generate()
    before = json.loads(lines[29])
    stamp = before["time"]
    raw = other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = other.sign(chain.signed_message(31, before["hash"], stamp))
    forged = chain.chain({"time": stamp, "event": chain.CHECKPOINT, "principal": None, "source": "scheduler",
                          "outcome": "signed", "reason": "interval", "key_id": chain.key_id(raw),
                          "signature": base64.b64encode(signature).decode()}, 31, before["hash"])
    # Replaces record 31 so that the chain after it links: only the signature can tell.
    rest, prev = [], forged["hash"]
    for line in lines[31:]:
        record = json.loads(line)
        linked = chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS}, record["seq"], prev)
        prev = linked["hash"]
        rest.append(json.dumps(linked))
    rewrite(writer.file, [*lines[:30], json.dumps(forged), *rest])
    result = verify(writer)
    assert result.returncode == 1
    found = problems(result)
    assert found[0] == (f"unknown-key: checkpoint {writer.file}:31 (seq 31): signed with key_id {chain.key_id(raw)}, "
                        f"not the public key given ({json.loads(lines[0])['key_id']}): forged with another key, "
                        "or signed by a key not given (--public-key)")
    assert found[1].startswith(f"bad-signature: checkpoint {writer.file}:36 (seq 36)")


def test_checkpoint_signed_by_the_right_key_id_but_a_forged_signature(writer: Writer) -> None:
    lines = three_runs(writer)
    record = json.loads(lines[35])
    record["signature"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"x")).decode()
    lines[35] = json.dumps(chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS},
                                       record["seq"], record["prev"]))
    rewrite(writer.file, lines)
    found = problems(verify(writer))
    assert found == [f"bad-signature: checkpoint {writer.file}:36 (seq 36): the signature does not verify: "
                     "forged, or the records before it were rewritten after it was signed",
                     f"unsealed: 11 record(s) after the last good checkpoint, {writer.file}:25 (seq 25) of "
                     f"{json.loads(lines[24])['time']} are not sealed by a signature "
                     f"({writer.file}:26..36, seq 26..36)"]


def rotated(writer: Writer) -> list[Path]:
    """Rotate audit.log as logrotate does (NAME.1, NAME.2.gz, ...) by hand: for the tests of
    file boundaries (the real logrotate is below)."""
    files = []
    lines = writer.file.read_text().splitlines()
    for number, chunk in ((3, lines[:12]), (2, lines[12:24]), (1, lines[24:])):
        path = writer.dir / (f"audit.log.{number}" + (".gz" if number > 1 else ""))
        data = "".join(line + "\n" for line in chunk).encode()
        path.write_bytes(gzip.compress(data) if number > 1 else data)
        files.append(path)
    writer.file.write_text("")
    return files


def test_rotated_files_are_ordered_by_the_chain(writer: Writer) -> None:
    three_runs(writer)
    files = rotated(writer)
    # Given in any order; read oldest first by seq.
    result = verify(writer, files[1], writer.file, files[2], files[0])
    assert result.returncode == 0, result.stdout
    assert (f"4 file(s) ordered by seq and name ({files[0]}, {files[1]}, {files[2]}, {writer.file})"
            in result.stdout)


def test_replace_a_rotated_file(writer: Writer) -> None:
    three_runs(writer)
    files = rotated(writer)
    original = gzip.decompress(files[1].read_bytes()).decode().splitlines()
    # The forger rebuilds the middle file from the end of the one before: every record there
    # links, but the next file's first record names the original's last hash.
    prev, forged = json.loads(original[0])["prev"], []
    for line in original:
        record = json.loads(line)
        record["principal"] = "nobody"
        linked = chain.chain({k: v for k, v in record.items() if k not in chain.CHAIN_FIELDS}, record["seq"], prev)
        prev = linked["hash"]
        forged.append(json.dumps(linked))
    files[1].write_bytes(gzip.compress("".join(line + "\n" for line in forged).encode()))
    result = verify(writer, *files, writer.file)
    assert result.returncode == 1
    found = problems(result)
    # The middle file's first checkpoint still verifies (its prev is the genuine one), its last
    # does not; the next file's first record does not link.
    assert found == [
        f"bad-signature: checkpoint {files[1]}:12 (seq 24): the signature does not verify: forged, or the records "
        "before it were rewritten after it was signed",
        f"file-break: {files[2]}:1 (seq 25) does not follow {files[1]}:12 (seq 24): the chain breaks between "
        "the files: one was replaced or rewritten"]


def test_a_trail_whose_oldest_files_were_rotated_away(writer: Writer) -> None:
    three_runs(writer)
    files = rotated(writer)
    result = verify(writer, files[1], files[2])
    assert result.returncode == 0, result.stdout
    assert problems(result) == [f"start: the given trail starts at seq 13 ({files[1]}:1): older records were "
                                "rotated away or not given"]


def test_unreadable_input_is_exit_2(writer: Writer, tmp_path: Path) -> None:
    three_runs(writer)
    missing = cli("audit", "verify", "--public-key", str(writer.public_key), str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and missing.stderr == f"luigi-appliance: error: no audit file {tmp_path}/nope.log\n"
    not_a_key = cli("audit", "verify", "--public-key", str(writer.file), str(writer.file))
    assert not_a_key.returncode == 2 and "not a PEM public key" in not_a_key.stderr
    assert "Traceback" not in not_a_key.stderr


def test_relative_paths_are_read_from_the_working_directory(writer: Writer) -> None:
    three_runs(writer)
    result = cli("audit", "verify", "--public-key", "audit-signing.pub", "audit.log", cwd=writer.dir)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the real logrotate ------------------------------------------------------------------------

def logrotate_conf(logs: Path, state_dir: Path) -> Path:
    """etc/logrotate.d/luigi-appliance for the files ``logs`` names (a path or a glob) and
    without the luigi account (these tests run as whoever runs them); -f rotates at each run."""
    text = (REPO / "etc" / "logrotate.d" / "luigi-appliance").read_text()
    assert "/var/log/luigi-appliance/*.log {" in text and "compress" in text and "delaycompress" in text
    text = text.replace("/var/log/luigi-appliance/*.log", str(logs))
    text = re.sub(r"^\s*su luigi luigi\s*$", "", text, flags=re.M)
    text = text.replace("create 0640 luigi luigi", "create 0640")
    conf = state_dir / "logrotate.conf"
    conf.write_text(text)
    return conf


def run_logrotate(conf: Path, state: Path) -> None:
    logrotate = shutil.which("logrotate") or "/usr/sbin/logrotate"
    done = subprocess.run([logrotate, "-f", "-s", str(state), str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_trail_rotated_by_logrotate_with_compression_verifies(writer: Writer, tmp_path: Path) -> None:
    conf = logrotate_conf(writer.dir / "*.log", tmp_path)
    state = tmp_path / "logrotate.state"
    log = writer.open()
    for round_ in range(4):  # rotations while the writer runs: it reopens the path
        for n in range(25):
            log.record("rpc", principal="alice", source="192.0.2.1", outcome="ok", method="add_task",
                       task_id=f"T{round_}_{n}")
        log._flush()  # what the writer thread does every FLUSH_INTERVAL, now, so the round is in this file
        run_logrotate(conf, state)
    log.close()
    run_logrotate(conf, state)  # and one while it is stopped: the next run continues the chain
    writer.run()
    files = sorted(p.name for p in writer.dir.glob("audit.log*"))
    assert files == ["audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.3.gz", "audit.log.4.gz",
                     "audit.log.5.gz"], files
    result = cli("audit", "verify", "--public-key", str(writer.public_key),
                 *(str(writer.dir / name) for name in files))
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result) == []
    # 1 start checkpoint, 100 records, 1 shutdown; then a run of 1 + 10 + 1.
    assert "intact: 114 record(s), 4 checkpoint(s), 6 file(s) ordered by seq" in result.stdout
    assert "seq 1..114" in result.stdout
    # A compressed rotation replaced by a copy of another one: caught at its boundaries.
    shutil.copy(writer.dir / "audit.log.2.gz", writer.dir / "audit.log.3.gz")
    tampered = cli("audit", "verify", "--public-key", str(writer.public_key),
                   *(str(writer.dir / name) for name in files))
    assert tampered.returncode == 1
    # Which of two identical copies is the inserted one cannot be told: the one read second is named;
    # the gap names the replaced file.
    assert problems(tampered) == [
        f"missing: 25 record(s) missing before {writer.dir}/audit.log.3.gz:1 (seq 52..76)",
        f"inserted: 25 record(s) inserted at {writer.dir}/audit.log.2.gz:1..25 (seq 77..101): the chain has the "
        f"same records at {writer.dir}/audit.log.3.gz:1..25"]


# ---- a real scheduler --------------------------------------------------------------------------

def test_a_scheduler_trail_verifies_with_the_configured_files_and_key(configured_server, tmp_path: Path) -> None:
    """serve's own trail, rotated by logrotate while it runs; verify with no FILE and no key:
    [audit] file and its rotations, checked against the state directory's signing key, whose
    public half ``audit public-key`` prints."""
    server = configured_server()
    conf = tmp_path / "scheduler.conf"
    rotate_conf = logrotate_conf(tmp_path / "audit.log", tmp_path)  # not server.log beside it
    for n in range(3):
        assert server.rpc("add_task", task_id=f"T{n}", status="PENDING", worker="w1").status_code == 200
        time.sleep(0.5)  # the writer's next flush
        run_logrotate(rotate_conf, tmp_path / "logrotate.state")
    assert server.rpc("add_task", task_id="T3", status="PENDING", worker="w1").status_code == 200
    assert server.stop() == 0
    assert sorted(p.name for p in tmp_path.glob("audit.log*")) == ["audit.log", "audit.log.1", "audit.log.2.gz",
                                                                   "audit.log.3.gz"]
    result = cli("audit", "verify", "--config", str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result) == [] and "4 file(s) ordered by seq" in result.stdout
    public = cli("audit", "public-key", "--config", str(conf))
    assert public.returncode == 0, public.stderr
    assert public.stdout == (server.state_dir / "audit-signing.pub").read_text()
    assert public.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    # The live file's first line removed (T3's add_task; the shutdown checkpoint follows it).
    live = (tmp_path / "audit.log").read_text().splitlines()
    assert json.loads(live[0])["task_id"] == "T3" and json.loads(live[-1])["reason"] == "shutdown"
    rewrite(tmp_path / "audit.log", live[1:])
    damaged = cli("audit", "verify", "--config", str(conf))
    assert damaged.returncode == 1
    assert problems(damaged) == [f"missing: 1 record(s) missing before {tmp_path}/audit.log:1 "
                                 f"(seq {json.loads(live[0])['seq']})"]
