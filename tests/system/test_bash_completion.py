"""The bash completion the RPM ships, written by rpm/bash_completion.py from the CLI's parser as the
spec's %install writes it, and sourced in a real bash (tests/completion_shell.py): every command,
subcommand, option and choice build_parser() has is offered, and paths complete file names."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from completion_shell import offered

from conftest import REPO
from luigi_appliance.cli import build_parser

PROG = "luigi-appliance"


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("completion") / PROG
    # The CLI of this checkout, the one the tests compare with.
    subprocess.run([sys.executable, str(REPO / "rpm" / "bash_completion.py"), str(out)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return out


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words after the program, parser) for the parser and every (sub)command under it."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*words, name))


def subcommand_names(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def test_every_top_level_command_is_offered(script: Path) -> None:
    offered_commands = offered(script, PROG, "")
    assert {"serve", "run", "dag", "user", "config"} <= set(offered_commands)
    assert sorted(offered_commands) == sorted(subcommand_names(build_parser()))
    assert sorted(offered(script, PROG, "se")) == ["secret", "serve"]


def test_every_command_offers_its_subcommands_and_options(script: Path) -> None:
    checked = 0
    for words, parser in commands(build_parser()):
        names = subcommand_names(parser)
        if names:
            assert sorted(offered(script, PROG, *words, "")) == sorted(names), words
        options = sorted(o for action in parser._actions for o in action.option_strings if o.startswith("--"))
        assert sorted(offered(script, PROG, *words, "--")) == options, words
        checked += 1
    assert checked > 20  # the walk reached the subcommands' subcommands


def test_choices_are_offered_after_their_option(script: Path) -> None:
    found = [(words, option, action.choices) for words, parser in commands(build_parser())
             for action in parser._actions if action.choices and action.option_strings
             for option in action.option_strings]
    assert (("dag", "check"), "--format", ["text", "json", "dot"]) in found
    for words, option, choices in found:
        assert sorted(offered(script, PROG, *words, option, "")) == sorted(choices), (words, option)


def test_path_options_complete_file_names(script: Path, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "client.conf").write_text("")
    assert offered(script, PROG, "run", "--ca-file", "c", cwd=tmp_path) == ["ca.pem", "client.conf"]
    assert offered(script, PROG, "run", "--ca-file", "ca", cwd=tmp_path) == ["ca.pem"]
    # The global option before the command: a path, and then the commands again.
    assert offered(script, PROG, "--config", "cl", cwd=tmp_path) == ["client.conf"]
    assert sorted(offered(script, PROG, "--config", "client.conf", "se", cwd=tmp_path)) == ["secret", "serve"]
