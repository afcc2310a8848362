"""The preflight's complete()/deps() answers handed to luigi's worker (luigi_internals/worker.py),
full collections' survivors frozen while a graph is built (gc_freezing.py), and cycle paths
named as luigi prints tasks (dag/check.py)."""

from __future__ import annotations

import gc

import luigi
import pytest

from luigi_appliance.dag.check import Node, _path_names
from luigi_appliance.gc_freezing import survivors_frozen
from luigi_appliance.luigi_internals.worker import Completion, TaskAnswers

CALLS: list[str] = []


class Asked(luigi.Task):
    n = luigi.IntParameter()

    def complete(self):
        CALLS.append(f"complete {self.n}")
        return self.n == 0

    def requires(self):
        CALLS.append(f"requires {self.n}")
        return [Asked(n=self.n - 1)] if self.n > 0 else []


class Failing(luigi.Task):
    def complete(self):
        raise OSError("storage unreachable")


@pytest.mark.parametrize(("value", "walks"), [(False, True), (0, True), (True, False), (1, False), (None, False),
                                              ("yes", False)])
def test_luigis_worker_walks_deps_only_when_complete_returned_false(value: object, walks: bool) -> None:
    assert Completion(value).walks_deps() is walks


def test_a_failing_complete_is_kept_and_raised_again_from_the_pipelines_frames() -> None:
    completion = Completion.of(Failing())
    assert not completion.walks_deps()
    with pytest.raises(OSError, match="storage unreachable") as raised:
        completion.answer()
    assert raised.traceback[-1].name == "complete"  # the pipeline's frame, where it raised


def answers_for(root: Asked) -> TaskAnswers:
    answers = TaskAnswers()
    for n in range(root.n, -1, -1):
        task = Asked(n=n)
        answers.complete[task.task_id] = Completion.of(task)
        if n:
            answers.deps[task.task_id] = list(task.deps())
    CALLS.clear()
    return answers


def test_each_answer_is_taken_once_then_the_task_answers_itself() -> None:
    root = Asked(n=2)
    answers = answers_for(root)
    with answers.given(root):
        assert root.complete() is False and root.deps() == [Asked(n=1)]
        assert Asked(n=1).complete() is False and Asked(n=1).deps() == [Asked(n=0)]
        assert Asked(n=0).complete() is True
        assert CALLS == []  # all from the answers
        assert root.complete() is False  # a second call is the task's own
        assert CALLS == ["complete 2"]
    assert not answers.complete and not answers.deps


def test_answers_not_taken_are_withdrawn_and_the_pipelines_own_attributes_left_alone() -> None:
    root = Asked(n=1)
    answers = answers_for(root)
    own = Asked(n=0)

    def own_complete() -> bool:
        return True

    own.__dict__["complete"] = own_complete  # set by the pipeline itself: not ours to answer
    with answers.given(root):
        root.deps()
    assert "complete" not in vars(root) and "deps" not in vars(root)
    assert vars(own)["complete"] is own_complete
    assert root.complete() is False and CALLS == ["complete 1"]
    del own.__dict__["complete"]


def test_full_collections_survivors_are_frozen_within_and_unfrozen_after() -> None:
    before = gc.get_freeze_count()
    assert before == 0
    with survivors_frozen():
        kept = [[i] for i in range(1000)]
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)
        with survivors_frozen():  # reentrant: the inner block changes nothing
            pass
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_freeze_count() == 0
    assert all(cb.__name__ != "_freeze_after_full_collection" for cb in gc.callbacks)


def test_a_process_that_froze_objects_itself_is_left_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with survivors_frozen():
            gc.collect()
        # Neither unfrozen nor frozen more. Not "equal": a frozen object freed by its reference
        # count (another thread's, e.g. pytest-xdist's) leaves the permanent generation meanwhile.
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


class Printed(luigi.Task):
    name = luigi.Parameter()

    def __repr__(self):
        return "Printed()"  # the pipeline's own repr: every instance prints alike


def test_cycle_paths_name_tasks_as_luigi_prints_them_with_ids_only_where_alike() -> None:
    a, b, c = Asked(n=1), Printed(name="x"), Printed(name="y")
    nodes = {t.task_id: Node(t.task_id, t.task_family, type(t), False, task=t) for t in (a, b, c)}
    path = [a.task_id, b.task_id, c.task_id, a.task_id]
    assert _path_names(nodes, path) == ["Asked(n=1)", f"Printed() [{b.task_id}]", f"Printed() [{c.task_id}]",
                                        "Asked(n=1)"]
