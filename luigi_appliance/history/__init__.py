"""Task history: a non-blocking luigi TaskHistory, its PostgreSQL/SQLite store, pages and retention.

Importing this package is cheap (no SQLAlchemy): the configuration loader uses
:mod:`luigi_appliance.history.settings`; the scheduler imports :mod:`.service` only when history
is enabled. docs/history.md is the operator's guide.
"""
