"""The package's shape: no import cycle between its modules, one version everywhere it is stated."""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import luigi_appliance
from luigi_appliance.dag.cycles import cyclic_components

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "luigi_appliance"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules ``module`` imports anywhere: also inside functions and under ``if
    TYPE_CHECKING:``, since an import deferred to dodge a cycle still is one."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}
    known = set(files)
    return {name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: groups of modules that import each other, sorted."""
    return sorted(sorted(c) for c in cyclic_components(sorted(graph), lambda m: sorted(graph[m])))


def test_no_import_cycle_inside_the_package() -> None:
    graph = import_graph()
    assert "luigi_appliance.server.serve" in graph and "luigi_appliance.auth.registry" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_one_version_for_the_package_the_spec_and_the_collection() -> None:
    """luigi_appliance.__version__ is the one version string: setup.cfg reads it, `make rpm`
    writes it into the spec it builds (the spec states none; tests/system/test_rpm.py checks the
    SRPM's), and ansible/galaxy.yml, which ansible-galaxy reads as it is, must repeat it."""
    version = luigi_appliance.__version__
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(REPO / "setup.cfg")
    assert setup_cfg["metadata"]["version"] == "attr: luigi_appliance.__version__"
    assert "version" not in (REPO / "setup.py").read_text()
    spec = (REPO / "rpm" / "luigi-appliance.spec").read_text()
    assert re.search(r"^Version:\s+(\S+)$", spec, re.M)[1] == "%{upstream_version}"
    assert not re.search(r"^\s*%(global|define)\s+upstream_version\b", spec, re.M)
    galaxy = re.search(r"^version:\s+(\S+)$", (REPO / "ansible" / "galaxy.yml").read_text(), re.M)[1]
    assert galaxy == version, f"ansible/galaxy.yml has version {galaxy}, luigi_appliance/__init__.py {version}"
