"""A booted systemd to test the units under: the host's own root, overlaid on a tmpfs, booted by
systemd-nspawn with systemd as its PID 1 (RESEARCH.md in this directory, §5).

Commands reach the guest with nsenter into all of its PID 1's namespaces: systemctl and
journalctl talk to the guest's PID 1 and journald over their private sockets, so no D-Bus or
machined is needed on the host (CI's PID 1 is not systemd).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

BOOT_SCRIPT = Path(__file__).resolve().parent / "boot.sh"
NSPAWN = "systemd-nspawn"
NSPAWN_PACKAGE = "systemd-container"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1,
             detail: Callable[[], object] | None = None) -> T:
    """Poll ``probe`` until it returns something other than None or False; fail after ``timeout``
    seconds naming ``what``, and what ``detail`` returns then (deadlines, never fixed sleeps: CI's
    2 cores are often loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                                 + (f":\n{detail()}" if detail else ""))
        time.sleep(interval)


def nspawn_registration() -> list[str]:
    """How nspawn registers the guest: with machined where the host runs systemd (a delegated
    machine scope), not at all where it does not (CI: no system bus, no machined)."""
    if os.path.isdir("/run/systemd/system"):
        return [f"--machine=luigi-booted-{os.getpid()}"]
    return ["--register=no", "--keep-unit"]


@dataclass
class Guest:
    """A running guest: ``nspawn`` is the systemd-nspawn process, ``leader`` the guest's PID 1 (as
    the host numbers it)."""

    nspawn: subprocess.Popen[bytes]
    leader: int
    console: Path

    @classmethod
    def boot(cls, work: Path, dist: Path, timeout: float = 90) -> Guest:
        """Boot a guest with ``dist`` read-only at /dist; ``work`` (empty) holds its console log
        and the tmpfs of its writes. Returns once the guest's systemd says running (or degraded)."""
        if shutil.which(NSPAWN) is None:
            raise AssertionError(f"{NSPAWN} is missing: install the {NSPAWN_PACKAGE} package (.ci/run)")
        (work / "fs").mkdir()
        console = work / "console.log"
        with open(console, "wb") as out:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "bash", str(BOOT_SCRIPT), str(work / "fs"),
                 str(dist), *nspawn_registration()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        guest = None
        try:
            leader = wait_for(lambda: _guest_pid1(proc, console), timeout, "the guest's PID 1")
            guest = cls(proc, leader, console)
            # degraded is booted too: a host unit that fails in a container is not ours to judge
            wait_for(guest._booted, timeout, "the guest's boot to finish")
            return guest
        except BaseException:
            (guest or cls(proc, 0, console)).kill()
            raise

    def _booted(self) -> str | None:
        state = self.run("systemctl", "is-system-running", check=False, timeout=30).stdout.strip()
        return state if state in ("running", "degraded") else None

    def command(self, *cmd: str) -> list[str]:
        """``cmd`` as run in the guest (nsenter into all the namespaces of its PID 1)."""
        return ["nsenter", "-t", str(self.leader), "-a", *cmd]

    def run(self, *cmd: str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the guest, outside any unit (in the host's cgroup: not for what must be
        logged as a service; see ``run_unit``)."""
        proc = subprocess.run(self.command(*cmd), input=input, capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        if check and proc.returncode != 0:
            raise AssertionError(f"in the guest, {' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def run_unit(self, *cmd: str, properties: tuple[str, ...] = (), check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as a transient service of the guest's PID 1 and wait for it (its exit status
        and output come back): logged by the guest's journald as a unit's output."""
        props = [arg for prop in ("Type=exec", *properties) for arg in ("-p", prop)]
        return self.run("systemd-run", "--quiet", "--wait", "--pipe", "--collect", *props, "--", *cmd,
                        check=check, timeout=timeout)

    def path(self, path: str) -> Path:
        """The host's way to ``path`` in the guest's file system."""
        return Path(f"/proc/{self.leader}/root") / path.lstrip("/")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the guest (parents created), with ``mode``, owned by root."""
        target = self.path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def show(self, unit: str, prop: str) -> str:
        """One property of a unit, as the guest's systemd has it."""
        return self.run("systemctl", "show", "-P", prop, unit).stdout.strip()

    def journal(self, *args: str) -> subprocess.CompletedProcess[str]:
        """journalctl in the guest (no pager, all fields at any length)."""
        return self.run("journalctl", "--no-pager", "--all", *args, timeout=60)

    def poweroff(self, timeout: float = 60) -> int | None:
        """Shut the guest down cleanly; kill systemd-nspawn (by its PID) if it does not exit in
        time. Returns nspawn's exit status (None when it had to be killed)."""
        if self.nspawn.poll() is None:
            self.run("systemctl", "poweroff", check=False, timeout=30)
            try:
                return self.nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        else:
            return self.nspawn.returncode
        self.kill()
        return None

    def kill(self) -> None:
        """Stop systemd-nspawn by its PID: SIGTERM (nspawn turns it into the guest's shutdown),
        then SIGKILL. Its private mount namespace, and with it the guest's tmpfs, go with it."""
        for signum, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            if self.nspawn.poll() is not None:
                return
            self.nspawn.send_signal(signum)
            try:
                self.nspawn.wait(grace)
            except subprocess.TimeoutExpired:
                continue


def _guest_pid1(proc: subprocess.Popen[bytes], console: Path) -> int | None:
    """The guest's PID 1: the child of systemd-nspawn (unshare execs bash, which execs nspawn, so it
    is ``proc``'s PID) that runs systemd. Fails at once if nspawn exited."""
    if proc.poll() is not None:
        raise AssertionError(f"systemd-nspawn exited {proc.returncode}:\n"
                             f"{console.read_text(errors='replace')[-6000:]}")
    try:
        if Path(f"/proc/{proc.pid}/comm").read_text().strip() != NSPAWN:
            return None
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
        except FileNotFoundError:
            continue
    return None
