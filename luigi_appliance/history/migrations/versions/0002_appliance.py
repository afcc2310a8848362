"""Appliance history: UTC timestamps, event uid, principal and worker host, page indexes.

* task_events.ts becomes timestamptz (PostgreSQL). Stock luigi wrote naive local times of the
  scheduler host: they are read in the zone given as ``naive_timezone`` (``db upgrade
  --naive-timezone``, default the local zone of the host running the upgrade).
* uid (unique), principal and worker_host on task_events.
* One composite index per page query; the single-column indexes they make redundant go.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _drop_index_if_exists(name: str, table: str) -> None:
    bind = op.get_bind()
    if name in {ix["name"] for ix in sa.inspect(bind).get_indexes(table)}:
        op.drop_index(name, table_name=table)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        zone = context.config.attributes.get("naive_timezone", "UTC")
        # psycopg2 interpolates parameters on the client, so the zone may be a bound value here.
        op.get_bind().execute(sa.text("ALTER TABLE task_events ALTER COLUMN ts TYPE timestamptz "
                                      "USING ts AT TIME ZONE :zone").bindparams(zone=zone))
        # luigi's own upgrade path may have left this one behind (ix_task_id on tasks.task_id).
        _drop_index_if_exists("ix_task_id", "tasks")
    op.add_column("task_events", sa.Column("uid", sa.String(32)))
    op.add_column("task_events", sa.Column("principal", sa.String(256)))
    op.add_column("task_events", sa.Column("worker_host", sa.String(255)))
    op.create_index("ux_task_events_uid", "task_events", ["uid"], unique=True)
    op.create_index("ix_task_events_ts_id", "task_events", ["ts", "id"])
    op.create_index("ix_task_events_task_id_ts_id", "task_events", ["task_id", "ts", "id"])
    op.create_index("ix_tasks_task_id_id", "tasks", ["task_id", "id"])
    op.create_index("ix_tasks_name_id", "tasks", ["name", "id"])
    if postgres:
        # by_params: equality on (name, value) without indexing whole TEXT values (btree entries
        # are limited to about 2.7 kB).
        op.execute("CREATE INDEX ix_task_parameters_name_md5 ON task_parameters (name, md5(value))")
    for name, table in (("ix_task_events_ts", "task_events"), ("ix_task_events_task_id", "task_events"),
                        ("ix_tasks_task_id", "tasks"), ("ix_tasks_name", "tasks")):
        _drop_index_if_exists(name, table)


def downgrade() -> None:
    op.create_index("ix_tasks_name", "tasks", ["name"])
    op.create_index("ix_tasks_task_id", "tasks", ["task_id"])
    op.create_index("ix_task_events_task_id", "task_events", ["task_id"])
    op.create_index("ix_task_events_ts", "task_events", ["ts"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_task_parameters_name_md5")
    for name, table in (("ix_tasks_name_id", "tasks"), ("ix_tasks_task_id_id", "tasks"),
                        ("ix_task_events_task_id_ts_id", "task_events"), ("ix_task_events_ts_id", "task_events"),
                        ("ux_task_events_uid", "task_events")):
        op.drop_index(name, table_name=table)
    for column in ("worker_host", "principal", "uid"):
        op.drop_column("task_events", column)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE task_events ALTER COLUMN ts TYPE timestamp USING ts AT TIME ZONE 'UTC'")
