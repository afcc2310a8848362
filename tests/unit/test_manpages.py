"""rpm/manpages.py: one man page per top-level command, from the parser, in well-formed man(7)
source (tests/system/test_rpm.py renders the pages the RPM ships)."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import re
import sys
from pathlib import Path

from luigi_appliance.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("manpages", REPO / "rpm" / "manpages.py")
assert _spec and _spec.loader
manpages = importlib.util.module_from_spec(_spec)
sys.modules["manpages"] = manpages  # dataclasses look their module up
_spec.loader.exec_module(manpages)

DATE = dt.date(2024, 1, 2)
# The requests the generator writes; any other line starting with "." or "'" is unescaped text.
MACROS = {".TH", ".SH", ".SS", ".TP", ".PP", ".B", ".BR", ".ad", ".nh"}


def tool_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool", description="Does things.")
    parser.add_argument("--config", type=Path, help="the file")
    sub = parser.add_subparsers(dest="command", required=True)
    alpha = sub.add_parser("alpha", help=r"first thing, C:\path-like")
    alpha.add_argument("name", help="who")
    alpha.add_argument("--dry-run", action="store_true", help="nothing happens")
    beta = sub.add_parser("beta", aliases=["b"], help="second thing", epilog="After the options.")
    gamma = beta.add_subparsers(dest="beta_command").add_parser("gamma", help="the nested one")
    gamma.add_argument("--x-y", choices=["one", "two"], help=".starts with a dot")
    sub.add_parser("quiet")  # no help at all
    return parser


def by_name(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {page.name: page.text for page in manpages.pages(parser, version="9.9", date=DATE)}


def test_one_page_per_top_level_command_an_alias_once() -> None:
    assert list(by_name(tool_parser())) == ["tool", "tool-alpha", "tool-beta", "tool-quiet"]


def test_a_command_without_help_has_no_empty_sections() -> None:
    quiet = by_name(tool_parser())["tool-quiet"].splitlines()
    assert quiet[quiet.index(".SH NAME") + 1] == r"tool\-quiet"
    assert ".SH DESCRIPTION" not in quiet and ".SH OPTIONS" not in quiet and ".SH COMMANDS" not in quiet
    assert quiet[-2:] == [".SH SEE ALSO", ".BR tool (1)"]


def test_a_command_page_has_name_synopsis_options_and_subcommands() -> None:
    pages = by_name(tool_parser())
    alpha = pages["tool-alpha"].splitlines()
    assert alpha[0] == '.TH "TOOL\\-ALPHA" 1 "2024-01-02" "tool 9.9" "User Commands"'
    assert alpha[alpha.index(".SH NAME") + 1] == r"tool\-alpha \- first thing, C:\epath\-like"
    assert alpha[alpha.index(".SH SYNOPSIS") + 1:][:2] == [r".B tool alpha", r"[\-h] [\-\-dry\-run] name"]
    assert alpha[alpha.index(".SH ARGUMENTS") + 1:][:3] == [".TP", r"\fIname\fR", "who"]
    assert alpha[alpha.index(".SH OPTIONS") + 1:][:3] == [".TP", r"\fB\-\-dry\-run\fR", "nothing happens"]
    assert r"\fB\-h\fR" not in pages["tool-alpha"]  # --help is every command's, not news
    beta = pages["tool-beta"].splitlines()
    assert "After the options." in beta
    nested = beta[beta.index('.SS "tool beta gamma"'):]
    assert nested[1:3] == [".B tool beta gamma", r"[\-h] [\-\-x\-y {one,\:two}]"]
    assert r"\fB\-\-x\-y\fR \fI{one,two}\fR" in nested
    assert r"\&.starts with a dot" in nested
    assert beta[-2:] == [".SH SEE ALSO", ".BR tool (1)"]


def test_the_top_page_lists_the_commands_and_their_pages() -> None:
    top = by_name(tool_parser())["tool"]
    assert "\\fB\\-\\-config\\fR \\fICONFIG\\fR\nthe file" in top
    assert ".TP\n\\fBalpha\\fR\nfirst thing, C:\\epath\\-like (see \\fBtool\\-alpha\\fR(1))" in top
    assert top.endswith(".SH SEE ALSO\n.BR tool\\-alpha (1),\n.BR tool\\-beta (1),\n.BR tool\\-quiet (1)\n")


def test_no_text_line_is_read_as_a_request() -> None:
    for parser in (tool_parser(), build_parser()):
        for name, text in by_name(parser).items():
            requests = {line.split()[0] for line in text.splitlines() if line.startswith((".", "'"))}
            assert requests <= MACROS, (name, requests - MACROS)


def test_every_command_of_the_cli_has_a_page() -> None:
    # The commands as --help lists them, not as the generator finds them.
    listed = re.search(r"\{([^}]*)\}", build_parser().format_usage())[1].split(",")
    assert {"serve", "run", "dag", "user", "config"} <= set(listed)
    assert sorted(by_name(build_parser())) == sorted(["luigi-appliance", *(f"luigi-appliance-{c}" for c in listed)])


def test_roff_escapes_backslashes_hyphens_and_leading_requests() -> None:
    assert manpages.roff("a-b\\c\n.x\n'y") == "a\\-b\\ec\n\\&.x\n\\&'y"


def test_the_date_is_source_date_epoch_s_when_set(monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1704153600")  # 2024-01-02T00:00:00Z
    assert manpages.build_date() == DATE
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    before = dt.datetime.now(dt.timezone.utc).date()
    assert before <= manpages.build_date() <= dt.datetime.now(dt.timezone.utc).date()
