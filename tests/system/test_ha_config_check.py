"""``luigi-appliance config check`` reports exactly what loading [ha] refuses, with file:line (one
validation serves config check and serve). A system test: it runs the installed CLI, which the
RPM's %check (tests/unit only) does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError


def test_config_check_reports_the_same_issues_as_loading(tmp_path: Path) -> None:
    conf = tmp_path / "scheduler.conf"
    conf.write_text("[ha]\nbackend = postgresql\nlease_ttl = 2s\nrenew_interval = 1.5s\n")
    conf.chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        load_settings([conf], check_files=False)
    expected = [str(issue) for issue in caught.value.issues]
    result = cli("--config", str(conf), "config", "check", timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    listed = [line.strip() for line in result.stderr.splitlines()]
    # advertise_url missing, no [state] hmac key, renew_interval above lease_ttl / 2.
    assert len(expected) == 3 and all(issue in listed for issue in expected), (expected, result.stderr)
