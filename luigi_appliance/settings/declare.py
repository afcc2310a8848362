"""Declaring a section: its keys are fields of the section's dataclass.

A domain writes its section once, as a frozen dataclass whose fields are ``key(...)`` or
``secret(...)``; ``keys_of`` reads the declaration back (parser, default, one-line doc, secret,
must exist). Fields that are neither are the domain's own (filled by its composition). A secret
``NAME`` has a companion field ``NAME_file`` holding the path of the file it is read from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_DECLARED = "luigi_appliance.settings.key"


@dataclass(frozen=True)
class Key:
    """One configuration key, as declared.

    ``secret`` keys are never accepted in clear: give ``<name>_file = PATH`` (a file readable by
    root and the service account only) or ``<name> = enc:...``. ``must_exist`` paths are checked
    when the configuration is loaded to serve.
    """

    name: str  # as written in the file
    attribute: str  # the dataclass field holding its value
    parse: Callable[[str], Any]
    default: Any
    doc: str
    secret: bool = False
    must_exist: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The names this key may be written as."""
        return (self.name, f"{self.name}_file") if self.secret else (self.name,)


@dataclass(frozen=True)
class _Declared:
    parse: Callable[[str], Any]
    doc: str
    secret: bool
    must_exist: bool
    name: str | None


def key(parse: Callable[[str], Any], default: Any, doc: str, *, must_exist: bool = False,
        name: str | None = None) -> Any:
    """A key read with ``parse``, ``default`` when absent; ``name`` if it is written other than the field."""
    return dataclasses.field(default=default, metadata={_DECLARED: _Declared(parse, doc, False, must_exist, name)})


def secret(doc: str) -> Any:
    """A secret key (bytes from ``enc:``), unset by default; its file goes in the field ``<name>_file``."""
    return dataclasses.field(default=None, repr=False, metadata={_DECLARED: _Declared(str, doc, True, False, None)})


def keys_of(model: type) -> tuple[Key, ...]:
    """The keys declared on the dataclass ``model``, in field order."""
    keys = []
    attributes = {f.name for f in dataclasses.fields(model)}
    for f in dataclasses.fields(model):
        declared = f.metadata.get(_DECLARED)
        if declared is None:
            continue
        if declared.secret and f"{f.name}_file" not in attributes:
            raise TypeError(f"{model.__name__}.{f.name} is a secret but has no {f.name}_file field")
        keys.append(Key(declared.name or f.name, f.name, declared.parse, f.default, declared.doc,
                        declared.secret, declared.must_exist))
    return tuple(keys)
