"""A small INI reader that remembers where every value came from.

configparser forgets file names and line numbers, and sysadmins need both in error messages.
The syntax is the common subset: ``[section]``, ``key = value``, full-line comments starting
with ``#`` or ``;``. There is no interpolation: a value is used exactly as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.settings.issues import ConfigIssue

_SECTION = re.compile(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]$")
_ENTRY = re.compile(r"^([A-Za-z0-9_.-]+)\s*[=:]\s*(.*)$")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Entry:
    """A value with its origin."""

    section: str
    key: str
    value: str
    file: str
    line: int


@dataclass
class IniDocument:
    """Entries of one or more files; a later file overrides an earlier one key by key."""

    entries: dict[tuple[str, str], Entry]
    sections: dict[str, tuple[str, int]]  # section -> where it first appeared
    files: list[str]

    def get(self, section: str, key: str) -> Entry | None:
        return self.entries.get((section, key))

    def in_section(self, section: str) -> list[Entry]:
        return [e for (s, _), e in self.entries.items() if s == section]


def normalise_key(key: str) -> str:
    """Luigi accepts ``retry-delay`` and ``retry_delay``; so do we."""
    return key.strip().lower().replace("-", "_")


def parse_text(text: str, filename: str, doc: IniDocument, issues: list[ConfigIssue]) -> None:
    """Parse ``text`` into ``doc``, appending every problem to ``issues`` (never stopping early)."""
    section: str | None = None
    seen_here: set[tuple[str, str]] = set()
    # Lines end at "\n" only, as editors count them (splitlines also splits at \f, \x1c, ...).
    for lineno, text_line in enumerate(text.split("\n"), start=1):
        raw = text_line.removesuffix("\r")
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if raw[0].isspace():
            issues.append(ConfigIssue(filename, lineno, section, None,
                                      "continuation lines are not supported; put the value on one line"))
            continue
        m = _SECTION.match(line)
        if m:
            section = m.group(1).lower()
            doc.sections.setdefault(section, (filename, lineno))
            continue
        m = _ENTRY.match(line)
        if not m:
            issues.append(ConfigIssue(filename, lineno, section, None,
                                      f"expected '[section]' or 'key = value', got {line[:60]!r}"))
            continue
        if section is None:
            issues.append(ConfigIssue(filename, lineno, None, m.group(1),
                                      "key outside any section; add a [section] header above it"))
            continue
        key = normalise_key(m.group(1))
        if (section, key) in seen_here:
            issues.append(ConfigIssue(filename, lineno, section, key,
                                      "key given twice in the same file"))
            continue
        seen_here.add((section, key))
        doc.entries[(section, key)] = Entry(section, key, m.group(2).strip(), filename, lineno)


def decode_config(data: bytes, filename: str, issues: list[ConfigIssue]) -> str:
    """The text of a configuration file; a byte-order mark and every line that is not UTF-8
    become issues naming the line (those lines are left out, the rest is still read)."""
    lines = data.split(b"\n")
    if lines[0].startswith(_BOM):
        issues.append(ConfigIssue(filename, 1, None, None, "the file starts with a UTF-8 byte-order mark; "
                                  "save it as UTF-8 without BOM"))
        lines[0] = lines[0][len(_BOM):]
    text = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            text.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            issues.append(ConfigIssue(filename, lineno, None, None,
                                      f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8; "
                                      "save the file as UTF-8"))
            text.append("")  # keeps the following lines' numbers
    return "\n".join(text)


def read_files(paths: list[Path], issues: list[ConfigIssue]) -> IniDocument:
    """Read ``paths`` in order into one document; unreadable files become issues."""
    doc = IniDocument(entries={}, sections={}, files=[])
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            issues.append(ConfigIssue(str(path), None, None, None, "file not found"))
            continue
        except OSError as exc:
            issues.append(ConfigIssue(str(path), None, None, None, f"cannot read: {exc.strerror or exc}"))
            continue
        doc.files.append(str(path))
        parse_text(decode_config(data, str(path), issues), str(path), doc, issues)
    return doc
