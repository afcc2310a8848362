"""The history schema's Alembic migrations, against the real PostgreSQL cluster and SQLite.

From an empty database, and from a database that stock luigi's own DbTaskHistory created and
filled (its code, run here against the test cluster), with the rows kept and converted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi.configuration
import psycopg2
import pytest
import sqlalchemy as sa
from luigi.scheduler import Task
from pg_cluster import Database, cluster

from conftest import cli, write_config
from luigi_appliance.history import migrate, schema


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return cluster().create_database(tmp_path)


def conf_for(tmp_path: Path, db: Database) -> Path:
    return write_config(tmp_path / "scheduler.conf", f"[secrets]\nkey_file = {tmp_path / 'secret.key'}\n"
                        f"[auth]\nusers_file = {tmp_path / 'users'}\n" + db.history_section())


def db_cli(tmp_path: Path, db: Database, *args: str):
    (tmp_path / "users").touch(mode=0o600)
    return cli("--config", str(conf_for(tmp_path, db)), "db", *args)


def test_upgrade_from_empty_to_head_and_current(tmp_path: Path, db: Database) -> None:
    before = db_cli(tmp_path, db, "current")
    assert before.returncode == 1 and "revision <none>" in before.stdout and "needs" in before.stdout
    result = db_cli(tmp_path, db, "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"<empty> -> {schema.HEAD_REVISION}" in result.stdout and "granted" in result.stdout
    current = db_cli(tmp_path, db, "current")
    assert current.returncode == 0 and "up to date" in current.stdout
    assert db_cli(tmp_path, db, "upgrade").returncode == 0  # idempotent
    # Alembic's head is the revision the code writes, and the migrated tables are schema.py's.
    assert migrate.head_revision() == schema.HEAD_REVISION
    engine = sa.create_engine(db.url(owner=True))
    inspector = sa.inspect(engine)
    for table in schema.metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys())
        declared = {ix.name: [c.name for c in ix.columns] for ix in table.indexes}
        found = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes(table.name)
                 if ix["name"] in declared}
        assert found == declared, table.name
    engine.dispose()
    history = cli("db", "history")
    assert history.returncode == 0 and "0001 -> 0002 (head)" in history.stdout


def test_scheduler_role_has_dml_only(tmp_path: Path, db: Database) -> None:
    assert db_cli(tmp_path, db, "upgrade").returncode == 0
    conn = psycopg2.connect(db.url().replace("postgresql+psycopg2", "postgresql"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("INSERT INTO tasks (task_id, name) VALUES ('t', 'T') RETURNING id")
        cur.execute("DELETE FROM tasks")
        for ddl in ("CREATE TABLE evil (x int)", "ALTER TABLE tasks ADD COLUMN x int", "DROP TABLE task_events"):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(ddl)
    conn.close()


def test_db_commands_name_the_database_when_it_is_unreachable(tmp_path: Path, db: Database) -> None:
    db.owner_password_file.write_text("wrong-password\n")
    result = db_cli(tmp_path, db, "upgrade")
    assert result.returncode == 1
    assert f"{db.owner}@localhost:{db.cluster.port}/{db.name}" in result.stderr
    assert "password authentication failed" in result.stderr and "Traceback" not in result.stderr


def stock_history(db: Database) -> None:
    """Tables and rows made by luigi 3.8.1's own DbTaskHistory (its code, its SQLAlchemy use)."""
    from luigi.db_task_history import DbTaskHistory

    config = luigi.configuration.get_config()
    if not config.has_section("task_history"):
        config.add_section("task_history")
    config.set("task_history", "db_connection", db.url(owner=True))
    history = DbTaskHistory()
    for i in range(3):
        task = Task(f"Stock_{i}", "PENDING", [], family="Stock", params={"day": f"2026-01-0{i + 1}", "n": str(i)})
        history.task_scheduled(task)
        history.task_started(task, f"old-host-{i}")
        history.task_finished(task, i != 1)
    history.engine.dispose()
    config.remove_section("task_history")


def test_adopts_a_stock_luigi_history_with_its_data(tmp_path: Path, db: Database) -> None:
    stock_history(db)
    assert db.query("SELECT count(*) FROM task_events") == [(9,)]
    # A known naive local time, to check the conversion to UTC.
    db.query("UPDATE task_events SET ts = '2026-01-15 12:00:00' WHERE id = 1")
    before = db.query("SELECT t.task_id, t.name, t.host, e.event_name FROM tasks t JOIN task_events e "
                      "ON e.task_id = t.id ORDER BY e.id")
    params_before = db.query("SELECT task_id, name, value FROM task_parameters ORDER BY 1, 2")
    result = db_cli(tmp_path, db, "upgrade", "--naive-timezone", "Europe/Paris")
    assert result.returncode == 0, result.stderr
    assert "adopted a stock luigi task history" in result.stdout
    assert db.query("SELECT version_num FROM alembic_version") == [(schema.HEAD_REVISION,)]
    after = db.query("SELECT t.task_id, t.name, t.host, e.event_name FROM tasks t JOIN task_events e "
                     "ON e.task_id = t.id ORDER BY e.id")
    assert after == before and len(after) == 9
    assert db.query("SELECT task_id, name, value FROM task_parameters ORDER BY 1, 2") == params_before
    (ts,) = db.query("SELECT ts FROM task_events WHERE id = 1")[0]
    assert ts == dt.datetime(2026, 1, 15, 11, 0, tzinfo=dt.timezone.utc)  # 12:00 in Paris (CET)
    indexes = {row[0] for row in db.query("SELECT indexname FROM pg_indexes WHERE tablename = 'task_events'")}
    assert {"ux_task_events_uid", "ix_task_events_ts_id", "ix_task_events_task_id_ts_id"} <= indexes
    assert "ix_task_events_ts" not in indexes  # superseded by (ts, id)


def test_partial_foreign_schema_is_refused(tmp_path: Path, db: Database) -> None:
    db.query(f"SET ROLE {db.owner}; CREATE TABLE tasks (id int primary key, name text); RESET ROLE")
    result = db_cli(tmp_path, db, "upgrade")
    assert result.returncode == 1 and "only some of luigi's history tables" in result.stderr


def test_sqlite_upgrade_and_downgrade_round_trip(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    result = migrate.upgrade(engine, naive_timezone="UTC")
    assert (result.before, result.after, result.adopted) == (None, schema.HEAD_REVISION, False)
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "base")
        assert sa.inspect(connection).get_table_names() == ["alembic_version"]
    assert migrate.upgrade(engine, naive_timezone="UTC").after == schema.HEAD_REVISION
    engine.dispose()
