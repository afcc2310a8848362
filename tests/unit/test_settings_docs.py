"""etc/scheduler.conf, etc/client.conf and docs/configuration.md say what the declarations say.

In the annotated files, every declared key of a section has a paragraph starting ``# key:`` and
a commented example ``# key = VALUE``; VALUE is the default (it parses to the declared default),
or, for a key unset by default, the paragraph says "default unset". No example names a key that
is not declared. docs/configuration.md holds the key reference rendered from the declarations,
and every `[section] key` it mentions is declared. A family of sections ``[PREFIX.NAME]`` is
annotated once, under a commented header ``# [PREFIX.example]`` (the shipped file configures
none), and referenced as ``[PREFIX.NAME]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from luigi_appliance.client.settings import CLIENT
from luigi_appliance.config import FREEFORM_SECTIONS, SECTION_FAMILIES, SECTIONS
from luigi_appliance.settings.declare import Key
from luigi_appliance.settings.loader import Section, display
from luigi_appliance.settings.reference import documented_default, reference

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_MEMBERS = tuple(family.section("example") for family in SECTION_FAMILIES)
ANNOTATED = [(REPO / "etc" / "scheduler.conf", (*SECTIONS, *EXAMPLE_MEMBERS), FREEFORM_SECTIONS),
             (REPO / "etc" / "client.conf", (CLIENT,), ())]
REFERENCE_START = "<!-- key reference: rendered from the declarations by luigi_appliance/settings/reference.py -->"
REFERENCE_END = "<!-- end of key reference -->"

_HEADER = re.compile(r"^\[([a-z_]+)\]$|^# \[([a-z_]+\.example)\]$")
_EXAMPLE = re.compile(r"^# ([a-z][a-z0-9_]*) =(?: (.*))?$")


def annotated_sections(text: str) -> dict[str, list[str]]:
    """Section name -> its lines, from an annotated configuration file."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            current = sections.setdefault(m.group(1) or m.group(2), [])
        else:
            current.append(line)
    return sections


def paragraphs(lines: list[str]) -> list[list[str]]:
    """Blocks of consecutive comment lines."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("#"):
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def problems(text: str, sections: tuple[Section[Any], ...], freeform: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    annotated = annotated_sections(text)
    declared = {s.name for s in sections}
    found += [f"[{name}] is in the file but not declared" for name in annotated if name not in declared | set(freeform)]
    found += [f"[{name}] is declared but not in the file" for name in declared if name not in annotated]
    for section in sections:
        blocks = paragraphs(annotated.get(section.name, []))
        written = {n: k for k in section.keys for n in k.names}
        for block in blocks:
            for line in block:
                m = _EXAMPLE.match(line)
                if m and m.group(1) not in written:
                    found.append(f"[{section.name}] {m.group(1)}: example of a key that is not declared")
        for key in section.keys:
            found += _key_problems(section.name, key, blocks)
    return found


def _key_problems(section: str, key: Key, blocks: list[list[str]]) -> list[str]:
    block = next((b for b in blocks if b[0].startswith(f"# {key.name}:")), None)
    if block is None:
        return [f"[{section}] {key.name}: no paragraph starting '# {key.name}:'"]
    examples = [m for m in map(_EXAMPLE.match, block) if m and m.group(1) in key.names]
    if not examples:
        return [f"[{section}] {key.name}: no commented example '# {key.name} = ...'"]
    prose = " ".join(line.lstrip("#").strip() for line in block).lower()
    if documented_default(key) == "unset":
        return [] if "default unset" in prose else [f"[{section}] {key.name}: unset by default, not said so"]
    value = examples[-1].group(2) or ""
    try:
        shown = display(key.parse(value))
    except ValueError as exc:
        return [f"[{section}] {key.name}: the example {value!r} is invalid: {exc}"]
    expected = display(key.default)
    return [] if shown == expected else [f"[{section}] {key.name}: example {value!r} is {shown}, default is {expected}"]


@pytest.mark.parametrize(("path", "sections", "freeform"), ANNOTATED, ids=lambda p: getattr(p, "name", ""))
def test_the_annotated_file_shows_every_declared_key_with_its_default(path: Path, sections: Any,
                                                                      freeform: Any) -> None:
    assert problems(path.read_text(), sections, freeform) == []


def test_the_check_finds_a_wrong_default_a_missing_key_and_an_undeclared_one() -> None:
    text = (REPO / "etc" / "client.conf").read_text()
    text = text.replace("# retry_attempts = 3", "# retry_attempts = 4")
    text = text.replace("# auth: ", "# authentication: ")
    text += "\n# bogus: what\n# bogus = 1\n[extra]\n"
    assert problems(text, (CLIENT,), ()) == [
        "[extra] is in the file but not declared",
        "[client] bogus: example of a key that is not declared",
        "[client] retry_attempts: example '4' is 4, default is 3",
        "[client] auth: no paragraph starting '# auth:'",
    ]


def reference_in_docs() -> str:
    text = (REPO / "docs" / "configuration.md").read_text()
    start, end = text.index(REFERENCE_START) + len(REFERENCE_START), text.index(REFERENCE_END)
    return text[start:end].strip("\n")


def test_the_documented_key_reference_is_the_declarations() -> None:
    expected = reference([*SECTIONS, *SECTION_FAMILIES, CLIENT])
    assert reference_in_docs() == expected.strip("\n"), "paste into docs/configuration.md:\n" + expected


def test_every_key_the_documentation_names_is_declared() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    declared = {(s.name, n) for s in [*SECTIONS, CLIENT] for k in s.keys for n in k.names}
    named = set(re.findall(r"`\[([a-z_]+)\] ([a-z_]+)`", text))
    assert named and sorted(named - declared) == []
