"""The history tables as the code uses them (the head of the Alembic migrations).

The first three columns of each table are exactly luigi's DbTaskHistory schema, so a database
luigi created is adopted as it is (migration 0001 is that schema); 0002 adds what the appliance
needs. ``tests/system/test_history_migrations.py`` checks this module against the migrated database.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

HEAD_REVISION = "0002"

metadata = sa.MetaData()


class UTCDateTime(TypeDecorator):
    """Aware datetimes in UTC: ``timestamptz`` on PostgreSQL, UTC text without offset on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


tasks = sa.Table(
    "tasks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("task_id", sa.String(200)),
    sa.Column("name", sa.String(128)),
    sa.Column("host", sa.String(128)),
    sa.Index("ix_tasks_task_id_id", "task_id", "id"),
    sa.Index("ix_tasks_name_id", "name", "id"),
)

task_parameters = sa.Table(
    "task_parameters", metadata,
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text),
)

task_events = sa.Table(
    "task_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id")),
    sa.Column("event_name", sa.String(20)),
    sa.Column("ts", UTCDateTime, nullable=False),
    # Set by the appliance: unique per event, so a batch replayed after an unacknowledged
    # commit is not stored twice. NULL for events adopted from stock luigi.
    sa.Column("uid", sa.String(32)),
    sa.Column("principal", sa.String(256)),
    sa.Column("worker_host", sa.String(255)),
    sa.Index("ux_task_events_uid", "uid", unique=True),
    sa.Index("ix_task_events_ts_id", "ts", "id"),
    sa.Index("ix_task_events_task_id_ts_id", "task_id", "ts", "id"),
)

alembic_version = sa.Table("alembic_version", sa.MetaData(), sa.Column("version_num", sa.String(32)))
