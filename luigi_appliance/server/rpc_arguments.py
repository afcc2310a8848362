"""The shape of an RPC's ``data``, checked before luigi's handler sees it.

Luigi's handler passes the decoded JSON straight to the scheduler method as keyword arguments:
a missing or misspelt argument, a value of the wrong type or a structure nested a few thousand
levels deep ends in an exception, a 500 and a traceback in the log. Worse, some wrong values are
stored and break later calls of everyone (a string or null ``priority`` makes every assistant's
``get_work`` fail comparing it), and a task's parameters are kept for the life of the task, in
every snapshot. So every call is refused with a one-line reason (400, or 413 for a size limit) when

* ``data`` is not a JSON object, or nests objects and lists deeper than ``MAX_DEPTH``;
* an argument the method requires is missing, or one it does not take is given;
* a task id, worker id or family is not a string;
* for ``add_task``: ``priority`` is not a number, ``resources`` or ``retry_policy_dict`` not an
  object of numbers, ``deps`` or ``new_deps`` not a list of strings, ``params`` or
  ``param_visibilities`` not an object, either of them is larger than ``MAX_PARAMS_BYTES`` as
  JSON, or one parameter value is larger than ``MAX_PARAM_VALUE_BYTES``;
* for ``add_tasks`` (the appliance's batched ``add_task``, server/add_tasks.py): ``data`` is not
  ``{"worker": ..., "tasks": [...]}``, the batch holds more than ``MAX_BATCH_TASKS`` tasks (413),
  or one of its tasks would be refused as an ``add_task`` with the batch's worker id (a task
  carrying a worker id of its own included); the reason names the first such task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from luigi_appliance.luigi_internals.rpc_signatures import SIGNATURES
from luigi_appliance.server.task_access import DECLARED_FAMILY, TASK_ARGUMENT

# Luigi's own calls nest three levels at most (add_worker's info: object > list > pair).
MAX_DEPTH = 32
# Luigi sends parameters as strings (Task.to_str_params); these leave room for long lists.
MAX_PARAMS_BYTES = 64 * 1024
MAX_PARAM_VALUE_BYTES = 32 * 1024
# Tasks per add_tasks call: a batch is checked and applied in one turn of the scheduler's loop,
# so this bounds how long one call holds every other caller up (docs/access-control.md).
MAX_BATCH_TASKS = 1000


class BadArguments(ValueError):
    """The RPC's ``data`` is refused; ``status`` is the HTTP status to answer."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


def parse_arguments(data: str) -> dict[str, Any]:
    try:
        arguments = json.loads(data)
    except RecursionError:
        raise BadArguments(f"data is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError:
        raise BadArguments("data is not JSON") from None
    if not isinstance(arguments, dict):
        raise BadArguments("data is not a JSON object")
    if _too_deep(arguments):
        raise BadArguments(f"data is nested more than {MAX_DEPTH} levels deep")
    return arguments


def _too_deep(value: Any) -> bool:
    # Iterative: a recursive walk would fail on exactly the input it is meant to refuse.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _object_of_numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(_number(v) for v in value.values())


def _object_of_optional_numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(_number(v) or v is None for v in value.values())


def _list_of_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# add_task's values that luigi stores and later compares, hashes or iterates. None stands for
# luigi's default for all but priority, which luigi would store as None.
_ADD_TASK_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "priority": ("a number", _number),
    "resources": ("an object of numbers", _object_of_numbers),
    "retry_policy_dict": ("an object of numbers", _object_of_optional_numbers),
    "deps": ("a list of task ids", _list_of_strings),
    "new_deps": ("a list of task ids", _list_of_strings),
    "params": ("an object", lambda v: isinstance(v, dict)),
    "param_visibilities": ("an object", lambda v: isinstance(v, dict)),
}


def check_arguments(method: str, arguments: dict[str, Any]) -> None:
    """Raise BadArguments when ``method`` cannot take ``arguments`` (see the module docstring)."""
    signature = SIGNATURES[method]
    missing = sorted(signature.required - arguments.keys())
    if missing:
        raise BadArguments(f"{method} needs argument(s) {', '.join(missing)}")
    if signature.known is not None:
        unknown = sorted(arguments.keys() - signature.known)
        if unknown:
            raise BadArguments(f"{method} takes no argument(s) {', '.join(unknown)[:200]}")
    for name in ("worker", TASK_ARGUMENT.get(method), DECLARED_FAMILY.get(method)):
        if name is not None and arguments.get(name) is not None and not isinstance(arguments[name], str):
            raise BadArguments(f"{method}: {name} must be a string")
    if method == "add_task":
        _check_add_task(arguments)


def _check_add_task(arguments: dict[str, Any]) -> None:
    for name, (expected, valid) in _ADD_TASK_TYPES.items():
        if name not in arguments or (arguments[name] is None and name != "priority"):
            continue
        if not valid(arguments[name]):
            raise BadArguments(f"add_task: {name} must be {expected}")
    params = arguments.get("params") or {}
    params_size = _json_size(params)
    # No value can be over its limit while all of them together are not: measure each only then.
    if params_size > MAX_PARAM_VALUE_BYTES:
        for name, value in params.items():
            if _json_size(value) > MAX_PARAM_VALUE_BYTES:
                raise BadArguments(f"add_task: parameter {name[:100]!r} is larger than the limit of "
                                   f"{MAX_PARAM_VALUE_BYTES} bytes per parameter value", 413)
    sizes = {"params": params_size, "param_visibilities": _json_size(arguments.get("param_visibilities") or {})}
    for name, size in sizes.items():
        if size > MAX_PARAMS_BYTES:
            raise BadArguments(f"add_task: {name} is larger than the limit of {MAX_PARAMS_BYTES} bytes per task", 413)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def check_batch(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """add_tasks' tasks as the add_task arguments each is applied with (the batch's worker id in
    each); raise BadArguments naming the first task that add_task would refuse."""
    unknown = sorted(arguments.keys() - {"worker", "tasks"})
    if unknown:
        raise BadArguments(f"add_tasks takes no argument(s) {', '.join(unknown)[:200]}")
    worker, tasks = arguments.get("worker"), arguments.get("tasks")
    if not isinstance(worker, str):
        raise BadArguments("add_tasks needs argument worker, a string")
    if not isinstance(tasks, list):
        raise BadArguments("add_tasks needs argument tasks, a list of add_task arguments")
    if len(tasks) > MAX_BATCH_TASKS:
        raise BadArguments(f"add_tasks: {len(tasks)} tasks are more than the limit of {MAX_BATCH_TASKS} "
                           "per call", 413)
    checked = []
    for index, task in enumerate(tasks):
        try:
            if not isinstance(task, dict):
                raise BadArguments("is not a JSON object")
            if "worker" in task:
                raise BadArguments("carries a worker id: the batch's worker applies to every task")
            one = {**task, "worker": worker}
            check_arguments("add_task", one)
        except BadArguments as exc:
            raise BadArguments(f"add_tasks: {batch_task_name(index, len(tasks), task)}: {exc}", exc.status) from None
        checked.append(one)
    return checked


def batch_task_name(index: int, count: int, task: Any) -> str:
    """How an error names a batch's task: its position, and its id when it has one."""
    task_id = task.get("task_id") if isinstance(task, dict) else None
    named = f" ({task_id[:200]})" if isinstance(task_id, str) else ""
    return f"task {index + 1} of {count}{named}"
