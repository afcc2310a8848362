"""add_tasks batches sent from the client's background sender while luigi's worker builds the
rest of the graph: a refused batch ends the run as a synchronous one did, and nothing after it
reaches the scheduler (real slapd, real scheduler, real ``luigi-appliance run``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ldap_server import PEOPLE
from test_add_tasks import rpc_lines, run_wide, task_ids
from test_ldap import directory, directory_up, ldap_scheduler  # noqa: F401 (fixtures)

from conftest import client_conf


def test_a_refused_batch_stops_the_batches_built_after_it(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue("ldap_scheduler")()  # etl-bot may add Extract, Transform, Rep*
    creds = tmp_path / "etl-bot.credentials"
    creds.write_text(f"etl-bot:{PEOPLE['etl-bot'][0]}\n")
    creds.chmod(0o600)
    conf = client_conf(tmp_path, server)
    conf.write_text(conf.read_text() + "add_task_batch = 5\n")
    # luigi adds the root, then its dependencies last first: the OtherLeaf is in the first batch
    # of seven, and the worker goes on building the next ones while that one is refused.
    result = run_wide(tmp_path, conf, creds, "--size", "30", "--foreign")
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if "scheduler refused" in line]
    assert len(error) == 1 and "add_tasks for user 'etl-bot': 403 permission denied: add_tasks: task " in error[0]
    assert "(OtherLeaf_" in error[0] and "Traceback" not in result.stderr
    sent = [(x["method"], x["outcome"]) for x in rpc_lines(tmp_path / "audit.log")
            if x["method"] in ("add_tasks", "add_task", "get_work")]
    assert sent == [("add_tasks", "refused:403")]
    assert not any(task_id.startswith(("ReportLeaf", "ReportWide", "OtherLeaf")) for task_id in task_ids(server))
    assert not (tmp_path / "out").exists()
