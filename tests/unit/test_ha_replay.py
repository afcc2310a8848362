"""[ha] replay: a standby applying the leader's journal ends in exactly the leader's state.

The leader is the real scheduler (luigi_appliance.scheduler.Scheduler) with a journal that keeps
every record as JSON text, fed seeded random sequences (tests/scheduler_sequences.py's generator,
extended with what it avoids on purpose and replay must get right: tasks of equal rank, made as
sibling dependencies in one add_task; dependency cycles; approval-gated submissions and their
approval, denial and expiry; worker bindings; callers with family limits). Time advances past
retry, disable and removal delays, pinned per call (luigi_internals/clock.py) as the tests drive
it. The records go through json.dumps/json.loads and ha/replay.py onto a fresh scheduler, whose
whole state must equal the leader's: every task field, every worker, the order of the by-status
indexes and of get_work's ranked index, the approval requests, pause, resources, bindings; and
every get_work answer.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from luigi.task_status import DONE, FAILED, PENDING
from scheduler_sequences import RESOURCES, Call, Clock, Profile, Workload, canonical

from luigi_appliance.approvals.events import ApprovalEvents
from luigi_appliance.approvals.rules import ApprovalRules
from luigi_appliance.approvals.selectors import Selector
from luigi_appliance.approvals.settings import ApprovalPolicy, ApprovalRuleSettings, ApprovalsSettings
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.context import Caller, current_caller
from luigi_appliance.ha import records, replay, state_payload
from luigi_appliance.luigi_internals.clock import pinned
from luigi_appliance.luigi_internals.scheduler import is_live_worker, luigi_state
from luigi_appliance.scheduler import Scheduler, journalled
from luigi_appliance.scheduler.approval_gate import Approvals
from luigi_appliance.server.worker_bindings import WorkerBindings

SEEDS = range(1, 21)
STEPS = 300
KEY = b"k" * 32

BOT = Principal("bot", Role.WORKER, "local")  # an agent: its Gated submissions wait for approval
PAT = Principal("pat", Role.WORKER, "local")
NARROW = Principal("nina", Role.WORKER, "ldap", frozenset({"etl"}), ("Plain*", "Gated*", "Sib*"))
OLGA = Principal("olga", Role.OPERATOR, "ldap", frozenset({"owners"}))
PRINCIPALS = (BOT, PAT, NARROW, OLGA)
PROFILES = (Profile(), Profile(prune_on_get_work=True, retry_count=2),
            Profile(retry_delay=5.0, remove_delay=10.0, worker_disconnect_delay=10.0, disable_window=500),
            Profile(retry_delay=-1, send_messages=False, stable_done_cooldown_secs=0))


def approvals() -> Approvals:
    rule = ApprovalRuleSettings(families=("Gated*",), requesters=(Selector("kind", "agent"),), approvals=1,
                                approvers=(Selector("group", "owners"),), request_expiry=40.0,
                                approval_expiry=30.0)
    policy = ApprovalPolicy(ApprovalsSettings(agents=(Selector("user", "bot"),)), {"gated": rule})
    return Approvals(ApprovalRules(policy), ApprovalEvents())


def make_scheduler(profile: Profile, journal: Any = None) -> Scheduler:
    return Scheduler(config=profile.config(), resources=dict(RESOURCES), approvals=approvals(), journal=journal)


def make_bindings(scheduler: Scheduler, listener: Any = None) -> WorkerBindings:
    return WorkerBindings(functools.partial(is_live_worker, scheduler), per_principal=4, listener=listener)


@dataclass
class Journal:
    """The leader's journal: every record as the writer would send it (JSON text)."""

    lines: list[str] = field(default_factory=list)

    def append(self, at: float, rec: dict[str, Any]) -> int:
        self.lines.append(json.dumps(rec, allow_nan=False))  # jsonb takes no NaN: neither does this
        return len(self.lines)

    def binding(self, op: str, worker_id: str, principal: str) -> None:
        self.append(0.0, records.binding(op, worker_id, principal, 0.0))

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


class Answering(Scheduler):
    """Keeps every get_work answer, outermost (the standby's are compared with the leader's)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answers: list[Any] = []

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        answer = super().get_work(*args, **kwargs)
        self.answers.append(copy.deepcopy(answer))
        return answer


@contextlib.contextmanager
def calling(principal: Principal | None) -> Iterator[None]:
    token = current_caller.set(Caller(principal, "192.0.2.7") if principal is not None else None)
    try:
        yield
    finally:
        current_caller.reset(token)


def outcome(method: Any, kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "answer", method(**kwargs)
    except Exception as exc:  # a raise is an answer too
        return "raised", f"{type(exc).__name__}: {exc}"


# -- the state, all of it ---------------------------------------------------------------------

def full_state(scheduler: Scheduler, bindings: WorkerBindings) -> dict[str, Any]:
    """Everything the next call's answer can depend on, in a form json can hash."""
    tasks, workers, batchers = luigi_state(scheduler)[:3]
    state = scheduler.task_state
    view = {
        "task_order": list(tasks),
        "tasks": {tid: {
            "status": t.status, "priority": t.priority, "workers": list(t.workers), "deps": sorted(t.deps),
            "resources": t.resources, "resources_running": getattr(t, "resources_running", None),
            "stakeholders": sorted(t.stakeholders), "family": t.family, "module": t.module, "params": t.params,
            "worker_running": t.worker_running, "time_running": t.time_running, "batch_id": t.batch_id,
            "batchable": t.batchable, "runnable": t.runnable, "time": t.time, "updated": t.updated,
            "retry": t.retry, "remove": t.remove, "failures": list(t.failures),
            "first_failure_time": t.first_failure_time, "scheduler_disable_time": t.scheduler_disable_time,
            "expl": t.expl, "status_message": t.status_message, "progress_percentage": t.progress_percentage,
            "tracking_url": t.tracking_url, "accepts_messages": t.accepts_messages,
            "responses": t.scheduler_message_responses, "retry_policy": list(t.retry_policy),
        } for tid, t in tasks.items()},
        "workers": {wid: {"info": w.info, "disabled": w.disabled, "last_active": w.last_active,
                          "last_get_work": w.last_get_work, "started": w.started, "messages": w.rpc_messages,
                          "tasks": sorted(t.id for t in w.tasks), "reference": w.reference}
                    for wid, w in workers.items()},
        "worker_order": list(workers),
        "batchers": canonical(batchers),
        "by_status": {status: list(state.status_tasks(status)) for status in sorted(state._status_tasks)
                      if state.status_tasks(status)},
        "ranked": [key[-1].id for key in scheduler.index.ranked],
        "approvals": scheduler.export_approvals(),
        "paused": scheduler.paused,
        "resources": scheduler.resource_capacities,
        "bindings": sorted(bindings.export().items()),
        "cycle_marks": sorted(scheduler._new_edges),
    }
    return json.loads(json.dumps(view, default=repr))


def digest(view: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()


def first_difference(want: Any, got: Any, path: str = "") -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in list(want) + [k for k in got if k not in want]:
            if want.get(key) != got.get(key):
                return first_difference(want.get(key), got.get(key), f"{path}[{key!r}]")
    return f"{path}:\n  leader:  {want!r:.600}\n  standby: {got!r:.600}"


# -- the sequences ------------------------------------------------------------------------------

@dataclass
class Leader:
    """What the generator plays against (its ``pair``): the journalled leader, as the server
    drives it (the worker's binding claimed first, the caller set, the clock the test's), and
    optionally an unjournalled twin fed the same calls."""

    profile: Profile
    clock: Clock
    seed: int
    twin: bool = False
    journal: Journal = field(default_factory=Journal)
    history: deque[Call] = field(default_factory=lambda: deque(maxlen=20))
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.reference = Answering(config=self.profile.config(), resources=dict(RESOURCES), approvals=approvals(),
                                   journal=self.journal)
        self.bindings = make_bindings(self.reference, self.journal.binding)
        self.plain = make_scheduler(self.profile) if self.twin else None
        self.plain_bindings = make_bindings(self.plain) if self.plain is not None else None
        self.rng = random.Random(self.seed * 7919)  # noqa: S311 - a replayable sequence
        self.next_uid = ""

    def principal(self, method: str, kwargs: dict[str, Any]) -> Principal | None:
        worker = kwargs.get("worker")
        if method in ("approve_request", "deny_request"):
            return kwargs["principal"]
        if worker == "bot-w":
            return BOT
        if isinstance(worker, str):
            return PRINCIPALS[sum(map(ord, worker)) % 3]
        return self.rng.choice((None, PAT, BOT, OLGA))

    def call(self, step: int, method: str, caller: Principal | None = None, **kwargs: Any) -> Any:
        self.history.append(Call(step, method, kwargs))
        self.counts[method] += 1
        principal = caller or self.principal(method, kwargs)
        worker = kwargs.get("worker")
        if isinstance(worker, str) and principal is not None:
            # the guard claims the worker id before the call (server/rpc_access.py)
            refused = self.bindings.claim(worker, principal.name)
            if self.plain_bindings is not None:
                assert self.plain_bindings.claim(worker, principal.name) == refused
            if refused is not None:
                return None
        # The twin draws its ids from the uuid the leader's journal draws for the call.
        uid = self.next_uid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        with calling(principal), pinned(self.clock.now, None):
            want = outcome(getattr(self.reference, method), copy.deepcopy(kwargs))
        if self.plain is not None:
            with calling(principal), pinned(self.clock.now, uid):
                got = outcome(getattr(self.plain, method), copy.deepcopy(kwargs))
            if comparable(want) != comparable(got):
                calls = "\n".join(f"  {c}" for c in self.history)
                raise AssertionError(f"seed {self.seed} step {step}: {method} answered\n  journalled: {want!r}\n"
                                     f"  plain:      {got!r}\nlast calls:\n{calls}")
        return want[1] if want[0] == "answer" else None

    def release(self, worker: str) -> None:
        """An operator releases a worker's binding (server/workers.py)."""
        self.bindings.release(worker)
        if self.plain_bindings is not None:
            self.plain_bindings.release(worker)

    def check_state(self, step: int) -> None:
        if self.plain is not None:
            assert self.plain_bindings is not None
            want = full_state(self.reference, self.bindings)
            got = full_state(self.plain, self.plain_bindings)
            assert want == got, f"seed {self.seed} step {step}: the states differ " + first_difference(want, got)

    def uuid4(self) -> uuid.UUID:
        """The journal's uuid4 while a twin runs (the leader's ids are the twin's)."""
        return uuid.UUID(self.next_uid)


def comparable(value: Any) -> str:
    return json.dumps(canonical(value), default=repr, sort_keys=True)


class HaWorkload(Workload):
    """The differential test's generator plus ties, cycles, approvals and explicit prunes."""

    pair: Leader

    def ask(self) -> None:
        pick = self.rng.random()
        if pick < 0.12:
            self.siblings()
        elif pick < 0.2:
            self.add_sibling()
        elif pick < 0.24:
            self.cycle()
        elif pick < 0.36:
            self.gated()
        elif pick < 0.46:
            self.decide()
        elif pick < 0.5:
            self.pair.call(self.step, self.rng.choice(("expire_due", "prune")))
        elif pick < 0.52:
            self.pair.release(self.worker())
        elif pick < 0.53:  # a worker luigi does not know yet: count_pending makes its record
            self.pair.call(self.step, "count_pending", worker=f"w-new-{self.step}")
        else:
            super().ask()

    def siblings(self) -> None:
        """A task whose dependencies are new: luigi makes them in one add_task, at one time."""
        parent = self.new_id("Sib")
        deps = [f"{parent}_{n}" for n in range(self.rng.randint(2, 5))]
        self.pair.call(self.step, "add_task", task_id=parent, family="Sib", status=PENDING, deps=deps,
                       priority=self.rng.choice((0, 0, 3)), worker=self.worker(), params={"p": parent})

    def add_sibling(self) -> None:
        placeholders = [tid for tid, t in luigi_state(self.pair.reference)[0].items()
                        if tid.startswith("Sib_") and tid.count("_") == 2 and t.family == ""]
        if not placeholders:
            return self.siblings()
        task_id = self.rng.choice(sorted(placeholders))
        self.pair.call(self.step, "add_task", task_id=task_id, family="Sib", status=PENDING, deps=[],
                       priority=self.rng.choice((0, 3)), worker=self.worker(), params={"s": task_id},
                       resources=self.rng.choice(({}, {"cpu": 1})))

    def cycle(self) -> None:
        """Two or three tasks depending on each other, some with a dependency off the cycle."""
        ids = [self.new_id("Plain") for _ in range(self.rng.choice((2, 3)))]
        worker = self.worker()
        for n, task_id in enumerate(ids):
            deps = [ids[(n + 1) % len(ids)], *self.rng.sample(ids, self.rng.randint(0, 1))]
            self.pair.call(self.step, "add_task", task_id=task_id, family="Plain", status=PENDING,
                           deps=sorted(set(deps) - {task_id}), worker=worker)

    def gated(self) -> None:
        task_id = self.new_id("Gated")
        action = self.rng.random()
        if action < 0.7:
            self.pair.call(self.step, "add_task", task_id=task_id, family="Gated", status=PENDING,
                           params={"n": task_id}, worker="bot-w", priority=self.rng.choice((0, 1)))
        else:
            failed = sorted(tid for tid, t in luigi_state(self.pair.reference)[0].items()
                            if t.status == FAILED and t.family == "Gated")
            if failed:  # the agent's forgive_failures is gated too: a request
                self.pair.call(self.step, "forgive_failures", caller=BOT, task_id=self.rng.choice(failed))

    def decide(self) -> None:
        book = self.pair.reference.approvals.book  # type: ignore[union-attr]
        pending = sorted(r.id for r in book.requests("pending"))
        if not pending:
            return self.gated()
        request_id = self.rng.choice(pending)
        principal = self.rng.choice((OLGA, OLGA, BOT))  # the agent may not decide: a raise
        method = "approve_request" if self.rng.random() < 0.7 else "deny_request"
        self.pair.call(self.step, method, request_id=request_id, principal=principal, comment="ok",
                       source="192.0.2.8")

    def report(self) -> None:
        """Also finish what the gated worker was handed."""
        if self.rng.random() < 0.2:
            running = sorted(tid for tid, t in luigi_state(self.pair.reference)[0].items()
                             if t.status == "RUNNING" and t.worker_running == "bot-w")
            if running:
                self.pair.call(self.step, "add_task", task_id=self.rng.choice(running), worker="bot-w",
                               status=self.rng.choice((DONE, FAILED)), family="Gated")
                return None
            self.pair.call(self.step, "get_work", worker="bot-w", host="h")
            return None
        return super().report()


def lead(seed: int, steps: int = STEPS, twin: bool = False) -> Leader:
    profile = PROFILES[seed % len(PROFILES)]
    clock = Clock()
    leader = Leader(profile, clock, seed, twin)
    workload = HaWorkload(leader, random.Random(seed), clock, profile)  # type: ignore[arg-type]  # noqa: S311
    with contextlib.ExitStack() as stack:
        if twin:
            stack.enter_context(pytest.MonkeyPatch.context()).setattr(journalled.uuid, "uuid4", leader.uuid4)
        workload.play(steps)
    return leader


@dataclass
class Standby:
    scheduler: Answering
    bindings: WorkerBindings
    divergences: list[str] = field(default_factory=list)

    @classmethod
    def fresh(cls, profile: Profile) -> Standby:
        scheduler = Answering(config=profile.config(), resources=dict(RESOURCES), approvals=approvals())
        return cls(scheduler, make_bindings(scheduler))

    def apply(self, recs: list[dict[str, Any]]) -> None:
        for rec in recs:
            found = replay.apply(self.scheduler, self.bindings, rec)
            if found is not None:
                self.divergences.append(found)

    def state(self) -> dict[str, Any]:
        return full_state(self.scheduler, self.bindings)


def assert_same(leader: Leader, standby: Standby) -> None:
    assert standby.divergences == [], standby.divergences[:3]
    want, got = full_state(leader.reference, leader.bindings), standby.state()
    assert want == got, f"seed {leader.seed}: " + first_difference(want, got)
    assert json.loads(json.dumps(leader.reference.answers, default=repr)) == json.loads(
        json.dumps(standby.scheduler.answers, default=repr))


# -- 1. determinism ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def leaders() -> dict[int, Leader]:
    return {seed: lead(seed) for seed in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_standby_replaying_the_journal_has_the_leaders_state(seed: int, leaders: dict[int, Leader]) -> None:
    leader = leaders[seed]
    standby = Standby.fresh(leader.profile)
    standby.apply(leader.journal.records())
    assert_same(leader, standby)
    # Everything the brief names was in play (the sequences are long enough to reach it).
    kinds = Counter(rec["m"] if rec["k"] == "call" else rec["k"] for rec in leader.journal.records())
    assert kinds["get_work"] > 20 and kinds["add_task"] > 50 and kinds["prune"] > 0, kinds


def test_the_sequences_cover_what_replay_must_get_right(leaders: dict[int, Leader]) -> None:
    recs = [rec for leader in leaders.values() for rec in leader.journal.records()]
    kinds = Counter(rec["m"] if rec["k"] == "call" else rec["k"] for rec in recs)
    for kind in ("add_task", "get_work", "ping", "mark_as_done", "forgive_failures", "re_enable_task",
                 "disable_worker", "pause", "unpause", "update_resource", "update_resources", "set_worker_processes",
                 "send_scheduler_message", "prune", "approve_request", "deny_request", "expire_due", "bind",
                 "release", "add_scheduler_message_response", "add_task_batcher", "add_worker"):
        assert kinds[kind] > 0, f"never journalled: {kind}"
    assert any(rec.get("x") for rec in recs), "no call raised"
    states = [t for leader in leaders.values() for t in luigi_state(leader.reference)[0].values()]
    assert any(t.expl and "dependency cycle" in t.expl for t in states), "no cycle was failed"
    assert any(t.scheduler_disable_time for t in states), "no task was disabled for its failures"
    assert any(t.batch_id for t in states) or kinds["get_work"] > 0
    requests = [r for leader in leaders.values() for r in leader.reference.approvals.book.requests()]  # type: ignore[union-attr]
    assert {r.state for r in requests} >= {"pending", "denied", "expired"}, {r.state for r in requests}
    # the ties the differential test avoids: submitted tasks of one creation time (siblings;
    # test_a_snapshot_without_the_entry_order_is_noticed shows get_work meets them)
    times = Counter(t.time for t in states if t.family == "Sib" and t.id.count("_") == 2)
    assert max(times.values()) > 1, "no submitted tasks of equal creation time"


def test_a_dropped_record_is_noticed(leaders: dict[int, Leader]) -> None:
    """The comparison can fail: without one add_task record the standby's state differs."""
    leader = leaders[1]
    recs = leader.journal.records()
    dropped = next(i for i, rec in enumerate(recs) if rec.get("m") == "add_task" and i > len(recs) // 2
                   and rec["a"]["task_id"] in luigi_state(leader.reference)[0]
                   and not any(r.get("m") == "add_task" and r["a"]["task_id"] == rec["a"]["task_id"]
                               for r in recs[:i] + recs[i + 1:]))
    standby = Standby.fresh(leader.profile)
    standby.apply(recs[:dropped] + recs[dropped + 1:])
    with pytest.raises(AssertionError):
        assert_same(leader, standby)


def test_replay_without_the_leaders_clock_differs(leaders: dict[int, Leader], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pin buys: applied at the standby's own time, the state is not the leader's."""
    leader = leaders[1]
    monkeypatch.setattr(replay, "pinned", lambda at, uid: contextlib.nullcontext())
    standby = Standby.fresh(leader.profile)
    standby.apply(leader.journal.records())
    with pytest.raises(AssertionError):
        assert_same(leader, standby)


# -- 2. another process, another hash seed ------------------------------------------------------

def test_another_process_with_another_hash_seed_replays_to_the_same_state(
        leaders: dict[int, Leader], tmp_path: Path) -> None:
    here = {}
    for seed in (1, 2, 3):
        leader = leaders[seed]
        (tmp_path / f"{seed}.jsonl").write_text("\n".join(leader.journal.lines))
        here[seed] = digest(full_state(leader.reference, leader.bindings))
    for hash_seed in ("0", "4242"):
        # The child imports what this process imports, with its flags: in the RPM's %check that
        # is the buildroot's package under -P -S (never the source tree or the host's site).
        path = [str(Path(__file__).parent.parent), str(Path(__file__).parent), *(p for p in sys.path if p)]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(path)}
        flags = [*(["-S"] if sys.flags.no_site else []), *(["-P"] if sys.flags.safe_path else [])]
        done = subprocess.run([sys.executable, *flags, __file__, str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        there = json.loads(done.stdout.strip().splitlines()[-1])
        assert there == {str(seed): [value, 0] for seed, value in here.items()}, (hash_seed, done.stderr[-2000:])


def _replay_files(directory: Path) -> dict[str, list[Any]]:
    """The subprocess's side: replay each journal file, its state digest and divergences."""
    found = {}
    for path in sorted(directory.glob("*.jsonl")):
        seed = int(path.stem)
        standby = Standby.fresh(PROFILES[seed % len(PROFILES)])
        standby.apply([json.loads(line) for line in path.read_text().splitlines()])
        found[path.stem] = [digest(standby.state()), len(standby.divergences)]
    return found


# -- 3. a snapshot in the middle ----------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_a_snapshot_installed_mid_sequence_then_the_rest_replayed_equals_the_full_replay(
        seed: int, leaders: dict[int, Leader]) -> None:
    leader = leaders[seed]
    recs = leader.journal.records()
    middle = len(recs) * seed // 7
    first = Standby.fresh(leader.profile)
    first.apply(recs[:middle])
    payload = state_payload.decode(state_payload.encode(state_payload.capture(first.scheduler, first.bindings), KEY),
                                   KEY)
    # A live standby with another state (another sequence, paused, other resources, bindings).
    other = leaders[seed + len(PROFILES)]
    assert other.profile == leader.profile
    live = Standby.fresh(leader.profile)
    live.apply(other.journal.records())
    assert live.divergences == []
    live.scheduler.paused = True
    live.scheduler.resource_capacities = {"cpu": 99}
    live.bindings.replayed("bind", "w-elsewhere", "someone")
    assert len(live.scheduler.task_records()) > 0
    state_payload.install(live.scheduler, live.bindings, payload)
    fresh = Standby.fresh(leader.profile)
    state_payload.install(fresh.scheduler, fresh.bindings, copy.deepcopy(payload))
    assert live.state() == fresh.state() == first.state(), first_difference(first.state(), live.state())
    live.scheduler.answers = list(first.scheduler.answers)
    live.apply(recs[middle:])
    assert_same(leader, live)


def test_an_empty_payload_leaves_an_empty_state(leaders: dict[int, Leader]) -> None:
    leader = leaders[2]
    live = Standby.fresh(leader.profile)
    live.apply(leader.journal.records())
    state_payload.install(live.scheduler, live.bindings, None)
    assert live.state() == Standby.fresh(leader.profile).state()


def test_a_snapshot_without_the_entry_order_is_noticed(leaders: dict[int, Leader]) -> None:
    """The snapshot test can fail: the stock restore order (tasks by id order) changes get_work's
    ties, and the rest of the journal then replays differently somewhere among the seeds."""
    differing = 0
    for seed in (1, 2, 3, 4, 5, 6):
        leader = leaders[seed]
        recs = leader.journal.records()
        middle = len(recs) // 2
        first = Standby.fresh(leader.profile)
        first.apply(recs[:middle])
        payload = state_payload.capture(first.scheduler, first.bindings)
        payload["ha"]["entry_order"] = []
        live = Standby.fresh(leader.profile)
        state_payload.install(live.scheduler, live.bindings, payload)
        live.scheduler.answers = list(first.scheduler.answers)
        live.apply(recs[middle:])
        try:
            assert_same(leader, live)
        except AssertionError:
            differing += 1
    assert differing > 0


# -- 4. HA off -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_journalling_changes_no_answer(seed: int) -> None:
    leader = lead(seed, twin=True)  # every answer compared (Leader.call), the state every 10 steps
    assert leader.plain is not None and leader.plain.journal is None and leader.journal.lines


def test_the_twin_comparison_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal that changes behaviour (here: recording consumes add_task's priority) is caught."""
    real = journalled.bound_arguments

    def consuming(cls: type, name: str, args: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.pop("priority", None)
        return real(cls, name, args, kwargs)

    monkeypatch.setattr(journalled, "bound_arguments", consuming)
    with pytest.raises(AssertionError, match=r"answered|differ"):
        lead(1, twin=True)


if __name__ == "__main__":
    print(json.dumps(_replay_files(Path(sys.argv[1]))))
