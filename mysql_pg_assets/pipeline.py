"""One table, end to end: extract → transform → validate → load. Knows nothing of Dagster."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from mysql_pg_assets.catalog import TablePlan
from mysql_pg_assets.extract import DEFAULT_BATCH_ROWS, read_batches
from mysql_pg_assets.load import LoadResult, load_table
from mysql_pg_assets.settings import DatabaseUrl
from mysql_pg_assets.transform import to_staging
from mysql_pg_assets.validate import ValidatedBatch, schema_for, validate


def validated_batches(batches: Iterable[pa.RecordBatch], table: TablePlan) -> Iterator[ValidatedBatch]:
    schema = schema_for(table)
    for batch in batches:
        if batch.num_rows:
            frame, conversions = to_staging(batch, table)
            yield validate(frame, conversions, table, schema)


def sync_table(
    table: TablePlan, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl,
    batch_rows: int = DEFAULT_BATCH_ROWS, run_id: str | None = None,
) -> LoadResult:
    batches = read_batches(mysql_url, table, batch_rows)
    return load_table(table, validated_batches(batches, table), postgres_url, run_id)
