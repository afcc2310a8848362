"""The appliance's scheduler: luigi's, failing dependency cycles and handing out work by family."""

from luigi_appliance.scheduler.scheduler import Scheduler

__all__ = ["Scheduler"]
