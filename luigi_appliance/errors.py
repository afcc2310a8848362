"""Exception types shared across the appliance.

Every error a sysadmin can cause carries enough context (file, line, key) to be fixed
without reading the source.
"""

from __future__ import annotations

from luigi_appliance.settings.issues import ConfigIssue


class ApplianceError(Exception):
    """Base class: an error the CLI reports as one clean line, without a traceback."""


class ConfigError(ApplianceError):
    """All problems found in a configuration, reported together."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class SecretError(ApplianceError):
    """A secret could not be read or decrypted (the message never contains the secret)."""


class StateError(ApplianceError):
    """The scheduler state snapshot could not be read or written."""


class CredentialsError(ApplianceError):
    """Worker credentials are missing, unreadable or malformed."""


class UsersFileError(ApplianceError):
    """The local users file is malformed or could not be updated."""


class HistoryError(ApplianceError):
    """The task history database is misconfigured, unreachable or at the wrong schema version."""


class UsageError(ApplianceError):
    """A command line that cannot work: one line, and exit status 2 as argparse's own errors."""
