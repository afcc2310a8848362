"""The luigi-appliance bash completion, written by shtab from the command line's argparse parser.

Every command, subcommand, option and choice the parser has is completed, so a command added to
``luigi_appliance.cli.build_parser`` completes without an edit here; options that take a path
(``type=Path``, or a function returning a Path) complete file names.

    python rpm/bash_completion.py OUTFILE

The spec's %install runs it with the buildroot venv's interpreter (shtab comes from the locked
wheels and leaves the venv with the build tools); tests/system/test_bash_completion.py with the
development venv's.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import shtab


def converts_to_path(convert: object) -> bool:
    """Whether an argument's ``type=`` makes a Path of its value: Path itself, or a function
    annotated to return one."""
    if convert is Path:
        return True
    try:
        return callable(convert) and typing.get_type_hints(convert).get("return") is Path
    except (NameError, TypeError):  # annotations that do not resolve, or an object without any
        return False


def path_options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """The arguments of ``parser`` and of all its subcommands whose value is a path."""
    # argparse's parser tree is only reachable through these attributes (as shtab reads it).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from path_options(sub)
        elif converts_to_path(action.type):
            yield action


def completion(parser: argparse.ArgumentParser) -> str:
    """The bash completion script of ``parser`` (named by its prog)."""
    for action in path_options(parser):
        action.complete = shtab.FILE  # type: ignore[attr-defined]  # shtab's own hook on actions
    return shtab.complete(parser, "bash")


def main(argv: list[str]) -> int:
    """Write luigi-appliance's bash completion to the file ``argv[0]``."""
    if len(argv) != 1:
        print("usage: bash_completion.py OUTFILE", file=sys.stderr)
        return 2
    from luigi_appliance.cli import build_parser

    Path(argv[0]).write_text(completion(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
