"""``luigi-appliance db upgrade|current|history`` and ``luigi-appliance history prune``."""

from __future__ import annotations

import argparse
import datetime as dt

from luigi_appliance.errors import HistoryError


def _history_settings(args: argparse.Namespace):
    from luigi_appliance.config_loader import config_paths, load_settings

    settings = load_settings(config_paths(args.config)).history
    if not settings.enabled:
        raise HistoryError("task history is not enabled: set [history] backend = postgresql (or sqlite) "
                           "in scheduler.conf")
    return settings


def _db_error(what: str, exc: Exception) -> HistoryError | None:
    """A database error as one clean line naming the database; None for anything else."""
    import sqlalchemy as sa

    if not isinstance(exc, sa.exc.SQLAlchemyError):
        return None
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return HistoryError(f"{what}: {detail[0] if detail else type(exc).__name__}")


def cmd_db(args: argparse.Namespace) -> int:
    from luigi_appliance.history import migrate

    if args.db_command == "history":
        for line in migrate.history_lines():
            print(line)
        return 0
    from luigi_appliance.history.db import describe, make_engine

    settings = _history_settings(args)
    engine = make_engine(settings, admin=settings.backend == "postgresql")
    try:
        if args.db_command == "upgrade":
            zone = args.naive_timezone or migrate.local_timezone()
            grant = settings.user if settings.backend == "postgresql" and settings.user != settings.admin_user else None
            result = migrate.upgrade(engine, naive_timezone=zone, grant_to=grant)
            if result.adopted:
                print(f"adopted a stock luigi task history (naive timestamps read as {zone})")
            print(f"{describe(settings, admin=True)}: {result.before or '<empty>'} -> {result.after}")
            if grant:
                print(f"granted SELECT, INSERT, UPDATE, DELETE on the history tables to {grant}")
            return 0
        with engine.connect() as connection:
            current = migrate.current_revision(connection)
        head = migrate.head_revision()
        state = "up to date" if current == head else "needs 'luigi-appliance db upgrade'"
        print(f"{describe(settings, admin=True)}: revision {current or '<none>'}, head {head} ({state})")
        return 0 if current == head else 1
    except Exception as exc:
        error = _db_error(f"database {describe(settings, admin=True)}", exc)
        if error is None:
            raise
        raise error from exc
    finally:
        engine.dispose()


def cmd_history(args: argparse.Namespace) -> int:
    from luigi_appliance.history import prune as pruning
    from luigi_appliance.history.db import describe, make_engine
    from luigi_appliance.settings.parsers import parse_duration

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise HistoryError(f"--older-than: {exc}") from None
    if age < 3600:
        raise HistoryError("--older-than: expected at least 1h (a guard against deleting current history)")
    settings = _history_settings(args)
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=age)
    engine = make_engine(settings)
    try:
        if args.dry_run:
            planned = pruning.count(engine, cutoff)
            print(f"dry run: would delete {planned.events} event(s) before {cutoff:%Y-%m-%d %H:%M:%S} UTC and "
                  f"{planned.tasks} task(s) left without events, from {describe(settings)}")
            return 0
        bar = pruning.ProgressBar()
        result = pruning.prune(engine, cutoff, batch_size=args.batch_size, progress=bar)
        bar.finish()
        message = (f"deleted {result.events} event(s) before {cutoff:%Y-%m-%d %H:%M:%S} UTC and {result.tasks} "
                   f"task(s) left without events, from {describe(settings)}")
        print(message)
        return 0
    except Exception as exc:
        error = _db_error(f"database {describe(settings)}", exc)
        if error is None:
            raise
        raise error from exc
    finally:
        engine.dispose()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Adds ``db`` and ``history`` to the luigi-appliance command line."""
    db = sub.add_parser("db", help="task history database schema (run as the database owner, [history] admin_user)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="create or upgrade the schema to this version's; adopts a "
                                "history created by stock luigi; grants the scheduler's role DML")
    upgrade.add_argument("--naive-timezone", help="zone of the naive timestamps stock luigi wrote "
                         "(default: this host's zone)")
    db_sub.add_parser("current", help="show the schema revision; exit 1 if it is not this version's")
    db_sub.add_parser("history", help="list the schema revisions")
    db.set_defaults(func=cmd_db)

    history = sub.add_parser("history", help="task history maintenance")
    history_sub = history.add_subparsers(dest="history_command", required=True)
    prune = history_sub.add_parser("prune", help="delete events older than a given age, in batches")
    prune.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12h (at least 1h)")
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    prune.add_argument("--batch-size", type=int, default=5000, help="rows per transaction (default 5000)")
    history.set_defaults(func=cmd_history)


