"""The get_params cache ``luigi-appliance run`` installs gives luigi's own answer, call for call,
while task classes gain, override and lose parameters at runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import luigi
import pytest

from luigi_appliance.luigi_internals import worker
from luigi_appliance.luigi_internals.worker import get_params_cache

LUIGI_GET_PARAMS = luigi.Task.__dict__["get_params"].__func__


class Mixin:
    """Not a luigi task class: its attributes are set without Register hearing of it."""

    m = luigi.Parameter(default="m")


class Base(luigi.Task):
    task_namespace = "get_params_cache_test"
    a = luigi.Parameter(default="a")
    b = luigi.IntParameter(default=1)


class Child(Base):
    b = luigi.Parameter(default="b")  # overridden
    c = luigi.Parameter(default="c")


class Mixed(Mixin, Child):
    pass


class OwnParams(Child):
    @classmethod
    def get_params(cls) -> list[tuple[str, Any]]:
        return [("own", luigi.Parameter())]


class Made:
    """A descriptor that makes a new Parameter each time it is read."""

    def __get__(self, instance: object, owner: type) -> luigi.Parameter:
        return luigi.Parameter(default="made")


class Described(Child):
    d = Made()


CLASSES = (Base, Child, Mixed, Described)


def same_as_luigi() -> None:
    for cls in CLASSES:
        assert [name for name, _ in cls.get_params()] == [name for name, _ in LUIGI_GET_PARAMS(cls)], cls
        if cls is not Described:  # its Parameter is new on every read, in luigi's answer too
            assert cls.get_params() == LUIGI_GET_PARAMS(cls), cls


def scenario() -> None:
    """Every runtime change to the classes, each followed by the comparison."""
    steps: list[Callable[[], None]] = [
        lambda: setattr(Base, "e", luigi.Parameter(default="e")),  # added to a base: seen by subclasses
        lambda: setattr(Child, "a", luigi.IntParameter(default=2)),  # overridden in a subclass
        lambda: setattr(Child, "e", "no longer a parameter"),
        lambda: delattr(Child, "a"),  # Base's again
        lambda: delattr(Child, "e"),
        lambda: delattr(Base, "e"),
        lambda: setattr(Mixin, "n", luigi.Parameter(default="n")),  # on a base luigi's metaclass does not see
        lambda: delattr(Mixin, "n"),
        lambda: setattr(Base, "run", lambda self: None),  # not a parameter: the answer stays the same
    ]
    try:
        same_as_luigi()
        for step in steps:
            step()
            same_as_luigi()
    finally:
        for cls, name in ((Base, "e"), (Child, "a"), (Child, "e"), (Mixin, "n"), (Base, "run")):
            if name in cls.__dict__:
                type.__delattr__(cls, name)


def test_answers_as_luigi_does_while_classes_change() -> None:
    with get_params_cache() as cache:
        scenario()
        assert Child in cache.answers and Mixed not in cache.answers  # it did cache, where it can


def test_the_comparison_fails_for_a_cache_never_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injected on purpose (no real cache misses an invalidation): proves the scenario can fail.
    monkeypatch.setattr(worker.ParamsCache, "changed", lambda self: None)
    with get_params_cache(), pytest.raises(AssertionError):
        scenario()


def test_each_answer_is_a_fresh_list() -> None:
    with get_params_cache():
        first = Child.get_params()
        first.clear()
        assert Child.get_params() == LUIGI_GET_PARAMS(Child) != []


def test_a_class_with_its_own_get_params_keeps_it() -> None:
    with get_params_cache():
        assert [name for name, _ in OwnParams.get_params()] == ["own"]


def test_luigi_is_left_as_it_was() -> None:
    with get_params_cache():
        pass
    assert luigi.Task.__dict__["get_params"].__func__ is LUIGI_GET_PARAMS
    assert "__setattr__" not in vars(luigi.task_register.Register)
    assert "__delattr__" not in vars(luigi.task_register.Register)


def test_luigi_sets_class_attributes_once_per_class_not_per_task() -> None:
    with get_params_cache() as cache:
        for i in range(50):
            Child(a=str(i))
        # luigi's get_param_values sets cls._unconsumed_params the first time only.
        assert cache.generation <= 1
