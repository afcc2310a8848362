"""The HA tables in PostgreSQL: the lease with its epoch, the fenced journal, the snapshot.

Every write of the leader is fenced in the same statement (tests/ha/RESEARCH.md §1):
``WITH l AS (SELECT epoch FROM lease WHERE id = 1 AND epoch = %s FOR SHARE)`` conflicts with a
takeover's UPDATE of the lease row, so either the takeover waits until the write committed (and
the new leader then reads it) or the write sees the new epoch and inserts nothing. Each method
takes an autocommit psycopg2 connection and runs one statement (``ensure_schema`` excepted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

# ensure_schema's advisory lock: one per schema, so two nodes starting at once create the tables once.
_SCHEMA_LOCK = "luigi_appliance.ha.schema:{}"

_CREATE_LEASE = """CREATE TABLE {s}.lease (
    id int PRIMARY KEY CHECK (id = 1), node text NOT NULL, url text NOT NULL, epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL, changed_at timestamptz NOT NULL);
INSERT INTO {s}.lease VALUES (1, '', '', 0, '-infinity', now()) ON CONFLICT DO NOTHING"""
_CREATE_JOURNAL = """CREATE TABLE {s}.journal (
    pos bigserial PRIMARY KEY, epoch bigint NOT NULL, seq bigint NOT NULL, at double precision NOT NULL,
    rec jsonb NOT NULL, UNIQUE (epoch, seq))"""
_CREATE_SNAPSHOT = """CREATE TABLE {s}.snapshot (
    id int PRIMARY KEY CHECK (id = 1), pos bigint NOT NULL, epoch bigint NOT NULL, taken_at timestamptz NOT NULL,
    blob bytea NOT NULL, deleted_through bigint NOT NULL)"""


@dataclass(frozen=True)
class LeaseView:
    """The lease row as seen at a moment: who holds it, how to reach them, for how long yet.

    ``expires_in`` is by the database clock, in seconds; negative once expired (``-inf`` for a
    released lease or one never taken)."""

    node: str
    url: str
    epoch: int
    expires_in: float

    @property
    def live(self) -> bool:
        return self.expires_in >= 0


@dataclass(frozen=True)
class JournalRow:
    pos: int
    epoch: int
    seq: int
    at: float
    rec: dict[str, Any]


@dataclass(frozen=True)
class SnapshotRow:
    pos: int
    epoch: int
    blob: bytes
    deleted_through: int


class HaStore:
    """The statements on ``schema``'s tables (the name is validated by [ha] schema's parser)."""

    def __init__(self, schema: str):
        self.schema = schema
        self.channel = f"{schema}_journal"

    def _sql(self, text: str, **more: sql.Composable) -> sql.Composed:
        """``text`` with ``{s}`` standing for the schema, quoted as an identifier."""
        return sql.SQL(text).format(s=sql.Identifier(self.schema), **more)

    def ensure_schema(self, conn: Any) -> None:
        """Create the schema, the tables and the lease row when missing (both nodes may start at once)."""
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_SCHEMA_LOCK.format(self.schema),))
                # Skip what exists: a role may lack CREATE on the database once the schema is made.
                cur.execute("SELECT to_regnamespace(%s) IS NOT NULL", (self.schema,))
                if not cur.fetchone()[0]:
                    cur.execute(self._sql("CREATE SCHEMA {s}"))
                cur.execute(self._sql("SELECT to_regclass({lease}) IS NOT NULL, to_regclass({journal}) IS NOT NULL, "
                                      "to_regclass({snapshot}) IS NOT NULL",
                                      lease=sql.Literal(f"{self.schema}.lease"),
                                      journal=sql.Literal(f"{self.schema}.journal"),
                                      snapshot=sql.Literal(f"{self.schema}.snapshot")))
                lease, journal, snapshot = cur.fetchone()
                if not lease:
                    cur.execute(self._sql(_CREATE_LEASE))
                if not journal:
                    cur.execute(self._sql(_CREATE_JOURNAL))
                if not snapshot:
                    cur.execute(self._sql(_CREATE_SNAPSHOT))
            conn.commit()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        finally:
            if not conn.closed:
                conn.autocommit = True

    def lease(self, conn: Any) -> LeaseView:
        """The lease row now, its expiry measured by the database clock."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT node, url, epoch, extract(epoch FROM expires_at) - extract(epoch FROM now()) "
                                  "FROM {s}.lease WHERE id = 1"))
            node, url, epoch, expires_in = cur.fetchone()
        return LeaseView(node, url, int(epoch), float(expires_in))

    def acquire(self, conn: Any, node: str, url: str, ttl: float) -> int | None:
        """Take the lease with a new epoch if it is free, expired, or held under this node's own name
        (a restarted node fences its former self); None if another node holds it."""
        with conn.cursor() as cur:
            cur.execute(self._sql("""UPDATE {s}.lease
                SET node = %s, url = %s, epoch = epoch + 1, expires_at = now() + make_interval(secs => %s),
                    changed_at = now()
                WHERE id = 1 AND (expires_at < now() OR node = %s OR node = '') RETURNING epoch"""),
                        (node, url, ttl, node))
            row = cur.fetchone()
        return None if row is None else int(row[0])

    def renew(self, conn: Any, node: str, epoch: int, ttl: float) -> bool:
        """Extend this node's lease of ``epoch`` by ``ttl`` from now; False once it expired or was taken."""
        with conn.cursor() as cur:
            cur.execute(self._sql("""UPDATE {s}.lease SET expires_at = now() + make_interval(secs => %s)
                WHERE id = 1 AND node = %s AND epoch = %s AND expires_at >= now() RETURNING epoch"""),
                        (ttl, node, epoch))
            return cur.fetchone() is not None

    def release(self, conn: Any, node: str, epoch: int) -> None:
        """Give the lease up at once (the standby takes over at its next check, without waiting for expiry)."""
        with conn.cursor() as cur:
            cur.execute(self._sql("""UPDATE {s}.lease SET expires_at = '-infinity', changed_at = now()
                WHERE id = 1 AND node = %s AND epoch = %s"""), (node, epoch))

    def append(self, conn: Any, epoch: int, rows: list[tuple[int, float, str]]) -> list[int] | None:
        """Insert ``(seq, at, rec_json)`` rows under ``epoch`` if it is still the lease's; the positions
        of the rows inserted, in order (none for a batch an earlier attempt already inserted), or
        None when fenced: the lease has another epoch, nothing was inserted.

        A NOTIFY on ``channel`` goes out, at commit, only when rows were inserted."""
        with conn.cursor() as cur:
            cur.execute(self._sql("""
                WITH l AS (SELECT epoch FROM {s}.lease WHERE id = 1 AND epoch = %s FOR SHARE),
                ins AS (INSERT INTO {s}.journal (epoch, seq, at, rec)
                        SELECT l.epoch, r.seq, r.at, r.rec
                        FROM l, unnest(%s::bigint[], %s::float8[], %s::jsonb[]) WITH ORDINALITY AS r(seq, at, rec, n)
                        ORDER BY r.n
                        ON CONFLICT (epoch, seq) DO NOTHING RETURNING pos),
                n AS (SELECT pg_notify(%s, '') FROM (SELECT 1 FROM ins LIMIT 1) AS any_row)
                SELECT (SELECT count(*) FROM l), (SELECT array_agg(pos ORDER BY pos) FROM ins),
                       (SELECT count(*) FROM n)"""),
                        (epoch, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], self.channel))
            held, positions, _ = cur.fetchone()
        return [int(p) for p in positions or ()] if held else None

    def positions(self, conn: Any, epoch: int, seqs: list[int]) -> dict[int, int]:
        """seq -> pos of ``epoch``'s rows among ``seqs`` (for a batch retried after a lost connection)."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT seq, pos FROM {s}.journal WHERE epoch = %s AND seq = ANY(%s::bigint[])"),
                        (epoch, seqs))
            return {int(seq): int(pos) for seq, pos in cur.fetchall()}

    def read_after(self, conn: Any, pos: int, limit: int) -> list[JournalRow]:
        """At most ``limit`` journal rows after ``pos``, in order."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT pos, epoch, seq, at, rec FROM {s}.journal WHERE pos > %s "
                                  "ORDER BY pos LIMIT %s"), (pos, limit))
            return [JournalRow(int(p), int(e), int(q), float(a), r) for p, e, q, a, r in cur.fetchall()]

    def last_pos(self, conn: Any) -> int:
        """The highest position written: the journal's last row, or what a compaction deleted through
        when the journal is empty since (0 when nothing was ever written)."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT greatest((SELECT max(pos) FROM {s}.journal), "
                                  "(SELECT greatest(pos, deleted_through) FROM {s}.snapshot WHERE id = 1), 0)"))
            return int(cur.fetchone()[0])

    def save_snapshot(self, conn: Any, epoch: int, pos: int, blob: bytes, delete_through: int) -> bool:
        """Store the snapshot including the journal through ``pos`` and delete the journal rows through
        ``delete_through`` (<= pos), fenced like ``append``: False when ``epoch`` lost the lease."""
        if delete_through > pos:
            raise ValueError(f"delete_through {delete_through} is past the snapshot's position {pos}")
        with conn.cursor() as cur:
            cur.execute(self._sql("""
                WITH l AS (SELECT epoch FROM {s}.lease WHERE id = 1 AND epoch = %(epoch)s FOR SHARE),
                up AS (INSERT INTO {s}.snapshot (id, pos, epoch, taken_at, blob, deleted_through)
                       SELECT 1, %(pos)s, l.epoch, now(), %(blob)s, %(through)s FROM l
                       ON CONFLICT (id) DO UPDATE SET pos = EXCLUDED.pos, epoch = EXCLUDED.epoch,
                           taken_at = EXCLUDED.taken_at, blob = EXCLUDED.blob,
                           deleted_through = greatest(snapshot.deleted_through, EXCLUDED.deleted_through)
                       RETURNING 1),
                del AS (DELETE FROM {s}.journal WHERE pos <= %(through)s AND EXISTS (SELECT 1 FROM l))
                SELECT count(*) FROM l"""),
                        {"epoch": epoch, "pos": pos, "blob": blob, "through": delete_through})
            return bool(cur.fetchone()[0])

    def snapshot(self, conn: Any) -> SnapshotRow | None:
        """The stored snapshot, or None before the first compaction."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT pos, epoch, blob, deleted_through FROM {s}.snapshot WHERE id = 1"))
            row = cur.fetchone()
        return None if row is None else SnapshotRow(int(row[0]), int(row[1]), bytes(row[2]), int(row[3]))

    def deleted_through(self, conn: Any) -> int:
        """The journal position through which rows were deleted by compaction (0 if none)."""
        with conn.cursor() as cur:
            cur.execute(self._sql("SELECT coalesce((SELECT deleted_through FROM {s}.snapshot WHERE id = 1), 0)"))
            return int(cur.fetchone()[0])


def encode_record(rec: dict[str, Any]) -> str:
    """A record as the journal stores it: compact JSON, no NaN/Infinity (PostgreSQL's jsonb refuses them)."""
    return json.dumps(rec, separators=(",", ":"), allow_nan=False)
