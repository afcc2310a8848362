"""Alembic, driven from the package: ``luigi-appliance db upgrade|current|history``.

Migrations run as the database owner ([history] admin_user). A database that stock luigi's
DbTaskHistory created (its three tables, no alembic_version) is adopted: stamped at the
baseline revision 0001, which is exactly that schema, then upgraded with its data.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from luigi_appliance.errors import HistoryError
from luigi_appliance.history.schema import HEAD_REVISION

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
_STOCK_TABLES = {"tasks": {"id", "task_id", "name", "host"},
                 "task_parameters": {"task_id", "name", "value"},
                 "task_events": {"id", "task_id", "event_name", "ts"}}
_HISTORY_TABLES = ("tasks", "task_parameters", "task_events")
_ZONE = re.compile(r"^[A-Za-z0-9_+/-]{1,64}$")


def alembic_config(connection: Connection | None = None, naive_timezone: str = "UTC") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    cfg.attributes["naive_timezone"] = naive_timezone
    return cfg


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def local_timezone() -> str:
    """The IANA name of this host's zone ($TZ, else /etc/localtime's target), or UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and _ZONE.match(tz):
        return tz
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return "UTC"
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "UTC"


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None
    after: str
    adopted: bool


def _is_stock_schema(connection: Connection) -> bool:
    """luigi's three tables with at least luigi's columns, and no alembic_version."""
    inspector = sa.inspect(connection)
    names = set(inspector.get_table_names())
    present = [t for t in _HISTORY_TABLES if t in names]
    if not present:
        return False
    if len(present) != len(_HISTORY_TABLES):
        raise HistoryError(f"the database has only some of luigi's history tables ({', '.join(present)}): "
                           "not a schema luigi-appliance can adopt; inspect it by hand")
    for table, columns in _STOCK_TABLES.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        if not columns <= have:
            raise HistoryError(f"table {table} lacks column(s) {', '.join(sorted(columns - have))} of luigi's "
                               "schema: not a luigi task history this version can adopt")
    return True


def upgrade(engine: Engine, *, naive_timezone: str, grant_to: str | None = None) -> UpgradeResult:
    """Upgrade to head (adopting a stock luigi schema first), then grant DML to ``grant_to``."""
    if not _ZONE.match(naive_timezone):
        raise HistoryError(f"--naive-timezone {naive_timezone!r}: expected a zone name such as UTC or Europe/Paris")
    with engine.begin() as connection:
        before = current_revision(connection)
        adopted = before is None and _is_stock_schema(connection)
        cfg = alembic_config(connection, naive_timezone)
        if adopted:
            log.warning("Adopting a task history created by stock luigi: stamping it at revision %s", BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
        after = current_revision(connection) or ""
        if grant_to and connection.dialect.name == "postgresql":
            grant_dml(connection, grant_to)
    return UpgradeResult(before, after, adopted)


def grant_dml(connection: Connection, role: str) -> None:
    """The scheduler's role gets DML on the history tables and nothing else (no DDL, no ownership)."""
    quoted = connection.dialect.identifier_preparer.quote(role)
    tables = ", ".join(_HISTORY_TABLES)
    connection.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {quoted}"))
    connection.execute(sa.text(f"GRANT SELECT ON alembic_version TO {quoted}"))
    connection.execute(sa.text(f"GRANT USAGE, SELECT ON SEQUENCE tasks_id_seq, task_events_id_seq TO {quoted}"))


def check_schema(connection: Connection) -> None:
    """Raise HistoryError unless the database is at the revision this code writes."""
    try:
        revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.ProgrammingError as exc:  # PostgreSQL: no such table
        raise HistoryError("the history database has no schema yet: run 'luigi-appliance db upgrade' "
                           "as the administrator") from exc
    except sa.exc.OperationalError as exc:
        if "no such table" in str(exc):  # SQLite
            raise HistoryError("the history database has no schema yet: run 'luigi-appliance db upgrade'") from exc
        raise
    if revision != HEAD_REVISION:
        raise HistoryError(f"the history database is at schema revision {revision}, this version writes "
                           f"{HEAD_REVISION}: run 'luigi-appliance db upgrade'")


def history_lines() -> list[str]:
    """Every revision, newest first, with its first docstring line."""
    script = ScriptDirectory.from_config(alembic_config())
    lines = []
    for rev in script.walk_revisions():
        doc = (rev.doc or "").strip().splitlines()[0] if rev.doc else ""
        head = " (head)" if rev.is_head else ""
        lines.append(f"{rev.down_revision or '<base>'} -> {rev.revision}{head}: {doc}")
    return lines
