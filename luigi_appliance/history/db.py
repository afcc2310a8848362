"""Engines for the history database: the scheduler's DML role, or the owner for migrations."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from luigi_appliance.errors import HistoryError
from luigi_appliance.history.settings import HistorySettings
from luigi_appliance.secret_values import secret_text

log = logging.getLogger(__name__)

APPLICATION_NAME = "luigi-appliance"


def describe(settings: HistorySettings, *, admin: bool = False) -> str:
    """Where the history is, for messages (never with a password)."""
    if settings.backend == "sqlite":
        return f"sqlite:{settings.sqlite_path}"
    user = settings.admin_user if admin else settings.user
    return f"postgresql://{user}@{settings.host}:{settings.port}/{settings.dbname} (sslmode={settings.sslmode})"


def _sqlite_engine(settings: HistorySettings) -> Engine:
    engine = sa.create_engine(f"sqlite:///{settings.sqlite_path}", connect_args={"timeout": settings.statement_timeout})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL: pages read while the writer thread writes; foreign keys as on PostgreSQL.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _postgres_engine(settings: HistorySettings, admin: bool, pool_size: int) -> Engine:
    if admin and not settings.admin_user:
        raise HistoryError("[history] admin_user is not set: migrations run as the database owner "
                           "(see docs/history.md); set admin_user and admin_password_file")
    user = settings.admin_user if admin else settings.user
    password = (secret_text(settings.admin_password, settings.admin_password_file) if admin
                else secret_text(settings.password, settings.password_file))
    url = URL.create("postgresql+psycopg2", username=user, password=password, database=settings.dbname)
    connect_args: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "sslmode": settings.sslmode,
        "connect_timeout": max(1, int(settings.connect_timeout)),
        "application_name": APPLICATION_NAME,
        # Bounded statements: a stuck query never holds the writer or a page for long.
        "options": f"-c statement_timeout={int(settings.statement_timeout * 1000)}",
    }
    if settings.sslrootcert is not None:
        connect_args["sslrootcert"] = str(settings.sslrootcert)
    # values_plus_batch: executemany UPDATEs (worker hosts) go as psycopg2's execute_batch, one
    # round trip per page of rows instead of one statement per row.
    return sa.create_engine(url, connect_args=connect_args, pool_size=pool_size, max_overflow=0,
                            pool_pre_ping=True, pool_timeout=settings.connect_timeout,
                            pool_recycle=3600, executemany_mode="values_plus_batch")


def make_engine(settings: HistorySettings, *, admin: bool = False, pool_size: int = 1) -> Engine:
    """An engine for ``settings`` (no connection is made here)."""
    if settings.backend == "sqlite":
        return _sqlite_engine(settings)
    if settings.backend == "postgresql":
        return _postgres_engine(settings, admin, pool_size)
    raise HistoryError("task history is not enabled: set [history] backend = postgresql (or sqlite)")
