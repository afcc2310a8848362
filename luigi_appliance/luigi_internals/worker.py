"""luigi's worker side from the inside: its RPC client's fetcher and retries, its entry point,
and a cache for its tasks' get_params."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import luigi
import luigi.interface
import luigi.rpc
import luigi.task_register
import tenacity
from luigi.cmdline_parser import CmdlineParser

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
