"""Connections to the [ha] database: autocommit psycopg2 connections for the lease, writer and tail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2

from luigi_appliance.errors import ApplianceError
from luigi_appliance.ha.settings import HaSettings
from luigi_appliance.secret_values import secret_text


class HaDatabaseError(ApplianceError):
    """The [ha] database is unreachable or refused the connection (the message has no password)."""


def describe(settings: HaSettings) -> str:
    """Where the HA database is, for messages (never with a password)."""
    return (f"postgresql://{settings.user}@{settings.host}:{settings.port}/{settings.dbname} "
            f"(schema {settings.schema}, sslmode={settings.sslmode})")


def connect(settings: HaSettings, application_name: str, *, statement_timeout: float | None = None) -> Any:
    """A new autocommit connection to the [ha] database; HaDatabaseError naming the server if it fails.

    TCP keepalives and tcp_user_timeout are a lease_ttl long, so a server that vanished without a
    reset (a dead host, a partition) fails a blocked call within about one lease instead of hanging
    the thread that must notice it lost the lease.
    """
    ttl = max(1, int(settings.lease_ttl))
    params: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "sslmode": settings.sslmode,
        "connect_timeout": max(1, int(settings.connect_timeout)),
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": ttl,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": ttl * 1000,
    }
    password = secret_text(settings.password, settings.password_file)  # read at every reconnect
    if password is not None:
        params["password"] = password
    if settings.sslrootcert is not None:
        params["sslrootcert"] = str(settings.sslrootcert)
    if statement_timeout is not None:
        params["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        # libpq's message names the server and the failure, never the password.
        reason = " ".join(str(exc).split())
        raise HaDatabaseError(f"[ha] cannot connect to the database at {describe(settings)}: {reason}") from None
    conn.autocommit = True
    return conn


def connector(settings: HaSettings, application_name: str, *,
              statement_timeout: float | None = None) -> Callable[[], Any]:
    """``connect`` bound to its arguments: what LeaseKeeper, JournalWriter and JournalTail call."""
    return lambda: connect(settings, application_name, statement_timeout=statement_timeout)
