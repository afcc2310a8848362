"""luigi's private API is used in luigi_appliance/luigi_internals/ only, and every name used
there is still where the installed luigi keeps it (so a luigi upgrade shows what moved)."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import os
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest

from luigi_appliance.luigi_internals.seams import REIMPLEMENTED, SEAMS, Seam

PACKAGE = Path(__file__).resolve().parents[2] / "luigi_appliance"
BOUNDARY = PACKAGE / "luigi_internals"
LUIGI_DIR = Path(luigi.__file__).parent
# Alembic's scripts: run by alembic, never imported as modules of the package.
NOT_MODULES = ("migrations",)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owner(seam: Seam) -> object:
    module, _, cls = seam.owner.partition(":")
    found = importlib.import_module(module)
    return getattr(found, cls) if cls else found


def _assigned_on_self(cls: type) -> set[str]:
    """The attributes a luigi class's methods set or read on ``self`` (its instance attributes)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "luigi":
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"}
    return names


@pytest.mark.parametrize("seam", SEAMS, ids=lambda s: f"{s.owner}.{s.name}")
def test_each_seam_is_still_in_the_installed_luigi(seam: Seam) -> None:
    owner = _owner(seam)
    where = f"luigi {luigi.__version__}: {seam.owner} {seam.name} ({seam.why})"
    if seam.kind == "file":
        assert (LUIGI_DIR / seam.name).is_file(), where
    elif seam.kind == "instance attribute":
        assert isinstance(owner, type) and seam.name in _assigned_on_self(owner), where
    else:
        value = getattr(owner, seam.name, None)
        expected = {"class": inspect.isclass, "function": inspect.isfunction, "method": inspect.isfunction}
        assert value is not None and expected[seam.kind](value), f"{where}: not a {seam.kind}"


@functools.cache
def _luigi_private_names() -> frozenset[str]:
    """Every private name luigi's own source defines or uses (attributes, functions, classes)."""
    names: set[str] = set()
    for path in LUIGI_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(name for name in names if _private(name))


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if not any(part in NOT_MODULES for part in relative.parts):
            yield ".".join(relative.parts).removesuffix(".__init__"), path


def _luigi_names_of_class(module: str, node: ast.ClassDef) -> frozenset[str]:
    """The private names of the luigi classes a class of ours inherits from (none: not luigi's)."""
    if not node.bases:
        return frozenset()
    cls = getattr(importlib.import_module(module), node.name, None)
    if not isinstance(cls, type):
        return frozenset()
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "luigi":
            names |= {name for name in vars(klass) if _private(name)}
            names |= {name for name in _assigned_on_self(klass) if _private(name)}
    return frozenset(names)


def _private_luigi_uses(module: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, what) for each use of a private luigi name in ``tree``."""
    luigi_names = _luigi_private_names()
    # Names bound by `import os` and the like: os._exit is the standard library's, not luigi's.
    other_modules = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names if alias.name.split(".")[0] != "luigi" and "." not in alias.name}
    inherited: dict[ast.AST, frozenset[str]] = {}
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        names = _luigi_names_of_class(module, cls)
        for node in ast.walk(cls):
            inherited[node] = inherited.get(node, frozenset()) | names
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "luigi":
            for alias in node.names:
                if _private(alias.name) or any(_private(part) for part in (node.module or "").split(".")):
                    yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "luigi" and any(_private(p) for p in alias.name.split(".")):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in other_modules:
                continue
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            # Our own self._x is ours unless a luigi base class has that name too.
            if (node.attr in inherited.get(node, frozenset())) if on_self else (node.attr in luigi_names):
                yield node.lineno, f".{node.attr}"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and node.args[1].value in luigi_names):
            yield node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"


def test_only_the_boundary_package_touches_luigis_private_api() -> None:
    found = []
    for module, path in _modules(PACKAGE):
        if path.is_relative_to(BOUNDARY):
            continue
        for line, what in _private_luigi_uses(module, ast.parse(path.read_text(encoding="utf-8"))):
            found.append(f"{os.path.relpath(path, PACKAGE.parent)}:{line}: {what}")
    assert not found, "luigi's private API outside luigi_appliance/luigi_internals/:\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_meant_to_find(monkeypatch: pytest.MonkeyPatch) -> None:
    source = textwrap.dedent("""
        import os

        import luigi.interface
        import luigi.scheduler
        from luigi.interface import _run

        def leave():
            os._exit(0)

        class Ours:
            def __init__(self, scheduler):
                self._state = scheduler._state

        class Theirs(luigi.scheduler.Scheduler):
            def get_work(self, **kwargs):
                self._config = None
                self._ours_only = 1
                return super()._schedulable(None) or getattr(self, "_task_history")
    """)
    sample = types.ModuleType("luigi_boundary_sample")
    exec(compile(source, sample.__name__, "exec"), sample.__dict__)  # noqa: S102 - the source above
    monkeypatch.setitem(sys.modules, sample.__name__, sample)
    uses = [what for _, what in _private_luigi_uses(sample.__name__, ast.parse(source))]
    # os._exit is the standard library's (luigi's own source uses the name too): not flagged.
    # Ours' self._state is our own attribute, Theirs' self._ours_only too: neither is flagged;
    # scheduler._state and Theirs' self._config (luigi's Scheduler has one) are.
    assert sorted(uses) == sorted(["from luigi.interface import _run", "._state", "._config", "._schedulable",
                                   "getattr(..., '_task_history')"]), uses


def test_every_private_name_the_boundary_uses_is_a_listed_seam() -> None:
    listed = {seam.name for seam in SEAMS}
    unlisted = []
    for module, path in _modules(BOUNDARY):
        for line, what in _private_luigi_uses(module, ast.parse(path.read_text(encoding="utf-8"))):
            name = what.rsplit(" ", 1)[-1].lstrip(".").strip("'()")
            if name not in listed:
                unlisted.append(f"{os.path.relpath(path, PACKAGE.parent)}:{line}: {what}")
    assert not unlisted, "add these to luigi_internals/seams.py SEAMS:\n" + "\n".join(unlisted)


@pytest.mark.parametrize(("where", "digest"), sorted(REIMPLEMENTED.items()))
def test_the_luigi_code_the_indexed_core_re_implements_is_unchanged(where: str, digest: str) -> None:
    module_name, qualname = where.split(":")
    owner: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    source = inspect.getsource(owner)
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"luigi's {where} changed since the appliance's scheduler core was derived from it: re-derive "
        "luigi_internals/scheduler.py / scheduler/work.py from the new code, run the differential test, "
        "then update its digest in luigi_internals/seams.py REIMPLEMENTED")
