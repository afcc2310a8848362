"""``luigi-appliance audit verify`` cost: seconds and peak RSS per trail size.

Builds, in a temporary directory, trails of ``--sizes`` records (default 10k, 100k, 1M) in the
writer's format (chain.chain, an Ed25519 checkpoint every ``--checkpoint-every`` records, the
fields of an RPC record), split like a logrotate set into ``--files`` files (audit.log.N ...
audit.log), then times one child process running ``luigi-appliance audit verify --public-key``
on each and reads its peak RSS from os.wait4 (the child's own ru_maxrss, not this process's).
With ``--old-tree DIR`` (a worktree of an older commit: ``git worktree add /tmp/wt-v1 HEAD``)
the same is measured for that tree's code, side by side.

Nothing is asserted; the machine is shared, so the numbers are noisy: run it more than once.

    .venv/bin/python bench/audit_verify.py --old-tree /tmp/wt-v1
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from luigi_appliance.audit import chain

_CLI = "import sys; sys.path.insert(0, sys.argv.pop(1)); from luigi_appliance.cli import main; sys.exit(main())"


@dataclass(frozen=True)
class Run:
    """One verification: its exit status, wall seconds and the child's peak RSS (MiB)."""

    status: int
    seconds: float
    peak_mib: float


def build_trail(directory: Path, records: int, files: int, checkpoint_every: int, key: Ed25519PrivateKey) -> list[Path]:
    """``records`` chained records (a checkpoint every ``checkpoint_every``, one last) over
    ``files`` files, oldest audit.log.{files-1}, newest audit.log; the paths."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = chain.key_id(raw)
    names = [f"audit.log.{n}" for n in range(files - 1, 0, -1)] + ["audit.log"]
    per_file = -(-records // files)
    seq, prev = 0, chain.GENESIS
    paths = []
    for index, name in enumerate(names):
        path = directory / name
        with path.open("w", encoding="ascii") as out:
            for _ in range(min(per_file, records - index * per_file)):
                seq += 1
                stamp = f"2026-01-{1 + seq // 86_400_000:02d}T{seq // 3_600_000 % 24:02d}:{seq // 60_000 % 60:02d}:" \
                        f"{seq // 1000 % 60:02d}.{seq % 1000:03d}+00:00"
                if seq % checkpoint_every == 0 or seq == records:
                    signature = key.sign(chain.signed_message(seq, prev, stamp))
                    fields = {"time": stamp, "event": chain.CHECKPOINT, "principal": None, "source": "scheduler",
                              "outcome": "signed", "reason": "interval", "key_id": key_id,
                              "signature": base64.b64encode(signature).decode()}
                else:
                    fields = {"time": stamp, "event": "rpc", "principal": "alice@example.org",
                              "source": "192.0.2.17", "outcome": "ok", "method": "add_task",
                              "task_id": f"ExampleTask_2026_01_01_{seq:010d}_0f3c2a9b1e", "family": "ExampleTask",
                              "worker": "worker-host-3.example.org pid=4242"}
                linked = chain.chain(fields, seq, prev)
                prev = linked["hash"]
                out.write(json.dumps(linked, ensure_ascii=True) + "\n")
        paths.append(path)
    return paths


def verify_once(tree: Path, public_key: Path, paths: list[Path]) -> Run:
    """One child running ``audit verify`` with ``tree``'s code."""
    command = [sys.executable, "-c", _CLI, str(tree), "audit", "verify", "--public-key", str(public_key),
               *map(str, paths)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return Run(child.returncode, seconds, usage.ru_maxrss / 1024)  # ru_maxrss is KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--files", type=int, default=8, help="files per trail, like a logrotate set")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--old-tree", type=Path, help="a worktree of the code to compare with")
    args = parser.parse_args()
    trees = [("new", Path(__file__).resolve().parent.parent)]
    if args.old_tree:
        trees.insert(0, ("old", args.old_tree.resolve()))
    key = Ed25519PrivateKey.generate()
    print(f"{'records':>9} {'MB':>7} " + " ".join(f"{name + ' s':>8} {name + ' MiB':>9} {'exit':>4}"
                                               for name, _tree in trees))
    with tempfile.TemporaryDirectory(prefix="audit-verify-bench-") as scratch:
        public_key = Path(scratch) / "audit.pub"
        public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))
        for size in args.sizes:
            directory = Path(scratch) / str(size)
            directory.mkdir()
            paths = build_trail(directory, size, min(args.files, size), args.checkpoint_every, key)
            megabytes = sum(p.stat().st_size for p in paths) / 1e6
            runs = [verify_once(tree, public_key, paths) for _name, tree in trees]
            print(f"{size:>9} {megabytes:>7.1f} " + " ".join(f"{r.seconds:>8.2f} {r.peak_mib:>9.1f} {r.status:>4}"
                                                            for r in runs), flush=True)
            for path in paths:
                path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
