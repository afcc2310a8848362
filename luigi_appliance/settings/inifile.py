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
    for lineno, raw in enumerate(text.splitlines(), start=1):
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


def read_files(paths: list[Path], issues: list[ConfigIssue]) -> IniDocument:
    """Read ``paths`` in order into one document; unreadable files become issues."""
    doc = IniDocument(entries={}, sections={}, files=[])
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            issues.append(ConfigIssue(str(path), None, None, None, "file not found"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue(str(path), None, None, None, f"cannot read: {exc}"))
            continue
        doc.files.append(str(path))
        parse_text(text, str(path), doc, issues)
    return doc
