"""The key reference of docs/configuration.md, rendered from the section declarations.

tests/unit/test_settings_docs.py checks that the document holds exactly this text, so a key
added, removed or given a new default shows there; paste the text it prints to update it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from luigi_appliance.settings.declare import Key
from luigi_appliance.settings.loader import Section, SectionFamily, display


def documented_default(key: Key) -> str:
    """The default as the reference and the annotated files state it: its ``config show``
    display (empty for an empty value), or ``unset`` for a key that has none."""
    if key.secret or key.default is None or key.default == ():
        return "unset"
    return display(key.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference(sections: Iterable[Section[Any] | SectionFamily[Any]]) -> str:
    """Markdown: per section (a family as ``[prefix.NAME]``), a table of its keys, their defaults
    and what they are for."""
    lines: list[str] = []
    for section in sections:
        title = section.pattern if isinstance(section, SectionFamily) else section.name
        lines += [f"### [{title}]", "", "| Key | Default | What it is |", "|---|---|---|"]
        for key in section.keys:
            name = " / ".join(f"`{n}`" for n in key.names)
            default = documented_default(key)
            if default not in ("unset", ""):
                default = f"`{_cell(default)}`"
            default = default or "empty"
            doc = f"{key.doc} (secret)" if key.secret else key.doc
            lines.append(f"| {name} | {default} | {_cell(doc)} |")
        lines.append("")
    return "\n".join(lines)
