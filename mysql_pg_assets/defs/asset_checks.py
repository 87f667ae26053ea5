"""The asset checks every table asset has: their specs, and their results from what a load did and what
the two databases hold (``checks.parity``). Severity and thresholds come from the spec.

In two halves, because a run loads several tables at once (``sync.many``): :func:`gather` reads
what the checks compare from both databases, in the thread that loaded the table, without Dagster;
:func:`evaluate` judges it in the step's own thread, where the Dagster context is.
"""

from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, MetadataValue

from mysql_pg_assets.checks.parity import (
    Fingerprint,
    Sample,
    TableCounts,
    checksum_columns,
    duplicated_values,
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
from mysql_pg_assets.sync.catalog.plans import ColumnPlan, TablePlan
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.spec import Expectation

# Where rejects go when the role may create schemas; the materialization names the real place (see meta).
REJECTS_TABLE = "mysql_pg_assets.rejects"

# Three checks per table (four when partitioned), each comparison of the two sides kept: Dagster
# stores three events per check and per load (planned, output, evaluation), about 13 ms a check here,
# so six checks cost 500 small tables 40 s, as much as loading them. parity reports its three
# comparisons (counts, checksum, sample) in one result, and says which of them differ.
ROWS_VALID = "rows_valid"
PARITY = "parity"
TABLE_ROW_COUNT_PARITY = "table_row_count_parity"
SCHEMA_CONFORMS = "schema_conforms"


def check_specs(table: TablePlan) -> list[AssetCheckSpec]:
    key = asset_key(table)
    sampled = (f" {table.checks.parity.sampled_rows} rows drawn at random from the loaded rows are read again from "
               "both sides by their key and compared value by value, every column; the differing values are in "
               "the check's metadata.") if table.primary_key else ""
    limit = table.checks.rows_valid.max_reject_rate
    tolerance = (f"Up to {limit:.2%} of the rows read rejected only warns (max_reject_rate in sync.yaml); more "
                 "fails it with its severity." if limit else "Any reject fails it with its severity (rejects "
                 "that should only warn: max_reject_rate in sync.yaml).")
    return [
        AssetCheckSpec(ROWS_VALID, asset=key, blocking=True, description=(
            "Every row read passed the pandera schema generated from the mapping (and PostgreSQL's casts); "
            f"failing rows are in {REJECTS_TABLE}, with key, column, value and reason. {tolerance} Blocking: "
            "such a load does not look clean downstream.")),
        AssetCheckSpec(PARITY, asset=key, description=(
            "MySQL and PostgreSQL hold the same rows with the same values, in the loaded partitions or the whole "
            "table: as many rows, counted in each database right after the load, and the same checksum, an MD5 "
            "of every row's text written alike by both databases as the mapping converts each value (zero "
            "dates NULL, floats exactly, timestamps as instants, JSON by kind and size), summed inside each "
            "database." + sampled)),
        *([AssetCheckSpec(TABLE_ROW_COUNT_PARITY, asset=key, description=(
            "MySQL and PostgreSQL hold as many rows in the whole table, whatever the partitions loaded: rows "
            "before the first partition or with a NULL or zero date belong to the first, rows after the last to "
            "the last. Only a warning while some partitions were never loaded.")),
        ] if table.partition is not None else []),
        AssetCheckSpec(SCHEMA_CONFORMS, asset=key, description=(
            "The PostgreSQL table has the columns, types and nullability the mapping of MySQL's current "
            "columns (and the spec's transforms: masks, derived columns) gives.")),
        *(AssetCheckSpec(e.check_name, asset=key, description=_expectation_description(e))
          for e in table.expectations),
    ]


def _expectation_description(expectation: Expectation) -> str:
    what = {
        "in_range": lambda e: f"{e.column} is within {list(e.in_range)} (inclusive)",
        "str_matches": lambda e: f"{e.column} matches /{e.str_matches}/ from its start",
        "isin": lambda e: f"{e.column} is one of {list(e.isin)}",
        "notin": lambda e: f"{e.column} is none of {list(e.notin)}",
        "unique": lambda e: f"no two rows of the PostgreSQL table share a value of {e.column}",
        "not_null": lambda e: f"{e.column} is never NULL",
        "expression": lambda e: f"`{e.expression}` holds for every row",
    }[expectation.kind](expectation)
    scope = ("counted in PostgreSQL over the whole table after each load" if expectation.unique else
             "checked on every row each load brings; failing rows are loaded and shown with their key")
    return f"The spec's own check: {what} ({scope}; NULL passes). Severity {expectation.severity}."


def severity(table: TablePlan, check_name: str) -> AssetCheckSeverity:
    setting = getattr(table.checks, check_name)
    return AssetCheckSeverity.WARN if setting.severity == "warn" else AssetCheckSeverity.ERROR


def rows_valid_check(table: TablePlan, result: LoadResult, rejects_sample: list[dict[str, object]]) -> AssetCheckResult:
    """Fails on any reject: as a warning while the share rejected is at most ``max_reject_rate``."""
    rate = result.rejected_rows / result.rows_read if result.rows_read else 0.0
    limit = table.checks.rows_valid.max_reject_rate
    tolerated = 0 < rate <= limit
    return AssetCheckResult(
        asset_key=asset_key(table), check_name=ROWS_VALID, passed=result.rejected_rows == 0,
        severity=AssetCheckSeverity.WARN if tolerated else severity(table, ROWS_VALID),
        description=(f"{result.rejected_rows} of {result.rows_read} rows rejected ({rate:.3%}; "
                     f"{'at most' if tolerated else 'more than'} max_reject_rate {limit:.3%})")
        if result.rejected_rows else None,
        metadata={
            "rows_rejected": result.rejected_rows, "values_rejected": result.rejected_values,
            "rows_read": result.rows_read, "reject_rate": MetadataValue.float(round(rate, 6)),
            "max_reject_rate": MetadataValue.float(limit), "failure_cases": MetadataValue.json(rejects_sample),
        },
    )


def parity_check(table: TablePlan, sides: tuple[Fingerprint, Fingerprint], sample: Sample | None) -> AssetCheckResult:
    """Counts, checksums and (tables with a key) sampled rows; the description names what differs."""
    mysql, postgres = sides
    compared = checksum_columns(table)
    found = []
    if mysql.rows != postgres.rows:
        found.append(f"row counts differ: MySQL {mysql.rows}, PostgreSQL {postgres.rows}")
    if mysql.checksum != postgres.checksum:
        found.append("checksums differ: some rows hold other values" if mysql.rows == postgres.rows
                     else "checksums differ")
    if sample is not None and not sample.equal:
        found.append(f"{len(sample.differences)} values differ in {sample.compared} sampled rows")
    metadata: dict[str, Any] = {
        "mysql_rows": mysql.rows, "postgres_rows": postgres.rows, "difference": postgres.rows - mysql.rows,
        "mysql_checksum": str(mysql.checksum), "postgres_checksum": str(postgres.checksum),
        "columns": ", ".join(c.target_name for c in compared),
        "not_compared": ", ".join(f"{c.target_name} ({_not_compared(c)})" for c in table.columns
                                  if c not in compared) or "none",
    }
    if sample is not None:
        metadata.update({"rows_compared": sample.compared, "values_different": len(sample.differences),
                         "differences": MetadataValue.json(list(sample.differences))})
    return AssetCheckResult(asset_key=asset_key(table), check_name=PARITY, passed=not found,
                            severity=severity(table, PARITY), description="; ".join(found) or None, metadata=metadata)


def _not_compared(column: ColumnPlan) -> str:
    if column.mask is not None:
        return f"masked ({column.mask.method}): sampled rows compare it with the mask applied to MySQL's value"
    if column.expression is not None:
        return "derived: not in MySQL"
    if column.python is not None:
        return f"from {column.python}: not comparable"
    return f"pg_type overridden: {column.pg_type}"


def expectation_checks(table: TablePlan, result: LoadResult, duplicates: dict[str, tuple[int, list[dict]]],
                       ) -> list[AssetCheckResult]:
    """The spec's own checks: failing rows of this load (``unique``: duplicated values of the whole table)."""
    checks = []
    for expectation in table.expectations:
        name = expectation.check_name
        failed, cases = duplicates[name] if expectation.unique else result.expectations.get(name, (0, ()))
        checks.append(AssetCheckResult(
            asset_key=asset_key(table), check_name=name, passed=failed == 0,
            severity=AssetCheckSeverity.WARN if expectation.severity == "warn" else AssetCheckSeverity.ERROR,
            description=(f"{failed} rows sharing a value with another" if expectation.unique else
                         f"{failed} of {result.rows_loaded} rows loaded fail it") if failed else None,
            metadata={"rows_failed": failed, "rows_checked": result.rows_loaded,
                      "failure_cases": MetadataValue.json(list(cases))},
        ))
    return checks


def schema_check(table: TablePlan, schema_problems: list[str]) -> AssetCheckResult:
    return AssetCheckResult(asset_key=asset_key(table), check_name=SCHEMA_CONFORMS, passed=not schema_problems,
                            severity=severity(table, SCHEMA_CONFORMS),
                            metadata={"differences": MetadataValue.json(schema_problems)})


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
            "never_loaded": MetadataValue.text(key_ranges(never, list(keys))),
            "rows_before_first_partition": MetadataValue.int(counts.before_first),
            "rows_after_last_partition": MetadataValue.int(counts.after_last),
        },
    )


def _check_reason(check: AssetCheckResult) -> str:
    figures = "; ".join(f"{name}: {value.value}" for name, value in check.metadata.items())
    return f"{check.description}; {figures}" if check.description else figures


@dataclass(frozen=True)
class Evidence:
    """What one load's checks compare, read from both databases right after the load."""

    sides: tuple[Fingerprint, Fingerprint]
    rejects_sample: list[dict[str, object]]
    schema_problems: list[str]
    whole_table: TableCounts | None  # partitioned tables
    sample: Sample | None  # tables with a primary key
    duplicates: dict[str, tuple[int, list[dict]]]  # each unique check of the spec's: duplicated rows, cases


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
        sample=sample_rows(mysql_url, postgres_url, table, window, table.checks.parity.sampled_rows)
        if table.primary_key else None,
        duplicates={e.check_name: duplicated_values(postgres_url, table, _target_name(table, e.column or ""))
                    for e in table.expectations if e.unique},
    )


def _target_name(table: TablePlan, spec_name: str) -> str:
    return next(c.target_name for c in table.columns if c.source.name == spec_name)


def evaluate(
    context: AssetExecutionContext, table: TablePlan, result: LoadResult, evidence: Evidence, partition: str | None,
) -> list[AssetCheckResult]:
    """Every check of the asset after a load, each failure alerted (with its severity)."""
    checks = [rows_valid_check(table, result, evidence.rejects_sample),
              parity_check(table, evidence.sides, evidence.sample),
              schema_check(table, evidence.schema_problems)]
    if evidence.whole_table is not None:
        checks.append(table_count_check(context, table, evidence.whole_table))
    checks += expectation_checks(table, result, evidence.duplicates)
    for failed in (c for c in checks if not c.passed):
        alerts.send(alerts.Alert("check_failed", asset_key(table).to_user_string(), _check_reason(failed),
                                 partition=partition, run_id=context.run.run_id, check=failed.check_name,
                                 severity=failed.severity.value.lower()))
    return checks
