"""The one scheduler class ``serve`` runs, composed from the behaviours of this package."""

from __future__ import annotations

from luigi_appliance.scheduler.cycles import CycleFailing
from luigi_appliance.scheduler.families import FamilyScoped


class Scheduler(CycleFailing, FamilyScoped):
    """luigi's Scheduler that fails tasks caught in a dependency cycle, with the cycle as reason
    (cycles.py), and hands out work only by the caller's families (families.py)."""
