"""One table, end to end: extract → transform → load. Knows nothing of Dagster."""

from __future__ import annotations

from mysql_pg_assets.catalog import TablePlan
from mysql_pg_assets.extract import DEFAULT_BATCH_ROWS, read_batches
from mysql_pg_assets.load import LoadResult, load_table
from mysql_pg_assets.settings import DatabaseUrl
from mysql_pg_assets.transform import staging_frames


def sync_table(
    table: TablePlan, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> LoadResult:
    batches = read_batches(mysql_url, table, batch_rows)
    return load_table(table, staging_frames(batches, table), postgres_url)
