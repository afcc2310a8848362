"""``luigi-appliance audit verify|export|public-key``.

Exit statuses of verify (and export, which verifies first), for scripts: 0 intact and every
record sealed by a checkpoint; 1 tampered (export: nothing written); 3 intact but not all of
it sealed (records after the last checkpoint, lines before the chain began, an incomplete last
line: export wrote them); 2 a command line that cannot work or a file that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from luigi_appliance.errors import ApplianceError

if TYPE_CHECKING:  # verify and export are imported by the commands: building the parser stays cheap
    from luigi_appliance.audit.verify import Entry, Report

EXIT_READER_GONE = 141  # as the shell reports a command SIGPIPE ended


def _settings(args: argparse.Namespace) -> Any:
    from luigi_appliance.config_loader import config_paths, load_settings

    return load_settings(config_paths(args.config), check_files=False)


def _trail_files(args: argparse.Namespace, settings: Any | None) -> list[Path]:
    from luigi_appliance.audit import verify as verifying

    if args.files:
        missing = [p for p in args.files if not p.is_file()]
        if missing:
            raise ApplianceError(f"no audit file {missing[0]}")
        return list(args.files)
    assert settings is not None  # loaded when no files are given
    configured = settings.audit.file
    files = verifying.rotated_siblings(configured)
    if not files:
        raise ApplianceError(f"no audit trail at {configured} ([audit] file) nor rotated beside it; "
                             "name the files to verify")
    return files


def _public_keys(args: argparse.Namespace, settings: Any | None) -> dict[str, Any]:
    from luigi_appliance.audit import verify as verifying

    if args.public_key:
        pems = []
        for path in args.public_key:
            try:
                pems.append((f"{path} (--public-key)", path.read_bytes()))
            except OSError as exc:
                raise ApplianceError(f"cannot read the public key {path} (--public-key): {exc.strerror}") from None
        return verifying.load_public_keys(pems)
    from luigi_appliance.audit.signing import public_key_pem

    assert settings is not None  # loaded when no key is given
    return verifying.load_public_keys([("the configured audit signing key", public_key_pem(settings))])


def _verified(args: argparse.Namespace) -> Report:
    from luigi_appliance.audit import verify as verifying

    settings = _settings(args) if not (args.files and args.public_key) else None
    return verifying.verify(_trail_files(args, settings), _public_keys(args, settings), args.checkpoints)


def _failed(exc: ApplianceError) -> int:
    from luigi_appliance.audit.verify import EXIT_UNREADABLE

    print(f"luigi-appliance: error: {exc}", file=sys.stderr)
    return EXIT_UNREADABLE


def _reader_gone() -> int:
    # The reader of stdout left (| head): no traceback, and nothing more to write to it.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_READER_GONE


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the trail; one line per problem, then the summary (or one JSON document)."""
    try:
        report = _verified(args)
    except ApplianceError as exc:
        return _failed(exc)
    try:
        if args.format == "json":
            print(json.dumps(report.as_json(), indent=2))
        else:
            for line in report.problem_lines():
                print(line)
            print(report.summary(), flush=True)
    except BrokenPipeError:
        return _reader_gone()
    return report.exit_code


def cmd_export(args: argparse.Namespace) -> int:
    """Verify, then write the window's records; a tampered trail is refused."""
    from luigi_appliance.audit import export
    from luigi_appliance.audit.verify import EXIT_INTACT, EXIT_TAMPERED, EXIT_UNSEALED

    try:
        since = export.parse_when(args.since, "--since") if args.since else None
        until = export.parse_when(args.until, "--until") if args.until else None
        report = _verified(args)
    except ApplianceError as exc:
        return _failed(exc)
    if report.exit_code == EXIT_TAMPERED:
        for line in report.problem_lines():
            print(line, file=sys.stderr)
        print(f"luigi-appliance: error: the audit trail does not verify ({report.summary()}): nothing exported",
              file=sys.stderr)
        return EXIT_TAMPERED
    exported = _Exported(report.sealed_through)
    # One record at a time (a window can be the whole trail): window() of each alone.
    records = exported.count(e for entry in report.records for e in export.window((entry,), since, until))
    write = export.write_csv if args.format == "csv" else export.write_jsonl
    try:
        out = export.open_output(args.output) if args.output else sys.stdout
    except ApplianceError as exc:
        return _failed(exc)
    try:
        write(records, out)
        out.flush()
    except BrokenPipeError:
        return _reader_gone()
    except ApplianceError as exc:
        return _failed(ApplianceError(f"{exc}{f' ({args.output} is incomplete: remove it)' if args.output else ''}"))
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {exported.records} record(s) of {len(report.records)}"
          f"{f' to {args.output}' if args.output else ''} ({report.summary()})", file=sys.stderr)
    if exported.unsealed:
        print(f"note: {exported.unsealed} of them (from seq {exported.first_unsealed}) come after the last "
              "checkpoint: not sealed by a signature yet", file=sys.stderr)
        return EXIT_UNSEALED
    return EXIT_INTACT


@dataclass
class _Exported:
    """What an export wrote, counted as it goes: how many, and how many after the last checkpoint."""

    sealed_through: int | None
    records: int = 0
    unsealed: int = 0
    first_unsealed: int | None = None

    def count(self, records: Iterable[Entry]) -> Iterator[Entry]:
        for entry in records:
            self.records += 1
            if self.sealed_through is None or entry.seq > self.sealed_through:
                self.unsealed += 1
                self.first_unsealed = entry.seq if self.first_unsealed is None else self.first_unsealed
            yield entry


def cmd_public_key(args: argparse.Namespace) -> int:
    """Print the configured signing key's public half (PEM), for an off-host verifier."""
    from luigi_appliance.audit.signing import public_key_pem

    sys.stdout.write(public_key_pem(_settings(args)).decode("ascii"))
    return 0


def _trail_arguments(parser: argparse.ArgumentParser, path: Callable[[str], Path]) -> None:
    parser.add_argument("files", nargs="*", type=path, metavar="FILE",
                        help="the trail's files, any order, compressed or not (default: [audit] file and "
                        "its rotations beside it)")
    parser.add_argument("--public-key", type=path, action="append", metavar="FILE",
                        help="Ed25519 public key (PEM) the checkpoints are signed with; repeat for keys "
                        "rotated out (default: the configured signing key's)")
    parser.add_argument("--checkpoints", type=path, metavar="FILE",
                        help="journal export with the 'audit checkpoint: ' lines (journalctl "
                        "--namespace=luigi-appliance -u luigi-appliance -o cat): proves a cut tail")


def add_parsers(sub: argparse._SubParsersAction, path: Callable[[str], Path]) -> None:
    """Adds ``audit`` to the luigi-appliance command line; ``path`` makes a path argument (the
    CLI's: relative to the working directory)."""
    audit = sub.add_parser("audit", help="verify and export the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="check the hash chain and signed checkpoints; name every "
                                 "edited, missing, inserted, moved or cut record; exit 0 intact and sealed, "
                                 "1 tampered, 3 unsealed tail, 2 unreadable")
    _trail_arguments(check, path)
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.set_defaults(func=cmd_verify)

    exporting = audit_sub.add_parser("export", help="verify, then write a time window's records (who, what, "
                                  "when, from where) for an evidence request; refuses a tampered trail")
    _trail_arguments(exporting, path)
    exporting.add_argument("--since", metavar="ISO",
                           help="from this time on (inclusive; UTC unless an offset is given)")
    exporting.add_argument("--until", metavar="ISO", help="before this time (exclusive)")
    exporting.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                        help="jsonl: the trail's own lines, checkpoints included; csv: fixed columns")
    exporting.add_argument("--output", type=path, metavar="FILE", help="a new file, 0600 (default: stdout)")
    exporting.set_defaults(func=cmd_export)

    public = audit_sub.add_parser("public-key", help="print the public key (PEM) checkpoints are signed with, "
                                  "for an off-host verifier")
    public.set_defaults(func=cmd_public_key)
