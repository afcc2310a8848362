"""The RPMs, built for real with rpmbuild, checked with rpmlint, installed and upgraded in a
temporary root with rpm, and the installed payload run from a private mount namespace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, free_port

VERSION = re.search(r'__version__ = "(.+)"', (REPO / "luigi_appliance" / "__init__.py").read_text())[1]
EXPECTED_PAYLOAD = REPO / "rpm" / "expected-payload.txt"
VENV = "/opt/luigi-appliance"


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
    first = build(REPO, 1)
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


def test_all_packages_are_built(rpms) -> None:
    for release in rpms.values():
        for path in release.values():
            assert path.is_file() and path.stat().st_size > 0, path
    sizes = {kind: path.stat().st_size for kind, path in rpms["1"].items()}
    print(f"\nRPM sizes: {sizes}")


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


def test_payload_matches_the_expected_listing(rpms) -> None:
    listing = []
    venv_rows = []
    for kind in ("main", "selinux"):
        for row in dump(rpms["1"][kind]):
            if row[0].startswith(VENV + "/"):
                venv_rows.append(row)
            else:
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
    assert sorted(p for p in paths if p.startswith(VENV + "/bin/")) == [
        f"{VENV}/bin/luigi-appliance", f"{VENV}/bin/python", f"{VENV}/bin/python3", f"{VENV}/bin/python3.11"]


def scriptlets(rpm: Path) -> dict[str, str]:
    """{"preinstall": body, "postuninstall": body, ...} from `rpm -qp --scripts`."""
    text = run("rpm", "-qp", "--scripts", str(rpm)).stdout
    parts = re.split(r"^(\w+) scriptlet \(using [^)]*\):$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_scriptlets_never_stop_or_disable_on_upgrade(rpms) -> None:
    main = scriptlets(rpms["1"]["main"])
    # Stop and disable only on erase ($1 == 0), restart only on upgrade ($1 >= 1), enable never.
    assert "if [ $1 -eq 0 ]" in main["preuninstall"] and "disable --now" in main["preuninstall"]
    assert "if [ $1 -ge 1 ]" in main["postuninstall"] and "try-restart" in main["postuninstall"]
    assert "enable" not in main["postinstall"].replace("systemctl enable --now luigi-appliance\n", "")
    assert "useradd -r -g luigi " in main["preinstall"]
    assert "db upgrade" not in "".join(main.values())  # migrations are the admin's step, never the RPM's
    selinux = scriptlets(rpms["1"]["selinux"])
    assert "-X 200 -i /usr/share/selinux/packages/targeted/luigi_appliance.pp.bz2" in selinux["postinstall"]
    assert "semanage port -a -t luigi_appliance_port_t -p tcp 8082" in selinux["postinstall"]
    postun = selinux["postuninstall"]
    assert postun.lstrip().startswith("if [ $1 -eq 0 ]")
    assert postun.index("semanage port -d") < postun.index("semodule"), "port records first, then the module"
    assert "restorecon" in selinux["posttrans"]
    requires = run("rpm", "-qp", "--requires", str(rpms["1"]["main"])).stdout.splitlines()
    assert "(luigi-appliance-selinux if selinux-policy-targeted)" in requires
    assert not [r for r in requires if "python3.11dist" in r or r.startswith("lib")]
    provides = run("rpm", "-qp", "--provides", str(rpms["1"]["main"])).stdout.splitlines()
    assert not [p for p in provides if ".so" in p or "python" in p]


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
