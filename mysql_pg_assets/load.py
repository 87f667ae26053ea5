"""Load: binary COPY into a staging table, then one transaction that merges it into the target.

Everything happens in a single PostgreSQL transaction on one connection:

1. an advisory lock on the target table, so two runs never interleave their writes;
2. ``CREATE TABLE IF NOT EXISTS`` for the target (DDL is transactional in PostgreSQL; the schema
   is created just before, in a short transaction of its own);
3. each batch is COPYed (ADBC's binary ingest) into a temporary staging table;
4. rows are upserted by primary key, writing only rows whose values changed, and target rows
   that are no longer in MySQL are deleted; a table without a key is replaced whole;
5. commit.

A failure or a killed process at any point before the commit leaves the previous data intact;
re-running a load with the same source leaves exactly the same target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import adbc_driver_postgresql.dbapi as adbc
import polars as pl

from mysql_pg_assets.catalog import TablePlan
from mysql_pg_assets.extract import staging_name
from mysql_pg_assets.settings import DatabaseUrl, redact
from mysql_pg_assets.sql import pg_ident, pg_idents, pg_qualified, pg_type

STAGING_TABLE = "mpa_staging"


class TargetError(RuntimeError):
    """PostgreSQL refused the load; the message never holds the password."""


@dataclass(frozen=True)
class LoadResult:
    rows_read: int
    inserted: int
    updated: int
    deleted: int
    seconds: float


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


def _staged_values(table: TablePlan) -> list[str]:
    return [f"s.{staging_name(i)}::{pg_type(c.pg_type)}" for i, c in enumerate(table.columns)]


def upsert_sql(table: TablePlan) -> str:
    target = pg_qualified(table.target_schema, table.target_table)
    names = [c.target_name for c in table.columns]
    values = ", ".join(_staged_values(table))
    insert = f"INSERT INTO {target} AS t ({pg_idents(names)})\n  SELECT {values} FROM pg_temp.{STAGING_TABLE} s"
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


_COUNT_WRITTEN = "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"


def delete_missing_sql(table: TablePlan) -> str:
    """Delete target rows whose key no longer exists in the staged source rows."""
    target = pg_qualified(table.target_schema, table.target_table)
    staged = dict(zip((c.target_name for c in table.columns), _staged_values(table), strict=True))
    matches = " AND ".join(f"{staged[k]} = t.{pg_ident(k)}" for k in table.primary_key)
    return (f"DELETE FROM {target} t WHERE NOT EXISTS "
            f"(SELECT 1 FROM pg_temp.{STAGING_TABLE} s WHERE {matches})")


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


def load_table(table: TablePlan, frames: Iterable[pl.DataFrame], postgres_url: DatabaseUrl) -> LoadResult:
    started = time.perf_counter()
    connection = connect(postgres_url)
    try:
        with connection.cursor() as cursor:
            # Runs of tables in one schema go in parallel: the schema is created in a short
            # transaction of its own, serialized by a lock, so concurrent loads never race on it.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ("schema " + table.target_schema,))
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {pg_ident(table.target_schema)}")
            connection.commit()
            cursor.execute("SET LOCAL TimeZone = 'UTC'")
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ("table " + table.target_label,))
            cursor.execute(create_table_sql(table))
            _check_existing_columns(cursor, table)
            rows_read = 0
            for frame in frames:
                cursor.adbc_ingest(STAGING_TABLE, frame.to_arrow(), mode="create" if rows_read == 0 else "append",
                                   temporary=True)
                rows_read += frame.height
            target = pg_qualified(table.target_schema, table.target_table)
            if rows_read == 0:
                cursor.execute(f"DELETE FROM {target}")
                inserted = updated = 0
                deleted = cursor.rowcount
            elif table.primary_key:
                cursor.execute(upsert_sql(table))
                inserted, updated = cursor.fetchone()
                cursor.execute(delete_missing_sql(table))
                deleted = cursor.rowcount
            else:
                cursor.execute(f"DELETE FROM {target}")
                deleted = cursor.rowcount
                cursor.execute(upsert_sql(table))
                inserted, updated = cursor.fetchone()
            connection.commit()
    except BaseException as exc:
        # Nothing is committed yet: rolling back leaves the target as it was before this load.
        connection.rollback()
        if isinstance(exc, adbc.Error):
            raise TargetError(f"loading {table.target_label}: {redact(str(exc))}") from None
        raise
    finally:
        connection.close()
    return LoadResult(rows_read, int(inserted), int(updated), int(deleted), time.perf_counter() - started)
