"""The asset factory: one Dagster asset per synced table, built from the catalog.

Asset key ``[<target schema>, <table>]``, group = source database, kinds mysql and postgres,
MySQL's foreign keys as lineage. The definition carries the column schema (each MySQL type and the
PostgreSQL type it becomes), so the UI shows it before the first materialization. A
materialization runs ``pipeline.sync_table`` for its partitions (or the table), evaluates the
checks (``asset_checks``) and reports what the load did (``translator``), per partition when the
run covers several.
"""

import sys
from collections.abc import Sequence

from dagster import AssetExecutionContext, AssetsDefinition, BackfillPolicy, MaterializeResult, asset

from mysql_pg_assets.checks.parity import partition_row_counts
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.defs.asset_checks import check_specs, evaluate
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import (
    asset_key,
    column_schema,
    description,
    freshness_for,
    load_description,
    materialization_metadata,
    parent_keys,
    partition_metadata,
    partition_window,
    partitions_for,
    range_keys,
)
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.pipeline import sync_table


def build_table_asset(table: TablePlan) -> AssetsDefinition:
    partitions = partitions_for(table)

    @asset(
        key=asset_key(table),
        deps=parent_keys(table),  # MySQL's foreign keys, as lineage
        group_name=dagster_safe_name(table.source_database),
        kinds={"mysql", "postgres"},
        description=description(table),
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
            "load": load_description(table),
        },
    )
    def _sync(context: AssetExecutionContext, mysql: MySQLSource, postgres: PostgresTarget) -> MaterializeResult:
        return materialize(context, table, mysql, postgres)

    return _sync


def materialize(
    context: AssetExecutionContext, table: TablePlan, mysql: MySQLSource, postgres: PostgresTarget
) -> MaterializeResult:
    """Load the run's partitions (or the table), check what arrived, report it."""
    window, partition, keys = _scope(context, table)
    try:
        result = sync_table(table, mysql.database_url, postgres.database_url, run_id=context.run.run_id,
                            window=window, partition=partition)
    except ActionableError as exc:
        # Also straight to stderr: when PostgreSQL holds Dagster's storage too and is gone, Dagster
        # cannot record the failure, and this line is what the terminal or compute log shows at once.
        print(f"mysql-pg-assets: {table.target_label}: {exc}", file=sys.stderr, flush=True)
        raise
    _log(context, table, result, partition)
    checks = evaluate(context, table, result, window, mysql.database_url, postgres.database_url, partition)
    run_range = None
    if result.by_partition:  # one run over several partitions: each shows its own figures
        run_range = f"{partition} ({len(keys)} partitions, one run)"
        counts = partition_row_counts(postgres.database_url, table, window)
        for position, metadata in partition_metadata(result, counts).items():
            context.add_asset_metadata(metadata, partition_key=keys[position])
    return MaterializeResult(metadata=materialization_metadata(table, result, run_range), check_results=checks)


def _scope(context: AssetExecutionContext, table: TablePlan) -> tuple[Window | None, str | None, list[str]]:
    """The run's window (one partition, or a whole range in a single-run backfill), its label and keys."""
    if table.partition is None:
        return None, None, []
    span = context.partition_key_range
    label = span.start if span.start == span.end else f"{span.start}...{span.end}"
    keys = range_keys(table, span.start, span.end)
    return partition_window(table, keys), label, keys


def _log(context: AssetExecutionContext, table: TablePlan, result: LoadResult, partition: str | None) -> None:
    context.log.info(
        f"{table.source_label} → {table.target_label}{f' [{partition}]' if partition else ''}: "
        f"{result.rows_read} rows read, {result.inserted} inserted, {result.updated} updated, "
        f"{result.deleted} deleted, {result.rejected_rows} rejected, {result.conversions.total} values "
        f"converted in {result.seconds:.2f}s"
    )
    if result.schema_changes:
        context.log.info(f"{table.target_label} migrated to MySQL's schema: {'; '.join(result.schema_changes)}")
    if result.rejected_rows:
        context.log.warning(f"{result.rejected_rows} rows of {table.source_label} were rejected: see "
                            f"{result.rejects_table} WHERE run_id = '{context.run.run_id}'")


def build_table_assets(catalog: Catalog) -> Sequence[AssetsDefinition]:
    return [build_table_asset(table) for table in catalog.tables]
