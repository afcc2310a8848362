"""docs/access-control.md against the code and the tests.

The document is what a sysadmin or an auditor reads to learn who may call what, so it must not
drift: its two tables must say exactly what ``luigi_appliance.policy`` enforces, and every
sentence that states a rule carries a ``<!-- rule: ID -->`` marker that at least one test names
with ``@pytest.mark.doc_rule("ID")``. A marker no test claims, or a test claiming a marker the
document no longer has, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from luigi_appliance import policy

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "access-control.md"
TESTS = REPO / "tests"

_RULE = re.compile(r"<!-- rule: ([a-z0-9-]+) -->")
_CLAIM = re.compile(r"""doc_rule\(\s*((?:["'][a-z0-9-]+["']\s*,?\s*)+)\)""")


def _table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first table under ``## heading``."""
    text = DOC.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    # A cell's own "|" is written "\\|" (Markdown tables), as in the approval RPCs' route.
    return [[cell.strip().strip("`").replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip("|"))]
            for row in rows[2:]]


@pytest.mark.doc_rule("rpc-table")
def test_rpc_method_table_is_the_policy() -> None:
    documented = {}
    for name, kind, role in _table_after("RPC methods"):
        documented[name] = (kind.startswith("state-changing"), role)
    enforced = {name: (rule.mutates, str(rule.role)) for name, rule in policy.RPC_METHODS.items()}
    assert documented == enforced


@pytest.mark.doc_rule("route-table")
def test_route_table_is_the_policy() -> None:
    documented = {}
    for pattern, methods, role, _ in _table_after("Routes"):
        if pattern == "any other path":
            pattern = "FALLBACK"
        documented[pattern.replace("\\\\", "\\")] = (
            frozenset(m.strip() for m in methods.split(",")),
            None if role.startswith("none") else role.split(",")[0],
        )
    enforced = {pattern: (rule.methods, None if rule.role is None else str(rule.role))
                for pattern, rule in policy.ROUTES.items()}
    enforced["FALLBACK"] = (policy.FALLBACK.methods, str(policy.FALLBACK.role))
    assert documented == enforced


def _claimed_rules() -> dict[str, list[str]]:
    claims: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        for match in _CLAIM.finditer(path.read_text()):
            for rule in re.findall(r"[a-z0-9-]+", match.group(1)):
                claims.setdefault(rule, []).append(path.name)
    return claims


def test_every_rule_in_the_document_has_a_test() -> None:
    documented = _RULE.findall(DOC.read_text())
    assert len(documented) == len(set(documented)), "a rule marker is used twice"
    claims = _claimed_rules()
    assert sorted(set(documented) - set(claims)) == [], "rules no test claims"
    assert sorted(set(claims) - set(documented)) == [], "tests claim rules the document no longer states"
