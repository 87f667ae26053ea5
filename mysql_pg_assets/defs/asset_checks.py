"""The asset checks every table asset has: their specs, and their results from what a load did and what
the two databases hold (``checks.parity``). Severity and thresholds come from the spec.

In two halves, because a run loads several tables at once (``sync.many``): :func:`gather` reads
what the checks compare from both databases, in the thread that loaded the table, without Dagster;
:func:`evaluate` judges it in the step's own thread, where the Dagster context is.
"""

from dataclasses import dataclass

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, MetadataValue

from mysql_pg_assets.checks.parity import (
    Fingerprint,
    Sample,
    TableCounts,
    checksum_columns,
    fingerprints,
    sample_rows,
    schema_differences,
    table_counts,
)
from mysql_pg_assets.core import alerts
from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.meta import rejects_sample
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.translator import asset_key, key_ranges, partitions_for
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult

# Where rejects go when the role may create schemas; the materialization names the real place (see meta).
REJECTS_TABLE = "mysql_pg_assets.rejects"

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
        return AssetCheckResult(asset_key=asset_key(table), check_name=name, passed=passed, metadata=metadata,
                                severity=severity(table, name))

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
        asset_key=asset_key(table), check_name=SAMPLED_ROWS_MATCH, passed=sample.equal,
        severity=severity(table, SAMPLED_ROWS_MATCH),
        metadata={"rows_compared": sample.compared, "values_different": len(sample.differences),
                  "differences": MetadataValue.json(list(sample.differences))},
    )


def whole_table_counts(table: TablePlan, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl) -> TableCounts:
    """Both sides' rows of a partitioned table, those outside the partitions counted apart."""
    partitions = partitions_for(table)
    assert partitions is not None
    keys = partitions.get_partition_keys()
    first_start = partitions.time_window_for_partition_key(keys[0]).start
    last_end = partitions.time_window_for_partition_key(keys[-1]).end
    return table_counts(mysql_url, postgres_url, table, first_start, last_end)


def table_count_check(context: AssetExecutionContext, table: TablePlan, counts: TableCounts) -> AssetCheckResult:
    """Whole-table counts of a partitioned table; a difference is only a warning while some partitions
    were never loaded (their rows are expected to be missing), and an error once every one was."""
    partitions = partitions_for(table)
    assert partitions is not None
    keys = partitions.get_partition_keys()
    loaded = context.instance.get_materialized_partitions(asset_key(table)) | set(context.partition_keys)
    never = [k for k in keys if k not in loaded]
    passed = counts.mysql_rows == counts.postgres_rows
    explained = not passed and bool(never)
    return AssetCheckResult(
        asset_key=asset_key(table), check_name=TABLE_ROW_COUNT_PARITY, passed=passed,
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


def _check_reason(check: AssetCheckResult) -> str:
    return "; ".join(f"{name}: {value.value}" for name, value in check.metadata.items())


@dataclass(frozen=True)
class Evidence:
    """What one load's checks compare, read from both databases right after the load."""

    sides: tuple[Fingerprint, Fingerprint]
    rejects_sample: list[dict[str, object]]
    schema_problems: list[str]
    whole_table: TableCounts | None  # partitioned tables
    sample: Sample | None  # tables with a primary key


def gather(
    table: TablePlan, result: LoadResult, window: Window | None, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl,
    run_id: str,
) -> Evidence:
    """Read what the checks compare (any thread; no Dagster)."""
    with pg_connection(postgres_url) as connection:
        sample = rejects_sample(connection, table.target_schema, table.target_label, run_id) \
            if result.rejected_rows else []
    return Evidence(
        sides=fingerprints(mysql_url, postgres_url, table, window),
        rejects_sample=sample,
        schema_problems=schema_differences(postgres_url, table),
        whole_table=whole_table_counts(table, mysql_url, postgres_url) if table.partition is not None else None,
        sample=sample_rows(mysql_url, postgres_url, table, window, table.checks.sampled_rows_match.rows)
        if table.primary_key else None,
    )


def evaluate(
    context: AssetExecutionContext, table: TablePlan, result: LoadResult, evidence: Evidence, partition: str | None,
) -> list[AssetCheckResult]:
    """Every check of the asset after a load, each failure alerted (with its severity)."""
    checks = check_results(table, result, evidence.sides, evidence.rejects_sample, evidence.schema_problems)
    if evidence.whole_table is not None:
        checks.append(table_count_check(context, table, evidence.whole_table))
    if evidence.sample is not None:
        checks.append(sample_check(table, evidence.sample))
    for failed in (c for c in checks if not c.passed):
        alerts.send(alerts.Alert("check_failed", asset_key(table).to_user_string(), _check_reason(failed),
                                 partition=partition, run_id=context.run.run_id, check=failed.check_name,
                                 severity=failed.severity.value.lower()))
    return checks
