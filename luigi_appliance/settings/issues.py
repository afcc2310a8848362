"""A problem found in a configuration file, located as precisely as we can."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located as precisely as we can."""

    file: str
    line: int | None
    section: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        # Line 0: a value given on the command line (config_loader's overrides), which has none.
        where = self.file if not self.line else f"{self.file}:{self.line}"
        what = ""
        if self.section and self.key:
            what = f" [{self.section}] {self.key}:"
        elif self.section:
            what = f" [{self.section}]:"
        return f"{where}:{what} {self.message}"
