"""One table, end to end: extract → transform → validate → load. Knows nothing of Dagster.

What a load reads (its scope):

- a partition's time window, when the caller gives one (``window``);
- otherwise, for a table with a ``cursor_column`` and a primary key, the rows whose cursor is at
  or past the last load's newest (a high-watermark from the ledger), plus every primary key, so
  deletes are seen too; but the whole table when MySQL's schema changed in a way that needs the
  rows already loaded read again (a new column, a changed type: see ``migrate``);
- otherwise the whole table.

Whatever the scope, the rows pass through :func:`validated_batches`: the casting rules and the
spec's transforms (masks, derived columns, the Python transform), validation, and the spec's own
checks, from the one table plan. Change capture's apply (``sync.capture.apply``) calls it too, on the
binlog's row images; any other path that writes rows must, so that none skips a mask.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from mysql_pg_assets.core.connections import pg_connection, relation_exists
from mysql_pg_assets.core.meta import last_watermark
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.catalog.plans import TablePlan, staging_name
from mysql_pg_assets.sync.extract import (
    DEFAULT_BATCH_ROWS,
    Scope,
    Since,
    Window,
    cursor_ceiling,
    keys_sql,
    page_key,
    read_batches,
)
from mysql_pg_assets.sync.load.build import DirectWriteRefused
from mysql_pg_assets.sync.load.loader import load_table
from mysql_pg_assets.sync.load.migrate import pending_migration
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.transform import LoadContext, count_by_partition, keys_to_staging, to_staging
from mysql_pg_assets.sync.validate import ValidatedBatch, expectation_schemas, schema_for, validate

log = logging.getLogger(__name__)


def validated_batches(
    batches: Iterable[pa.RecordBatch], table: TablePlan, splits: tuple[datetime, ...] = (),
    context: LoadContext | None = None,
) -> Iterator[ValidatedBatch]:
    """Each batch converted, transformed and validated; with ``splits`` (a range of partitions), its rows read
    and rejected counted per partition."""
    schema = schema_for(table)
    context = context or LoadContext.of(table)
    user_checks = expectation_schemas(table, context)
    column = next((staging_name(i) for i, c in enumerate(table.columns) if c is table.partition_column), None)
    for batch in batches:
        if batch.num_rows:
            frame, conversions = to_staging(batch, table, context)
            validated = validate(frame, conversions, table, schema, user_checks)
            if splits and column is not None:
                read = count_by_partition(frame, column, splits)
                validated = replace(validated, read_by_partition=read,
                                    rejected_by_partition=read - count_by_partition(validated.rows, column, splits))
            yield validated


def parse_watermark(table: TablePlan, text: str) -> datetime | int:
    cursor = table.cursor
    assert cursor is not None
    if cursor.temporal:
        return datetime.fromisoformat(text)
    return int(text)


def scope_for(table: TablePlan, postgres_url: DatabaseUrl, window: Window | None) -> Scope:
    if window is not None:
        if table.partition is None:
            raise ValueError(f"{table.target_label} has no partition column: it cannot load a window")
        return window
    if table.cursor is not None and table.primary_key:
        migration = pending_migration(postgres_url, table)
        if migration is not None and migration.reloads_rows:
            return None  # rows loaded before a new or changed column must be read again
        with pg_connection(postgres_url) as connection:  # a table dropped in PostgreSQL is read whole again
            exists = relation_exists(connection, table.target)
            watermark = last_watermark(connection, table.target_schema, table.target_label) if exists else None
        if watermark is not None:
            return Since(parse_watermark(table, watermark))
    return None


def sync_table(
    table: TablePlan, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl,
    batch_rows: int = DEFAULT_BATCH_ROWS, run_id: str | None = None,
    window: Window | tuple[datetime, datetime] | None = None, partition: str | None = None,
) -> LoadResult:
    """Load one table (or one window of it) from MySQL into PostgreSQL; see the module docstring."""
    if isinstance(window, tuple):
        window = Window(*window)
    scope = scope_for(table, postgres_url, window)
    # A change-captured table's snapshot: settled at the binlog's position once read. (The capture applies
    # its changes through this module's validated_batches: imported here, not above.)
    from mysql_pg_assets.sync.capture.binlog import master_position
    from mysql_pg_assets.sync.capture.handoff import settler

    settle = settler(mysql_url, postgres_url, table, master_position(mysql_url), run_id) \
        if table.cdc and scope is None else None
    ceiling = cursor_ceiling(mysql_url, table) \
        if scope is None and table.cursor is not None and page_key(table) is not None else None

    def load(direct: bool) -> LoadResult:
        batches = read_batches(mysql_url, table, batch_rows, scope)
        keys: Iterable = ()
        if isinstance(scope, Since):
            keys = (keys_to_staging(b, table) for b in read_batches(mysql_url, table, batch_rows, sql=keys_sql(table)))
        context = LoadContext.of(table, run_id, partition)
        rows = validated_batches(batches, table, scope.splits if isinstance(scope, Window) else (), context)
        return load_table(table, rows, postgres_url, run_id, scope, keys, partition, settle, direct, ceiling)

    try:
        return load(direct=True)
    except DirectWriteRefused as exc:  # read again, by the merge path, which rejects the value refused
        log.warning("%s; loading it again by the merge path", exc)
        return load(direct=False)
