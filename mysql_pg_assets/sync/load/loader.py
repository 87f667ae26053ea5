"""Load: binary COPY into staging tables, merged batch by batch in one transaction.

1. A session advisory lock on the target table (psycopg connection) keeps two loads of the same
   table from interleaving, from the first batch to the commit; staging tables a killed run
   left behind are dropped under that lock.
2. One psycopg transaction opens: ``CREATE TABLE IF NOT EXISTS`` for the target (a table this
   load creates gets its key and indexes only after it is filled).
3. Each batch's valid rows are COPYed (ADBC's binary ingest, autocommit) into an UNLOGGED
   staging table of their own in the ``mysql_pg_assets`` schema, its rejects and keys into
   three more; a thread then merges the batch on the transaction while the next batch is read
   and COPYed. Rows are upserted by primary key, writing only rows whose values changed. If
   PostgreSQL refuses a value the validation did not foresee, the batch's merge rolls back to a
   savepoint, every refused value is found (one cast at a time, only on the columns PostgreSQL
   has to convert), its row moves to the rejects, and the merge runs again.
4. Target rows of the scope whose key is no longer in MySQL are deleted (or tombstoned); a
   rejected row keeps its previous version. A table without a key has its scope replaced. The
   rejects go to ``mysql_pg_assets.rejects`` and a row to the ledger, ``mysql_pg_assets.loads``.
   Commit; the staging tables are dropped.

A failure or a killed process at any point before the commit leaves the previous data intact;
re-running a load with the same source leaves exactly the same target.

Why two connections: ADBC's COPY is the fast path (Arrow straight to binary COPY), but an ADBC
connection refuses every statement after an error inside a transaction, savepoints included,
so the merge, which must survive a refused value, runs on psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import psycopg

from mysql_pg_assets.core.connections import TargetError, adbc_connect, explain, pg_connect, relation_exists
from mysql_pg_assets.core.meta import MetaTables, ensure, existing
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident, pg_idents, pg_qualified, pg_type
from mysql_pg_assets.sync.catalog.discover import TOMBSTONE_COLUMN, ColumnPlan, TablePlan
from mysql_pg_assets.sync.extract import Scope, Since, Window, staging_name
from mysql_pg_assets.sync.load.migrate import (
    Migration,
    apply_after,
    apply_before,
    create_indexes_sql,
    create_table_sql,
    object_name,
    plan,
    plan_tables,
)
from mysql_pg_assets.sync.transform import Conversions
from mysql_pg_assets.sync.validate import ValidatedBatch

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


@dataclass(frozen=True)
class Staging:
    """The names of one load's staging tables, beside the project's tables (see ``meta``)."""

    meta: MetaTables
    prefix: str  # the meta prefix, then stage_<table digest>_<load>

    @classmethod
    def for_table(cls, table: TablePlan, meta: MetaTables) -> Staging:
        digest = hashlib.sha1(table.target_label.encode()).hexdigest()[:12]
        return cls(meta, meta.name(f"stage_{digest}_{uuid.uuid4().hex[:8]}"))

    @property
    def table_prefix(self) -> str:
        """What every load of this table names its staging tables with: a killed load's are dropped by it."""
        return self.prefix.rsplit("_", 1)[0] + "_"

    def name(self, part: str) -> str:
        return f"{self.prefix}_{part}"

    def relation(self, part: str) -> str:
        return pg_qualified(self.meta.schema, self.name(part))

    def batch(self, number: int) -> str:
        """One batch's valid rows: merged as soon as it is staged, while the next one is read."""
        return f"rows_{number}"

    @property
    def rejects(self) -> str:
        return self.relation("rejects")

    @property
    def rejected_keys(self) -> str:
        return self.relation("rejected_keys")

    @property
    def loaded_keys(self) -> str:
        """The keys of every valid row of this load: what the deletes are reconciled against."""
        return self.relation("loaded_keys")

    @property
    def source_keys(self) -> str:
        """Every key MySQL has, from a keys-only read: an incremental load's delete reconciliation."""
        return self.relation("source_keys")


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
    watermark: str | None = None  # the newest cursor value loaded, for the next incremental load
    newest_source_value: datetime | None = None  # the newest cursor or partition timestamp: lag
    schema_changes: tuple[str, ...] = ()  # the migration this load applied (migrate.Migration.summary)
    schema_pending: tuple[str, ...] = ()  # what of it waits for a load that covers every row
    rejects_table: str = "mysql_pg_assets.rejects"  # where this load's rejects are (see meta)
    # A range of several partitions: per partition (0: the range's first), rows_read, rows_rejected,
    # rows_inserted, rows_updated, rows_deleted.
    by_partition: dict[int, dict[str, int]] = field(default_factory=dict)

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.rejected_rows


# RESTRICT cannot be deferred in PostgreSQL; NO ACTION is RESTRICT checked at commit.
_REFERENTIAL_ACTIONS = {"CASCADE": "CASCADE", "SET NULL": "SET NULL", "SET DEFAULT": "SET DEFAULT",
                        "RESTRICT": "NO ACTION", "NO ACTION": "NO ACTION"}
# ON DELETE: a parent loads before its children (lineage), so its load deletes rows MySQL no longer has
# while PostgreSQL still holds their children; MySQL's RESTRICT guarantees MySQL holds none of them, so
# PostgreSQL cascades: nothing MySQL holds is lost, and the parent's load is not refused for good.
_ON_DELETE = {**_REFERENTIAL_ACTIONS, "RESTRICT": "CASCADE", "NO ACTION": "CASCADE"}


def _add_foreign_keys(connection: psycopg.Connection, table: TablePlan) -> None:
    """MySQL's foreign keys between synced tables, once both tables exist (option foreign_keys).

    Only keys that are lineage: a self-reference or a key closing a cycle joins rows that separate
    loads bring in either order, which no constraint checked at a load's commit can accept. A table
    keeping tombstones gets none: a cascading delete would remove the rows it keeps.
    DEFERRABLE INITIALLY DEFERRED: checked at the end of the load, so its order of rows does not matter.
    NOT VALID: rows already there are not re-checked when the constraint is added.
    """
    if not table.create_foreign_keys or table.tombstones:
        return
    target = pg_qualified(table.target_schema, table.target_table)
    for key in table.foreign_keys:
        if not key.lineage:
            continue
        name = object_name(table, key.name)
        parent = pg_qualified(table.target_schema, key.referenced_target)
        present, parent_exists = connection.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s),"
            " to_regclass(%s) IS NOT NULL", (target, name, parent),
        ).fetchone()
        if present or not parent_exists or not key.references_unique_key:
            continue
        connection.execute(
            f"ALTER TABLE {target} ADD CONSTRAINT {pg_ident(name)} FOREIGN KEY ({pg_idents(key.columns)}) "
            f"REFERENCES {parent} ({pg_idents(key.referenced_columns)}) "
            f"ON DELETE {_ON_DELETE[key.on_delete]} ON UPDATE {_REFERENTIAL_ACTIONS[key.on_update]} "
            f"DEFERRABLE INITIALLY DEFERRED NOT VALID"
        )


def _follow_identities(connection: psycopg.Connection, table: TablePlan) -> None:
    """Set each identity's next value past the largest loaded one, as AUTO_INCREMENT would."""
    target = pg_qualified(table.target_schema, table.target_table)
    for column in table.columns:
        if column.identity:
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({pg_ident(column.target_name)}), 0) + 1,"
                f" false) FROM {target}",
                (target, column.target_name),
            )


def _staged_values(table: TablePlan, alias: str = "s") -> dict[str, str]:
    return {c.target_name: f"{alias}.{staging_name(i)}::{pg_type(c.pg_type)}" for i, c in enumerate(table.columns)}


_COUNT_WRITTEN = ("SELECT bucket, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
                  " FROM written GROUP BY bucket")


def insert_sql(table: TablePlan, rows: str, bucket: str | None = None) -> str:
    """A plain INSERT of every staged row: for a table created by this load, still without a key.
    With ``bucket`` (an expression over the target row ``t``), the rows written per bucket."""
    target = pg_qualified(table.target_schema, table.target_table)
    values = ", ".join(_staged_values(table).values())
    names = pg_idents(c.target_name for c in table.columns)
    insert = f"INSERT INTO {target} AS t ({names}) SELECT {values} FROM {rows} s"
    if bucket is None:
        return insert
    return f"WITH written AS ({insert} RETURNING true AS inserted, {bucket} AS bucket)\n" + _COUNT_WRITTEN


def upsert_sql(table: TablePlan, rows: str, bucket: str | None = None) -> str:
    target = pg_qualified(table.target_schema, table.target_table)
    names = [c.target_name for c in table.columns]
    values = list(_staged_values(table).values())
    if table.tombstones:  # a row MySQL has again is alive again
        names.append(TOMBSTONE_COLUMN)
        values.append("NULL::timestamptz")
    insert = f"INSERT INTO {target} AS t ({pg_idents(names)})\n  SELECT {', '.join(values)} FROM {rows} s"
    by = bucket or "0"
    if not table.primary_key:
        return f"WITH written AS ({insert}\n  RETURNING true AS inserted, {by} AS bucket)\n" + _COUNT_WRITTEN
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
            f"  RETURNING (t.xmax = 0) AS inserted, {by} AS bucket)\n" + _COUNT_WRITTEN)


def pg_window_bound(table: TablePlan, value: datetime) -> datetime:
    """A window bound typed like the target column: aware for timestamptz, naive UTC otherwise."""
    column = table.partition_column
    assert column is not None
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return utc if column.pg_type == "timestamptz" else utc.replace(tzinfo=None)


def pg_window_sql(table: TablePlan, window: Window, alias: str = "t") -> tuple[str, list[object]]:
    """The PostgreSQL condition of a window ('' for the whole table), as ``extract.window_sql`` draws it:
    the first partition also holds the rows whose partition column is NULL."""
    assert table.partition is not None, table.target_label
    column = f"{alias}.{pg_ident(table.partition.column)}" if alias else pg_ident(table.partition.column)
    bounds, params = [], []
    if window.start is not None:
        bounds.append(f"{column} >= %s")
        params.append(pg_window_bound(table, window.start))
    if window.end is not None:
        bounds.append(f"{column} < %s")
        params.append(pg_window_bound(table, window.end))
    if not bounds:
        return "", []
    if window.start is None:
        return f"({bounds[0]} OR {column} IS NULL)", params
    return " AND ".join(bounds), params


def bucket_sql(table: TablePlan, scope: Scope, column: str) -> tuple[str, list[object]] | None:
    """The partition of a range that a row is in (0: the first; NULL and earlier rows are the first's),
    given the SQL of its partition column; None when the load is not a range of several partitions.
    The load's transaction runs in UTC, so a timestamp column compares as the instant it stands for."""
    if not isinstance(scope, Window) or not scope.splits:
        return None
    splits = [b.astimezone(UTC) if b.tzinfo else b.replace(tzinfo=UTC) for b in scope.splits]
    return f"coalesce(width_bucket(({column})::timestamptz, %s::timestamptz[]), 0)", [splits]


def _target_bucket(table: TablePlan, scope: Scope) -> tuple[str, list[object]] | None:
    return bucket_sql(table, scope, f"t.{pg_ident(table.partition.column)}") if table.partition else None


def _staged_bucket(table: TablePlan, scope: Scope) -> tuple[str, list[object]] | None:
    column = table.partition_column
    return bucket_sql(table, scope, _staged_values(table)[column.target_name]) if column else None


def delete_missing_sql(
    table: TablePlan, staging: Staging, scope: Scope, rows_staged: bool, keys_staged: bool
) -> tuple[str, list[object]]:
    """Remove target rows of the scope that MySQL no longer has (delete, or set _deleted_at).

    Full load: every row whose key is neither staged nor rejected. Partition: the same, within
    the window. Incremental: every row whose key is not among MySQL's current keys.
    """
    target = pg_qualified(table.target_schema, table.target_table)
    conditions: list[str] = []
    params: list[object] = []
    if isinstance(scope, Window):
        condition, params = pg_window_sql(table, scope)
        conditions += [condition] if condition else []
    if table.primary_key:
        staged = _staged_values(table)
        matches = " AND ".join(f"{staged[k]} = t.{pg_ident(k)}" for k in table.primary_key)
        if isinstance(scope, Since):
            sources = [staging.source_keys] if keys_staged else []
        else:
            sources = [staging.loaded_keys, staging.rejected_keys] if rows_staged else []
        conditions += [f"NOT EXISTS (SELECT 1 FROM {source} s WHERE {matches})" for source in sources]
    if table.tombstones:
        tombstone = pg_ident(TOMBSTONE_COLUMN)
        conditions.append(f"t.{tombstone} IS NULL")
        statement = f"UPDATE {target} t SET {tombstone} = now() WHERE {' AND '.join(conditions)}"
    else:
        statement = f"DELETE FROM {target} t" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
    bucket = _target_bucket(table, scope)
    by, by_params = bucket if bucket else ("0", [])
    return (f"WITH gone AS ({statement} RETURNING {by} AS bucket) SELECT bucket, count(*) FROM gone GROUP BY bucket",
            [*params, *by_params])


def _column_types(connection: psycopg.Connection, relation: str) -> dict[str, str]:
    return dict(connection.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (relation,),
    ).fetchall())


def _reject_refused_values(
    connection: psycopg.Connection, table: TablePlan, staging: Staging, rows: str, scope: Scope
) -> Counts:
    """Move every row of the batch ``rows`` holding a value PostgreSQL refuses to the rejects."""
    connection.execute(_REFUSAL_FUNCTION)
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS mpa_refused "
                       "(row_id tid, primary_key text, column_name text, value text, reason text)")
    connection.execute("TRUNCATE pg_temp.mpa_refused")
    staging_types = _column_types(connection, rows)
    target_types = _column_types(connection, pg_qualified(table.target_schema, table.target_table))
    key = [(c.target_name, f"s.{staging_name(i)}") for i, c in enumerate(table.columns)
           if c.target_name in table.primary_key]
    key_names = [staging_name(i) for i, c in enumerate(table.columns) if c.target_name in table.primary_key]
    key_json = "jsonb_build_object(" + ", ".join("%s::text, " + e for _, e in key) + ")::text" if key else "NULL"
    key_params = [name for name, _ in key]
    for i, column in enumerate(table.columns):
        name = staging_name(i)
        if staging_types[name] == target_types[column.target_name]:
            continue  # COPY already produced the target type: nothing left to refuse
        connection.execute(
            f"INSERT INTO pg_temp.mpa_refused SELECT * FROM ("
            f"SELECT s.ctid, {key_json}, %s::text, s.{name}::text, pg_temp.mpa_refusal(s.{name}::text, %s) AS reason "
            f"FROM {rows} s WHERE s.{name} IS NOT NULL) checked WHERE reason IS NOT NULL",
            (*key_params, column.target_name, pg_type(column.pg_type)),
        )
    connection.execute(f"INSERT INTO {staging.rejects} SELECT primary_key, column_name, value, "
                       f"'PostgreSQL refused the value: ' || reason FROM pg_temp.mpa_refused")
    if key:
        refused_keys = f"SELECT {', '.join(e for _, e in key)} FROM {rows} s WHERE s.ctid IN " \
                       f"(SELECT row_id FROM pg_temp.mpa_refused)"
        connection.execute(f"INSERT INTO {staging.rejected_keys} {refused_keys}")
        connection.execute(f"DELETE FROM {staging.loaded_keys} k WHERE ({', '.join(f'k.{n}' for n in key_names)}) "
                           f"IN ({refused_keys})")
    bucket = _staged_bucket(table, scope)
    by, params = bucket if bucket else ("0", [])
    return _per_bucket(connection.execute(
        f"WITH gone AS (DELETE FROM {rows} s WHERE s.ctid IN (SELECT row_id FROM pg_temp.mpa_refused)"
        f" RETURNING {by} AS bucket) SELECT bucket, count(*) FROM gone GROUP BY bucket", params or None).fetchall(),
        ("refused",))


Counts = dict[int, Counter]  # partition of the range (0 when the load is not a range) → what happened to its rows


def _per_bucket(rows: Iterable[tuple], names: tuple[str, ...]) -> Counts:
    counts: Counts = {}
    for bucket, *values in rows:
        counts.setdefault(int(bucket), Counter()).update(dict(zip(names, map(int, values), strict=True)))
    return counts


def _add(total: Counts, more: Counts) -> None:
    for bucket, counter in more.items():
        total.setdefault(bucket, Counter()).update(counter)


def _write(connection: psycopg.Connection, table: TablePlan, rows: str, new_table: bool, scope: Scope) -> Counts:
    bucket = _target_bucket(table, scope)
    by, params = bucket if bucket else (None, [])
    if new_table and by is None:
        return {0: Counter(inserted=connection.execute(insert_sql(table, rows)).rowcount)}
    sql = insert_sql(table, rows, by) if new_table else upsert_sql(table, rows, by)
    return _per_bucket(connection.execute(sql, params or None).fetchall(), ("inserted", "updated"))


def _merge(
    connection: psycopg.Connection, table: TablePlan, staging: Staging, rows: str, new_table: bool, scope: Scope
) -> Counts:
    """Upsert one staged batch; returns, per partition, rows inserted, updated and rejected by PostgreSQL."""
    try:
        with connection.transaction():  # a savepoint: a refused value undoes only this statement
            return _write(connection, table, rows, new_table, scope)
    except psycopg.DataError:  # SQLSTATE class 22: a value PostgreSQL cannot take
        pass
    counts = _reject_refused_values(connection, table, staging, rows, scope)
    _add(counts, _write(connection, table, rows, new_table, scope))  # now any error propagates
    return counts


class _Merger:
    """Merges each staged batch on the load's transaction, in a thread, while the next is staged.

    Reading MySQL, COPYing into staging and inserting into the target then overlap, each on a
    process of its own (MariaDB, one PostgreSQL backend for COPY, one for the transaction).
    """

    def __init__(self, connection: psycopg.Connection, table: TablePlan, staging: Staging, new_table: bool,
                 scope: Scope) -> None:
        self.connection, self.table, self.staging, self.new_table = connection, table, staging, new_table
        self.scope = scope
        self.counts: Counts = {}
        self.watermarks: list[tuple[str | None, datetime | None]] = []
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mysql-pg-assets-merge", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        newest_sql = _newest(self.table)
        while (rows := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the main thread sees the error at its next submit
            try:
                _add(self.counts, _merge(self.connection, self.table, self.staging, rows, self.new_table, self.scope))
                if newest_sql:
                    self.watermarks.append(self.connection.execute(
                        f"SELECT {newest_sql[0]}, {newest_sql[1]} FROM {rows} s").fetchone())
            except BaseException as exc:
                self._error = exc

    def total(self, name: str) -> int:
        return sum(counter[name] for counter in self.counts.values())

    def submit(self, rows: str) -> None:
        self._raise()
        self._queue.put(rows)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def newest(self) -> tuple[str | None, datetime | None]:
        cursor = self.table.cursor
        numeric = cursor is not None and cursor.pg_type not in ("timestamptz", "timestamp", "date")
        marks = [w for w, _ in self.watermarks if w is not None]
        watermark = max(marks, key=(lambda w: int(w)) if numeric else None) if marks else None
        times = [t for _, t in self.watermarks if t is not None]
        return watermark, max(times) if times else None


@contextmanager
def _table_lock(postgres_url: DatabaseUrl, table: TablePlan) -> Iterator[tuple[psycopg.Connection, MetaTables]]:
    """A connection holding the table's session advisory lock, with the schemas and project tables ready."""
    connection = pg_connect(postgres_url, autocommit=True)
    try:
        meta = ensure(connection, table.target_schema)
        # Another load of this table: wait for it however long it takes (it has timeouts of its own).
        connection.execute("SET lock_timeout = 0")
        connection.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", ("table " + table.target_label,))
        connection.execute("RESET lock_timeout")
        yield connection, meta
    finally:
        connection.close()  # also releases the advisory lock


def pending_migration(postgres_url: DatabaseUrl, table: TablePlan) -> Migration | None:
    """The migration the next load of the table will apply (None: the table is missing or conforms)."""
    with pg_connect(postgres_url, autocommit=True) as connection:
        return plan_tables(connection, [table]).get(table.target_label) or None


def _drop_staging(connection: psycopg.Connection, schema: str, prefix: str) -> None:
    """Drop staging tables that start with ``prefix`` (a killed run's, or this run's own)."""
    names = [row[0] for row in connection.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)", (schema, prefix),
    )]
    for name in names:
        connection.execute(f"DROP TABLE IF EXISTS {pg_qualified(schema, name)}")


def _ingest(cursor: adbc.Cursor, schema: str, name: str, frame: pl.DataFrame, create: bool) -> None:
    if create:  # created empty and UNLOGGED: staging needs no WAL
        cursor.adbc_ingest(name, frame.clear().to_arrow(), mode="create", db_schema_name=schema)
        cursor.execute(f"ALTER TABLE {pg_qualified(schema, name)} SET UNLOGGED")
    cursor.adbc_ingest(name, frame.to_arrow(), mode="append", db_schema_name=schema)


@dataclass
class _Tally:
    """What the staged batches brought: rows read and rejected, in all and per partition of a range."""

    rows_read: int = 0
    rejected_rows: int = 0
    conversions: Conversions = field(default_factory=Conversions)
    by_partition: Counts = field(default_factory=dict)

    def add(self, batch: ValidatedBatch) -> None:
        self.rows_read += batch.rows.height + batch.rejected_rows
        self.rejected_rows += batch.rejected_rows
        self.conversions.add(batch.conversions)
        _add(self.by_partition, {b: Counter(read=n) for b, n in batch.read_by_partition.items()})
        _add(self.by_partition, {b: Counter(rejected=n) for b, n in batch.rejected_by_partition.items()})


def _stage(
    postgres_url: DatabaseUrl, table: TablePlan, staging: Staging, batches: Iterable[ValidatedBatch],
    keys: Iterable[pl.DataFrame], tally: _Tally, merger: _Merger,
) -> tuple[bool, bool]:
    """COPY each batch into staging tables and hand it to the merger; returns what arrived."""
    connection = adbc_connect(postgres_url)
    key_names = [staging_name(i) for i, c in enumerate(table.columns) if c.target_name in table.primary_key]
    rows_staged = keys_staged = False
    try:
        with connection.cursor() as cursor:
            for number, batch in enumerate(batches):
                first = not rows_staged
                schema = staging.meta.schema
                _ingest(cursor, schema, staging.name(staging.batch(number)), batch.rows, create=True)
                _ingest(cursor, schema, staging.name("rejects"), batch.rejects, create=first)
                if table.primary_key:
                    _ingest(cursor, schema, staging.name("rejected_keys"), batch.rejected_keys, create=first)
                    _ingest(cursor, schema, staging.name("loaded_keys"), batch.rows.select(key_names), create=first)
                rows_staged = True
                merger.submit(staging.relation(staging.batch(number)))
                tally.add(batch)
            for frame in keys:
                _ingest(cursor, staging.meta.schema, staging.name("source_keys"), frame, create=not keys_staged)
                keys_staged = True
    except adbc.Error as exc:
        raise TargetError(
            f"staging {table.target_label} in PostgreSQL at {postgres_url}: {explain(str(exc))}") from None
    finally:
        connection.close()
    return rows_staged, keys_staged


def _newest(table: TablePlan) -> tuple[str, str] | None:
    """SQL for the newest staged cursor value (as text) and the newest timestamp (for lag)."""
    cursor, partition = table.cursor, table.partition_column
    if cursor is None and partition is None:
        return None
    values = _staged_values(table)

    def as_utc(column: ColumnPlan) -> str:
        expression = f"max({values[column.target_name]})"
        if column.pg_type == "timestamptz":
            return expression
        if column.pg_type in ("timestamp", "date"):
            return f"({expression})::timestamp AT TIME ZONE 'UTC'"
        return "NULL::timestamptz"

    watermark = "NULL::text"
    if cursor is not None:
        if cursor.pg_type in ("timestamptz", "timestamp", "date"):
            watermark = f"to_char({as_utc(cursor)} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        else:
            watermark = f"max({values[cursor.target_name]})::text"
    temporal = cursor if cursor is not None and cursor.pg_type in ("timestamptz", "timestamp", "date") else partition
    return watermark, as_utc(temporal) if temporal is not None else "NULL::timestamptz"


def last_watermark(postgres_url: DatabaseUrl, table: TablePlan) -> str | None:
    """The newest cursor value the last load of this table recorded, if the table still exists."""
    target = pg_qualified(table.target_schema, table.target_table)
    with pg_connect(postgres_url, autocommit=True) as connection:
        meta = existing(connection, table.target_schema)
        if meta is None or not relation_exists(connection, target):
            return None
        row = connection.execute(
            f"SELECT watermark_to FROM {meta.ledger} WHERE target_table = %s AND watermark_to IS NOT NULL "
            f"ORDER BY id DESC LIMIT 1", (table.target_label,),
        ).fetchone()
        return row[0] if row else None


def _by_partition(scope: Scope, staged: Counts, merged: Counts) -> dict[int, dict[str, int]]:
    if not isinstance(scope, Window) or not scope.splits:
        return {}
    both = {b: staged.get(b, Counter()) + merged.get(b, Counter()) for b in range(len(scope.splits) + 1)}
    return {b: {"rows_read": c["read"], "rows_rejected": c["rejected"] + c["refused"], "rows_inserted": c["inserted"],
                "rows_updated": c["updated"], "rows_deleted": c["deleted"]} for b, c in both.items()}


def _deleted(connection: psycopg.Connection, sql: str, params: list[object]) -> Counts:
    return _per_bucket(connection.execute(sql, params).fetchall(), ("deleted",))


def _scope_label(scope: Scope) -> str:
    return {Window: "partition", Since: "incremental"}.get(type(scope), "full")


def load_table(
    table: TablePlan, batches: Iterable[ValidatedBatch], postgres_url: DatabaseUrl, run_id: str | None = None,
    scope: Scope = None, source_keys: Iterable[pl.DataFrame] = (), partition: str | None = None,
) -> LoadResult:
    """Merge the scope's rows into the target in one transaction; see the module docstring."""
    started = time.perf_counter()
    tally = _Tally()
    watermark_from = scope.value if isinstance(scope, Since) else None
    with _table_lock(postgres_url, table) as (connection, meta):
        staging = Staging.for_table(table, meta)
        _drop_staging(connection, meta.schema, staging.table_prefix)  # left by a killed run of this table
        try:
            rejected_values = 0
            with connection.transaction():
                connection.execute("SET LOCAL TimeZone = 'UTC'")
                # A table this load creates is filled first and keyed and indexed after: one index
                # build instead of one insertion per row, and no conflicts to look for.
                target = pg_qualified(table.target_schema, table.target_table)
                new_table = not relation_exists(connection, target)
                connection.execute(create_table_sql(table, with_key=not new_table))
                # MySQL's schema changed since the table was made: migrate it in this transaction
                # (a destructive change raises SchemaChangeHeld unless approved).
                migration = None if new_table else plan(connection, table)
                if migration:
                    apply_before(connection, migration)
                deleted: Counts = {}
                if not table.primary_key and not new_table:  # nothing to merge on: the scope is replaced
                    deleted = _deleted(connection, *delete_missing_sql(table, staging, scope, False, False))
                merger = _Merger(connection, table, staging, new_table, scope)
                try:
                    rows_staged, keys_staged = _stage(
                        postgres_url, table, staging, batches, source_keys, tally, merger)
                finally:
                    merger.finish()
                if table.primary_key and new_table:
                    connection.execute(f"ALTER TABLE {target} ADD PRIMARY KEY ({pg_idents(table.primary_key)})")
                elif table.primary_key:
                    deleted = _deleted(connection, *delete_missing_sql(table, staging, scope, rows_staged, keys_staged))
                # Deferred foreign-key checks run now (a violation fails the load here, as it would at
                # commit): PostgreSQL refuses DDL on a table with checks still pending.
                connection.execute("SET CONSTRAINTS ALL IMMEDIATE")
                pending = apply_after(connection, migration, run_id) if migration else []
                for statement in create_indexes_sql(table):
                    connection.execute(statement)
                _add_foreign_keys(connection, table)
                _follow_identities(connection, table)
                watermark, newest = merger.newest()
                if rows_staged:
                    rejected_values = connection.execute(
                        f"INSERT INTO {meta.rejects} (run_id, source_table, target_table, primary_key, column_name,"
                        f" value, reason) SELECT %s, %s, %s, primary_key::jsonb, column_name, value, reason"
                        f" FROM {staging.rejects}",
                        (run_id, table.source_label, table.target_label),
                    ).rowcount
                _add(merger.counts, deleted)
                result = LoadResult(
                    tally.rows_read, merger.total("inserted"), merger.total("updated"), merger.total("deleted"),
                    tally.rejected_rows + merger.total("refused"), rejected_values, time.perf_counter() - started,
                    tally.conversions, watermark or (None if watermark_from is None else str(watermark_from)), newest,
                    tuple(migration.summary()) if migration else (), tuple(pending), meta.label("rejects"),
                    _by_partition(scope, tally.by_partition, merger.counts),
                )
                _record(connection, meta, table, result, run_id, scope, partition, watermark_from)
        except psycopg.Error as exc:
            raise TargetError(f"loading {table.target_label} into PostgreSQL at {postgres_url}: "
                              f"{explain(str(exc))}") from None
        finally:
            if not connection.broken:  # a server gone away: the next load of the table drops them
                with contextlib.suppress(psycopg.Error):
                    _drop_staging(connection, meta.schema, staging.prefix)
    return result


def _record(
    connection: psycopg.Connection, meta: MetaTables, table: TablePlan, result: LoadResult, run_id: str | None,
    scope: Scope, partition: str | None, watermark_from: object,
) -> None:
    """One ledger row per load, written in the load's own transaction."""
    window = (scope.start, scope.end) if isinstance(scope, Window) else (None, None)
    connection.execute(
        f"INSERT INTO {meta.ledger} (run_id, source_table, target_table, partition, scope, window_start, window_end,"
        f" watermark_from, watermark_to, newest_source_value, rows_read, rows_inserted, rows_updated, rows_deleted,"
        f" rows_rejected, values_converted, seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        f" %s, %s, %s)",
        (run_id, table.source_label, table.target_label, partition, _scope_label(scope), *window,
         None if watermark_from is None else str(watermark_from), result.watermark, result.newest_source_value,
         result.rows_read, result.inserted, result.updated, result.deleted, result.rejected_rows,
         result.conversions.total, result.seconds),
    )
