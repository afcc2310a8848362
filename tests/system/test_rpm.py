"""The RPMs, built for real with rpmbuild, checked with rpmlint, installed, upgraded and erased
in a temporary root with rpm and their scriptlets (tests/rpm_root.py), and the installed payload
run from a private mount namespace; its man pages rendered and its bash completion asked in a real
bash. The spec itself is checked for macros rpm left unexpanded."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from booted_systemd.rpm_build import release_1
from completion_shell import offered
from rpm_root import RpmRoot, UnitState

from conftest import REPO, free_port
from luigi_appliance.cli import build_parser

VERSION = re.search(r'__version__ = "(.+)"', (REPO / "luigi_appliance" / "__init__.py").read_text())[1]
EXPECTED_PAYLOAD = REPO / "rpm" / "expected-payload.txt"
VENV = "/opt/luigi-appliance"
MAN1 = "/usr/share/man/man1/"
COMPLETION = "/usr/share/bash-completion/completions/luigi-appliance"


def run(*cmd: str, cwd: Path | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def build(tree: Path, release: int) -> dict[str, Path]:
    run("make", "rpm", f"RPM_RELEASE={release}", "PYTHON=python3", cwd=tree, timeout=1200)
    dist = tree / "dist"
    return {
        "src": dist / f"luigi-appliance-{VERSION}-{release}.src.rpm",
        "main": dist / f"luigi-appliance-{VERSION}-{release}.x86_64.rpm",
        "selinux": dist / f"luigi-appliance-selinux-{VERSION}-{release}.noarch.rpm",
    }


@pytest.fixture(scope="session")
def rpms(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Release 1 from this checkout, release 2 from a copy whose shipped scheduler.conf changed."""
    # Shared with the booted-systemd test: one build of release 1 per session, however many workers.
    first = release_1(tmp_path_factory)
    copy = tmp_path_factory.mktemp("release2") / "src"
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout
    for name in filter(None, files.split("\0")):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).exists():
            shutil.copy2(REPO / name, target)
    shutil.copytree(REPO / "rpm" / "wheels", copy / "rpm" / "wheels")
    run("git", "init", "-q", cwd=copy)
    run("git", "add", "-A", cwd=copy)
    with open(copy / "etc" / "scheduler.conf", "a") as fh:
        fh.write("\n# Release 2 changed this file.\n")
    second = build(copy, 2)
    return {"1": first, "2": second}


# --- the spec: no macro left unexpanded ----------------------------------------------------------

# A macro reference as rpm writes it back when it cannot expand it: %{name...}, %(shell),
# %[expression] or a bare %name (with ? and ! prefixes).
MACRO = re.compile(r"%(?:\{[^{}]*\}|\([^()]*\)|\[[^\[\]]*\]|[?!]*[A-Za-z_]\w*)")
SECTIONS = {
    "package", "description", "prep", "generate_buildrequires", "conf", "build", "install", "check", "clean",
    "pre", "post", "preun", "postun", "pretrans", "posttrans", "preuntrans", "postuntrans", "verifyscript",
    "triggerprein", "triggerin", "triggerun", "triggerpostun", "filetriggerin", "filetriggerun",
    "filetriggerpostun", "transfiletriggerin", "transfiletriggerun", "transfiletriggerpostun",
    "files", "changelog", "sourcelist", "patchlist",
}
FILES_DIRECTIVES = {"attr", "defattr", "config", "dir", "doc", "docdir", "license", "ghost", "verify", "exclude",
                    "lang", "caps", "readme", "artifact", "missingok"}


def unexpanded_macros(parsed: str, source: str) -> list[tuple[int, str]]:
    """(line, text) of each macro reference left in ``rpmspec -P`` output ``parsed`` of ``source``.

    Not counted: comment lines (rpm expands macros there too, the spec escapes them as %%),
    section headers, %files directives in %files sections, and what the source wrote as a literal
    percent sign (%%s -> %s).
    """
    literal = {MACRO.match(line, m.start() + 1)[0]
               for line in source.splitlines() if not line.lstrip().startswith("#")
               for m in re.finditer(r"%%", line) if MACRO.match(line, m.start() + 1)}
    found, section = [], "preamble"
    for number, line in enumerate(parsed.splitlines(), 1):
        text = line.strip()
        if text.startswith("#"):
            continue
        header = re.match(r"%(\w+)\b", text)
        if header and header[1] in SECTIONS:
            section, text = header[1], text[header.end():]
        for m in MACRO.finditer(text):
            name = m[0].lstrip("%?!")
            if (section == "files" and name in FILES_DIRECTIVES) or m[0] in literal:
                continue
            found.append((number, m[0]))
    return found


def parse_spec(*make_args: str) -> str:
    """The spec as `make rpm` has rpmbuild read it (the Makefile's macro files and defines)."""
    return run("make", "-s", "rpm-spec", *make_args, cwd=REPO).stdout


def test_spec_leaves_no_macro_unexpanded() -> None:
    parsed = parse_spec()
    assert unexpanded_macros(parsed, (REPO / "rpm" / "luigi-appliance.spec").read_text()) == []
    # The scriptlets are there, expanded (the check would pass on an empty parse too).
    assert "%post selinux" in parsed and "semodule" in parsed and "systemctl" in parsed


def test_unexpanded_macro_check_finds_an_undefined_macro(tmp_path: Path) -> None:
    spec = tmp_path / "probe.spec"
    spec.write_text("""\
Name: probe
Version: 1
Release: 1%{?dist}
Summary: probe
License: MIT
%global fmt %%{NAME}

%description
probe

%install
echo %{this_macro_is_not_defined} %{?undefined_but_optional}
date +%%s
%bare_undefined_macro argument
# a comment: %%{_bindir} %also_left_alone

%post
%{_bindir}/true %{fmt}

%files
%dir %attr(0750,root,root) /etc/probe
%config(noreplace) %verify(not md5) /etc/probe/probe.conf

%changelog
* Mon Jan 01 2024 Probe <probe@example.org> - 1-1
- 100%% probe
""")
    parsed = run("rpmspec", "-P", str(spec)).stdout
    found = unexpanded_macros(parsed, spec.read_text())
    assert [text for _, text in found] == ["%{this_macro_is_not_defined}", "%bare_undefined_macro"], parsed
    assert [parsed.splitlines()[n - 1].split()[0] for n, _ in found] == ["echo", "%bare_undefined_macro"]


@pytest.mark.skipif(bool(run("rpm", "--eval", "%{?systemd_post:1}").stdout.strip()),
                    reason="this host has systemd-rpm-macros: the spec needs no stand-ins here")
def test_without_the_stand_ins_the_systemd_macros_stay_unexpanded() -> None:
    # What the check is for: a build host without systemd-rpm-macros and without the Makefile's
    # stand-ins would ship scriptlets that run "%systemd_post" as a shell command.
    parsed = parse_spec("RPM_MACROS=")
    found = {text for _, text in unexpanded_macros(parsed, (REPO / "rpm" / "luigi-appliance.spec").read_text())}
    assert {"%systemd_post", "%systemd_preun", "%systemd_postun_with_restart", "%tmpfiles_create",
            "%{_unitdir}", "%selinux_modules_install"} <= found, found


# --- the packages -------------------------------------------------------------------------------

def test_all_packages_are_built(rpms) -> None:
    for release in rpms.values():
        for path in release.values():
            assert path.is_file() and path.stat().st_size > 0, path
    sizes = {kind: path.stat().st_size for kind, path in rpms["1"].items()}
    print(f"\nRPM sizes: {sizes}")


def test_the_srpm_spec_needs_no_definitions_from_the_makefile(rpms, tmp_path: Path) -> None:
    # rpm/luigi-appliance.spec has no version (tests/unit/test_package_structure.py); `make rpm`
    # writes luigi_appliance/__init__.py's, and the interpreter its wheels are for, into the copy
    # the SRPM carries. Read alone, as `rpmbuild --rebuild` reads it, that copy is the SRPM.
    srpm = rpms["1"]["src"]
    run("sh", "-c", f"rpm2cpio {srpm} | cpio -idm --quiet luigi-appliance.spec", cwd=tmp_path)
    spec = str(tmp_path / "luigi-appliance.spec")
    assert run("rpmspec", "-q", "--srpm", "--qf", "%{version}", spec).stdout == VERSION
    assert run("rpm", "-qp", "--qf", "%{version}", str(srpm)).stdout == VERSION
    alone = run("rpmspec", "-q", "--buildrequires", spec).stdout.splitlines()
    built = [r for r in run("rpm", "-qp", "--requires", str(srpm)).stdout.splitlines() if not r.startswith("rpmlib(")]
    assert sorted(alone) == sorted(built) and venv_python(rpms["1"]["main"]) in alone, (alone, built)


def test_rpmlint_has_no_errors_and_no_unfiltered_warnings(rpms) -> None:
    paths = [str(p) for p in rpms["1"].values()]
    result = run("rpmlint", "-r", str(REPO / "rpm" / "luigi-appliance.rpmlintrc"), *paths, check=False)
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\b0 errors, 0 warnings\b", summary), result.stdout[-6000:]


def dump(rpm: Path) -> list[tuple[str, str, str, str, str]]:
    """(path, mode, owner, group, config) for each file, from `rpm -qp --dump`."""
    rows = []
    for line in run("rpm", "-qp", "--dump", str(rpm)).stdout.splitlines():
        # Paths may contain spaces; the ten fields after the path never do.
        path, _size, _mtime, _digest, mode, owner, group, config = line.rsplit(" ", 10)[:8]
        rows.append((path, mode, owner, group, config))
    return rows


def venv_python(rpm: Path) -> str:
    """The interpreter the main package's venv runs on (python3.11 or python3.12): what it Requires."""
    found = [r for r in run("rpm", "-qp", "--requires", str(rpm)).stdout.split() if re.fullmatch(r"python3\.\d+", r)]
    assert len(found) == 1, found
    return found[0]


def test_payload_matches_the_expected_listing(rpms) -> None:
    listing = []
    venv_rows = []
    for kind in ("main", "selinux"):
        for row in dump(rpms["1"][kind]):
            if row[0].startswith(VENV + "/"):
                venv_rows.append(row)
            elif not row[0].startswith(MAN1):  # one per command: test_a_man_page_for_every_command
                listing.append(f"{kind} " + " ".join(row))
    expected = [line for line in EXPECTED_PAYLOAD.read_text().splitlines() if line and not line.startswith("#")]
    assert listing == expected, "\n".join(listing)
    config_files = run("rpm", "-qp", "--configfiles", str(rpms["1"]["main"])).stdout.split()
    assert sorted(config_files) == sorted(line.split()[1] for line in expected if line.split()[5] == "1")
    # The venv: root-owned, nothing group/other-writable, every module byte-compiled and owned.
    paths = {row[0] for row in venv_rows}
    assert all(row[2:4] == ("root", "root") for row in venv_rows)
    assert not [row for row in venv_rows if int(row[1], 8) & 0o022 and not row[1].startswith("0120")]
    modules = [p for p in paths if p.endswith(".py") and "/site-packages/" in p]
    assert len(modules) > 500
    missing = [m for m in modules if not any(p.startswith(os.path.dirname(m) + "/__pycache__/" +
                                                          os.path.basename(m)[:-3] + ".cpython-") for p in paths)]
    assert missing == []
    python = venv_python(rpms["1"]["main"])
    assert sorted(p for p in paths if p.startswith(VENV + "/bin/")) == [
        f"{VENV}/bin/luigi-appliance", f"{VENV}/bin/python", f"{VENV}/bin/python3", f"{VENV}/bin/{python}"]
    assert any(p.startswith(f"{VENV}/lib/{python}/site-packages/luigi/") for p in paths)
    # The build tools and %check's pytest are in the wheels (rpm/requirements.in), not the runtime.
    site = f"{VENV}/lib/{python}/site-packages/"
    installed = {p[len(site):].split("/")[0].split("-")[0].lower() for p in paths if p.startswith(site)}
    assert not installed & {"pip", "setuptools", "wheel", "packaging", "shtab", "pytest", "_pytest", "pluggy",
                            "iniconfig", "pygments", "py.py"}, installed


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def top_level_commands() -> list[str]:
    """The commands of the CLI's parser: each must have its man page and be completed."""
    return list(subcommands(build_parser()))


def option_strings(parser: argparse.ArgumentParser, *, deep: bool) -> set[str]:
    """The long options of ``parser`` (but --help), and with ``deep`` its subcommands' all the way down."""
    found = {o for action in parser._actions for o in action.option_strings if o.startswith("--")} - {"--help"}
    return found.union(*(option_strings(sub, deep=True) for sub in subcommands(parser).values())) if deep else found


def test_a_man_page_for_every_command_and_each_renders(rpms, tmp_path: Path) -> None:
    rows = {row[0]: row[1:] for row in dump(rpms["1"]["main"]) if row[0].startswith(MAN1)}
    commands = top_level_commands()
    assert {"serve", "run", "dag", "user"} <= set(commands)
    names = ["luigi-appliance", *(f"luigi-appliance-{command}" for command in commands)]
    assert sorted(rows) == sorted(f"{MAN1}{name}.1.gz" for name in names)
    assert set(rows.values()) == {("0100644", "root", "root", "0")}
    run("sh", "-c", f"rpm2cpio {rpms['1']['main']} | cpio -idm --quiet './usr/share/man/*'", cwd=tmp_path)
    options = {"luigi-appliance": option_strings(build_parser(), deep=False),
               **{f"luigi-appliance-{c}": option_strings(p, deep=True) for c, p in subcommands(build_parser()).items()}}
    for name in names:
        # man-db's own check (what `man --warnings` reports as a packager's lint), then the text.
        result = run("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", str(tmp_path / f".{MAN1}{name}.1.gz"),
                     env={**os.environ, "MANWIDTH": "80"})
        assert result.stderr == "", (name, result.stderr)
        text = re.sub(r".\x08", "", result.stdout)  # bold and underline are overstruck characters
        assert re.search(rf"^NAME\n +{name} - \S", text, re.M), text[:600]
        assert re.search(r"^SYNOPSIS\n +luigi-appliance", text, re.M), text[:600]
        # The top page has the global options; a command's page its own and its subcommands'.
        assert {o for o in options[name] if not re.search(rf"(?<![\w-]){o}(?![\w-])", text)} == set(), name
    top = re.sub(r".\x08", "", run("man", "-l", "-Tutf8", str(tmp_path / f".{MAN1}luigi-appliance.1.gz")).stdout)
    assert all(f"{name}(1)" in top for name in names[1:])  # the overview points at every page


def test_the_bash_completion_offers_every_command(rpms, tmp_path: Path) -> None:
    assert [row[1:] for row in dump(rpms["1"]["main"]) if row[0] == COMPLETION] == [("0100644", "root", "root", "0")]
    run("sh", "-c", f"rpm2cpio {rpms['1']['main']} | cpio -idm --quiet '.{COMPLETION}'", cwd=tmp_path)
    script = tmp_path / f".{COMPLETION}"
    assert sorted(offered(script, "luigi-appliance", "")) == sorted(top_level_commands())
    assert "--state-dir" in offered(script, "luigi-appliance", "serve", "--")


def scriptlets(rpm: Path) -> dict[str, str]:
    """{"preinstall": body, "postuninstall": body, ...} from `rpm -qp --scripts`."""
    text = run("rpm", "-qp", "--scripts", str(rpm)).stdout
    parts = re.split(r"^(\w+) scriptlet \(using [^)]*\):$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# EL9.0's selinux-policy: the oldest policy the -selinux package must accept.
EL9_OLDEST_POLICY = "34.1.29"


def test_dependencies(rpms) -> None:
    main = run("rpm", "-qp", "--requires", str(rpms["1"]["main"])).stdout.splitlines()
    assert "(luigi-appliance-selinux if selinux-policy-targeted)" in main
    # The venv's modules and libraries generate no dependencies and provide nothing.
    assert not [r for r in main if re.match(r"python\d\.\d+dist|lib", r)], main
    provides = run("rpm", "-qp", "--provides", str(rpms["1"]["main"])).stdout.splitlines()
    assert not [p for p in provides if ".so" in p or "python" in p]
    # The policy requirement holds on every EL9 minor (not pinned to the build host's policy).
    selinux = run("rpm", "-qp", "--requires", str(rpms["1"]["selinux"])).stdout.splitlines()
    versioned = {r.split()[0]: r.split()[2] for r in selinux if re.match(r"selinux-policy(-base)? >= ", r)}
    assert set(versioned) == {"selinux-policy", "selinux-policy-base"}, selinux
    assert all(version_tuple(v) <= version_tuple(EL9_OLDEST_POLICY) for v in versioned.values()), versioned
    assert {"policycoreutils", "policycoreutils-python-utils", "selinux-policy-targeted"} <= set(selinux)
    scripts = run("rpm", "-qp", "--scripts", str(rpms["1"]["main"])).stdout
    assert "db upgrade" not in scripts  # migrations are the admin's step, never the RPM's


UNITS = ("luigi-appliance.service", "luigi-appliance-history-prune.timer")


def printed(output: str) -> list[str]:
    """The lines the scriptlets printed, without systemctl's notices about the symlinks it
    created or removed (EL's systemd-update-helper lets them through, as on any dnf install)."""
    return [line for line in output.splitlines() if not line.startswith(("Created symlink ", "Removed "))]


def assert_first_install_message_only(output: str) -> None:
    lines = printed(output)
    assert lines[:1] == ["luigi-appliance installed. Next steps:"] and len(lines) == 5, output


def test_scriptlets_follow_presets_and_never_stop_or_disable_on_upgrade(rpms, tmp_path: Path) -> None:
    # A root configured like Debian's SELinux (policy type "default"): the -selinux package must
    # skip its module quietly there, as on an EL host whose SELINUXTYPE is not targeted.
    root = RpmRoot.create(tmp_path, selinux_store="default")
    # A site preset enables the timer; EL9's default preset disables everything else.
    root.write("/etc/systemd/system-preset/50-site.preset", "enable luigi-appliance-history-prune.timer\n")
    # Nothing but the first-install message (no semodule/semanage errors from -selinux).
    assert_first_install_message_only(root.rpm("-i", str(rpms["1"]["main"]), str(rpms["1"]["selinux"])))
    accounts = root.accounts()
    assert accounts["luigi"][1:] == ("/var/lib/luigi-appliance", "/sbin/nologin")
    assert accounts["luigi-worker"][1:] == ("/", "/sbin/nologin")
    assert all(uid < 1000 for uid, _, _ in (accounts["luigi"], accounts["luigi-worker"]))  # system accounts
    for path in ("/run/luigi-appliance", "/var/lib/luigi-appliance", "/var/log/luigi-appliance"):
        assert root.owner(path) == ("luigi", 0o750), path  # systemd-tmpfiles ran (%tmpfiles_create)
    # Presets decide; nothing is started.
    state = root.units(*UNITS)
    assert [(u.enabled, u.active) for u in state.values()] == [(False, False), (True, False)], state
    assert selinux_modules(root, "default") and "luigi_appliance" not in selinux_modules(root, "default")

    # The admin enables and starts the scheduler, and turns the prune timer off.
    root.chroot("systemctl", "enable", "--now", UNITS[0])
    root.chroot("systemctl", "disable", UNITS[1])
    assert printed(root.rpm("-U", str(rpms["2"]["main"]), str(rpms["2"]["selinux"]))) == []
    state = root.units(*UNITS)
    # The running service was restarted once (new code), stayed enabled; the disabled timer was
    # neither re-enabled (no preset on upgrade) nor started.
    assert state[UNITS[0]] == UnitState(enabled=True, active=True, starts=2), state
    assert state[UNITS[1]] == UnitState(enabled=False, active=False, starts=0), state

    assert printed(root.rpm("-e", "luigi-appliance", "luigi-appliance-selinux")) == []
    state = root.units(*UNITS)
    assert [(u.enabled, u.active) for u in state.values()] == [(False, False), (False, False)], state
    assert "luigi" in root.accounts()  # accounts stay (docs/install.md, "Uninstall")


def selinux_modules(root: RpmRoot, store: str) -> dict[str, int]:
    """{module: priority} of the root's policy store, as semodule lists it."""
    out = root.chroot("semodule", "-s", store, "--list-modules=full").stdout
    return {name: int(priority) for priority, name, *_ in (line.split() for line in out.splitlines() if line.strip())}


def local_ports(root: RpmRoot) -> dict[str, str]:
    """{"tcp/8082": type} of the port records added with semanage in the root's targeted store."""
    out = root.chroot("semanage", "port", "-S", "targeted", "-l", "-C", "-n").stdout
    ports = {}
    for line in out.splitlines():
        typ, proto, numbers = line.split(None, 2)
        ports.update({f"{proto}/{n.strip()}": typ for n in numbers.split(",")})
    return ports


def test_selinux_scriptlets_install_the_module_and_port_and_remove_both(rpms, tmp_path: Path) -> None:
    # A root whose configured policy is "targeted" (a copy of Debian's policy under that name):
    # the module goes in, at priority 200, and tcp/8082 gets the module's port type.
    root = RpmRoot.create(tmp_path, selinux_store="targeted")
    assert_first_install_message_only(root.rpm("-i", str(rpms["1"]["main"]), str(rpms["1"]["selinux"])))
    assert selinux_modules(root, "targeted")["luigi_appliance"] == 200
    assert local_ports(root) == {"tcp/8082": "luigi_appliance_port_t"}

    # The admin moves the scheduler to 9443 and gives 8082 back (docs/install.md); an upgrade
    # keeps that instead of taking 8082 again.
    root.chroot("sh", "-c", "printf 'port -a -t luigi_appliance_port_t -p tcp 9443\\nport -d -p tcp 8082\\n' | "
                            "semanage import -N -S targeted")
    assert printed(root.rpm("-U", str(rpms["2"]["main"]), str(rpms["2"]["selinux"]))) == []
    assert selinux_modules(root, "targeted")["luigi_appliance"] == 200
    assert local_ports(root) == {"tcp/9443": "luigi_appliance_port_t"}

    # Erase: the port records go first (the module's types cannot be removed while they are
    # in use), then the module.
    assert printed(root.rpm("-e", "luigi-appliance-selinux", "luigi-appliance")) == []
    assert "luigi_appliance" not in selinux_modules(root, "targeted")
    assert local_ports(root) == {}


def test_upgrade_keeps_edited_config_and_writes_rpmnew(rpms, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run("rpm", "--root", str(root), "--initdb")
    # Scriptlets need a userland inside the root; this test is about payload and config handling.
    run("rpm", "--root", str(root), "-i", "--nodeps", "--noscripts", str(rpms["1"]["main"]), str(rpms["1"]["selinux"]))
    conf = root / "etc/luigi-appliance/scheduler.conf"
    client = root / "etc/luigi-appliance/client.conf"
    conf.write_text(conf.read_text() + "\n[server]\nlisten = 0.0.0.0:8082\n")
    edited = conf.read_text()
    client_before = client.read_text()
    run("rpm", "--root", str(root), "-U", "--nodeps", "--noscripts", str(rpms["2"]["main"]), str(rpms["2"]["selinux"]))
    assert conf.read_text() == edited
    rpmnew = root / "etc/luigi-appliance/scheduler.conf.rpmnew"
    assert rpmnew.exists() and rpmnew.read_text().endswith("# Release 2 changed this file.\n")
    assert client.read_text() == client_before and not (root / "etc/luigi-appliance/client.conf.rpmnew").exists()
    installed = run("rpm", "--root", str(root), "-q", "luigi-appliance").stdout.strip()
    assert installed == f"luigi-appliance-{VERSION}-2.x86_64"
    run("rpm", "--root", str(root), "-e", "--nodeps", "--noscripts", "luigi-appliance", "luigi-appliance-selinux")
    assert not (root / "opt/luigi-appliance/bin/luigi-appliance").exists()
    assert (root / "etc/luigi-appliance/scheduler.conf.rpmsave").exists()  # an edited config survives removal


def test_installed_payload_runs(rpms, tmp_path: Path) -> None:
    """Unpack the RPM, mount its /opt and /etc trees at their real paths in a private mount
    namespace, and run the installed CLI: config check on the shipped files, then serve."""
    tree = tmp_path / "tree"
    tree.mkdir()
    run("sh", "-c", f"rpm2cpio {rpms['1']['main']} | cpio -idm --quiet", cwd=tree)
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    logs = tmp_path / "logs"  # what the unit's LogsDirectory= (and tmpfiles.d) create
    logs.mkdir(mode=0o750)
    port = free_port()
    dropin = tree / "etc/luigi-appliance/scheduler.conf.d/50-test.conf"
    dropin.write_text(f"[server]\nlisten = 127.0.0.1:{port}\n")
    script = f"""
set -e
mount -t tmpfs tmpfs /opt
mkdir -p /opt/luigi-appliance /etc/luigi-appliance /var/lib/luigi-appliance /var/log/luigi-appliance
mount --bind {tree}/opt/luigi-appliance /opt/luigi-appliance
mount --bind {tree}/etc/luigi-appliance /etc/luigi-appliance
mount --bind {state} /var/lib/luigi-appliance
mount --bind {logs} /var/log/luigi-appliance
/opt/luigi-appliance/bin/luigi-appliance config check
exec /opt/luigi-appliance/bin/luigi-appliance serve
"""
    created = [p for p in ("/etc/luigi-appliance", "/var/lib/luigi-appliance", "/var/log/luigi-appliance")
               if not os.path.exists(p)]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                stdout=out, stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            cert = state / "tls-selfsigned.crt"
            try:
                if cert.exists() and requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(cert),
                                                  timeout=2).text == "ok\n":
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert ("configuration OK: /etc/luigi-appliance/scheduler.conf, "
                "/etc/luigi-appliance/scheduler.conf.d/50-test.conf") in text
        assert "Loaded 0 local accounts from /etc/luigi-appliance/users" in text
        assert requests.get(f"https://127.0.0.1:{port}/api/task_list", verify=str(state / "tls-selfsigned.crt"),
                            timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(20)
        for path in created:
            os.rmdir(path)
    assert proc.returncode == 0, log.read_text()
    assert (state / "state.pickle").exists()
    assert (logs / "audit.log").exists()  # the shipped default [audit] file
