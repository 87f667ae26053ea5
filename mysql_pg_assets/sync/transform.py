"""Transform: apply each column's casting rule to a batch with polars, counting what changed.

The output frame has the staging columns ``c0 … cN`` in the plan's order, typed so that the
load can COPY them and PostgreSQL can cast each to its target type, plus the ``converted<i>``
and ``invalid<i>`` flags the extract read beside the values, which validation uses.

Conversions are counted per column and kind, never silent:

- ``zero date → NULL``: MySQL zero dates, made NULL by the read expression;
- ``NUL bytes removed``: PostgreSQL text cannot hold U+0000, so it is removed from text values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from mysql_pg_assets.sync.catalog.plans import TablePlan, converted_flag_name, invalid_flag_name, staging_name

NUL_REMOVED = "NUL bytes removed"


@dataclass
class Conversions:
    """How many values each conversion changed, keyed by (target column, conversion)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: Conversions) -> None:
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metadata(self) -> dict[str, int]:
        return {f"{column}: {kind}": count for (column, kind), count in sorted(self.counts.items())}


def _strips_nul(frame: pl.DataFrame, name: str, pg_type: str) -> bool:
    return frame.schema[name] == pl.String and pg_type != "bytea"


def to_staging(batch: pa.RecordBatch | pa.Table, table: TablePlan) -> tuple[pl.DataFrame, Conversions]:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    conversions = Conversions()
    expressions: list[pl.Expr] = []
    count_expressions: list[pl.Expr] = []
    for i, column in enumerate(table.columns):
        name = staging_name(i)
        value = pl.col(name)
        flag = converted_flag_name(i)
        if flag in frame.columns:
            count_expressions.append(pl.col(flag).cast(pl.Boolean).sum().alias(f"{i}\t{column.rule.converted_as}"))
            expressions.append(pl.col(flag).cast(pl.Boolean).fill_null(False))
        if invalid_flag_name(i) in frame.columns:
            expressions.append(pl.col(invalid_flag_name(i)).cast(pl.Boolean).fill_null(False))
        if _strips_nul(frame, name, column.pg_type):
            count_expressions.append(value.str.contains("\x00", literal=True).sum().alias(f"{i}\t{NUL_REMOVED}"))
            value = value.str.replace_all("\x00", "", literal=True)
        expressions.append(column.rule.to_staging(value).alias(name))
    if count_expressions:
        for key, count in frame.select(count_expressions).row(0, named=True).items():
            if count:
                index, kind = key.split("\t")
                conversions.counts[(table.columns[int(index)].target_name, kind)] += int(count)
    return frame.select(expressions), conversions


def partitions_of(values: pl.Series, splits: tuple[datetime, ...]) -> pl.Series:
    """Which partition of a range each value is in (0: the first, which also holds NULL and earlier values):
    the number of splits at or before it, as PostgreSQL's ``width_bucket`` counts it in the load."""
    naive = [s.astimezone(UTC).replace(tzinfo=None) if s.tzinfo else s for s in splits]
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    elif isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone:
        values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    values = values.cast(pl.Datetime("us")).fill_null(datetime.min)
    return pl.Series(naive, dtype=pl.Datetime("us")).search_sorted(values, side="right")


def count_by_partition(frame: pl.DataFrame, column: str, splits: tuple[datetime, ...]) -> Counter[int]:
    if not splits or frame.height == 0:
        return Counter({0: frame.height}) if frame.height else Counter()
    return Counter(partitions_of(frame[column], splits).to_list())


def keys_to_staging(batch: pa.RecordBatch, table: TablePlan) -> pl.DataFrame:
    """The primary-key columns of a keys-only read, typed like the same columns of a full batch."""
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        column.rule.to_staging(pl.col(staging_name(i))).alias(staging_name(i))
        for i, column in enumerate(table.columns) if column.target_name in table.primary_key
    )
