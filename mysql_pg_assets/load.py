"""Load: binary COPY into staging tables, then one transaction that merges them into the target.

Everything that changes the target happens in one PostgreSQL transaction on one connection:

1. an advisory lock on the target table, so two runs never interleave their writes;
2. ``CREATE TABLE IF NOT EXISTS`` for the target (DDL is transactional in PostgreSQL; the
   schemas and the reject table are created just before, in a short transaction of their own);
3. each batch's valid rows are COPYed (ADBC's binary ingest) into a temporary staging table, its
   rejects and the keys of its rejected rows into two more;
4. rows are upserted by primary key, writing only rows whose values changed. If PostgreSQL
   refuses a value the validation did not foresee, the merge is rolled back to a savepoint, every
   refused value is found (one cast at a time, on the columns PostgreSQL has to convert), its row
   moves to the rejects, and the merge runs again;
5. target rows whose key is no longer in MySQL are deleted; a rejected row keeps its previous
   version. A table without a key is replaced whole;
6. the rejects are written to ``mysql_pg_assets.rejects`` with the run id; commit.

A failure or a killed process at any point before the commit leaves the previous data intact;
re-running a load with the same source leaves exactly the same target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import adbc_driver_postgresql.dbapi as adbc

from mysql_pg_assets.catalog import TablePlan
from mysql_pg_assets.extract import staging_name
from mysql_pg_assets.settings import DatabaseUrl, redact
from mysql_pg_assets.sql import pg_ident, pg_idents, pg_qualified, pg_type
from mysql_pg_assets.transform import Conversions
from mysql_pg_assets.validate import ValidatedBatch

META_SCHEMA = "mysql_pg_assets"
REJECTS = pg_qualified(META_SCHEMA, "rejects")
STAGING = "pg_temp.mpa_staging"
STAGED_REJECTS = "pg_temp.mpa_rejects"
REJECTED_KEYS = "pg_temp.mpa_rejected_keys"

_REJECTS_DDL = f"""CREATE TABLE IF NOT EXISTS {REJECTS} (
  id bigserial PRIMARY KEY,
  rejected_at timestamptz NOT NULL DEFAULT now(),
  run_id text,
  source_table text NOT NULL,
  target_table text NOT NULL,
  primary_key jsonb,
  column_name text NOT NULL,
  value text,
  reason text NOT NULL
)"""

# Tries one cast and returns PostgreSQL's error message, or NULL when the value is accepted.
# The value is bound (USING), never pasted; the type name was checked by sql.pg_type.
_REFUSAL_FUNCTION = """CREATE OR REPLACE FUNCTION pg_temp.mpa_refusal(value text, type_name text)
RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE format('SELECT $1::%s', type_name) USING value;
  RETURN NULL;
EXCEPTION WHEN others THEN
  RETURN SQLERRM;
END
$fn$"""


class TargetError(RuntimeError):
    """PostgreSQL refused the load; the message never holds the password."""


@dataclass(frozen=True)
class LoadResult:
    rows_read: int
    inserted: int
    updated: int
    deleted: int
    rejected_rows: int
    rejected_values: int
    seconds: float
    conversions: Conversions = field(default_factory=Conversions)

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.rejected_rows


def connect(postgres_url: DatabaseUrl) -> adbc.Connection:
    try:
        return adbc.connect(postgres_url.secret)
    except Exception as exc:
        raise TargetError(f"cannot connect to PostgreSQL at {postgres_url}: {redact(str(exc))}") from None


def create_table_sql(table: TablePlan) -> str:
    columns = [
        f"{pg_ident(c.target_name)} {pg_type(c.pg_type)}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    if table.primary_key:
        columns.append(f"PRIMARY KEY ({pg_idents(table.primary_key)})")
    body = ",\n  ".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {pg_qualified(table.target_schema, table.target_table)} (\n  {body}\n)"


def _staged_values(table: TablePlan, alias: str = "s") -> dict[str, str]:
    return {c.target_name: f"{alias}.{staging_name(i)}::{pg_type(c.pg_type)}" for i, c in enumerate(table.columns)}


_COUNT_WRITTEN = "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"


def upsert_sql(table: TablePlan) -> str:
    target = pg_qualified(table.target_schema, table.target_table)
    names = [c.target_name for c in table.columns]
    values = ", ".join(_staged_values(table).values())
    insert = f"INSERT INTO {target} AS t ({pg_idents(names)})\n  SELECT {values} FROM {STAGING} s"
    if not table.primary_key:
        return f"WITH written AS ({insert}\n  RETURNING true AS inserted)\n" + _COUNT_WRITTEN
    others = [n for n in names if n not in table.primary_key]
    if others:
        assignments = ", ".join(f"{pg_ident(n)} = EXCLUDED.{pg_ident(n)}" for n in others)
        changed = (f"ROW({', '.join(f't.{pg_ident(n)}' for n in others)}) IS DISTINCT FROM "
                   f"ROW({', '.join(f'EXCLUDED.{pg_ident(n)}' for n in others)})")
        conflict = f"DO UPDATE SET {assignments}\n  WHERE {changed}"
    else:
        conflict = "DO NOTHING"
    # xmax = 0 tells a freshly inserted row from one the ON CONFLICT branch updated.
    return (f"WITH written AS ({insert}\n  ON CONFLICT ({pg_idents(table.primary_key)}) {conflict}\n"
            f"  RETURNING (t.xmax = 0) AS inserted)\n" + _COUNT_WRITTEN)


def delete_missing_sql(table: TablePlan) -> str:
    """Delete target rows whose key is neither among the staged rows nor among the rejected ones."""
    target = pg_qualified(table.target_schema, table.target_table)
    staged = _staged_values(table)
    matches = " AND ".join(f"{staged[k]} = t.{pg_ident(k)}" for k in table.primary_key)
    return (f"DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {STAGING} s WHERE {matches})\n"
            f"  AND NOT EXISTS (SELECT 1 FROM {REJECTED_KEYS} s WHERE {matches})")


def _check_existing_columns(cursor: adbc.Cursor, table: TablePlan) -> None:
    cursor.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        (table.target_schema, table.target_table),
    )
    existing = [row[0] for row in cursor.fetchall()]
    expected = [c.target_name for c in table.columns]
    if set(existing) != set(expected):
        raise TargetError(
            f"{table.target_label} exists with columns {existing}, but the mapping of "
            f"{table.source_label} expects {expected}; migrate or drop the table first"
        )


def _column_types(cursor: adbc.Cursor, relation: str) -> dict[str, str]:
    cursor.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        (relation,),
    )
    return dict(cursor.fetchall())


def _reject_refused_values(cursor: adbc.Cursor, table: TablePlan) -> int:
    """Move every row holding a value PostgreSQL refuses from staging to the rejects."""
    cursor.execute(_REFUSAL_FUNCTION)
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS mpa_refused "
                   "(row_id tid, primary_key text, column_name text, value text, reason text)")
    staging_types = _column_types(cursor, STAGING)
    target_types = _column_types(cursor, pg_qualified(table.target_schema, table.target_table))
    key = [(name, f"s.{staging_name(i)}") for i, c in enumerate(table.columns)
           for name in [c.target_name] if name in table.primary_key]
    key_json = "NULL::text"
    params: list[str] = []
    if key:
        pairs = []
        for name, expression in key:
            params.append(name)
            pairs.append(f"${len(params)}::text, {expression}")
        key_json = f"jsonb_build_object({', '.join(pairs)})::text"
    for i, column in enumerate(table.columns):
        name = staging_name(i)
        if staging_types[name] == target_types[column.target_name]:
            continue  # COPY already produced the target type: nothing left to refuse
        column_param, type_param = len(params) + 1, len(params) + 2
        cursor.execute(
            f"INSERT INTO pg_temp.mpa_refused SELECT * FROM ("
            f"SELECT s.ctid, {key_json}, ${column_param}::text, s.{name}::text, "
            f"pg_temp.mpa_refusal(s.{name}::text, ${type_param}::text) AS reason "
            f"FROM {STAGING} s WHERE s.{name} IS NOT NULL) checked WHERE reason IS NOT NULL",
            (*params, column.target_name, pg_type(column.pg_type)),
        )
    key_columns = ", ".join(f"s.{staging_name(i)}" for i, c in enumerate(table.columns)
                            if c.target_name in table.primary_key)
    cursor.execute(f"INSERT INTO {STAGED_REJECTS} SELECT primary_key, column_name, value, "
                   f"'PostgreSQL refused the value: ' || reason FROM pg_temp.mpa_refused")
    if key_columns:
        cursor.execute(f"INSERT INTO {REJECTED_KEYS} SELECT {key_columns} FROM {STAGING} s "
                       f"WHERE s.ctid IN (SELECT row_id FROM pg_temp.mpa_refused)")
    cursor.execute(f"DELETE FROM {STAGING} s WHERE s.ctid IN (SELECT row_id FROM pg_temp.mpa_refused)")
    return cursor.rowcount


def _merge(cursor: adbc.Cursor, table: TablePlan) -> tuple[int, int, int]:
    """Upsert the staged rows; returns (inserted, updated, rows rejected by PostgreSQL)."""
    cursor.execute("SAVEPOINT mpa_merge")
    try:
        cursor.execute(upsert_sql(table))
        inserted, updated = cursor.fetchone()
        return int(inserted), int(updated), 0
    except adbc.DataError:
        cursor.execute("ROLLBACK TO SAVEPOINT mpa_merge")
    refused = _reject_refused_values(cursor, table)
    cursor.execute(upsert_sql(table))  # a second failure is not about a value: it propagates
    inserted, updated = cursor.fetchone()
    return int(inserted), int(updated), refused


def _prepare_schemas(connection: adbc.Connection, cursor: adbc.Cursor, table: TablePlan) -> None:
    # Loads of tables in one schema run in parallel: schemas and the reject table are created in
    # a short transaction of their own, serialized by a lock, so concurrent loads never race.
    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ("mysql_pg_assets schemas",))
    for schema in (table.target_schema, META_SCHEMA):
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_ident(schema)}")
    cursor.execute(_REJECTS_DDL)
    connection.commit()


def load_table(
    table: TablePlan, batches: Iterable[ValidatedBatch], postgres_url: DatabaseUrl, run_id: str | None = None
) -> LoadResult:
    started = time.perf_counter()
    connection = connect(postgres_url)
    target = pg_qualified(table.target_schema, table.target_table)
    conversions = Conversions()
    try:
        with connection.cursor() as cursor:
            _prepare_schemas(connection, cursor, table)
            cursor.execute("SET LOCAL TimeZone = 'UTC'")
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ("table " + table.target_label,))
            cursor.execute(create_table_sql(table))
            _check_existing_columns(cursor, table)
            rows_read = rejected_rows = 0
            staged = False
            for batch in batches:
                mode = "append" if staged else "create"
                cursor.adbc_ingest("mpa_staging", batch.rows.to_arrow(), mode=mode, temporary=True)
                cursor.adbc_ingest("mpa_rejects", batch.rejects.to_arrow(), mode=mode, temporary=True)
                if table.primary_key:
                    cursor.adbc_ingest("mpa_rejected_keys", batch.rejected_keys.to_arrow(), mode=mode, temporary=True)
                staged = True
                rows_read += batch.rows.height + batch.rejected_rows
                rejected_rows += batch.rejected_rows
                conversions.add(batch.conversions)
            inserted = updated = 0
            if not staged:
                cursor.execute(f"DELETE FROM {target}")
                deleted = cursor.rowcount
            elif table.primary_key:
                inserted, updated, refused = _merge(cursor, table)
                rejected_rows += refused
                cursor.execute(delete_missing_sql(table))
                deleted = cursor.rowcount
            else:
                cursor.execute(f"DELETE FROM {target}")
                deleted = cursor.rowcount
                inserted, updated, refused = _merge(cursor, table)
                rejected_rows += refused
            rejected_values = 0
            if staged:
                cursor.execute(
                    f"INSERT INTO {REJECTS} (run_id, source_table, target_table, primary_key, column_name, value,"
                    f" reason) SELECT $1, $2, $3, primary_key::jsonb, column_name, value, reason FROM {STAGED_REJECTS}",
                    (run_id, table.source_label, table.target_label),
                )
                rejected_values = cursor.rowcount
            connection.commit()
    except BaseException as exc:
        # Nothing is committed yet: rolling back leaves the target as it was before this load.
        connection.rollback()
        if isinstance(exc, adbc.Error):
            raise TargetError(f"loading {table.target_label}: {redact(str(exc))}") from None
        raise
    finally:
        connection.close()
    return LoadResult(rows_read, inserted, updated, deleted, rejected_rows, rejected_values,
                      time.perf_counter() - started, conversions)
