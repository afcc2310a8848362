"""The one scheduler class ``serve`` runs, composed from the behaviours of this package."""

from __future__ import annotations

from luigi_appliance.scheduler.cycles import CycleFailing
from luigi_appliance.scheduler.families import FamilyScoped
from luigi_appliance.scheduler.work import IndexedScheduler


class Scheduler(CycleFailing, FamilyScoped, IndexedScheduler):
    """luigi's Scheduler that fails tasks caught in a dependency cycle, with the cycle as reason
    (cycles.py), hands out work only by the caller's families (families.py), and answers get_work
    and count_pending from incrementally kept indexes (work.py, index.py)."""
