"""Validating an IniDocument against declared sections, collecting issues instead of stopping.

A ``Section`` is a section's name, its dataclass (whose fields declare the keys, see
``declare``) and the domain's cross-checks, which run after every section is loaded and see
all values. A ``SectionFamily`` declares sections named ``[PREFIX.NAME]`` with the user's NAMEs
(several OIDC issuers): each one present in the file is loaded as a ``Section`` of its own.
``SchemaLoader`` loads the sections a file is composed of; it reports unknown
sections and keys, invalid values and secrets given in clear, and records, for ``config
show``, each value's display and where it came from.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from luigi_appliance.settings.declare import Key, keys_of
from luigi_appliance.settings.inifile import Entry, IniDocument
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.parsers import parse_path

_S = TypeVar("_S")


@dataclass(frozen=True)
class Section(Generic[_S]):
    """A declared section: ``[name]`` read into ``model``, then checked by ``check``."""

    name: str
    model: type[_S]
    keys: tuple[Key, ...]
    check: Callable[[SchemaLoader], None] | None = None

    def build(self, loader: SchemaLoader, **own: Any) -> _S:
        """The section's dataclass from the loaded values; ``own`` fills its undeclared fields."""
        values = dict(own)
        for key in self.keys:
            values[key.attribute] = loader.values[(self.name, key.name)]
            if key.secret:
                values[f"{key.attribute}_file"] = loader.values[(self.name, f"{key.name}_file")]
        return self.model(**values)


def section(name: str, model: type[_S], check: Callable[[SchemaLoader], None] | None = None) -> Section[_S]:
    """Declare ``[name]``: its keys are the ``key``/``secret`` fields of ``model``."""
    return Section(name, model, keys_of(model), check)


_MEMBER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class SectionFamily(Generic[_S]):
    """Sections ``[prefix.NAME]``, each read into ``model``; ``check`` runs once after every
    section is loaded and sees all of them (``loader.members(family)``)."""

    prefix: str
    model: type[_S]
    keys: tuple[Key, ...]
    check: Callable[[SchemaLoader], None] | None = None

    @property
    def pattern(self) -> str:
        """How its sections are written, for messages and the reference."""
        return f"{self.prefix}.NAME"

    def member(self, section_name: str) -> str | None:
        """NAME when ``section_name`` is ``prefix.NAME`` (of any name, valid or not), else None."""
        head, dot, name = section_name.partition(".")
        return name if dot and head == self.prefix else None

    def section(self, name: str) -> Section[_S]:
        """The section ``[prefix.name]``."""
        return Section(f"{self.prefix}.{name}", self.model, self.keys)

    def build(self, loader: SchemaLoader) -> dict[str, _S]:
        """NAME -> its dataclass, for every member in the order of the files."""
        return {name: self.section(name).build(loader) for name in loader.members(self)}


def section_family(prefix: str, model: type[_S],
                   check: Callable[[SchemaLoader], None] | None = None) -> SectionFamily[_S]:
    """Declare the sections ``[prefix.NAME]``: their keys are the ``key``/``secret`` fields of ``model``."""
    return SectionFamily(prefix, model, keys_of(model), check)


class SecretValues(Protocol):
    """How secrets are read: ``enc:`` values decrypted with a key file, ``*_file`` paths checked."""

    prefix: str  # marks an encrypted value, e.g. "enc:"
    encrypt_hint: str  # how to obtain one, for the message refusing a secret in clear

    def decrypt(self, value: str, key_file: Path) -> bytes:
        """The plaintext of ``value``; ValueError naming the key file (never the value) if it fails."""

    def file_problem(self, path: Path) -> str | None:
        """Why ``path`` is unfit to hold a secret, or None."""


class SchemaLoader:
    """Turns an IniDocument into values, collecting issues instead of stopping at the first.

    ``values`` maps (section, key) to the parsed value (absent when the value is invalid);
    ``effective`` maps it to (display, origin). ``key_file`` names the key whose path decrypts
    ``enc:`` values: its section is loaded first, wherever it appears.
    """

    def __init__(self, doc: IniDocument, issues: list[ConfigIssue], check_files: bool,
                 sections: Iterable[Section[Any]], freeform: tuple[str, ...] = (),
                 secrets: SecretValues | None = None, key_file: tuple[str, str] | None = None,
                 families: Iterable[SectionFamily[Any]] = ()):
        self.sections = {s.name: s for s in sections}
        self.families = tuple(families)
        self._members: dict[str, list[str]] = {f.prefix: [] for f in self.families}
        self.freeform = freeform
        self.doc = doc
        self.issues = issues
        self.check_files = check_files
        self.secrets = secrets
        self.key_file = key_file
        self.values: dict[tuple[str, str], Any] = {}
        self.effective: dict[tuple[str, str], tuple[str, str]] = {}
        self.secret_key_file: Path | None = None
        if key_file is not None:
            self.secret_key_file = next(k.default for k in self.sections[key_file[0]].keys if k.name == key_file[1])
        self._add_members(doc)

    def _add_members(self, doc: IniDocument) -> None:
        """Each ``[prefix.NAME]`` of the document becomes a section to load (a bad NAME an issue)."""
        for name, (file, line) in doc.sections.items():
            for family in self.families:
                member = family.member(name)
                if member is None:
                    continue
                if not _MEMBER_NAME.match(member):
                    self.issues.append(ConfigIssue(file, line, name, None,
                                                   f"expected [{family.prefix}.NAME] with a NAME of lower-case "
                                                   f"letters, digits, _ and - starting with a letter, got [{name}]"))
                    continue
                self.sections[name] = family.section(member)
                self._members[family.prefix].append(member)

    def members(self, family: SectionFamily[Any]) -> tuple[str, ...]:
        """The NAMEs of ``family``'s sections present, in the order of the files."""
        return tuple(self._members[family.prefix])

    def issue(self, entry: Entry | None, section: str, key: str | None, message: str) -> None:
        """Record a problem at ``entry`` (or, without one, in the first file)."""
        if entry is None:
            self.issues.append(ConfigIssue(self.doc.files[0] if self.doc.files else "<defaults>",
                                           None, section, key, message))
        else:
            self.issues.append(ConfigIssue(entry.file, entry.line, section, key, message))

    def load(self) -> None:
        """Load every declared section (not the cross-checks: see ``check``)."""
        self._check_unknown()
        first = self.key_file[0] if self.key_file else None
        for section in sorted(self.sections.values(), key=lambda s: s.name != first):
            for key in section.keys:
                if key.secret:
                    self._load_secret(section.name, key.name)
                else:
                    self._load_plain(section.name, key)

    def check(self) -> None:
        """Run the sections' cross-checks, in the order the sections were given."""
        for section in self.sections.values():
            if section.check is not None:
                section.check(self)
        for family in self.families:
            if family.check is not None:
                family.check(self)

    def load_freeform(self, section: str, parse: Callable[[str], Any]) -> dict[str, Any]:
        """``name = value`` lines of a section whose names are the user's (resources, groups)."""
        values: dict[str, Any] = {}
        for entry in self.doc.in_section(section):
            try:
                values[entry.key] = self.values[(section, entry.key)] = parse(entry.value)
            except ValueError as exc:
                self.issue(entry, section, entry.key, str(exc))
                continue
            self.effective[(section, entry.key)] = (entry.value, f"{entry.file}:{entry.line}")
        return values

    def _check_unknown(self) -> None:
        declared = [name for name in self.sections if not any(f.member(name) for f in self.families)]
        patterns = [family.pattern for family in self.families]
        for section, (file, line) in self.doc.sections.items():
            if any(f.member(section) is not None for f in self.families):
                continue  # a member, or a bad NAME already reported
            if section not in self.sections and section not in self.freeform:
                self.issues.append(ConfigIssue(file, line, section, None,
                                               unknown("section", section, [*declared, *self.freeform, *patterns])))
        for (section, name), entry in self.doc.entries.items():
            if section not in self.sections:
                continue
            allowed = [written for key in self.sections[section].keys for written in key.names]
            if name not in allowed:
                self.issue(entry, section, name, unknown("key", name, allowed))

    def _load_plain(self, section: str, key: Key) -> None:
        name = key.name
        entry = self.doc.get(section, name)
        if entry is None:
            if key.must_exist and self.check_files and isinstance(key.default, Path) and not key.default.exists():
                self.issue(None, section, name, f"file {key.default} (the default) does not exist")
            self.values[(section, name)] = key.default
            self.effective[(section, name)] = (display(key.default), "default")
            return
        try:
            value = key.parse(entry.value)
        except ValueError as exc:
            self.issue(entry, section, name, str(exc))
            return
        if key.must_exist and self.check_files and isinstance(value, Path) and not value.exists():
            self.issue(entry, section, name, f"file {value} does not exist")
        self.values[(section, name)] = value
        self.effective[(section, name)] = (display(value), f"{entry.file}:{entry.line}")
        if (section, name) == self.key_file:
            self.secret_key_file = value

    def _load_secret(self, section: str, name: str) -> None:
        if self.secrets is None or self.secret_key_file is None:
            raise TypeError(f"[{section}] {name} is a secret: the loader needs SecretValues and a key_file")
        inline = self.doc.get(section, name)
        from_file = self.doc.get(section, f"{name}_file")
        self.values[(section, name)] = None
        self.values[(section, f"{name}_file")] = None
        if inline and from_file:
            self.issue(from_file, section, name, f"give either {name} or {name}_file, not both")
            return
        if inline:
            if not inline.value.startswith(self.secrets.prefix):
                self.issue(inline, section, name,
                           f"secrets are not accepted in clear; use {name}_file = PATH or "
                           f"{self.secrets.encrypt_hint}")
                return
            try:
                self.values[(section, name)] = self.secrets.decrypt(inline.value, self.secret_key_file)
            except ValueError as exc:
                self.issue(inline, section, name, str(exc))
                return
            self.effective[(section, name)] = (f"<redacted {self.secrets.prefix} value>",
                                               f"{inline.file}:{inline.line}")
        elif from_file:
            try:
                path = parse_path(from_file.value)
            except ValueError as exc:
                self.issue(from_file, section, f"{name}_file", str(exc))
                return
            problem = self.secrets.file_problem(path) if self.check_files else None
            if problem:
                self.issue(from_file, section, f"{name}_file", problem)
                return
            self.values[(section, f"{name}_file")] = path
            self.effective[(section, f"{name}_file")] = (str(path), f"{from_file.file}:{from_file.line}")


def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """The message for an unknown section or key: the known names, the closest first when one is
    close enough to be a typo."""
    known = sorted(known)
    listed = f"expected one of {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1)
    return f"unknown {kind}; did you mean {close[0]!r}? ({listed})" if close else f"unknown {kind}; {listed}"


def display(value: Any) -> str:
    """A value as ``config show`` prints it."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        # Rules (not plain strings) are separated as they are written: "a -> b; c -> d".
        return ", ".join(value) if all(isinstance(v, str) for v in value) else "; ".join(map(str, value))
    if isinstance(value, re.Pattern):
        return value.pattern
    return str(value)
