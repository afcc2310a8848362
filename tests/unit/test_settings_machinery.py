"""The settings machinery (luigi_appliance/settings/): self-contained, and loading a declared
section the way every configuration file is loaded: typed values, file:line issues, secrets."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from luigi_appliance.auth import registry
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError
from luigi_appliance.secret_settings import SecretFiles
from luigi_appliance.secret_values import encrypt_value
from luigi_appliance.settings.declare import key, keys_of, secret
from luigi_appliance.settings.inifile import IniDocument, parse_text
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import duration_range, parse_path

PACKAGE = Path(__file__).resolve().parents[2] / "luigi_appliance"


def project_imports(source: str) -> set[str]:
    """The luigi_appliance modules ``source`` imports (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("luigi_appliance"))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would hide what is imported"
            if (node.module or "").startswith("luigi_appliance"):
                found.add(node.module or "")
    return found


def test_the_settings_package_imports_nothing_else_of_the_project() -> None:
    outside = {f"{path.name}: {name}" for path in (PACKAGE / "settings").glob("*.py")
               for name in project_imports(path.read_text())
               if name != "luigi_appliance.settings" and not name.startswith("luigi_appliance.settings.")}
    assert outside == set()


def test_the_import_scan_sees_deferred_imports() -> None:
    assert project_imports("def f():\n    from luigi_appliance.config import Settings\n") == {"luigi_appliance.config"}


@dataclass(frozen=True)
class _Demo:
    path: Path | None = key(parse_path, None, "a file", must_exist=True)
    wait: float = key(duration_range(0, 60), 5.0, "a pause", name="pause")
    token: bytes | None = secret("a secret")
    token_file: Path | None = None
    own: str = "not a key"


@dataclass(frozen=True)
class _Keys:
    file: Path = key(parse_path, Path("/nonexistent/secret.key"), "decrypts enc: values")


DEMO = section("demo", _Demo)
KEYS = section("keys", _Keys)


def _load(text: str, tmp_path: Path) -> tuple[SchemaLoader, list[ConfigIssue]]:
    issues: list[ConfigIssue] = []
    doc = IniDocument(entries={}, sections={}, files=["demo.conf"])
    parse_text(text, "demo.conf", doc, issues)
    loader = SchemaLoader(doc, issues, True, [DEMO, KEYS], secrets=SecretFiles(), key_file=("keys", "file"))
    loader.load()
    return loader, issues


def test_a_declared_section_loads_into_its_dataclass_with_origins(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    value = encrypt_value("s3cret", key_file)
    loader, issues = _load(f"[demo]\npause = 1m\ntoken = {value}\n[keys]\nfile = {key_file}\n", tmp_path)
    assert issues == []
    assert DEMO.build(loader) == _Demo(None, 60.0, b"s3cret", None)
    assert loader.effective[("demo", "pause")] == ("60", "demo.conf:2")
    assert loader.effective[("demo", "path")] == ("(unset)", "default")
    assert loader.effective[("demo", "token")] == ("<redacted enc: value>", "demo.conf:3")


def test_every_problem_is_an_issue_naming_file_line_section_and_key(tmp_path: Path) -> None:
    _, issues = _load(f"[demo]\npath = {tmp_path}/absent\npause = 2h\nwait = 1\ntoken = clear\n[other]\n",
                      tmp_path)
    assert [str(i) for i in issues] == [
        "demo.conf:6: [other]: unknown section; expected one of demo, keys",
        "demo.conf:4: [demo] wait: unknown key; expected one of path, pause, token, token_file",
        f"demo.conf:2: [demo] path: file {tmp_path}/absent does not exist",
        "demo.conf:3: [demo] pause: expected a duration between 0s and 60s, got 7200s",
        "demo.conf:5: [demo] token: secrets are not accepted in clear; use token_file = PATH or an enc: "
        "value from 'luigi-appliance secret encrypt'",
    ]


def test_a_secret_needs_the_field_holding_its_file() -> None:
    @dataclass(frozen=True)
    class Broken:
        password: bytes | None = secret("no password_file field")

    with pytest.raises(TypeError, match="password_file"):
        keys_of(Broken)


def _auth_conf(tmp_path: Path, backend: str) -> list[Path]:
    conf = tmp_path / "scheduler.conf"
    conf.write_text(f"[auth]\nbackend = {backend}\n")
    return [conf]


def test_auth_backend_takes_the_names_the_registry_knows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(_auth_conf(tmp_path, "kerberos"), check_files=False)
    assert str(refused.value).endswith("scheduler.conf:2: [auth] backend: no account backend named 'kerberos' "
                                       "(expected a module luigi_appliance.auth.kerberos that registers it)")
    # A new backend is a module that registers itself; here, the registration alone.
    monkeypatch.setattr(registry, "_backends", {})
    registry.register_backend("kerberos", lambda settings: None)  # type: ignore[arg-type,return-value]
    assert load_settings(_auth_conf(tmp_path, "kerberos"), check_files=False).auth.backends == ("kerberos",)


def test_auth_backend_names_each_backend_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="each once"):
        load_settings(_auth_conf(tmp_path, "local, local"), check_files=False)
