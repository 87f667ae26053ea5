"""The project's own tables in PostgreSQL: rejects, the load ledger, schema changes, and each load's staging.

Where they live is decided here, once, for everyone who reads or writes them:

- the schema ``mysql_pg_assets``, when it exists and this role may create tables in it, or when the
  role may create it (``CREATE`` on the database);
- otherwise the target schema itself, their names prefixed ``mpa_`` so that no synced table can
  collide with them. This is the role a DBA hands a pre-created schema it owns and nothing more:
  it loads on the first try, and its rejects are ``<schema>.mpa_rejects``.

The target schema is created only when missing: PostgreSQL checks ``CREATE`` on the database even
for ``CREATE SCHEMA IF NOT EXISTS`` on a schema that exists, which such a role does not have. A
target schema that is missing and may not be created is a :class:`TargetError` that says what to
run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from mysql_pg_assets.core.connections import TargetError, relation_exists
from mysql_pg_assets.core.sql import pg_ident, pg_literal, pg_qualified

log = logging.getLogger(__name__)

META_SCHEMA = "mysql_pg_assets"
FALLBACK_PREFIX = "mpa_"


@dataclass(frozen=True)
class MetaTables:
    schema: str
    prefix: str = ""

    def name(self, table: str) -> str:
        return self.prefix + table

    def relation(self, table: str) -> str:
        return pg_qualified(self.schema, self.name(table))

    def label(self, table: str) -> str:
        """schema.table as a person types it."""
        return f"{self.schema}.{self.name(table)}"

    @property
    def rejects(self) -> str:
        return self.relation("rejects")

    @property
    def ledger(self) -> str:
        return self.relation("loads")

    @property
    def schema_changes(self) -> str:
        return self.relation("schema_changes")

    @property
    def positions(self) -> str:
        """Change capture: per table, the binlog position its PostgreSQL copy reflects."""
        return self.relation("cdc_positions")

    @property
    def change_log(self) -> str:
        """Change capture: every change applied, with its position, commit time and images."""
        return self.relation("change_log")

    def ddl(self) -> list[str]:
        return [
            f"""CREATE TABLE IF NOT EXISTS {self.rejects} (
  id bigserial PRIMARY KEY,
  rejected_at timestamptz NOT NULL DEFAULT now(),
  run_id text,
  source_table text NOT NULL,
  target_table text NOT NULL,
  primary_key jsonb,
  column_name text NOT NULL,
  value text,
  reason text NOT NULL
)""",
            f"""CREATE TABLE IF NOT EXISTS {self.ledger} (
  id bigserial PRIMARY KEY,
  loaded_at timestamptz NOT NULL DEFAULT now(),
  run_id text,
  source_table text NOT NULL,
  target_table text NOT NULL,
  partition text,
  scope text NOT NULL,
  window_start timestamptz,
  window_end timestamptz,
  watermark_from text,
  watermark_to text,
  newest_source_value timestamptz,
  rows_read bigint NOT NULL,
  rows_inserted bigint NOT NULL,
  rows_updated bigint NOT NULL,
  rows_deleted bigint NOT NULL,
  rows_rejected bigint NOT NULL,
  values_converted bigint NOT NULL,
  seconds double precision NOT NULL
)""",
            f"""CREATE TABLE IF NOT EXISTS {self.schema_changes} (
  id bigserial PRIMARY KEY,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  target_table text NOT NULL,
  fingerprint text NOT NULL,
  changes jsonb NOT NULL,
  destructive boolean NOT NULL,
  approved_run_id text,
  approved_at timestamptz,
  applied_run_id text,
  applied_at timestamptz,
  script text
)""",
            # Tables created before the column existed get it; checked first, so no lock is taken when it is there.
            f"DO $mpa$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"{pg_literal(self.schema_changes)}::regclass AND attname = 'script' AND NOT attisdropped) THEN "
            f"ALTER TABLE {self.schema_changes} ADD COLUMN script text; END IF; END $mpa$",
            f"""CREATE TABLE IF NOT EXISTS {self.positions} (
  target_table text PRIMARY KEY,
  source_table text NOT NULL,
  log_file text NOT NULL,
  log_pos bigint NOT NULL,
  held text,
  updated_at timestamptz NOT NULL DEFAULT now()
)""",
            f"""CREATE TABLE IF NOT EXISTS {self.change_log} (
  id bigserial PRIMARY KEY,
  log_file text NOT NULL,
  log_pos bigint NOT NULL,
  committed_at timestamptz NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  run_id text,
  source_table text NOT NULL,
  target_table text NOT NULL,
  operation text NOT NULL,
  primary_key jsonb NOT NULL,
  before jsonb,
  after jsonb
)""",
            f"CREATE INDEX IF NOT EXISTS {pg_ident(self.name('change_log_table_position'))} ON {self.change_log} "
            f"(target_table, log_file, log_pos)",
        ]


DEFAULT = MetaTables(META_SCHEMA)
# Where they are for a role that may create schemas (the usual case, and the tests'): for readers' SQL.
REJECTS, LEDGER, SCHEMA_CHANGES = DEFAULT.rejects, DEFAULT.ledger, DEFAULT.schema_changes


def _schema_state(connection: psycopg.Connection, schema: str) -> tuple[bool, bool]:
    """(exists, this role may create tables in it)."""
    exists, creatable = connection.execute(
        "SELECT to_regnamespace(%s) IS NOT NULL, to_regnamespace(%s) IS NOT NULL"
        " AND has_schema_privilege(to_regnamespace(%s), 'CREATE, USAGE')", (pg_ident(schema),) * 3).fetchone()
    return bool(exists), bool(creatable)


def _may_create_schemas(connection: psycopg.Connection) -> bool:
    return bool(connection.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0])


def locate(connection: psycopg.Connection, target_schema: str) -> MetaTables:
    """Where the project's tables are, or will be when a load creates them; changes nothing."""
    exists, usable = _schema_state(connection, META_SCHEMA)
    if usable or (not exists and _may_create_schemas(connection)):
        return DEFAULT
    return MetaTables(target_schema, FALLBACK_PREFIX)


def schema_ready(connection: psycopg.Connection, schema: str) -> bool:
    """Whether ``schema`` exists (False: missing, and this role may create it). A schema missing that the
    role may not create is an error that says what to run."""
    if _schema_state(connection, schema)[0]:
        return True
    if not _may_create_schemas(connection):
        role, database = connection.execute("SELECT current_user, current_database()").fetchone()
        raise TargetError(
            f"PostgreSQL schema {schema!r} does not exist in database {database!r} and role {role!r} may not create "
            f"it: run CREATE SCHEMA {pg_ident(schema)} AUTHORIZATION {pg_ident(role)}, or set target.schema in the "
            f"sync spec to a schema the role owns")
    return False


def ensure_schema(connection: psycopg.Connection, schema: str) -> None:
    """Create ``schema`` if it is missing (see :func:`schema_ready`)."""
    if not schema_ready(connection, schema):
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_ident(schema)}")


def ensure(connection: psycopg.Connection, target_schema: str) -> MetaTables:
    """The target schema and the project's tables, created where missing.

    Loads of many tables start at once: a transaction-level advisory lock keeps them from racing to
    create the same schema or table (PostgreSQL's IF NOT EXISTS is not safe against that)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtextextended('mysql_pg_assets schemas', 0))")
        ensure_schema(connection, target_schema)
        meta = locate(connection, target_schema)
        if meta.schema != target_schema:
            ensure_schema(connection, meta.schema)
        for statement in meta.ddl():
            connection.execute(statement)
    return meta


def existing(connection: psycopg.Connection, target_schema: str) -> MetaTables | None:
    """The project's tables if a load has created them (None: no load yet), for readers."""
    meta = locate(connection, target_schema)
    return meta if relation_exists(connection, meta.ledger) else None


# --- reading and writing them ------------------------------------------------------------------

LEDGER_COLUMNS = ("run_id", "source_table", "target_table", "partition", "scope", "window_start", "window_end",
                  "watermark_from", "watermark_to", "newest_source_value", "rows_read", "rows_inserted",
                  "rows_updated", "rows_deleted", "rows_rejected", "values_converted", "seconds")


def record_load(connection: psycopg.Connection, meta: MetaTables, row: dict[str, object]) -> None:
    """One ledger row per load, written in the load's own transaction: it never records a load that
    did not commit."""
    names = ", ".join(LEDGER_COLUMNS)
    connection.execute(f"INSERT INTO {meta.ledger} ({names}) VALUES ({', '.join(['%s'] * len(LEDGER_COLUMNS))})",
                       [row[name] for name in LEDGER_COLUMNS])


def write_rejects(connection: psycopg.Connection, meta: MetaTables, staged: str, run_id: str | None,
                  source_label: str, target_label: str) -> int:
    """Move a load's staged rejects (``staged``: key, column, value, reason) into the rejects table, and log the
    first ``LOGGED_REJECTS`` (key, column, reason: the value stays in the table) and how many more."""
    written = connection.execute(
        f"INSERT INTO {meta.rejects} (run_id, source_table, target_table, primary_key, column_name, value, reason)"
        f" SELECT %s, %s, %s, primary_key::jsonb, column_name, value, reason FROM {staged}",
        (run_id, source_label, target_label)).rowcount
    if written:
        for key, column, reason in connection.execute(
                f"SELECT primary_key, column_name, reason FROM {staged} LIMIT %s", (LOGGED_REJECTS,)):
            log.warning("%s: row %s rejected, column %s: %s", target_label, key, column, reason,
                        extra={"event.action": "reject", "event.outcome": "failure", "table": target_label,
                               "run_id": run_id, "row.key": key, "reason": reason})
        if written > LOGGED_REJECTS:
            log.warning("%s: %s more rejects in %s (run %s)", target_label, written - LOGGED_REJECTS,
                        meta.label("rejects"), run_id, extra={"event.action": "reject", "table": target_label,
                                                              "run_id": run_id})
    return written


LOGGED_REJECTS = 20


def last_watermark(connection: psycopg.Connection, target_schema: str, target_label: str) -> str | None:
    """The newest cursor value the last load of a table recorded (None: no load recorded one)."""
    meta = existing(connection, target_schema)
    if meta is None:
        return None
    row = connection.execute(
        f"SELECT watermark_to FROM {meta.ledger} WHERE target_table = %s AND watermark_to IS NOT NULL"
        f" ORDER BY id DESC LIMIT 1", (target_label,)).fetchone()
    return row[0] if row else None


def rejects_sample(connection: psycopg.Connection, target_schema: str, target_label: str, run_id: str,
                   limit: int = 20) -> list[dict[str, object]]:
    """The first rejects of a run: key, column, value and reason, for a check's failure cases."""
    meta = existing(connection, target_schema)
    if meta is None:
        return []
    rows = connection.execute(
        f"SELECT primary_key, column_name, value, reason FROM {meta.rejects} WHERE run_id = %s"
        f" AND target_table = %s ORDER BY id LIMIT %s", (run_id, target_label, limit)).fetchall()
    return [{"primary_key": key, "column": column, "value": value, "reason": reason}
            for key, column, value, reason in rows]


# --- change capture ------------------------------------------------------------------------------


def record_position(connection: psycopg.Connection, meta: MetaTables, source_label: str, target_label: str,
                    log_file: str, log_pos: int) -> None:
    """A snapshot of a change-captured table reflects the binlog up to here (and is no longer held)."""
    connection.execute(
        f"INSERT INTO {meta.positions} (target_table, source_table, log_file, log_pos) VALUES (%s, %s, %s, %s)"
        f" ON CONFLICT (target_table) DO UPDATE SET log_file = EXCLUDED.log_file, log_pos = EXCLUDED.log_pos,"
        f" source_table = EXCLUDED.source_table, held = NULL, updated_at = now()",
        (target_label, source_label, log_file, log_pos))


def live_position(connection: psycopg.Connection, meta: MetaTables, target_label: str) -> tuple[str, int] | None:
    """The binlog position (file, offset) a change-captured table's copy reflects; None when it has none, or
    is held."""
    row = connection.execute(f"SELECT log_file, log_pos, held FROM {meta.positions} WHERE target_table = %s",
                             (target_label,)).fetchone()
    return None if row is None or row[2] is not None else (row[0], int(row[1]))


def positions(connection: psycopg.Connection, target_schema: str) -> dict[str, tuple[str, int, str | None]]:
    """target table → (binlog file, offset, why it is held or None), for every change-captured table."""
    meta = existing(connection, target_schema)
    if meta is None:
        return {}
    return {table: (log_file, int(log_pos), held) for table, log_file, log_pos, held in connection.execute(
        f"SELECT target_table, log_file, log_pos, held FROM {meta.positions}")}


def position_ages(connection: psycopg.Connection, target_schema: str) -> dict[str, float]:
    """target table → seconds since change capture last moved its position."""
    meta = existing(connection, target_schema)
    if meta is None:
        return {}
    return {table: float(age) for table, age in connection.execute(
        f"SELECT target_table, extract(epoch FROM now() - updated_at) FROM {meta.positions}")}
