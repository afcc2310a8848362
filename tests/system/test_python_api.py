"""luigi.build() from Python against the appliance (docs/python-api.md): a real luigi build in
a fresh interpreter, against a real ``serve --dev``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import PIPELINES, Server, client_conf


def python(tmp_path: Path, server: Server, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PIPELINES),
           "LUIGI_APPLIANCE_CLIENT_CONFIG": str(client_conf(tmp_path, server)),
           "LUIGI_APPLIANCE_CREDENTIALS": str(server.state_dir / "admin-credentials")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_build_and_luigis_build_with_the_factory(dev_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = python(tmp_path, dev_server, f"""
        import luigi
        import luigi_appliance.client
        from diamond_pipeline import Extract, Report

        # The client settings and credentials come from the environment, as for luigi-appliance run.
        assert luigi_appliance.client.build([Report(out_dir={str(out)!r})], workers=2) is True
        factory = luigi_appliance.client.scheduler_factory()
        result = luigi.build([Extract(out_dir={str(out)!r} + "-b", part=5)], worker_scheduler_factory=factory,
                             detailed_summary=True)
        print(result.status.name)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "SUCCESS"
    assert (out / "report.txt").exists() and (tmp_path / "out-b" / "extract-5.txt").exists()
    done = dev_server.rpc("task_list", status="DONE", upstream_status="").json()["response"]
    assert len(done) == 13  # the 12 of the diamond and the lone Extract, through the authenticated API


def test_build_refuses_a_cycle_before_scheduling_and_names_bad_settings(dev_server: Server, tmp_path: Path) -> None:
    result = python(tmp_path, dev_server, """
        import luigi_appliance.client
        from dag_cases import PingA
        from luigi_appliance.errors import ApplianceError

        try:
            luigi_appliance.client.build([PingA()])
        except luigi_appliance.client.DagCheckFailed as exc:
            print(exc.report.cycles[0].message)
        try:
            luigi_appliance.client.build([PingA()], credentials_file="/nonexistent/credentials")
        except ApplianceError as exc:
            print("refused:", exc)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.splitlines()
    assert first == "dependency cycle: PingA() -> PingB() -> PingA()"
    assert second.startswith("refused: ") and "/nonexistent/credentials" in second
    assert dev_server.rpc("task_list", status="", upstream_status="").json()["response"] == {}
