"""luigi's worker side from the inside: its RPC client's fetcher and retries, its entry point,
a cache for its tasks' get_params, its config parser chosen once, and a Worker that takes each
task's complete() and deps() answers from the preflight's walk instead of asking twice."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import luigi
import luigi.configuration
import luigi.interface
import luigi.rpc
import luigi.task_register
import luigi.worker
import tenacity
from luigi.cmdline_parser import CmdlineParser
from luigi.configuration.core import PARSERS

from luigi_appliance.gc_freezing import survivors_frozen

# What luigi's run() asks for the worker's scheduler client (luigi.interface.build() takes one).
LuigiSchedulerFactory = luigi.interface._WorkerSchedulerFactory


class ConfiguredRemoteScheduler(luigi.rpc.RemoteScheduler):
    """luigi's RemoteScheduler with the fetcher, the retries and the errors never retried given
    here, instead of read from luigi's [core] configuration."""

    def __init__(self, url: str, connect_timeout: float, fetcher: luigi.rpc.RequestsFetcher,
                 retry_attempts: int, retry_wait: float, never_retry: type[BaseException]):
        super().__init__(url=url, connect_timeout=connect_timeout)
        self._rpc_retry_attempts = retry_attempts
        self._rpc_retry_wait = retry_wait
        self._fetcher = fetcher
        self._never_retry = never_retry

    def _get_retryer(self) -> tenacity.Retrying:
        return super()._get_retryer().copy(retry=tenacity.retry_if_not_exception_type(self._never_retry))


def run_luigi(luigi_args: list[str], factory: Any) -> Any:
    """Run luigi's command line (as ``luigi`` does) with ``factory``; its LuigiRunResult."""
    return luigi.interface._run(luigi_args, worker_scheduler_factory=factory)


def root_task_class(parser: CmdlineParser) -> Any:
    """The class of the task named on ``parser``'s command line (before its parameters parse)."""
    return parser._get_task_cls()


# get_params: luigi's Task.get_params walks dir(cls) on every call, several times per task
# instantiated (Register.__call__, Task.__init__, to_str_params, ...): at 100k tasks that is the
# largest single cost of building the graph. Cached per class, as long as nothing can change its
# answer without the cache hearing of it.

_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: builtins such as object take no attributes
# Descriptors whose value read off a class cannot turn into a Parameter later (a function, a
# classmethod's bound method, a property object itself, the C-level slots of builtins).
_STABLE_DESCRIPTORS = (types.FunctionType, classmethod, staticmethod, property, functools.cached_property,
                       types.WrapperDescriptorType, types.MethodDescriptorType, types.GetSetDescriptorType,
                       types.MemberDescriptorType, types.ClassMethodDescriptorType, types.BuiltinFunctionType)


@dataclass
class ParamsCache:
    """luigi's get_params answers per class, emptied whenever a task class attribute is set or deleted."""

    luigi_get_params: Callable[[type], list[tuple[str, Any]]]
    answers: dict[type, tuple[tuple[str, Any], ...]] = field(default_factory=dict)
    generation: int = 0
    hooks: tuple[Callable[..., None], ...] = ()  # Register's __setattr__ and __delattr__ while installed

    def get_params(self, cls: type) -> list[tuple[str, Any]]:
        answer = self.answers.get(cls)
        if answer is None:
            generation = self.generation
            params = self.luigi_get_params(cls)
            # Stored only if no class changed meanwhile (another thread): it may be stale then.
            if generation == self.generation and self._cacheable(cls, params):
                self.answers[cls] = tuple(params)
            return params
        return list(answer)  # a fresh list, as luigi's: callers may change it

    def changed(self) -> None:
        self.generation += 1
        self.answers.clear()

    def _cacheable(self, cls: type, params: list[tuple[str, Any]]) -> bool:
        """Can the answer for ``cls`` change only by a setattr/delattr that reaches ``changed``?"""
        hooked = all(k.__flags__ & _IMMUTABLE_TYPE or (type(k).__setattr__, type(k).__delattr__) == self.hooks
                     for k in cls.__mro__)
        if not hooked or type(cls).__dir__ is not type.__dir__:
            return False
        found = dict(params)
        for name in dir(cls):
            raw = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
            if name in found and found[name] is not raw:
                return False  # a Parameter made by a descriptor or the metaclass
            if hasattr(type(raw), "__get__") and not isinstance(raw, (luigi.Parameter, *_STABLE_DESCRIPTORS)):
                return False  # a descriptor that may answer a Parameter next time
        return True


@contextmanager
def get_params_cache() -> Iterator[ParamsCache]:
    """Within: luigi's Task.get_params answered from a per-class cache (the same lists luigi's
    makes, fresh each call). A class that defines its own get_params keeps it. Not reentrant."""
    register = luigi.task_register.Register
    if "__setattr__" in vars(register) or "__delattr__" in vars(register):
        raise RuntimeError("luigi's Register has its own __setattr__ or __delattr__ (a cache installed already?)")
    luigi_get_params = luigi.Task.__dict__["get_params"]
    cache = ParamsCache(luigi_get_params.__func__)

    def on_setattr(cls: type, name: str, value: Any) -> None:
        type.__setattr__(cls, name, value)
        cache.changed()

    def on_delattr(cls: type, name: str) -> None:
        type.__delattr__(cls, name)
        cache.changed()

    cache.hooks = (on_setattr, on_delattr)
    type.__setattr__(luigi.Task, "get_params", classmethod(cache.get_params))
    # Register defines neither (type's serve it): ours go on Register itself, removed on the way out.
    type.__setattr__(register, "__setattr__", on_setattr)
    type.__setattr__(register, "__delattr__", on_delattr)
    try:
        yield cache
    finally:
        type.__delattr__(register, "__setattr__")
        type.__delattr__(register, "__delattr__")
        type.__setattr__(luigi.Task, "get_params", luigi_get_params)


# ---- luigi's config parser, chosen once -------------------------------------------------------

@contextmanager
def config_parser_chosen_once() -> Iterator[None]:
    """Within: ``luigi.configuration.get_config()`` uses the parser luigi chose on entry.

    luigi reads $LUIGI_CONFIG_PARSER on every call, and a task's construction calls it at least
    twice (its default lookups once more per parameter): at 100k tasks the environment lookups
    alone take seconds. Only the choice is fixed; the parser object is still luigi's singleton,
    asked each time, so configuration files added meanwhile are seen as before.
    """
    luigi_get_config = luigi.configuration.get_config
    current = luigi_get_config()
    chosen = next(name for name, parser_class in PARSERS.items() if type(current) is parser_class)

    def get_config(parser: str | None = None) -> Any:
        return luigi_get_config(chosen if parser is None else parser)

    luigi.configuration.get_config = get_config
    try:
        yield
    finally:
        luigi.configuration.get_config = luigi_get_config


# ---- complete() and deps() asked once ---------------------------------------------------------

@dataclass
class Completion:
    """What one call of a task's ``complete()`` gave: its value, or the exception it raised."""

    value: Any = None
    error: Exception | None = None
    error_traceback: types.TracebackType | None = None  # the pipeline's frames only

    @classmethod
    def of(cls, task: luigi.Task) -> Completion:
        """Ask ``task.complete()`` (the exceptions luigi's worker catches are kept, not raised)."""
        try:
            return cls(task.complete())
        except Exception as exc:  # as luigi.worker.check_complete
            return cls(error=exc, error_traceback=exc.__traceback__.tb_next if exc.__traceback__ else None)

    def walks_deps(self) -> bool:
        """Does luigi's worker ask this task for its deps()? Only when complete() returned False
        (luigi.worker.Worker._add: an exception or a value that is not a bool is an error, and
        a complete task is DONE)."""
        if self.error is not None:
            return False
        try:
            return bool(self.value in (True, False) and not self.value)
        except Exception:
            return False

    def answer(self) -> Any:
        """The value again, or the exception raised again, from the pipeline's frames."""
        if self.error is not None:
            raise self.error.with_traceback(self.error_traceback)
        return self.value


@dataclass
class TaskAnswers:
    """Per task id, the ``complete()`` and ``deps()`` answers of a walk of one root task."""

    complete: dict[str, Completion] = field(default_factory=dict)
    deps: dict[str, list[luigi.Task]] = field(default_factory=dict)

    @contextmanager
    def given(self, root: luigi.Task) -> Iterator[None]:
        """Within: the first ``complete()`` and the first ``deps()`` call of ``root`` and of the
        tasks its answers reach are answered from here, once each; calls after that are the
        task's own. On the way out every answer not taken is withdrawn."""
        shadowed: list[dict[str, Any]] = []  # instance dicts holding answers

        def shadow(task: luigi.Task) -> None:
            attrs = getattr(task, "__dict__", None)
            if attrs is None or "complete" in attrs or "deps" in attrs:
                return  # no instance dict, answered already, or the pipeline set these itself
            completion = self.complete.pop(task.task_id, None)
            deps = self.deps.pop(task.task_id, None)
            if completion is not None:
                attrs["complete"] = functools.partial(take_complete, attrs, completion)
            if deps is not None:
                attrs["deps"] = functools.partial(take_deps, attrs, deps)
            shadowed.append(attrs)

        def take_complete(attrs: dict[str, Any], completion: Completion) -> Any:
            withdraw(attrs, "complete", take_complete)  # the next call is the task's own method
            return completion.answer()

        def take_deps(attrs: dict[str, Any], deps: list[luigi.Task]) -> list[luigi.Task]:
            withdraw(attrs, "deps", take_deps)
            for dep in deps:
                shadow(dep)
            return list(deps)

        shadow(root)
        try:
            yield
        finally:
            for attrs in shadowed:
                withdraw(attrs, "complete", take_complete)
                withdraw(attrs, "deps", take_deps)


def withdraw(attrs: dict[str, Any], name: str, answer: Callable[..., Any]) -> None:
    """Remove the answer ``given`` put in a task's instance dict (and nothing the task put there)."""
    if getattr(attrs.get(name), "func", None) is answer:
        del attrs[name]


class AnsweringWorker(luigi.worker.Worker):
    """luigi's Worker, whose ``add(task)`` for a task walked before (``answers_by_root``: root
    task id -> the walk's answers) takes each task's ``complete()`` and ``deps()`` answers from
    that walk instead of calling them again. luigi's own add() runs unchanged: the same
    traversal, the same add_task calls in the same order, events, logging and error handling.
    Any other task, or the same root added again, is luigi's add() as it is."""

    def __init__(self, *args: Any, answers_by_root: dict[str, TaskAnswers] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answers_by_root = dict(answers_by_root or {})

    def add(self, task: Any, multiprocess: bool = False, processes: int = 0) -> bool:
        answers = self.answers_by_root.pop(getattr(task, "task_id", None), None)  # type: ignore[arg-type]
        if answers is None:
            with survivors_frozen():
                return bool(super().add(task, multiprocess, processes))
        with answers.given(task), survivors_frozen():
            # The answers are in this process (a pool's processes could not take them): what
            # parallel_scheduling would spread over processes was asked already.
            return bool(super().add(task, False, 0))
