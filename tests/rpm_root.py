"""A root directory for ``rpm --root`` in which the packages' scriptlets run for real.

rpm runs scriptlets chrooted into the root, so the root needs a userland: it gets the host's
/usr as an overlay whose upper layer lives next to the root (what the packages install under
/usr lands there; the host's /usr is never written). The overlay exists only in a private mount
namespace made for each command. /etc starts with just the account databases, so the packages'
%pre really creates their accounts there, systemd-tmpfiles really creates their directories, and
semodule/semanage (when the root has a policy store) really change the root's store.

No systemd runs in the root. ``systemctl`` there is a stand-in (SYSTEMCTL below): enablement
(enable, disable, preset, is-enabled) is done by the real systemctl, offline, on the root's unit
files, presets and symlinks, as in any image build; what a running manager would do (start,
stop, restarts, restart markers, daemon-reload) cannot happen without one, so the stand-in keeps
that state in files (/run/standin/UNIT.active, UNIT.starts) and logs every call.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Debian's rpm prints this on every install; it is not the packages' output.
DEBIAN_RPM_NOTICE = (
    "rpm: RPM should not be used directly install RPM packages, use Alien instead!\n"
    "rpm: However assuming you know what you are doing...\n"
)
# The policy EL9's presets apply to a package's units (99-default-disable.preset of
# redhat-release / centos-stream-release): nothing is enabled unless a preset file says so.
EL9_DEFAULT_PRESET = "disable *\n"
REAL_SYSTEMCTL = "/usr/libexec/systemctl.real"
UPDATE_HELPER = "/usr/lib/systemd/systemd-update-helper"  # systemd's, on EL; Debian has none

SYSTEMCTL = r"""#!/bin/sh
# systemctl stand-in for a root without a running systemd (tests/rpm_root.py).
echo "$*" >> /var/log/systemctl.calls
state=/run/standin
mkdir -p "$state"
verb= units= now= marked=
for arg in "$@"; do
    case $arg in
        --now) now=1 ;;
        --marked) marked=1 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$arg; else units="$units $arg"; fi ;;
    esac
done
started() {
    echo $(( $(cat "$state/$1.starts" 2>/dev/null || echo 0) + 1 )) > "$state/$1.starts"
    touch "$state/$1.active"
}
start() { for u in "$@"; do [ -e "$state/$u.active" ] || started "$u"; done; }
stop() { for u in "$@"; do rm -f "$state/$u.active"; done; }
try_restart() { for u in "$@"; do if [ -e "$state/$u.active" ]; then started "$u"; fi; done; }
case $verb in
    enable|disable|preset|reenable|is-enabled|mask|unmask)
        args=$(for arg in "$@"; do [ "$arg" = --now ] || printf '%s ' "$arg"; done)
        SYSTEMD_OFFLINE=1 """ + REAL_SYSTEMCTL + r""" $args; rc=$?
        if [ -n "$now" ]; then
            case $verb in enable|reenable) start $units ;; disable|mask) stop $units ;; esac
        fi
        exit $rc ;;
    start) start $units ;;
    stop) stop $units ;;
    restart) for u in $units; do started "$u"; done ;;
    try-restart|condrestart) try_restart $units ;;
    reload-or-restart|try-reload-or-restart)
        if [ -n "$marked" ]; then
            for mark in "$state"/*.needs-restart; do
                [ -e "$mark" ] || continue
                u=$(basename "$mark" .needs-restart); rm -f "$mark"; try_restart "$u"
            done
        elif [ "$verb" = reload-or-restart ]; then
            for u in $units; do started "$u"; done
        else
            try_restart $units
        fi ;;
    set-property)
        set -- $units
        [ "$2" = Markers=+needs-restart ] && touch "$state/$1.needs-restart" ;;
    daemon-reload) echo reload >> "$state/daemon-reloads" ;;
    is-active)
        rc=0
        for u in $units; do
            if [ -e "$state/$u.active" ]; then echo active; else echo inactive; rc=3; fi
        done
        exit $rc ;;
    *) echo "systemctl stand-in: not supported: $*" >&2; exit 1 ;;
esac
"""


@dataclass(frozen=True)
class UnitState:
    enabled: bool
    active: bool
    starts: int  # times started (a restart counts)


@dataclass(frozen=True)
class RpmRoot:
    path: Path
    upper: Path
    work: Path

    @classmethod
    def create(cls, base: Path, selinux_store: str | None = None) -> RpmRoot:
        """An empty root at ``base``/root with an rpm database.

        ``selinux_store``: None for a root without SELinux configuration; otherwise a copy of the
        host's (Debian's) policy store under that name, configured as SELINUXTYPE. The packages
        install their module only into a "targeted" store, so "default" gives a root where they
        skip it and "targeted" one where they install it.
        """
        root = cls(base / "root", base / "usr-upper", base / "usr-work")
        for path in (root.path / "usr", root.upper, root.work):
            path.mkdir(parents=True)
        for name in ("bin", "sbin", "lib", "lib64"):
            (root.path / name).symlink_to(f"usr/{name}")
        for name in ("dev", "etc", "proc", "run/systemd/system", "tmp", "var/log", "var/tmp"):
            (root.path / name).mkdir(parents=True, exist_ok=True)
        (root.path / "dev/null").touch()  # a bind mount of the host's /dev/null, per command
        root.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        root.write("/etc/group", "root:x:0:\n")
        root.write("/etc/shadow", "root:*:19000:0:99999:7:::\n", mode=0o600)
        root.write("/etc/gshadow", "root:*::\n", mode=0o600)
        for name in ("login.defs", "nsswitch.conf", "protocols", "services"):  # semanage needs protocols
            shutil.copy2(f"/etc/{name}", root.path / "etc" / name)
        # Debian's /usr/bin/awk and others are links through /etc/alternatives.
        shutil.copytree("/etc/alternatives", root.path / "etc/alternatives", symlinks=True)
        # The upper layer of the root's /usr: the systemctl stand-in and EL9's preset policy.
        (root.upper / "libexec").mkdir()
        shutil.copy2("/usr/bin/systemctl", root.upper / REAL_SYSTEMCTL.removeprefix("/usr/"))
        (root.upper / "bin").mkdir()
        (root.upper / "bin/systemctl").write_text(SYSTEMCTL)
        (root.upper / "bin/systemctl").chmod(0o755)
        (root.upper / "lib/systemd/system-preset").mkdir(parents=True)
        (root.upper / "lib/systemd/system-preset/99-default-disable.preset").write_text(EL9_DEFAULT_PRESET)
        if selinux_store is not None:
            shutil.copytree("/var/lib/selinux/default", root.path / "var/lib/selinux" / selinux_store, symlinks=True)
            shutil.copytree("/etc/selinux/default", root.path / "etc/selinux" / selinux_store, symlinks=True)
            shutil.copy2("/etc/selinux/semanage.conf", root.path / "etc/selinux/semanage.conf")
            root.write("/etc/selinux/config", f"SELINUX=permissive\nSELINUXTYPE={selinux_store}\n")
            # Debian's seusers maps the login sddm; without that account every policy rebuild
            # warns "user sddm not in password file" (an EL host's seusers names no such login).
            with open(root.path / "etc/passwd", "a") as passwd:
                passwd.write("sddm:x:120:120:SDDM:/var/lib/sddm:/usr/sbin/nologin\n")
        root.run("rpm", "--root", str(root.path), "--initdb")
        return root

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        target = self.path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def read(self, path: str) -> str:
        return (self.path / path.lstrip("/")).read_text()

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` on the host, in a mount namespace where the root has its /usr, /dev/null and
        /proc (systemd-tmpfiles needs it)."""
        script = (f"mount -t overlay overlay -o lowerdir=/usr,upperdir={self.upper},workdir={self.work} "
                  f"{self.path}/usr && mount --bind /dev/null {self.path}/dev/null && "
                  f"mount --bind /proc {self.path}/proc && exec \"$@\"")
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd],
                              capture_output=True, text=True, timeout=900,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def rpm(self, *args: str) -> str:
        """``rpm --root ROOT ARGS`` (dependencies not checked: the root has no package database of
        the host's packages); returns what it and the scriptlets printed, stdout then stderr."""
        proc = self.run("rpm", "--root", str(self.path), "--nodeps", *args)
        output = proc.stdout + proc.stderr.replace(DEBIAN_RPM_NOTICE, "")
        # Built with EL's systemd macros, the scriptlets only mark units for restart; EL's systemd
        # package restarts them from its transaction file triggers. The root has no systemd
        # package, so where the userland has the helper those triggers run, do what they do.
        if self.usr_file_exists(UPDATE_HELPER):
            helper = self.chroot(UPDATE_HELPER, "system-reload-restart")
            output += helper.stdout + helper.stderr
        return output

    def usr_file_exists(self, path: str) -> bool:
        """Whether the root's /usr (the overlay, seen only inside ``run``) has ``path``."""
        relative = Path(path).relative_to("/usr")
        return (self.upper / relative).exists() or Path(path).exists()

    def chroot(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside the root, as a scriptlet would."""
        return self.run("chroot", str(self.path), *cmd, check=check)

    def units(self, *names: str) -> dict[str, UnitState]:
        """State of each unit: enabled when a symlink to it is in /etc/systemd/system (a *.wants/
        directory), the rest from the stand-in's files."""
        state = self.path / "run/standin"
        links = {link.name for link in (self.path / "etc/systemd/system").rglob("*") if link.is_symlink()}
        result = {}
        for name in names:
            starts = state / f"{name}.starts"
            result[name] = UnitState(enabled=name in links, active=(state / f"{name}.active").exists(),
                                     starts=int(starts.read_text()) if starts.exists() else 0)
        return result

    def owner(self, path: str) -> tuple[str, int]:
        """(user name in the root's /etc/passwd, permission bits) of a path in the root."""
        st = (self.path / path.lstrip("/")).stat()
        users = {int(f[2]): f[0] for f in (line.split(":") for line in self.read("/etc/passwd").splitlines())}
        return users.get(st.st_uid, str(st.st_uid)), st.st_mode & 0o7777

    def accounts(self) -> dict[str, tuple[int, str, str]]:
        """{name: (uid, home, shell)} from the root's /etc/passwd."""
        rows = (line.split(":") for line in self.read("/etc/passwd").splitlines() if line)
        return {f[0]: (int(f[2]), f[5], f[6]) for f in rows}
