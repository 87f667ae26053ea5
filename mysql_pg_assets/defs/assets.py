"""The asset factory: one Dagster asset per synced table, built from the catalog.

Asset key ``[<target schema>, <table>]``, group = source database, kinds mysql and postgres.
The definition carries the column schema (each MySQL type and the PostgreSQL type it becomes),
so the UI shows it before the first materialization; every materialization reports rows read,
inserted, updated, deleted, duration and rows/s.
"""

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    FreshnessPolicy,
    HourlyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    MonthlyPartitionsDefinition,
    PartitionKeyRange,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    asset,
)

from mysql_pg_assets.checks.parity import (
    Fingerprint,
    Sample,
    checksum_columns,
    fingerprints,
    partition_row_counts,
    sample_rows,
    schema_differences,
    table_counts,
)
from mysql_pg_assets.core import alerts
from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import rejects_sample
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.pipeline import sync_table

# Where rejects go when the role may create schemas; the materialization names the real place (see meta).
REJECTS_TABLE = "mysql_pg_assets.rejects"


def column_schema(table: TablePlan) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(
            name=column.target_name,
            type=column.pg_type,
            description=f"MySQL {column.source.column_type} → PostgreSQL {column.pg_type} "
                        f"(rule: {column.rule.name})",
            constraints=TableColumnConstraints(
                nullable=column.nullable, unique=list(table.primary_key) == [column.target_name]
            ),
        )
        for column in table.columns
    ])


def asset_key(table: TablePlan) -> AssetKey:
    return AssetKey([dagster_safe_name(table.target_schema), table.asset_name])


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


def materialization_metadata(table: TablePlan, result: LoadResult, run_range: str | None = None) -> dict[str, object]:
    """What every partition of the run (or the table) shows. With ``run_range`` (a run over several
    partitions) the row figures are each partition's own (``partition_metadata``) and the figures only
    the whole run has are named ``range_…``, beside ``range``, so no plot shows one run's totals as a
    partition's."""
    metadata: dict[str, object] = {
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


_PARTITIONS: dict[str, type[TimeWindowPartitionsDefinition]] = {
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


def partition_window(table: TablePlan, first: str, last: str) -> Window:
    """The rows of the partitions ``first`` … ``last``. The first partition also holds every row before
    it and every row whose partition column is NULL or a zero date, the last one every row after it
    (it moves on as time does): so every MySQL row is some partition's, and none is left out."""
    partitions = partitions_for(table)
    assert partitions is not None, table.target_label
    start = partitions.time_window_for_partition_key(first).start
    end = partitions.time_window_for_partition_key(last).end
    splits = tuple(partitions.time_window_for_partition_key(key).start
                   for key in range_keys(table, first, last)[1:])  # a range: its figures per partition
    return Window(None if first == partitions.get_first_partition_key() else start,
                  None if last == partitions.get_last_partition_key() else end, splits)


def range_keys(table: TablePlan, first: str, last: str) -> list[str]:
    partitions = partitions_for(table)
    assert partitions is not None, table.target_label
    return partitions.get_partition_keys_in_range(PartitionKeyRange(first, last))


def _scope(context: AssetExecutionContext, table: TablePlan) -> tuple[Window | None, str | None, list[str]]:
    """The run's window (one partition, or a whole range in a single-run backfill), its label and keys."""
    if table.partition is None:
        return None, None, []
    keys = context.partition_key_range
    label = keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}"
    return partition_window(table, keys.start, keys.end), label, range_keys(table, keys.start, keys.end)


ROWS_VALID = "rows_valid"
REJECT_RATE = "reject_rate"
ROW_COUNT_PARITY = "row_count_parity"
TABLE_ROW_COUNT_PARITY = "table_row_count_parity"
CHECKSUM_PARITY = "checksum_parity"
SAMPLED_ROWS_MATCH = "sampled_rows_match"
SCHEMA_CONFORMS = "schema_conforms"


def check_specs(table: TablePlan) -> list[AssetCheckSpec]:
    key = asset_key(table)
    return [
        AssetCheckSpec(ROWS_VALID, asset=key, blocking=True, description=(
            "Every row read passed the pandera schema generated from the mapping (and PostgreSQL's casts); "
            f"failing rows are in {REJECTS_TABLE}. Blocking: a load with rejects does not look fresh downstream.")),
        AssetCheckSpec(REJECT_RATE, asset=key, description=(
            f"At most {table.checks.reject_rate.max:.2%} of the rows read were rejected (reject_rate.max in "
            "sync.yaml).")),
        AssetCheckSpec(ROW_COUNT_PARITY, asset=key, description=(
            "MySQL and PostgreSQL hold as many rows, in the loaded partitions or the whole table, counted in each "
            "database right after the load.")),
        *([AssetCheckSpec(TABLE_ROW_COUNT_PARITY, asset=key, description=(
            "MySQL and PostgreSQL hold as many rows in the whole table, whatever the partitions loaded: rows "
            "before the first partition or with a NULL or zero date belong to the first, rows after the last to "
            "the last. Only a warning while some partitions were never loaded.")),
        ] if table.partition is not None else []),
        AssetCheckSpec(CHECKSUM_PARITY, asset=key, description=(
            "The same rows hold the same values: an MD5 of every row's text, written alike by both databases as "
            "the mapping converts each value (zero dates NULL, floats exactly, timestamps as instants), summed "
            "inside each database; no rows shipped. JSON by kind and size (values: sampled_rows_match).")),
        *([AssetCheckSpec(SAMPLED_ROWS_MATCH, asset=key, description=(
            f"{table.checks.sampled_rows_match.rows} rows drawn at random from the loaded rows, read again from "
            "both sides by their key and compared value by value, every column; the differing values are in "
            "the check's metadata.")),
        ] if table.primary_key else []),
        AssetCheckSpec(SCHEMA_CONFORMS, asset=key, description=(
            "The PostgreSQL table has the columns, types and nullability the mapping of MySQL's current "
            "columns gives.")),
    ]


def severity(table: TablePlan, check_name: str) -> AssetCheckSeverity:
    setting = getattr(table.checks, check_name)
    return AssetCheckSeverity.WARN if setting.severity == "warn" else AssetCheckSeverity.ERROR


def check_results(
    table: TablePlan, result: LoadResult, sides: tuple[Fingerprint, Fingerprint],
    rejects_sample: list[dict[str, object]], schema_problems: list[str],
) -> list[AssetCheckResult]:
    mysql, postgres = sides
    mysql_rows, postgres_rows = mysql.rows, postgres.rows
    reject_rate = result.rejected_rows / result.rows_read if result.rows_read else 0.0
    limit = table.checks.reject_rate.max

    def check(name: str, passed: bool, metadata: dict[str, object]) -> AssetCheckResult:
        return AssetCheckResult(check_name=name, passed=passed, metadata=metadata, severity=severity(table, name))

    return [
        check(ROWS_VALID, result.rejected_rows == 0, {
            "rows_rejected": result.rejected_rows, "values_rejected": result.rejected_values,
            "failure_cases": MetadataValue.json(rejects_sample)}),
        check(REJECT_RATE, reject_rate <= limit, {
            "reject_rate": MetadataValue.float(round(reject_rate, 6)), "max": MetadataValue.float(limit),
            "rows_rejected": result.rejected_rows, "rows_read": result.rows_read}),
        check(ROW_COUNT_PARITY, mysql_rows == postgres_rows, {
            "mysql_rows": mysql_rows, "postgres_rows": postgres_rows, "difference": postgres_rows - mysql_rows}),
        check(CHECKSUM_PARITY, mysql == postgres, {
            "mysql_checksum": str(mysql.checksum), "postgres_checksum": str(postgres.checksum),
            "columns": ", ".join(c.target_name for c in checksum_columns(table)),
            "not_compared": ", ".join(f"{c.target_name} (pg_type overridden: {c.pg_type})" for c in table.columns
                                      if c not in checksum_columns(table)) or "none"}),
        check(SCHEMA_CONFORMS, not schema_problems, {"differences": MetadataValue.json(schema_problems)}),
    ]


def sample_check(table: TablePlan, sample: Sample) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=SAMPLED_ROWS_MATCH, passed=sample.equal, severity=severity(table, SAMPLED_ROWS_MATCH),
        metadata={"rows_compared": sample.compared, "values_different": len(sample.differences),
                  "differences": MetadataValue.json(list(sample.differences))},
    )


def table_count_check(
    context: AssetExecutionContext, table: TablePlan, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl
) -> AssetCheckResult:
    """Whole-table counts of a partitioned table; a difference is only a warning while some partitions
    were never loaded (their rows are expected to be missing), and an error once every one was."""
    partitions = partitions_for(table)
    assert partitions is not None
    keys = partitions.get_partition_keys()
    first_start = partitions.time_window_for_partition_key(keys[0]).start
    last_end = partitions.time_window_for_partition_key(keys[-1]).end
    counts = table_counts(mysql_url, postgres_url, table, first_start, last_end)
    loaded = context.instance.get_materialized_partitions(asset_key(table)) | set(context.partition_keys)
    never = [k for k in keys if k not in loaded]
    passed = counts.mysql_rows == counts.postgres_rows
    explained = not passed and bool(never)
    return AssetCheckResult(
        check_name=TABLE_ROW_COUNT_PARITY, passed=passed,
        severity=AssetCheckSeverity.WARN if explained else severity(table, TABLE_ROW_COUNT_PARITY),
        description=f"{len(never)} of {len(keys)} partitions never loaded" if explained else None,
        metadata={
            "mysql_rows": counts.mysql_rows, "postgres_rows": counts.postgres_rows,
            "difference": counts.postgres_rows - counts.mysql_rows,
            "partitions_never_loaded": len(never),
            "never_loaded": MetadataValue.text(key_ranges(never, keys)),
            "rows_before_first_partition": MetadataValue.int(counts.before_first),
            "rows_after_last_partition": MetadataValue.int(counts.after_last),
        },
    )


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


def _check_reason(check: AssetCheckResult) -> str:
    return "; ".join(f"{name}: {value.value}" for name, value in check.metadata.items())


def freshness_for(table: TablePlan) -> FreshnessPolicy | None:
    if table.freshness is None:
        return None
    return FreshnessPolicy.time_window(fail_window=table.freshness.fail_after, warn_window=table.freshness.warn_after)


def build_table_asset(table: TablePlan) -> AssetsDefinition:
    parents = {
        AssetKey([dagster_safe_name(table.target_schema), dagster_safe_name(key.referenced_target)])
        for key in table.foreign_keys if key.lineage
    }
    partitions = partitions_for(table)

    @asset(
        key=asset_key(table),
        deps=sorted(parents, key=lambda k: k.path),  # MySQL's foreign keys, as lineage
        group_name=dagster_safe_name(table.source_database),
        kinds={"mysql", "postgres"},
        description=_description(table),
        partitions_def=partitions,
        # A backfill of any range is one run that loads the whole window in one transaction.
        backfill_policy=BackfillPolicy.single_run() if partitions else None,
        # Runs reading one MySQL server share a pool, whose limit dagster.yaml sets.
        pool=f"mysql_{dagster_safe_name(table.source_database)}",
        check_specs=check_specs(table),
        freshness_policy=freshness_for(table),
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": table.target_label,
            "source_table": table.source_label,
            "primary_key": ", ".join(table.primary_key) or "(none: each load replaces the table)",
            "load": _load_description(table),
        },
    )
    def _sync(context: AssetExecutionContext, mysql: MySQLSource, postgres: PostgresTarget) -> MaterializeResult:
        window, partition, keys = _scope(context, table)
        run_id = context.run.run_id
        try:
            result = sync_table(table, mysql.database_url, postgres.database_url, run_id=run_id,
                                window=window, partition=partition)
        except ActionableError as exc:
            # Also straight to stderr: when PostgreSQL holds Dagster's storage too and is gone, Dagster
            # cannot record the failure, and this line is what the terminal or compute log shows at once.
            print(f"mysql-pg-assets: {table.target_label}: {exc}", file=sys.stderr, flush=True)
            raise
        context.log.info(
            f"{table.source_label} → {table.target_label}{f' [{partition}]' if partition else ''}: "
            f"{result.rows_read} rows read, {result.inserted} inserted, {result.updated} updated, "
            f"{result.deleted} deleted, {result.rejected_rows} rejected, {result.conversions.total} values "
            f"converted in {result.seconds:.2f}s"
        )
        if result.schema_changes:
            context.log.info(f"{table.target_label} migrated to MySQL's schema: {'; '.join(result.schema_changes)}")
        if result.rejected_rows:
            context.log.warning(
                f"{result.rejected_rows} rows of {table.source_label} were rejected: see "
                f"{result.rejects_table} WHERE run_id = '{run_id}'"
            )
        sides = fingerprints(mysql.database_url, postgres.database_url, table, window)
        sample = _rejects(postgres.database_url, table, run_id) if result.rejected_rows else []
        checks = check_results(table, result, sides, sample, schema_differences(postgres.database_url, table))
        if table.partition is not None:
            checks.append(table_count_check(context, table, mysql.database_url, postgres.database_url))
        if table.primary_key:
            checks.append(sample_check(table, sample_rows(mysql.database_url, postgres.database_url, table, window,
                                                          table.checks.sampled_rows_match.rows)))
        for failed in (c for c in checks if not c.passed):
            alerts.send(alerts.Alert("check_failed", asset_key(table).to_user_string(), _check_reason(failed),
                                     partition=partition, run_id=run_id, check=failed.check_name,
                                     severity=failed.severity.value.lower()))
        run_range = None
        if result.by_partition:  # one run over several partitions: each shows its own figures
            run_range = f"{partition} ({len(keys)} partitions, one run)"
            counts = partition_row_counts(postgres.database_url, table, window)
            for position, metadata in partition_metadata(result, counts).items():
                context.add_asset_metadata(metadata, partition_key=keys[position])
        return MaterializeResult(metadata=materialization_metadata(table, result, run_range), check_results=checks)

    return _sync


def _rejects(url: DatabaseUrl, table: TablePlan, run_id: str) -> list[dict[str, object]]:
    with pg_connection(url) as connection:
        return rejects_sample(connection, table.target_schema, table.target_label, run_id)


def _description(table: TablePlan) -> str:
    lines = [f"MySQL table `{table.source_label}` kept in PostgreSQL as `{table.target_label}`."]
    for key in table.foreign_keys:
        if not key.lineage:
            lines.append(f"Foreign key `{key.name}` ({', '.join(key.columns)} → {key.referenced_target}) is not "
                         f"drawn as lineage, nor created as a constraint: {key.not_lineage}.")
    return "\n\n".join(lines)


def _load_description(table: TablePlan) -> str:
    if table.partition is not None:
        return (f"{table.partition.granularity} partitions on {table.partition.column}; each run upserts its window "
                f"and {'tombstones' if table.tombstones else 'deletes'} rows gone from MySQL in it")
    if table.cursor_column and table.primary_key:
        return (f"incremental: rows with {table.cursor_column} at or past the last load's newest, "
                f"deletes found by comparing keys")
    return "full: every row, rows gone from MySQL deleted"


def build_table_assets(catalog: Catalog) -> Sequence[AssetsDefinition]:
    return [build_table_asset(table) for table in catalog.tables]
