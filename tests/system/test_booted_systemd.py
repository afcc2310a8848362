"""The package's units under a really booted systemd: the host's own root, overlaid on a tmpfs and
booted by systemd-nspawn with systemd as PID 1 (tests/booted_systemd/: guest.py, boot.sh, and
RESEARCH.md for the design and what it costs). The RPM this session builds is installed in the
guest with rpm, its scriptlets running against that PID 1; then the scheduler starts as the
Type=notify service it is, in its sandbox, reloads, is restarted by the watchdog, a worker@ unit
runs a pipeline with its credentials from LoadCredential=, the prune timer is scheduled, and the
records land in the luigi-appliance journal namespace, which can be sealed and verified.

The tests share one guest and run in file order: each leaves the scheduler running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from booted_systemd.guest import Guest, wait_for
from booted_systemd.rpm_build import release_1, timings
from rpm_root import DEBIAN_RPM_NOTICE

from conftest import PIPELINES
from luigi_appliance.journald.fields import KINDS

UNIT = "luigi-appliance.service"
WORKER = "luigi-appliance-worker@diamond.service"
TIMER = "luigi-appliance-history-prune.timer"
NAMESPACE = "luigi-appliance"
JOURNALD_CONF = f"/etc/systemd/journald@{NAMESPACE}.conf"
CATALOG = "/usr/lib/systemd/catalog/luigi-appliance.catalog"
# The client's CA file outside /etc/luigi-appliance (0750 root:luigi): the worker runs as
# luigi-worker, which cannot read there, and LoadCredential= brings only client.conf and the
# password (RESEARCH.md §2.6). This is the Ansible worker role's path.
CA_FILE = "/etc/pki/tls/certs/luigi-appliance-scheduler-ca.pem"
WORKER_PASSWORD = "w1pass-very-secret-123"
# A main RPM built before, instead of this session's build (a developer's loop around the guest).
PREBUILT = "LUIGI_APPLIANCE_TEST_RPM"
POLL = 60  # seconds: generous deadlines, never fixed sleeps (RESEARCH.md §4, load 11 on 2 cores)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="booting a systemd guest needs root (CAP_SYS_ADMIN: "
                                "mounts, namespaces, systemd-nspawn); CI runs as root")


def install(guest: Guest) -> None:
    """The package, as an administrator installs it: rpm with its scriptlets against the guest's
    PID 1 (Debian's rpm, an empty rpmdb: hence --nodeps)."""
    out = guest.run("rpm", "-i", "--nodeps", "/dist/luigi-appliance.rpm", timeout=180)
    # Nothing on stderr from rpm or the scriptlets but Debian's notice; %post's first-install text.
    assert out.stderr.replace(DEBIAN_RPM_NOTICE, "") == "", out.stderr
    assert out.stdout.startswith("luigi-appliance installed. Next steps:"), out.stdout
    # The namespace's journald settings and the catalog come with the package.
    for path in (JOURNALD_CONF, CATALOG):
        owner = guest.run("rpm", "-qf", path, check=False)
        assert owner.returncode == 0 and owner.stdout.startswith("luigi-appliance-"), (path, owner.stdout)


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """One booted guest with the package installed, for the whole module; powered off after it."""
    if os.environ.get(PREBUILT):
        rpm = Path(os.environ[PREBUILT])
    else:
        rpm = release_1(tmp_path_factory)["main"]
        print(f"RPM build: {timings['build_seconds']:.1f}s (0: built before, by another module)")
    dist = tmp_path_factory.mktemp("booted-dist")
    # A copy, so that a later `make rpm` writing dist/ cannot change the file under the guest.
    shutil.copy2(rpm, dist / "luigi-appliance.rpm")
    shutil.copy2(PIPELINES / "diamond_pipeline.py", dist / "diamond_pipeline.py")
    booting = time.monotonic()
    box = Guest.boot(tmp_path_factory.mktemp("booted"), dist)
    try:
        print(f"guest booted in {time.monotonic() - booting:.1f}s")
        install(box)
        yield box
    finally:
        status = box.poweroff()
        print(f"guest powered off (nspawn exit {status}); console: {box.console}")


def main_pid(guest: Guest) -> int:
    return int(guest.show(UNIT, "MainPID"))


def process_status(guest: Guest, pid: int) -> dict[str, str]:
    """/proc/PID/status of a guest process, as name -> value."""
    text = guest.run("cat", f"/proc/{pid}/status").stdout
    return {name: value.strip() for name, _, value in (line.partition(":") for line in text.splitlines())}


def entries(guest: Guest, *args: str, namespace: str | None = NAMESPACE) -> list[dict[str, object]]:
    """The journal's entries matching ``args`` (journalctl matches and options), as JSON objects:
    the namespace's journal, or the main one with ``namespace=None``."""
    where = [f"--namespace={namespace}"] if namespace else []
    out = guest.journal(*where, "-o", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def messages(records: list[dict[str, object]]) -> list[str]:
    return [str(record.get("MESSAGE")) for record in records]


def reloads(guest: Guest, pid: int) -> int:
    """How many reloads the scheduler process ``pid`` logged (to the namespace's journal)."""
    return sum("SIGHUP: reloading" in m for m in messages(entries(guest, f"_PID={pid}")))


def ensure_started(guest: Guest) -> None:
    guest.run("systemctl", "start", UNIT, timeout=120)


def test_the_package_installs_against_a_running_systemd(guest: Guest) -> None:
    # %pre created the accounts; %post's preset followed EL9's policy (boot.sh): nothing enabled.
    assert guest.run("getent", "passwd", "luigi", "luigi-worker").stdout.count("\n") == 2
    enabled = guest.run("systemctl", "is-enabled", UNIT, TIMER, check=False).stdout.split()
    assert enabled == ["disabled", "disabled"], enabled
    assert guest.show(UNIT, "LoadState") == "loaded"


def test_scheduler_starts_as_a_notify_service_in_its_sandbox(guest: Guest) -> None:
    # Type=notify: systemctl start returns only once the scheduler sent READY=1.
    guest.run("systemctl", "start", UNIT, timeout=120)
    assert guest.show(UNIT, "Type") == "notify"
    assert guest.show(UNIT, "ActiveState") == "active"
    assert guest.show(UNIT, "StatusText") == "Scheduling on 127.0.0.1:8082"
    status = process_status(guest, main_pid(guest))
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    assert status["Uid"].split()[0] != "0", status
    # PrivateUsers=yes: a user namespace that maps only root and the service's own account.
    uid_map = guest.run("cat", f"/proc/{main_pid(guest)}/uid_map").stdout.split()
    assert len(uid_map) == 6 and uid_map[:3] == ["0", "0", "1"], uid_map


def test_reload_keeps_the_main_pid(guest: Guest) -> None:
    ensure_started(guest)
    pid = main_pid(guest)
    before = reloads(guest, pid)
    guest.run("systemctl", "reload", UNIT)
    wait_for(lambda: reloads(guest, pid) > before, POLL,
             "the scheduler's reload message in the namespace journal")
    assert main_pid(guest) == pid
    assert guest.show(UNIT, "ActiveState") == "active"


def test_the_watchdog_restarts_a_hung_scheduler(guest: Guest) -> None:
    dropin = "/etc/systemd/system/luigi-appliance.service.d/50-test-watchdog.conf"
    guest.write(dropin, "[Service]\nWatchdogSec=3s\nRestartSec=1s\n")
    guest.run("systemctl", "daemon-reload")
    try:
        guest.run("systemctl", "restart", UNIT, timeout=120)
        restarts = int(guest.show(UNIT, "NRestarts"))
        hung = main_pid(guest)
        guest.run("kill", "-STOP", str(hung))
        wait_for(lambda: int(guest.show(UNIT, "NRestarts")) == restarts + 1 and
                 guest.show(UNIT, "ActiveState") == "active", POLL, "the watchdog's restart")
        assert main_pid(guest) != hung
        # PID 1's own record of it is in the main journal (UNIT=, not _SYSTEMD_UNIT=).
        assert any("Watchdog timeout" in m for m in messages(entries(guest, f"UNIT={UNIT}", namespace=None)))
    finally:
        guest.path(dropin).unlink()
        guest.run("systemctl", "daemon-reload")
        guest.run("systemctl", "restart", UNIT, timeout=120)


def test_worker_unit_runs_a_pipeline_with_its_credentials(guest: Guest) -> None:
    ensure_started(guest)
    guest.run("luigi-appliance", "user", "add", "w1", "--role", "worker", input=WORKER_PASSWORD + "\n")
    guest.run("systemctl", "reload", UNIT)
    guest.write("/etc/luigi-appliance/credentials/diamond", f"w1:{WORKER_PASSWORD}\n", mode=0o600)
    guest.write(CA_FILE, guest.path("/var/lib/luigi-appliance/tls-selfsigned.crt").read_text())
    guest.write("/etc/luigi-appliance/client.conf",
                f"[client]\nscheduler_url = https://127.0.0.1:8082/\nca_file = {CA_FILE}\n")
    guest.write("/srv/pipelines/diamond_pipeline.py", guest.path("/dist/diamond_pipeline.py").read_text())
    guest.write("/etc/luigi-appliance/pipelines/diamond.env",
                "PIPELINE_MODULE=diamond_pipeline\nPIPELINE_TASK=Report\n"
                "PIPELINE_ARGS=--workers 2 --out-dir /srv/reports\nPYTHONPATH=/srv/pipelines\n")
    guest.run("install", "-d", "-o", "luigi-worker", "/srv/reports")
    # ProtectSystem=strict: the pipeline's output directory is the site's to open up.
    guest.write("/etc/systemd/system/luigi-appliance-worker@diamond.service.d/50-test.conf",
                "[Service]\nReadWritePaths=/srv/reports\n")
    guest.run("systemctl", "daemon-reload")
    # The password file is root's, 0600: the worker (luigi-worker) reads it only as a credential.
    assert guest.run("runuser", "-u", "luigi-worker", "--", "cat", "/etc/luigi-appliance/credentials/diamond",
                     check=False).returncode != 0
    run = guest.run("systemctl", "start", WORKER, check=False, timeout=180)
    log = guest.journal("-u", WORKER, "-o", "cat").stdout
    assert run.returncode == 0, f"{run.stderr}\n{log[-6000:]}"
    assert guest.show(WORKER, "Result") == "success"
    assert guest.path("/srv/reports/report.txt").read_text() == "174\n"
    unit = guest.run("systemctl", "cat", WORKER).stdout
    assert "LoadCredential=luigi-appliance:/etc/luigi-appliance/credentials/%i" in unit


def test_the_prune_timer_is_scheduled(guest: Guest) -> None:
    guest.run("systemctl", "enable", "--now", TIMER)
    assert guest.show(TIMER, "ActiveState") == "active"
    assert guest.show(TIMER, "NextElapseUSecRealtime") not in ("", "0", "n/a")


def test_records_land_in_the_namespace_journal_with_their_fields(guest: Guest) -> None:
    ensure_started(guest)
    status = guest.run("curl", "--silent", "--cacert", "/var/lib/luigi-appliance/tls-selfsigned.crt",
                       "--user", "mallory:not-the-password", "--output", "/dev/null", "--write-out", "%{http_code}",
                       "https://127.0.0.1:8082/api/task_list").stdout
    assert status == "401"

    def mallory() -> list[dict[str, object]]:
        return [r for r in entries(guest, f"_SYSTEMD_UNIT={UNIT}") if "mallory" in str(r.get("MESSAGE"))]

    def logged() -> list[dict[str, object]] | None:
        found = mallory()
        complete = (any("Authentication failed for user 'mallory'" in m for m in messages(found))
                    and any("MESSAGE_ID" in r for r in found))
        return found if complete else None

    records = wait_for(logged, POLL, "the failed login in the namespace journal (its log line and audit record)",
                       detail=mallory)
    assert all(r["_NAMESPACE"] == NAMESPACE for r in records)
    audit = [r for r in records if r.get("MESSAGE_ID") == KINDS["login_failure"].message_id]
    assert len(audit) == 1, records
    assert audit[0].get("PRINCIPAL") == "mallory" and audit[0].get("OUTCOME") == "failure", audit[0]
    assert audit[0].get("REMOTE_ADDR") == "127.0.0.1" and audit[0].get("_TRANSPORT") == "journal", audit[0]
    guest.run("journalctl", "--update-catalog")
    explained = guest.journal(f"--namespace={NAMESPACE}", "-x", "PRINCIPAL=mallory").stdout
    assert "Subject: Login failed for mallory from 127.0.0.1" in explained, explained
    # Nothing the scheduler wrote went to the main journal: there, only PID 1's lines about it.
    assert entries(guest, f"_SYSTEMD_UNIT={UNIT}", namespace=None) == []
    main = guest.journal("-b", "-o", "cat").stdout
    assert f"journald@{NAMESPACE}.conf" not in main, [line for line in main.splitlines() if "journald@" in line]
    # The shipped unit, as installed, names the namespace: no drop-in in this guest does.
    assert guest.show(UNIT, "LogNamespace") == NAMESPACE
    assert guest.show(UNIT, "DropInPaths") == ""


def test_the_namespace_journal_can_be_sealed_and_verified(guest: Guest) -> None:
    ensure_started(guest)
    machine_id = guest.path("/etc/machine-id").read_text().strip()
    keys = guest.run("journalctl", f"--namespace={NAMESPACE}", "--setup-keys")
    key = keys.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f-]+/[0-9a-f]+-[0-9a-f]+", key), keys.stdout
    # systemd 252 ignores --namespace here: the sealing key is the host's, in the main journal's
    # directory, and seals the main journal too (docs/logging.md says so).
    assert guest.path(f"/var/log/journal/{machine_id}/fss").exists()
    assert not guest.path(f"/var/log/journal/{machine_id}.{NAMESPACE}/fss").exists()
    # Sealing starts with a new file.
    guest.run("journalctl", f"--namespace={NAMESPACE}", "--rotate")
    pid = main_pid(guest)
    before = reloads(guest, pid)
    guest.run("systemctl", "reload", UNIT)
    wait_for(lambda: reloads(guest, pid) > before, POLL, "a record in the sealed file")
    guest.run("journalctl", f"--namespace={NAMESPACE}", "--sync")
    header = guest.journal(f"--namespace={NAMESPACE}", "--header").stdout
    assert "SEALED" in header, header
    verified = guest.run("journalctl", f"--namespace={NAMESPACE}", "--verify", f"--verify-key={key}", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    unkeyed = guest.run("journalctl", f"--namespace={NAMESPACE}", "--verify", check=False)
    assert unkeyed.returncode == 1 and "Required key not available" in unkeyed.stderr, unkeyed.stderr
