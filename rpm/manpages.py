"""The luigi-appliance man pages, written from the command line's argparse parser.

One page per top-level command, so a command added to ``luigi_appliance.cli.build_parser`` has
its page without an edit here: luigi-appliance(1) gives the global options and lists the
commands, luigi-appliance-COMMAND(1) gives COMMAND's options and each of its subcommands. The
words are the parser's own, as ``--help`` prints them, set in man(7) macros.

    python rpm/manpages.py OUTDIR

The spec's %install runs it with the buildroot venv's interpreter, so the pages describe the parser
the package ships; `make man` with the development venv's. SOURCE_DATE_EPOCH, when set, dates the
pages (reproducible builds); otherwise they carry today's date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its parser and its one-line help."""

    name: str
    parser: argparse.ArgumentParser
    summary: str


@dataclass(frozen=True)
class Page:
    """A man page: its name (the file is NAME.1) and its roff source."""

    name: str
    text: str


def roff(text: str) -> str:
    """``text`` as roff prints it literally: backslashes and hyphens escaped, and no line read as
    a request (a line starting with ``.`` or ``'``)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^(?=[.'])", r"\\&", text, flags=re.M)


def _line(text: str) -> str:
    """argparse's help and usage as one line (its formatter re-wraps them; roff fills)."""
    return " ".join(text.split())


# argparse has no public API for its parser tree: the subcommands and arguments are read from its
# attributes, as its own help formatter (and argparse-manpage, shtab) read them.
def subcommands(parser: argparse.ArgumentParser) -> list[Command]:
    """``parser``'s subcommands in the order ``--help`` lists them; an alias only under its
    first name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            found: dict[int, Command] = {}
            for name, sub in action.choices.items():
                summary = helps.get(name)
                found.setdefault(id(sub), Command(name, sub, "" if summary in (None, argparse.SUPPRESS)
                                                  else _line(str(summary))))
            return list(found.values())
    return []


def _arguments(parser: argparse.ArgumentParser, *, positional: bool) -> list[argparse.Action]:
    return [action for action in parser._actions
            if bool(action.option_strings) != positional and action.help != argparse.SUPPRESS
            and not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)]


def _entry(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    """One argument as a tagged paragraph: the invocation, then the help."""
    formatter = parser._get_formatter()
    if action.option_strings:
        value = "" if action.nargs == 0 else formatter._format_args(action, action.dest.upper())
        tag = ", ".join(rf"\fB{roff(option)}\fR" + (rf" \fI{roff(value)}\fR" if value else "")
                        for option in action.option_strings)
    else:
        tag = rf"\fI{roff(formatter._format_args(action, action.dest))}\fR"
    lines = [".TP", tag]
    if action.help:
        lines.append(roff(_line(formatter._expand_help(action))))
    return lines


def _synopsis(parser: argparse.ArgumentParser) -> list[str]:
    """The usage line, the program name in bold; a list of choices may break after its commas."""
    usage = _line(parser.format_usage()).removeprefix("usage: ")
    if usage.startswith(parser.prog + " "):
        name, usage = [f".B {roff(parser.prog)}"], usage[len(parser.prog) + 1:]
    else:
        name = []
    return [*name, roff(usage).replace(",", r",\:")]


def _about(parser: argparse.ArgumentParser, summary: str) -> list[str]:
    """The parser's description (its one-line help where it has none) and epilog, as paragraphs."""
    texts = [parser.description or summary, parser.epilog]
    return [line for text in texts if text for line in (".PP", roff(_line(text)))]


def _subcommand_sections(parser: argparse.ArgumentParser) -> list[str]:
    """Each subcommand of ``parser``, and theirs, as a subsection headed by its full usage name."""
    lines = []
    for command in subcommands(parser):
        lines += [f'.SS "{roff(command.parser.prog)}"', *_synopsis(command.parser)]
        lines += _about(command.parser, command.summary)
        for positional in (True, False):
            for action in _arguments(command.parser, positional=positional):
                lines += _entry(command.parser, action)
        lines += _subcommand_sections(command.parser)
    return lines


def _page(name: str, parser: argparse.ArgumentParser, summary: str, *, source: str, date: str,
          see_also: list[str], commands: list[str]) -> Page:
    # Left-adjusted, no hyphenation: option names and paths are not to be split or spread.
    lines = [f'.TH "{roff(name.upper())}" 1 "{date}" "{roff(source)}" "User Commands"', ".ad l", ".nh",
             ".SH NAME", rf"{roff(name)} \- {roff(summary)}" if summary else roff(name),
             ".SH SYNOPSIS", *_synopsis(parser)]
    about = _about(parser, summary)
    if about:
        lines += [".SH DESCRIPTION", *about]
    for heading, positional in (("ARGUMENTS", True), ("OPTIONS", False)):
        arguments = _arguments(parser, positional=positional)
        if arguments:
            lines.append(f".SH {heading}")
            for action in arguments:
                lines += _entry(parser, action)
    if commands:
        lines += [".SH COMMANDS", *commands]
    if see_also:
        lines += [".SH SEE ALSO", ",\n".join(f".BR {roff(other)} (1)" for other in see_also)]
    return Page(name, "\n".join(lines) + "\n")


def pages(parser: argparse.ArgumentParser, *, version: str, date: dt.date) -> list[Page]:
    """The man pages of the command line ``parser``: its own, then one per top-level command."""
    prog, commands = parser.prog, subcommands(parser)
    names = [f"{prog}-{command.name}" for command in commands]
    common = {"source": f"{prog} {version}", "date": date.isoformat()}
    listing = [line for command, name in zip(commands, names, strict=True)
               for line in (".TP", rf"\fB{roff(command.name)}\fR",
                            roff(command.summary) + rf" (see \fB{roff(name)}\fR(1))")]
    top = _page(prog, parser, _line(parser.description or ""), see_also=names, commands=listing, **common)
    return [top, *(_page(name, command.parser, command.summary, see_also=[prog],
                         commands=_subcommand_sections(command.parser), **common)
                   for command, name in zip(commands, names, strict=True))]


def build_date() -> dt.date:
    """The pages' date: SOURCE_DATE_EPOCH's day when set (reproducible builds), else today (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return dt.datetime.fromtimestamp(int(epoch) if epoch else time.time(), tz=dt.timezone.utc).date()


def main(argv: list[str]) -> int:
    """Write luigi-appliance's man pages into the directory ``argv[0]`` as NAME.1."""
    if len(argv) != 1:
        print("usage: manpages.py OUTDIR", file=sys.stderr)
        return 2
    from luigi_appliance import __version__
    from luigi_appliance.cli import build_parser

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for page in pages(build_parser(), version=__version__, date=build_date()):
        (out / f"{page.name}.1").write_text(page.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
