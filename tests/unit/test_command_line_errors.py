"""The command line's own parsing (no abbreviations, --config on either side of the command,
paths from the working directory) and the words for a failed request to the scheduler."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

import pytest
import requests

from luigi_appliance.cli import _config_after_command, build_parser, command_line_path
from luigi_appliance.client.scheduler_errors import describe, is_final


@pytest.mark.parametrize(("argv", "expected"), [
    (["config", "check", "--config", "f"], ["--config", "f", "config", "check"]),
    (["config", "--config=f", "check"], ["--config=f", "config", "check"]),
    (["--config", "f", "config", "check"], ["--config", "f", "config", "check"]),
    (["user", "add", "--config", "f", "alice"], ["--config", "f", "user", "add", "alice"]),
    # run and dag: options they do not know after the command are the task's.
    (["run", "--module", "m", "T", "--config", "x"], ["run", "--module", "m", "T", "--config", "x"]),
    (["--config", "f", "dag", "check", "--config", "x"], ["--config", "f", "dag", "check", "--config", "x"]),
])
def test_config_moves_before_the_command(argv: list[str], expected: list[str]) -> None:
    assert _config_after_command(argv) == expected


def test_config_on_both_sides_is_a_usage_error() -> None:
    with pytest.raises(Exception, match="--config given both before and after"):
        _config_after_command(["--config", "a", "config", "check", "--config", "b"])


def test_no_option_is_taken_for_an_abbreviation() -> None:
    args, extra = build_parser().parse_known_args(["run", "--n", "5", "--s", "x", "--module", "m", "T"])
    assert not args.no_dag_check and args.scheduler_url is None
    assert extra == ["--n", "5", "--s", "x", "--module", "m", "T"]


def test_command_line_paths_are_relative_to_the_working_directory() -> None:
    assert command_line_path("var/x.crt") == Path(os.getcwd()) / "var" / "x.crt"
    assert command_line_path("/etc/x") == Path("/etc/x")


def test_describe_names_the_cause_under_the_wrappers() -> None:
    refused = requests.ConnectionError(OSError("pool"))
    refused.__context__ = ConnectionRefusedError(111, "Connection refused")
    assert describe(refused) == "connection refused"
    assert describe(requests.ConnectionError(socket.gaierror(-2, "Name or service not known"))) == \
        "host name not found (Name or service not known)"
    bad = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    bad.verify_message, bad.reason = "self-signed certificate", "CERTIFICATE_VERIFY_FAILED"
    assert describe(requests.exceptions.SSLError(bad)) == \
        "certificate verify failed: self-signed certificate (CERTIFICATE_VERIFY_FAILED)"


def test_final_answers_are_the_4xx_but_408_and_429() -> None:
    assert [s for s in (200, 400, 401, 404, 405, 408, 413, 429, 500, 503) if is_final(s)] == [400, 401, 404, 405, 413]
