"""From a table plan to Dagster: asset key, column schema, partitions and windows, freshness, descriptions
and materialization metadata. The one place the plan's terms become Dagster's.
"""

import math
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetKey,
    DailyPartitionsDefinition,
    FreshnessPolicy,
    HourlyPartitionsDefinition,
    MetadataValue,
    MonthlyPartitionsDefinition,
    PartitionKeyRange,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

from mysql_pg_assets.sync.catalog.plans import TablePlan, dagster_safe_name
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.many import related


def asset_key(table: TablePlan) -> AssetKey:
    return AssetKey([dagster_safe_name(table.target_schema), table.asset_name])


def parent_keys(table: TablePlan) -> list[AssetKey]:
    """MySQL's foreign keys that are lineage (see ``catalog.lineage``), as the asset's dependencies."""
    parents = {AssetKey([dagster_safe_name(table.target_schema), dagster_safe_name(key.referenced_target)])
               for key in table.foreign_keys if key.lineage}
    return sorted(parents, key=lambda k: tuple(k.path))


def column_schema(table: TablePlan) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(
            name=column.target_name,
            type=column.pg_type,
            description=column.origin,
            constraints=TableColumnConstraints(
                nullable=column.nullable, unique=list(table.primary_key) == [column.target_name]
            ),
        )
        for column in table.columns
    ])


def freshness_for(table: TablePlan) -> FreshnessPolicy | None:
    if table.freshness is None:
        return None
    return FreshnessPolicy.time_window(fail_window=table.freshness.fail_after, warn_window=table.freshness.warn_after)


_PARTITIONS: dict[str, Callable[..., TimeWindowPartitionsDefinition]] = {
    "hourly": HourlyPartitionsDefinition,
    "daily": DailyPartitionsDefinition,
    "weekly": WeeklyPartitionsDefinition,
    "monthly": MonthlyPartitionsDefinition,
}


def partitions_for(table: TablePlan) -> TimeWindowPartitionsDefinition | None:
    if table.partition is None:
        return None
    start = table.partition.start
    return _PARTITIONS[table.partition.granularity](
        start_date=start if table.partition.granularity == "hourly" else start.date().isoformat(),
        end_offset=table.partition.end_offset, timezone="UTC",
    )


def step_name(table: TablePlan) -> str:
    """The step that loads ``table``, shared by every table of its database with the same partitions (or
    none): ``sync_shop``, ``sync_shop_monthly_from_2025_10_01``. See ``defs.assets`` for why."""
    name = f"sync_{table.source_database}"
    if table.partition is not None:
        hour = "_%H00" if table.partition.granularity == "hourly" else ""
        name += f"_{table.partition.granularity}_from_{table.partition.start.strftime('%Y_%m_%d' + hour)}"
        if table.partition.end_offset != 1:
            name += f"_offset_{table.partition.end_offset}"
    return dagster_safe_name(name)


# How many tables a step loads. Dagster's handling of one check result scans every output of its step,
# so a step of n tables costs n² (measured: 500 tables in one step spent 38 s there); and each step is
# a process, started in a second or two. Steps of at most 150 tables keep the first small, and as many
# steps as Dagster's executor runs at once (one per CPU, its default) keep every CPU busy: 500 tables
# on 2 CPUs are 4 steps of 125, run two by two. A step has at least 50 tables (fewer: one step).
MOST_TABLES_PER_STEP = 150
FEWEST_TABLES_PER_STEP = 50


def step_size(tables: int, slots: int) -> int:
    """Tables per step for ``tables`` tables and ``slots`` steps at once: at most MOST_TABLES_PER_STEP,
    in rounds of ``slots`` steps of equal size."""
    slots = max(1, slots)
    rounds = math.ceil(tables / (slots * MOST_TABLES_PER_STEP))
    return max(FEWEST_TABLES_PER_STEP, math.ceil(tables / (rounds * slots)))


def steps(tables: Sequence[TablePlan], slots: int | None = None) -> dict[str, list[TablePlan]]:
    """The tables, by the step that loads them (in their catalog order): a database's tables with the
    same partitions, in steps of :func:`step_size` (``slots``: steps run at once, by default the CPUs).
    Tables joined by lineage share a step whatever their number, so no step waits for another's (nor is
    skipped when another fails)."""
    grouped: dict[str, list[TablePlan]] = {}
    for table in tables:
        grouped.setdefault(step_name(table), []).append(table)
    chunked: dict[str, list[TablePlan]] = {}
    for name, group in grouped.items():
        size = step_size(len(group), slots or os.cpu_count() or 1)
        chunks: list[list[TablePlan]] = []
        for joined in related(group):
            if chunks and len(chunks[-1]) + len(joined) <= size:
                chunks[-1] += joined
            else:
                chunks.append(list(joined))
        for number, chunk in enumerate(chunks, 1):
            chunked[name if len(chunks) == 1 else f"{name}_{number}"] = chunk
    return chunked


def partition_window(table: TablePlan, keys: Sequence[str]) -> Window:
    """The rows of the partitions ``keys`` (consecutive, in order; see :func:`range_keys`). The first
    partition also holds every row before it and every row whose partition column is NULL or a zero
    date, the last one every row after it (it moves on as time does): so every MySQL row is some
    partition's, and none is left out."""
    partitions = partitions_for(table)
    assert partitions is not None and keys, table.target_label
    first, last = keys[0], keys[-1]
    start = partitions.time_window_for_partition_key(first).start
    end = partitions.time_window_for_partition_key(last).end
    splits = tuple(partitions.time_window_for_partition_key(key).start
                   for key in keys[1:])  # a range: its figures per partition
    return Window(None if first == partitions.get_first_partition_key() else start,
                  None if last == partitions.get_last_partition_key() else end, splits)


def range_keys(table: TablePlan, first: str, last: str) -> list[str]:
    partitions = partitions_for(table)
    assert partitions is not None, table.target_label
    return list(partitions.get_partition_keys_in_range(PartitionKeyRange(first, last)))


def key_ranges(keys: list[str], every_key: list[str], limit: int = 5) -> str:
    """Partition keys as runs of neighbours: '2025-01...2025-03, 2025-05' (``every_key`` gives the order)."""
    position = {key: i for i, key in enumerate(every_key)}
    runs: list[list[str]] = []
    for key in sorted(keys, key=position.__getitem__):
        if runs and position[runs[-1][-1]] + 1 == position[key]:
            runs[-1].append(key)
        else:
            runs.append([key])
    text = ", ".join(run[0] if len(run) == 1 else f"{run[0]}...{run[-1]}" for run in runs[:limit])
    return (text + (f" and {len(runs) - limit} more ranges" if len(runs) > limit else "")) or "none"


def human_duration(seconds: float) -> str:
    """'2 d 3 h', '3 h 12 min', '4 min 5 s', '12.5 s': a lag as a person reads it."""
    whole = int(abs(seconds))
    days, hours, minutes = whole // 86_400, whole % 86_400 // 3_600, whole % 3_600 // 60
    sign = "-" if seconds < 0 else ""
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    if minutes:
        return f"{sign}{minutes} min {whole % 60} s"
    return f"{sign}{abs(seconds):.1f} s"


# In a run over several partitions these describe the whole run, and say so by their name.
_RANGE_FIGURES = ("values_rejected", "values_converted", "conversions", "duration_s", "rows_per_s", "lag_s", "lag",
                  "newest_source_value", "watermark")


def materialization_metadata(table: TablePlan, result: LoadResult, run_range: str | None = None) -> dict[str, Any]:
    """What every partition of the run (or the table) shows. With ``run_range`` (a run over several
    partitions) the row figures are each partition's own (``partition_metadata``) and the figures only
    the whole run has are named ``range_…``, beside ``range``, so no plot shows one run's totals as a
    partition's."""
    metadata: dict[str, Any] = {
        "dagster/row_count": result.rows_loaded,
        "rows_read": result.rows_read,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
        "rows_rejected": result.rejected_rows,
        "values_rejected": result.rejected_values,
        "values_converted": result.conversions.total,
        "conversions": MetadataValue.json(result.conversions.as_metadata()),
        "rejects_table": MetadataValue.text(result.rejects_table),
        "written": MetadataValue.text(result.written),
        "duration_s": MetadataValue.float(round(result.seconds, 3)),
        "rows_per_s": MetadataValue.float(round(result.rows_read / result.seconds, 1) if result.seconds else 0.0),
        "dagster/column_schema": column_schema(table),
    }
    if result.schema_changes:
        metadata["schema_changes"] = MetadataValue.json(list(result.schema_changes))
    if result.schema_pending:
        metadata["schema_pending"] = MetadataValue.json(list(result.schema_pending))
    if result.watermark is not None:
        metadata["watermark"] = MetadataValue.text(result.watermark)
    if result.newest_source_value is not None:
        metadata["newest_source_value"] = MetadataValue.timestamp(result.newest_source_value)
        lag = (datetime.now(UTC) - result.newest_source_value).total_seconds()
        metadata["lag_s"] = MetadataValue.float(round(lag, 1))
        metadata["lag"] = MetadataValue.text(human_duration(lag))
    if run_range is None:
        return metadata
    ranged = {f"range_{k}" if k in _RANGE_FIGURES else k: v for k, v in metadata.items()}
    return {"range": MetadataValue.text(run_range), **ranged}


def partition_metadata(result: LoadResult, rows_in_postgres: dict[int, int]) -> dict[int, dict[str, object]]:
    """Each partition's own figures in a run over several (by its position in the run's range)."""
    return {position: {"dagster/row_count": rows_in_postgres.get(position, 0), **figures}
            for position, figures in result.by_partition.items()}


def description(table: TablePlan) -> str:
    lines = [f"MySQL table `{table.source_label}` kept in PostgreSQL as `{table.target_label}`."]
    for key in table.foreign_keys:
        if not key.lineage:
            lines.append(f"Foreign key `{key.name}` ({', '.join(key.columns)} → {key.referenced_target}) is not "
                         f"drawn as lineage, nor created as a constraint: {key.not_lineage}.")
    if table.row_filter:
        lines.append(f"Only the rows where `{table.row_filter}` are synced (the row filter; the checks count MySQL "
                     f"with it).")
    hidden = [c.target_name for c in table.columns if c.mask is not None]
    computed = [c.target_name for c in table.columns if not c.comparable and c.mask is None]
    if hidden or computed:
        lines.append(f"Masked: {', '.join(hidden) or 'none'}. Computed or changed by a transform: "
                     f"{', '.join(computed) or 'none'}. Each column's origin is in its schema.")
    return "\n\n".join(lines)


def load_description(table: TablePlan) -> str:
    if table.partition is not None:
        return (f"{table.partition.granularity} partitions on {table.partition.column}; each run upserts its window "
                f"and {'tombstones' if table.tombstones else 'deletes'} rows gone from MySQL in it")
    if table.cursor_column and table.primary_key:
        return (f"incremental: rows with {table.cursor_column} at or past the last load's newest, "
                f"deletes found by comparing keys")
    return "full: every row, rows gone from MySQL deleted"
