"""Transform: apply each column's casting rule to a batch with polars.

The output frame has the staging columns ``c0 … cN`` in the plan's order, typed so that the
load can COPY them and PostgreSQL can cast each to its target type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl
import pyarrow as pa

from mysql_pg_assets.catalog import TablePlan
from mysql_pg_assets.extract import staging_name


def to_staging(batch: pa.RecordBatch | pa.Table, table: TablePlan) -> pl.DataFrame:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        column.rule.to_staging(pl.col(staging_name(i))).alias(staging_name(i))
        for i, column in enumerate(table.columns)
    )


def staging_frames(batches: Iterable[pa.RecordBatch], table: TablePlan) -> Iterator[pl.DataFrame]:
    for batch in batches:
        if batch.num_rows:
            yield to_staging(batch, table)
