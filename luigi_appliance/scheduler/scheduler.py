"""The one scheduler class ``serve`` runs, composed from the behaviours of this package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from luigi_appliance.scheduler.approval_gate import ApprovalGated
from luigi_appliance.scheduler.cycles import CycleFailing
from luigi_appliance.scheduler.families import FamilyScoped
from luigi_appliance.scheduler.journalled import Journalled
from luigi_appliance.scheduler.work import IndexedScheduler


class Scheduler(Journalled, CycleFailing, ApprovalGated, FamilyScoped, IndexedScheduler):
    """luigi's Scheduler that journals every state change when it leads an [ha] pair
    (journalled.py), fails tasks caught in a dependency cycle, with the cycle as reason
    (cycles.py), keeps tasks that await approval from get_work (approval_gate.py), hands out work
    only by the caller's families (families.py), and answers get_work
    and count_pending from incrementally kept indexes (work.py, index.py).

    ``get_work_timer``, when given, is told how many seconds each get_work took in here: the
    scheduling core alone, without the HTTP, authentication and JSON around it (/metrics).
    """

    def __init__(self, *args: Any, get_work_timer: Callable[[float], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._get_work_timer = get_work_timer

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        if self._get_work_timer is None:
            return super().get_work(*args, **kwargs)
        started = time.perf_counter()
        try:
            return super().get_work(*args, **kwargs)
        finally:
            self._get_work_timer(time.perf_counter() - started)
