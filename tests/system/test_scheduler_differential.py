"""Our scheduler answers every RPC exactly as stock luigi's does (issue 14, "Exactly luigi's answers").

Seeded random sequences of every RPC (tests/scheduler_sequences.py: workers adding tasks in every
status with dependencies, priorities, resources and batchable families, assistants, get_work with
and without current_tasks, the visualiser's questions, operator actions, and time jumping past
retry_delay, disable_window/disable_persist, worker_disconnect_delay and remove_delay) are applied
to ``luigi.scheduler.Scheduler`` and to ``luigi_appliance.scheduler.Scheduler``, both built with
the same config. Every answer is compared (lists luigi builds from sets as multisets), and every
10 steps a canonical view of both states. A failure names the seed, the step and the last 20 RPCs.

Outside an HTTP request there is no caller, so the per-family get_work hook allows every family;
the generated graphs have no cycles (failing them is ours on purpose, tested in test_dag.py);
tasks of equal rank are avoided by construction (see the helper module's docstring).
"""

from __future__ import annotations

import time
import uuid

import luigi.scheduler
import pytest
from scheduler_sequences import Clock, Divergence, Profile, replay

from luigi_appliance.luigi_internals.scheduler import luigi_state
from luigi_appliance.scheduler import Scheduler

STEPS = 3000
PROFILES = {
    1: Profile(),
    2: Profile(prune_on_get_work=True, max_shown_tasks=15, retry_count=2),
    3: Profile(retry_delay=-1, remove_delay=30.0, worker_disconnect_delay=20.0, send_messages=False),
    4: Profile(pause_enabled=False, disable_hard_timeout=60, stable_done_cooldown_secs=0, max_graph_nodes=5),
    5: Profile(retry_delay=5.0, disable_window=500, retry_count=5, max_shown_tasks=100000),
    6: Profile(retry_count=1, batch_emails=True, worker_disconnect_delay=600.0),
    # Nothing is removed: the state grows to several hundred tasks.
    7: Profile(remove_delay=10**6, worker_disconnect_delay=10**6, max_shown_tasks=500, max_graph_nodes=10**5),
    8: Profile(prune_on_get_work=True, remove_delay=5.0, worker_disconnect_delay=5.0, retry_delay=2.0),
}
# luigi's RPC methods (the registry also holds any the appliance adds, which stock lacks).
LUIGI_RPCS = {name for name in luigi.scheduler.RPC_METHODS if name in vars(luigi.scheduler.Scheduler)}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The fake time both schedulers read (luigi.scheduler and our package both call time.time()),
    and the message ids they make."""
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    monkeypatch.setattr(uuid, "uuid4", fake.uuid4)
    return fake


@pytest.mark.parametrize("seed", sorted(PROFILES))
def test_same_answers_as_stock_luigi(seed: int, clock: Clock) -> None:
    counts = replay(seed, STEPS, luigi.scheduler.Scheduler, Scheduler, clock, PROFILES[seed])
    print(f"\nseed {seed}: RPC calls {dict(sorted(counts.items()))}")  # the coverage, shown with -s
    # The sequence exercised every RPC of luigi's scheduler, and handed out work.
    assert not LUIGI_RPCS - set(counts), f"never called: {sorted(LUIGI_RPCS - set(counts))}"
    assert counts["get_work"] > 300 and counts["add_task"] > 1000, counts


class OldestLast(luigi.scheduler.Scheduler):
    """A scheduler that breaks priority ties the wrong way (newest task first)."""

    def _rank(self, task):
        return task.priority, task.time


def test_a_wrong_get_work_order_is_caught(clock: Clock) -> None:
    with pytest.raises(Divergence, match=r"seed 1, step \d+: get_work answered"):
        replay(1, 400, luigi.scheduler.Scheduler, OldestLast, clock)


class ForgetsStakeholders(luigi.scheduler.Scheduler):
    """A scheduler that drops the calling worker from every task's stakeholders: only the state
    shows it at first (the answers differ once pruning removes a task too early)."""

    def add_task(self, *args, **kwargs):
        super().add_task(*args, **kwargs)
        for task in luigi_state(self)[0].values():
            task.stakeholders.discard(kwargs.get("worker"))


def test_a_wrong_state_is_caught_where_it_happens(clock: Clock) -> None:
    with pytest.raises(Divergence, match=r"seed 2, step 0: state differs"):
        replay(2, 50, luigi.scheduler.Scheduler, ForgetsStakeholders, clock)
