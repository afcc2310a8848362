"""README.md's commands work when pasted as written into a fresh copy of the repository.

What a command is: in each code block of README.md (fenced with ```, or indented by four
spaces), a line that starts, after an optional ``$ `` prompt, with one of COMMAND_PREFIXES; a
line ending with a backslash goes on on the next. In a block whose commands carry the ``$ ``
prompt, the lines after a command up to the next command are what it prints.

Every command found must match one rule of RULES (a command the README gains fails this test
until someone says how to check it): run and expect an exit code, or not run here, with the
reason. They run in README order, with bash, in a copy of the working tree (tracked and
untracked, not ignored files: what a clone of the next commit holds), against the copy's own
``make run``. Two adjustments, both forced by running inside the test suite:

- the scheduler listens on a free port, not 8082 (another test or a developer's ``make run`` may
  hold it): ``make run`` gets ``PORT=N`` and URLs naming 127.0.0.1:8082 name that port;
- the copy's .venv is a symbolic link to the virtualenv running the tests, and ``make run`` is
  told not to remake its stamp (``-o``): installing a virtualenv takes minutes, and CI's
  ``make test`` has just run that same recipe. The code the commands run is the virtualenv's
  editable install, i.e. the working tree the copy was made from.

The worker command writes where the README says, /tmp/report (a run finding it complete from an
earlier run still exits 0).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import REPO, free_port

COMMAND_PREFIXES = ("make", ".venv/bin/", "PYTHONPATH=", "ansible-")
VENV = Path(sys.executable).parent.parent
DEFAULT_PORT = "8082"


@dataclass(frozen=True)
class Command:
    text: str  # joined, continuation backslashes removed
    output: str | None  # what the README shows it printing, when it shows a transcript


def code_blocks(markdown: str) -> list[list[str]]:
    """The lines of each fenced or indented code block (indented ones without their indent)."""
    blocks: list[list[str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(lines[i + 1:end])
            i = end + 1
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            blocks.append(block)
        else:
            i += 1
    return blocks


def commands_of(block: list[str]) -> list[Command]:
    """The commands of one block, each with the output shown after it in a ``$ `` transcript."""
    found: list[tuple[list[str], list[str], bool]] = []  # (command lines, output lines, prompted)
    continued = False
    for line in block:
        prompted = line.startswith("$ ")
        bare = line[2:] if prompted else line
        part_of_command = True
        if continued:
            found[-1][0].append(bare)
        elif bare.startswith(COMMAND_PREFIXES):
            found.append(([bare], [], prompted))
        else:
            part_of_command = False
            if found and found[-1][2]:
                found[-1][1].append(line)
        continued = part_of_command and bare.endswith("\\")
    commands = []
    for lines, output, prompted in found:
        text = " ".join(part.rstrip("\\").strip() for part in lines)
        commands.append(Command(text, "\n".join(output).strip("\n") if prompted else None))
    return commands


def readme_commands(markdown: str) -> list[Command]:
    return [command for block in code_blocks(markdown) for command in commands_of(block)]


# ---- how each command is checked ------------------------------------------------------------

@dataclass
class Workspace:
    repo: Path  # the copy
    port: int
    env: dict[str, str]


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regular expression the whole command matches
    exit_code: int | None = 0  # None: not run here
    reason: str = ""  # why not run, or what the exit code means
    check: Callable[[Workspace, subprocess.CompletedProcess], None] | None = None


def _collection_installed(ws: Workspace, result: subprocess.CompletedProcess) -> None:
    installed = Path(ws.env["ANSIBLE_COLLECTIONS_PATH"]) / "ansible_collections" / "luigi_appliance" / "appliance"
    assert (installed / "MANIFEST.json").is_file(), result.stdout


RULES = [
    Rule(r"make run", reason="started first, in the background: the scheduler the others use"),
    Rule(r"make test", None, "CI's own command (.ci/run): this test is part of it"),
    Rule(r"make rpm( +#.*)?", None, "tests/system/test_rpm.py builds and checks the RPMs (minutes of rpmbuild)"),
    Rule(r"(PYTHONPATH=\S+ )?\.venv/bin/luigi-appliance run .*", 0, "the pipeline completed"),
    Rule(r"PYTHONPATH=\S+ \.venv/bin/luigi-appliance dag check .*", 1, "the example has a cycle: problems found"),
    Rule(r"ansible-galaxy collection build .* && ansible-galaxy collection install .*", 0,
         check=_collection_installed),
    Rule(r"ansible-vault create .*", None, "interactive: opens an editor for the site's secrets"),
    Rule(r"ansible-playbook .*", None, "provisions the inventory's three real hosts (test_ansible.py runs "
                                       "the roles into a temporary root)"),
]


def rule_for(command: Command) -> Rule | None:
    return next((r for r in RULES if re.fullmatch(r.pattern, command.text)), None)


def adjusted(command: str, port: int) -> str:
    """The command as run here (see the module's doc for why)."""
    if command == "make run":
        return f"make -o .venv/.installed-run run PORT={port}"
    return command.replace(f"127.0.0.1:{DEFAULT_PORT}", f"127.0.0.1:{port}")


def normalized(output: str) -> str:
    """Output with what changes from run to run (the time taken) made constant."""
    return re.sub(r"checked in \d+\.\d+s", "checked in N.NNs", output.strip("\n"))


# ---- the copy and its scheduler --------------------------------------------------------------

def copy_working_tree(dest: Path) -> None:
    """The files a clone of the next commit would have: tracked and untracked, not ignored."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # listed but deleted in the working tree: not in the next commit
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    repo = tmp_path / "luigi-appliance"
    copy_working_tree(repo)
    (repo / ".venv").symlink_to(VENV)
    # A new user's environment: none of the appliance's variables, nor make's (`PORT ?= 8082`
    # takes one from the environment; under CI's `make test` MAKELEVEL and MAKEFLAGS would make
    # the README's make a sub-make); the virtualenv's tools (ansible-galaxy) after the system's.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LUIGI_APPLIANCE_")
           and k not in ("PYTHONPATH", "PORT", "VENV", "STATE_DIR", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{env.get('PATH', '/usr/bin:/bin')}:{VENV / 'bin'}"
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "collections")
    return Workspace(repo, free_port(), env)


def wait_ready(ws: Workspace, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    ca = ws.repo / "var" / "tls-selfsigned.crt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if ca.exists() and requests.get(f"https://127.0.0.1:{ws.port}/healthz", verify=str(ca),
                                            timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"make run not ready after {timeout}s:\n{log.read_text()}")


@pytest.fixture
def make_run(workspace: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    # Never let make install into the virtualenv the tests run in (from a copy soon deleted).
    planned = subprocess.run(["bash", "-c", adjusted("make run", workspace.port) + " --dry-run"], cwd=workspace.repo,
                             env=workspace.env, capture_output=True, text=True, check=True).stdout
    assert planned.startswith(".venv/bin/luigi-appliance serve ") and planned.count("\n") == 1, planned
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", adjusted("make run", workspace.port)], cwd=workspace.repo,
                                env=workspace.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(workspace, proc, log)
        yield workspace
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the scheduler it started
        proc.wait(30)


# ---- the tests -------------------------------------------------------------------------------

def test_commands_are_found_in_fenced_and_indented_blocks_with_transcripts() -> None:
    markdown = "\n".join([
        "Intro:", "", "    make run", "", "text `make inline` is no block", "",
        "    $ PYTHONPATH=x .venv/bin/luigi-appliance dag check \\", "        --module m T", "    one", "",
        "    two", "    $ make other", "    out", "", "```sh", "ansible-galaxy collection build ansible/",
        "# a comment", "all:", "```", "", "    layout/   not a command"])
    assert readme_commands(markdown) == [
        Command("make run", None),
        Command("PYTHONPATH=x .venv/bin/luigi-appliance dag check --module m T", "one\n\ntwo"),
        Command("make other", "out"),
        Command("ansible-galaxy collection build ansible/", None),
    ]


def test_every_readme_command_has_a_rule() -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    assert [c.text for c in commands if rule_for(c) is None] == []
    texts = [c.text for c in commands]
    assert "make run" in texts and any(" run " in t and "--ca-file" in t for t in texts), texts


def test_readme_commands_work_as_written(make_run: Workspace, tmp_path: Path) -> None:
    ws = make_run
    # What the README says `make run` prints: where the admin password is, the certificate's fingerprint.
    log = (tmp_path / "make-run.log").read_text()
    assert re.search(r"password in \S*\bvar/admin-password$", log, re.M) and "SHA-256 fingerprint" in log, log
    assert (ws.repo / "var" / "admin-password").stat().st_mode & 0o777 == 0o600
    failures: list[str] = []
    ran = 0
    for command in readme_commands((ws.repo / "README.md").read_text()):
        rule = rule_for(command)
        assert rule is not None, command.text
        if rule.exit_code is None or command.text == "make run":
            continue
        text = adjusted(command.text, ws.port)
        result = subprocess.run(["bash", "-c", text], cwd=ws.repo, env=ws.env, capture_output=True, text=True,
                                timeout=300)
        ran += 1
        shown = f"$ {text}\n-> exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        if result.returncode != rule.exit_code:
            failures.append(f"expected exit {rule.exit_code} ({rule.reason or 'success'}):\n{shown}")
        elif "Traceback" in result.stderr:
            failures.append(f"a traceback:\n{shown}")
        elif command.output is not None and normalized(result.stdout) != normalized(command.output):
            failures.append(f"output differs from README's:\n{shown}\n-- README shows:\n{command.output}")
        elif rule.check is not None:
            try:
                rule.check(ws, result)
            except AssertionError as exc:
                failures.append(f"{exc}\n{shown}")
    assert ran >= 3
    assert not failures, "\n\n".join(failures)
