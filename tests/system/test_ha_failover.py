"""High availability (issue 19) end to end: two real ``luigi-appliance serve`` nodes on loopback, one
real PostgreSQL (tests/ha_cluster.py), a steady load of real luigi clients that follow the leader
and remember every change acknowledged with a 200.

Each test gets its own database and nodes; the lease is 2 s (``lease_ttl``; the election test's 5 s),
so every wait below is a few lease periods. What must hold whatever happens: no acknowledged change is lost (every
task acknowledged is on the leader afterwards, DONE where DONE was acknowledged, and nothing else
is there but the one change per load thread that was still in flight when the load stopped), and
no two nodes answer 200 on ``/healthz/leader`` at the same moment.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ha_cluster import (
    AckLoad,
    HaCluster,
    HaNode,
    LeaderSampler,
    lost_changes,
    running_cluster,
    unexplained_changes,
    wait_until,
)
from pg_cluster import Database

from conftest import BIN, PIPELINES

FAILOVER_BOUND = 10.0  # seconds: the goal with default settings, and the lease here is shorter
RECOVERY_BOUND = 15.0  # seconds after PostgreSQL is back until a change is acknowledged again
LEASE_TTL = 2.0
CHAIN = 12  # history_chain Step 0..CHAIN
STEP_DELAY = 0.4  # seconds each step sleeps: the run lasts ~5 s, long enough to straddle a failover


def assert_nothing_lost(ha: HaCluster, leader: HaNode, load: AckLoad) -> dict[str, str]:
    """Every acknowledged change is on ``leader``, and only those (plus what was in doubt)."""
    present = ha.tasks_on(leader, load.task_prefix)
    lost = lost_changes(load, present)
    assert not lost, f"{len(lost)} acknowledged change(s) lost on {leader.name}: {lost[:10]}\n{ha.logs()}"
    extra = unexplained_changes(load, present)
    assert not extra, f"changes nobody acknowledged nor attempted: {extra[:10]}"
    acked_done = load.acknowledged("DONE")
    done = {tid for tid, status in present.items() if status == "DONE"}
    in_doubt_done = {tid for tid, status in load.in_doubt.items() if status == "DONE"}
    # Count equality, up to the DONE reports still in flight when the load stopped.
    assert acked_done <= done <= acked_done | in_doubt_done, (len(acked_done), len(done), in_doubt_done)
    print(f"{load.prefix}: {len(load.acked)} tasks acknowledged ({len(acked_done)} DONE), {len(present)} on "
          f"{leader.name} ({len(done)} DONE), {len(load.in_doubt)} in doubt at the end")
    return present


def pipeline(tmp_path: Path, ha: HaCluster) -> tuple[subprocess.Popen[str], Path]:
    """``luigi-appliance run`` of a slow chain with a client.conf naming both nodes."""
    conf = tmp_path / "client.conf"
    urls = ", ".join(f"{node.url}/" for node in ha.nodes.values())
    conf.write_text(f"[client]\nscheduler_url = {urls}\nca_file = {ha.ca_file}\nconnect_timeout = 3\n"
                    "retry_attempts = 20\nretry_wait = 1\n")
    out = tmp_path / "chain"
    out.mkdir()
    proc = subprocess.Popen([str(BIN), "run", "--client-config", str(conf), "--credentials-file",
                             str(ha.credentials_file), "--module", "history_chain", "Step", "--out-dir", str(out),
                             "--index", str(CHAIN), "--delay", str(STEP_DELAY)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(PIPELINES)})
    return proc, out


def test_sigkill_of_the_leader_fails_over_within_the_bound_and_loses_nothing(tmp_path: Path, db: Database) -> None:
    with running_cluster(tmp_path / "ha", db, lease_ttl=f"{LEASE_TTL:g}s") as ha:
        leader = ha.wait_for_leader(30)
        standby = ha.other(leader)
        epoch = ha.lease().epoch
        run, out = pipeline(tmp_path, ha)
        try:
            with AckLoad(ha, "killed") as load:
                load.wait_acks(40)
                wait_until(lambda: (out / "step-3.txt").exists() or run.poll() is not None, "the pipeline's step 3", 60)
                assert run.poll() is None, f"the pipeline ended before the failover:\n{run.communicate()[0][-3000:]}"
                killed = time.monotonic()
                leader.kill()
                first_write = ha.wait_for_first_write(standby, timeout=30, prefix="killed-probe")
                took = first_write - killed
                print(f"SIGKILL of {leader.name} -> first acknowledged add_task on {standby.name}: {took:.2f}s "
                      f"(lease_ttl {LEASE_TTL:g}s)")
                assert ha.wait_for_leader(5) is standby
                load.wait_acks(40)  # the load goes on, on the new leader
            output, _ = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 0, f"the pipeline did not complete across the failover:\n{output[-4000:]}"
        assert (out / f"step-{CHAIN}.txt").exists()
        assert took <= FAILOVER_BOUND, f"failover took {took:.2f}s\n{ha.logs()}"
        assert ha.lease().epoch == epoch + 1 and ha.lease().node == standby.name
        assert_nothing_lost(ha, standby, load)
        # The killed node comes back as a standby of the new leader and catches up with the journal.
        leader.start()
        last_pos = ha.journal_rows()[-1][0]
        wait_until(lambda: leader.probe().body.get("role") == "standby"
                   and leader.probe().body.get("applied_pos", 0) >= last_pos,
                   "the restarted node to stand by, caught up", 30)
        assert ha.leader() is standby


def test_a_paused_leader_is_fenced_and_steps_down_when_it_wakes(tmp_path: Path, db: Database) -> None:
    """The worst case of a pause: the leader stops with a journal write sent but not yet executed
    (held back by a lock on the journal table, or whether one is in flight would be luck), the
    standby takes over, then that write executes: the database must refuse it."""
    with running_cluster(tmp_path / "ha", db, lease_ttl=f"{LEASE_TTL:g}s") as ha:
        old = ha.wait_for_leader(30)
        standby = ha.other(old)
        with LeaderSampler(ha) as sampler, AckLoad(ha, "paused") as load:
            load.wait_acks(30)
            lease = ha.lease()
            assert lease.node == old.name, lease
            mark = old.log_mark()
            with ha.journal_locked():
                wait_until(lambda: ha.appends_waiting() > 0, "a journal append of the leader to wait", 10, 0.02)
                old.sigstop()
                ha.wait_lease_expired(lease.epoch, timeout=10 * LEASE_TTL)  # by the database's clock
                wait_until(lambda: ha.lease().epoch > lease.epoch, "the standby to take the lease", 10 * LEASE_TTL)
                old_rows = len(ha.journal_rows(lease.epoch))
            # The paused leader's write executes now, after the takeover.
            new = ha.wait_for_leader(15, other_than=old)
            assert new is standby
            new_epoch = ha.lease().epoch
            load.wait_acks(30)  # rows of the new epoch in the journal
            old.sigcont()
            # Whatever it still had queued or applies now, nothing of it may be acknowledged.
            refused = [old.write(f"paused-after-wake-{i}") for i in range(5)]
            assert 200 not in refused, refused
            wait_until(lambda: f"Stepped down at epoch {lease.epoch}" in old.log_since(mark),
                       "the old leader's log to say it stepped down", 10 * LEASE_TTL)
            woke = old.probe(timeout=5)
            assert woke.status not in (200, None) and woke.body.get("role") != "leader", woke
            load.wait_acks(20)
        assert len(ha.journal_rows(lease.epoch)) == old_rows, "the old epoch wrote after the takeover"
        assert ha.journal_rows(new_epoch)
        assert ha.fenced_writes(lease.epoch, new_epoch) == 0, ha.journal_rows()[-20:]
        assert not sampler.split_brain(), sampler.split_brain()[:5]
        assert ha.leader() is new
        assert_nothing_lost(ha, new, load)


def test_postgresql_restart_under_load_no_split_brain_nothing_lost(tmp_path: Path, db: Database) -> None:
    with running_cluster(tmp_path / "ha", db, lease_ttl=f"{LEASE_TTL:g}s") as ha:
        before = ha.wait_for_leader(30)
        with LeaderSampler(ha) as sampler, AckLoad(ha, "pgrestart") as load:
            load.wait_acks(30)
            ha.restart_postgres()
            restarted = time.monotonic()
            after = ha.wait_for_leader(RECOVERY_BOUND)
            recovered = wait_until(lambda: bool(load.acks_after(restarted)), "an acknowledged change after the restart",
                                 RECOVERY_BOUND)
            print(f"PostgreSQL restarted: {before.name} led before, {after.name} after; first acknowledged change "
                  f"{recovered - restarted:.2f}s after pg_ctl returned")
            load.wait_acks(30)
        assert not sampler.split_brain(), sampler.split_brain()[:5]
        leader = ha.wait_for_leader(5)
        assert_nothing_lost(ha, leader, load)


# The election at start, not stall tolerance, is what this test is about. With a 2 s lease the lead
# once moved during the window in CI (no split brain; the cause was not captured, hence the logs in
# the message): renewals held up for 1.3 s lose a 2 s lease, as they should, and CI runs the rpm and
# ansible tests on the other core. The product's default lease leaves 3.3 s.
ELECTION_LEASE_TTL = 5.0


def test_two_nodes_started_together_elect_exactly_one_leader(tmp_path: Path, db: Database) -> None:
    with running_cluster(tmp_path / "ha", db, start=False, lease_ttl=f"{ELECTION_LEASE_TTL:g}s") as ha:
        ha.start()  # both processes at once, then both answer /healthz
        leader = ha.wait_for_leader(30)
        with LeaderSampler(ha) as sampler:
            time.sleep(2 * ELECTION_LEASE_TTL)  # the observation window: two lease periods
        assert not sampler.split_brain(), sampler.split_brain()[:5]
        others = {name for _, name in sampler.leaders() if name not in (None, leader.name)}
        assert not others, f"the lead moved to {others}\n{ha.logs()}"
        answered = sum(name == leader.name for _, name in sampler.leaders())
        assert answered >= 0.8 * len(sampler.samples), (answered, len(sampler.samples))
        lease = ha.lease()
        # One acquisition ever: epoch 1, held by the leader all along.
        assert (lease.node, lease.epoch) == (leader.name, 1), lease
        assert ha.other(leader).probe().body.get("role") == "standby"
