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
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

import polars as pl
import psycopg

from mysql_pg_assets.core.connections import (
    TargetError,
    explain,
    known_while_reusing,
    pg_connection,
    relation_exists,
)
from mysql_pg_assets.core.meta import MetaTables, ensure, record_load, record_position, write_rejects
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_idents
from mysql_pg_assets.sync.catalog.plans import ColumnPlan, TablePlan
from mysql_pg_assets.sync.extract import Ceiling, Scope, Since, Window
from mysql_pg_assets.sync.load.build import column_values, load_new, writes_directly
from mysql_pg_assets.sync.load.constraints import add_foreign_keys, follow_identities
from mysql_pg_assets.sync.load.ddl import comments_sql, create_indexes_sql, create_table_sql
from mysql_pg_assets.sync.load.merge import delete_missing_sql, insert_sql, staged_values, target_bucket, upsert_sql
from mysql_pg_assets.sync.load.migrate import (
    Migration,
    apply_after,
    apply_before,
    plan,
    record_applied,
    require_approval,
)
from mysql_pg_assets.sync.load.replace import big_enough, kept_by_live
from mysql_pg_assets.sync.load.result import Counts, LoadResult, add_counts, by_partition, per_bucket
from mysql_pg_assets.sync.load.salvage import reject_refused_values
from mysql_pg_assets.sync.load.staging import Staging, Tally, drop_staging, stage
from mysql_pg_assets.sync.load.swap import (
    BUILD_MARK,
    SwapRefused,
    drop_own,
    mark,
    shadow_for,
    shadow_plan,
    swap_in,
)
from mysql_pg_assets.sync.load.versioned import Script, script_for_load
from mysql_pg_assets.sync.validate import ValidatedBatch

log = logging.getLogger(__name__)


def _write(connection: psycopg.Connection, table: TablePlan, rows: str, new_table: bool, scope: Scope) -> Counts:
    bucket = target_bucket(table, scope)
    by, params = bucket if bucket else (None, [])
    if new_table and by is None:
        return {0: Counter(inserted=connection.execute(insert_sql(table, rows)).rowcount)}
    sql = insert_sql(table, rows, by) if new_table else upsert_sql(table, rows, by)
    return per_bucket(connection.execute(sql, params or None).fetchall(), ("inserted", "updated"))


def merge_staged(
    connection: psycopg.Connection, table: TablePlan, staging: Staging, rows: str, new_table: bool, scope: Scope
) -> Counts:
    """Upsert one staged batch; returns, per partition, rows inserted, updated and rejected by PostgreSQL."""
    try:
        with connection.transaction():  # a savepoint: a refused value undoes only this statement
            return _write(connection, table, rows, new_table, scope)
    except psycopg.DataError:  # SQLSTATE class 22: a value PostgreSQL cannot take
        pass
    counts = reject_refused_values(connection, table, staging, rows, scope)
    add_counts(counts, _write(connection, table, rows, new_table, scope))  # now any error propagates
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
                merged = merge_staged(self.connection, self.table, self.staging, rows, self.new_table, self.scope)
                add_counts(self.counts, merged)
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
        numeric = cursor is not None and not cursor.temporal
        marks = [w for w, _ in self.watermarks if w is not None]
        watermark = max(marks, key=(lambda w: int(w)) if numeric else None) if marks else None
        times = [t for _, t in self.watermarks if t is not None]
        return watermark, max(times) if times else None


def lock_table(connection: psycopg.Connection, target_label: str, until_commit: bool = False,
               wait: bool = True) -> bool:
    """The advisory lock every writer of a table takes (a load, change capture's apply, a recovery), so that
    no two interleave: for the session, or only ``until_commit`` of the open transaction. Not ``wait``:
    returns at once whether it was taken."""
    function = ("pg_advisory_xact_lock" if until_commit else "pg_advisory_lock") if wait else (
        "pg_try_advisory_xact_lock" if until_commit else "pg_try_advisory_lock")
    row = connection.execute(f"SELECT {function}(hashtextextended(%s, 0))", ("table " + target_label,)).fetchone()
    return wait or bool(row[0])


@contextmanager
def _table_lock(postgres_url: DatabaseUrl, table: TablePlan) -> Iterator[tuple[psycopg.Connection, MetaTables]]:
    """A connection holding the table's session advisory lock, with the schemas and project tables ready."""
    with pg_connection(postgres_url) as connection:  # closed or reset on exit: the lock is released
        meta = known_while_reusing(("meta", postgres_url.secret, table.target_schema),
                                   lambda: ensure(connection, table.target_schema))
        # Another load of this table: wait for it however long it takes (it has timeouts of its own).
        connection.execute("SET lock_timeout = 0")
        lock_table(connection, table.target_label)
        connection.execute("RESET lock_timeout")
        yield connection, meta


def _newest(table: TablePlan, values: dict[str, str] | None = None) -> tuple[str, str] | None:
    """SQL for the newest staged cursor value (as text) and the newest timestamp (for lag), over the staged
    rows ``s`` (or over ``values``, a table's own columns)."""
    cursor, partition = table.cursor, table.partition_column
    if cursor is None and partition is None:
        return None
    values = values or staged_values(table)

    def as_utc(column: ColumnPlan) -> str:
        expression = f"max({values[column.target_name]})"
        if column.pg_type == "timestamptz":
            return expression
        if column.pg_type in ("timestamp", "date"):
            return f"({expression})::timestamp AT TIME ZONE 'UTC'"
        return "NULL::timestamptz"

    watermark = "NULL::text"
    if cursor is not None:
        if cursor.temporal:
            watermark = f"to_char({as_utc(cursor)} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        else:
            watermark = f"max({values[cursor.target_name]})::text"
    temporal = cursor if cursor is not None and cursor.temporal else partition
    return watermark, as_utc(temporal) if temporal is not None else "NULL::timestamptz"


def _deleted(connection: psycopg.Connection, sql: str, params: list[object]) -> Counts:
    return per_bucket(connection.execute(sql, params).fetchall(), ("deleted",))


def _scope_label(scope: Scope) -> str:
    return {Window: "partition", Since: "incremental"}.get(type(scope), "full")


def load_table(
    table: TablePlan, batches: Iterable[ValidatedBatch], postgres_url: DatabaseUrl, run_id: str | None = None,
    scope: Scope = None, source_keys: Iterable[pl.DataFrame] = (), partition: str | None = None,
    settle: Callable[[psycopg.Connection, MetaTables, TablePlan], tuple[str, int]] | None = None,
    direct: bool = True, ceiling: Ceiling | None = None,
) -> LoadResult:
    """Merge the scope's rows into the target in one transaction; see the module docstring. A change-captured
    table's snapshot is ``settle``d in the same transaction (``sync.capture.handoff``), which gives the binlog
    position it then reflects, recorded with it. A table this load creates is written ``direct``ly, without
    staging (``build``), where its types allow. A read in pages records a watermark no newer than its
    ``ceiling`` (``extract.cursor_ceiling``)."""
    started = time.perf_counter()
    with _table_lock(postgres_url, table) as (connection, meta):
        staging = Staging.for_table(table, meta)
        drop_staging(connection, meta.schema, staging.table_prefix)  # left by a killed run of this table
        free = _clear_build_name(connection, table)
        direct = direct and free and not isinstance(scope, Since) and writes_directly(table)
        exists = relation_exists(connection, table.target)
        kept = _kept(connection, table, scope) if direct and exists else None
        if direct and (not exists or kept == []):
            return _load_new(connection, meta, table, batches, postgres_url, staging, scope, settle, run_id,
                             partition, replacing=exists, ceiling=ceiling)
        try:
            with connection.transaction():
                connection.execute("SET LOCAL TimeZone = 'UTC'")
                table, new_table, migration, script = _prepare(connection, table, scope)
                deleted: Counts = {}
                if not table.primary_key and not new_table:  # nothing to merge on: the scope is replaced
                    deleted = _deleted(connection, *delete_missing_sql(table, staging, scope, False, False))
                tally, merger = Tally(), _Merger(connection, table, staging, new_table, scope)
                try:
                    arrived = stage(postgres_url, table, staging, batches, source_keys, tally, merger.submit)
                finally:
                    merger.finish()
                if table.primary_key:
                    deleted = _key_and_deletes(connection, table, staging, scope, new_table, arrived)
                pending = _after_rows(connection, table, migration, run_id, script)
                add_counts(merger.counts, deleted)
                rejected_values = write_rejects(connection, meta, staging.rejects, run_id, table.source_label,
                                                table.target_label) if arrived[0] else 0
                result = _result(table, scope, tally, merger, rejected_values, migration, pending, meta, started)
                if ceiling is not None:
                    result = replace(result, watermark=ceiling.cap(result.watermark))
                record_load(connection, meta, _ledger_row(table, result, run_id, scope, partition))
                if settle is not None:
                    record_position(connection, meta, table.source_label, table.target_label,
                                    *settle(connection, meta, table))
                if table.build_as is not None:  # last: readers wait only from here to the commit
                    result = _swap(connection, table, migration, run_id, result)
                if kept:
                    result = replace(result, written=f"merged (replacing would lose: {'; '.join(kept)})")
        except psycopg.Error as exc:
            raise TargetError(f"loading {table.target_label} into PostgreSQL at {postgres_url}: "
                              f"{explain(str(exc))}") from None
        finally:
            if not connection.broken:  # a server gone away: the next load of the table drops them
                with contextlib.suppress(psycopg.Error):
                    drop_staging(connection, meta.schema, staging.prefix)
    return result


def _clear_build_name(connection: psycopg.Connection, table: TablePlan) -> bool:
    """Drop the ``<table>__next`` a killed first load or replacement left; returns whether the name is free to
    build in (False: a synced table of that name holds it, and stays; the load merges)."""
    try:
        with connection.transaction():
            drop_own(connection, shadow_plan(table).target, BUILD_MARK)
    except SwapRefused:
        return False
    return True


def _kept(connection: psycopg.Connection, table: TablePlan, scope: Scope) -> list[str] | None:
    """For a full load of an existing table that could be replaced (``replace``): what the live table has that
    a new one would lack (empty: it is replaced). None: the load is not such a load."""
    if scope is not None or table.full_reload == "merge" or table.build_as \
            or table.full_reload == "auto" and not big_enough(connection, table) or plan(connection, table):
        return None
    kept = kept_by_live(connection, table)
    if kept:
        log.info("%s: merged into, not replaced, which would lose: %s", table.target_label, "; ".join(kept))
    return kept


def _load_new(
    connection: psycopg.Connection, meta: MetaTables, table: TablePlan, batches: Iterable[ValidatedBatch],
    postgres_url: DatabaseUrl, staging: Staging, scope: Scope,
    settle: Callable[[psycopg.Connection, MetaTables, TablePlan], tuple[str, int]] | None, run_id: str | None,
    partition: str | None, replacing: bool, ceiling: Ceiling | None,
) -> LoadResult:
    def finish(connection: psycopg.Connection, build: TablePlan) -> tuple[str | None, datetime | None]:
        _after_rows(connection, build, None, run_id, None)
        newest = _newest(build, column_values(build))
        if not newest:
            return None, None
        watermark, latest = connection.execute(f"SELECT {newest[0]}, {newest[1]} FROM {build.target} s").fetchone()
        return ceiling.cap(watermark) if ceiling is not None else watermark, latest

    try:
        return load_new(connection, meta, table, batches, postgres_url, staging, scope, finish, settle, run_id,
                        lambda result: _ledger_row(table, result, run_id, scope, partition), replacing)
    except psycopg.Error as exc:
        raise TargetError(f"loading {table.target_label} into PostgreSQL at {postgres_url}: "
                          f"{explain(str(exc))}") from None
    finally:
        if not connection.broken:  # its staging (the half-built table went with the rolled-back transaction)
            with contextlib.suppress(psycopg.Error):
                drop_staging(connection, meta.schema, staging.prefix)


def _prepare(connection: psycopg.Connection, table: TablePlan, scope: Scope
             ) -> tuple[TablePlan, bool, Migration | None, Script | None]:
    """Create the target if it is missing (keyed and indexed only once filled: one index build instead
    of one insertion per row), or migrate it to MySQL's schema in this transaction: by its committed script
    (``versioned``) or the built-in steps, or, blue/green, by building the new shape aside (``swap``). A
    destructive change raises SchemaChangeHeld unless approved. Returns (the plan to write: the table or its
    shadow, created, migration, script)."""
    new_table = not relation_exists(connection, table.target)
    migration = None if new_table else plan(connection, table)
    script = script_for_load(table, migration) if migration else None
    if migration and table.blue_green and migration.reloads_rows:
        require_approval(connection, migration)
        table, new_table = shadow_for(connection, table, scope), True
    connection.execute(create_table_sql(table, with_key=not new_table))
    for statement in comments_sql(table) if new_table else ():
        connection.execute(statement)
    if table.build_as is not None:
        mark(connection, table.target, BUILD_MARK, table.target_label)
    elif migration:
        apply_before(connection, migration, script)
    return table, new_table, migration, script


def _swap(connection: psycopg.Connection, shadow: TablePlan, migration: Migration | None, run_id: str | None,
          result: LoadResult) -> LoadResult:
    """A blue/green load's end: the migration recorded, the shadow swapped in (``swap``)."""
    if migration is not None:
        record_applied(connection, migration, run_id, "blue/green")
    previous = swap_in(connection, shadow)
    return replace(result, schema_changes=result.schema_changes + (
        f"built as {shadow.build_as} and swapped in; the previous table is {previous}",))


def _key_and_deletes(
    connection: psycopg.Connection, table: TablePlan, staging: Staging, scope: Scope, new_table: bool,
    arrived: tuple[bool, bool],
) -> Counts:
    """A new table gets its key; an existing one loses the rows of the scope MySQL no longer has."""
    if new_table:
        connection.execute(f"ALTER TABLE {table.target} ADD PRIMARY KEY ({pg_idents(table.primary_key)})")
        return {}
    return _deleted(connection, *delete_missing_sql(table, staging, scope, *arrived))


def _after_rows(connection: psycopg.Connection, table: TablePlan, migration: Migration | None,
                run_id: str | None, script: Script | None) -> list[str]:
    """What needs the rows in place: the migration's constraints, indexes, foreign keys, identities.
    Returns what of the migration waits for a load that covers every row."""
    # Deferred foreign-key checks run now (a violation fails the load here, as it would at commit):
    # PostgreSQL refuses DDL on a table with checks still pending.
    connection.execute("SET CONSTRAINTS ALL IMMEDIATE")
    in_place = migration and table.build_as is None
    pending = apply_after(connection, migration, run_id, script.name if script else None) if in_place else []
    for statement in create_indexes_sql(table):
        connection.execute(statement)
    add_foreign_keys(connection, table)
    follow_identities(connection, table)
    return pending


def _result(
    table: TablePlan, scope: Scope, tally: Tally, merger: _Merger, rejected_values: int,
    migration: Migration | None, pending: list[str], meta: MetaTables, started: float,
) -> LoadResult:
    watermark, newest = merger.newest()
    if watermark is None and isinstance(scope, Since):
        watermark = str(scope.value)  # nothing newer arrived: the watermark stays
    return LoadResult(
        rows_read=tally.rows_read, inserted=merger.total("inserted"), updated=merger.total("updated"),
        deleted=merger.total("deleted"), rejected_rows=tally.rejected_rows + merger.total("refused"),
        rejected_values=rejected_values, seconds=time.perf_counter() - started, conversions=tally.conversions,
        watermark=watermark, newest_source_value=newest,
        schema_changes=tuple(migration.summary()) if migration else (), schema_pending=tuple(pending),
        rejects_table=meta.label("rejects"), by_partition=by_partition(scope, tally.by_partition, merger.counts),
        expectations={name: (f.rows, tuple(f.cases)) for name, f in tally.expectations.items()},
    )


def _ledger_row(table: TablePlan, result: LoadResult, run_id: str | None, scope: Scope,
                partition: str | None) -> dict[str, object]:
    return {
        "run_id": run_id, "source_table": table.source_label, "target_table": table.target_label,
        "partition": partition, "scope": _scope_label(scope),
        "window_start": scope.start if isinstance(scope, Window) else None,
        "window_end": scope.end if isinstance(scope, Window) else None,
        "watermark_from": str(scope.value) if isinstance(scope, Since) else None,
        "watermark_to": result.watermark, "newest_source_value": result.newest_source_value,
        "rows_read": result.rows_read, "rows_inserted": result.inserted, "rows_updated": result.updated,
        "rows_deleted": result.deleted, "rows_rejected": result.rejected_rows,
        "values_converted": result.conversions.total, "seconds": result.seconds,
    }
