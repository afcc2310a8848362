"""The [logging] section: how much the scheduler logs, and in which format (logsetup.py)."""

from __future__ import annotations

from dataclasses import dataclass

from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import section
from luigi_appliance.settings.parsers import choice


@dataclass(frozen=True)
class LoggingSettings:
    level: str = key(choice("debug", "info", "warning", "error"), "info", "debug, info, warning or error")
    format: str = key(choice("auto", "journal", "text"), "auto", "auto, journal or text")


LOGGING = section("logging", LoggingSettings)
