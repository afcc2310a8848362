"""Who a rule is about: ``user:NAME``, ``group:NAME``, ``role:ROLE`` (that role or above) and
``kind:KIND`` (person, service, agent), each matched against the verified principal only."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from luigi_appliance.auth import Principal, Role
from luigi_appliance.settings.parsers import split_list


class Kind(enum.Enum):
    """What a principal is, from its identity ([approvals] agents and services)."""

    PERSON = "person"
    SERVICE = "service"
    AGENT = "agent"

    def __str__(self) -> str:
        return self.value


_KINDS = ("user", "group", "role", "kind")


@dataclass(frozen=True)
class Selector:
    """One ``KIND:VALUE`` of a list such as ``group:data-owners role:admin``."""

    what: str
    value: str

    def __str__(self) -> str:
        return f"{self.what}:{self.value}"

    def matches(self, principal: Principal, kind: Kind | None = None) -> bool:
        if self.what == "user":
            return principal.name == self.value
        if self.what == "group":
            return self.value in principal.groups
        if self.what == "role":
            return principal.role >= Role.parse(self.value)
        return kind is not None and kind.value == self.value


def parse_selector(text: str, allowed: tuple[str, ...] = _KINDS) -> Selector:
    what, colon, value = text.partition(":")
    if not colon or what not in allowed or not value:
        forms = ", ".join(f"{a}:NAME" for a in allowed)
        raise ValueError(f"expected {forms}, got {text!r}")
    if what == "role":
        Role.parse(value)  # ValueError naming the roles
    if what == "kind" and value not in {k.value for k in Kind}:
        raise ValueError(f"expected kind:person, kind:service or kind:agent, got {text!r}")
    return Selector(what, value)


def selector_list(*allowed: str) -> Callable[[str], tuple[Selector, ...]]:
    """A parser of blank- or comma-separated selectors of the ``allowed`` forms."""
    forms = allowed or _KINDS

    def parse(value: str) -> tuple[Selector, ...]:
        return tuple(parse_selector(item, forms) for item in split_list(value))
    return parse


def any_matches(selectors: tuple[Selector, ...], principal: Principal, kind: Kind | None = None) -> bool:
    return any(s.matches(principal, kind) for s in selectors)


def describe(selectors: tuple[Selector, ...]) -> str:
    return " or ".join(str(s) for s in selectors) or "nobody"
