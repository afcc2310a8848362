"""[ha] compaction with two real schedulers on a real PostgreSQL: the leader stores a signed
snapshot with the journal position it includes and deletes the rows before the previous one; a
node that starts afterwards loads the snapshot, replays only what follows, and on takeover has
every acknowledged change. A snapshot signed with another key is never loaded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from ha_cluster import ADMIN_PASSWORD, SCHEMA, HaCluster, HaNode
from pg_cluster import Database

COMPACT_EVERY = 10  # seconds: the shortest [ha] compact_interval


class CompactingCluster(HaCluster):
    """The harness's pair, compacting every ``COMPACT_EVERY`` seconds instead of never."""

    def ha_section(self, name: str, url: str) -> str:
        return super().ha_section(name, url).replace("compact_interval = 1d",
                                                     f"compact_interval = {COMPACT_EVERY}s")


def _snapshot(cluster: HaCluster) -> tuple[int, int] | None:
    """(pos, deleted_through) of the stored snapshot, or None before the first."""
    rows = cluster.db.query(f"SELECT pos, deleted_through FROM {SCHEMA}.snapshot")  # noqa: S608
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def _wait_for_snapshot(cluster: HaCluster, past: int, timeout: float = 3 * COMPACT_EVERY) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _snapshot(cluster)
        if found is not None and found[0] > past:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no snapshot past position {past} within {timeout}s:\n{cluster.logs()}")


def _tasks(node: HaNode) -> dict[str, str]:
    with node.session(password=ADMIN_PASSWORD) as session:
        answer = session.post(f"{node.url}/api/task_list",
                              data={"data": json.dumps({"status": "", "upstream_status": ""})}, timeout=10)
        answer.raise_for_status()
        return {task_id: info["status"] for task_id, info in answer.json()["response"].items()}


@pytest.fixture
def pair(tmp_path: Path, db: Database) -> Any:
    cluster = CompactingCluster(tmp_path, db)
    yield cluster
    cluster.close()


def test_a_node_started_after_compaction_loads_the_snapshot_and_takes_over_with_everything(pair: HaCluster) -> None:
    pair.start("a")
    first = pair.wait_for_leader(30)
    assert all(first.write(f"early-{i}") == 200 for i in range(30))
    pos, _ = _wait_for_snapshot(pair, past=0)
    assert all(first.write(f"late-{i}") == 200 for i in range(10))
    second_pos, deleted = _wait_for_snapshot(pair, past=pos)
    # Rows up to the previous snapshot are gone; the ones after it stay for a lagging standby.
    assert deleted == pos
    assert all(row_pos > pos for row_pos, _, _ in pair.journal_rows())
    assert second_pos > pos

    pair.start("b")  # an empty state directory: everything comes from PostgreSQL
    second = pair.other(first)
    deadline = time.monotonic() + 30
    while second.probe().body.get("role") != "standby" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Standing by at journal position" in second.log()
    first.kill()
    leader = pair.wait_for_leader(30, other_than=first)
    assert leader is second
    tasks = _tasks(leader)
    assert {f"early-{i}" for i in range(30)} | {f"late-{i}" for i in range(10)} <= set(tasks)


def test_a_snapshot_signed_with_another_key_is_not_loaded(pair: HaCluster) -> None:
    pair.start("a")
    first = pair.wait_for_leader(30)
    assert first.write("signed") == 200
    _wait_for_snapshot(pair, past=0)
    first.stop()
    # The other node with its own key: it must refuse the snapshot and never lead.
    other = pair.nodes["b"]
    key = other.conf.parent / "other-hmac.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    other.conf.write_text(other.conf.read_text().replace(str(pair.hmac_key_file), str(key)))
    pair.start("b")
    time.sleep(3 * 2)  # three lease periods of the harness's lease_ttl
    probe = other.probe()
    assert probe.status == 503
    assert probe.body["role"] == "starting"
    assert "does not verify with this node's [state] hmac key" in (probe.body["detail"] or "")
    ((epoch,),) = pair.db.query(f"SELECT epoch FROM {SCHEMA}.lease")  # noqa: S608
    assert epoch == 1, "a node that could not load the state took the lease"
