"""luigi's DbTaskHistory schema (luigi 3.8), exactly as its create_all() makes it.

A database stock luigi created is stamped at this revision by ``luigi-appliance db upgrade``
instead of running it.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.String(200)),
        sa.Column("name", sa.String(128)),
        sa.Column("host", sa.String(128)),
    )
    op.create_index("ix_tasks_task_id", "tasks", ["task_id"])
    op.create_index("ix_tasks_name", "tasks", ["name"])
    op.create_table(
        "task_parameters",
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text),
    )
    op.create_table(
        "task_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id")),
        sa.Column("event_name", sa.String(20)),
        sa.Column("ts", sa.TIMESTAMP, nullable=False),
    )
    op.create_index("ix_task_events_task_id", "task_events", ["task_id"])
    op.create_index("ix_task_events_ts", "task_events", ["ts"])


def downgrade() -> None:
    op.drop_table("task_events")
    op.drop_table("task_parameters")
    op.drop_table("tasks")
