"""The asset factory: one Dagster asset per synced table, built from the catalog.

Asset key ``[<target schema>, <table>]``, group = source database, kinds mysql and postgres.
The definition carries the column schema (each MySQL type and the PostgreSQL type it becomes),
so the UI shows it before the first materialization; every materialization reports rows read,
inserted, updated, deleted, duration and rows/s.
"""

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
)

from mysql_pg_assets.catalog import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.load import META_SCHEMA, LoadResult
from mysql_pg_assets.pipeline import sync_table
from mysql_pg_assets.resources import MySQLSource, PostgresTarget

REJECTS_TABLE = f"{META_SCHEMA}.rejects"


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


def materialization_metadata(table: TablePlan, result: LoadResult) -> dict[str, object]:
    return {
        "dagster/row_count": result.rows_loaded,
        "rows_read": result.rows_read,
        "rows_inserted": result.inserted,
        "rows_updated": result.updated,
        "rows_deleted": result.deleted,
        "rows_rejected": result.rejected_rows,
        "values_rejected": result.rejected_values,
        "values_converted": result.conversions.total,
        "conversions": MetadataValue.json(result.conversions.as_metadata()),
        "rejects_table": MetadataValue.text(REJECTS_TABLE),
        "duration_s": MetadataValue.float(round(result.seconds, 3)),
        "rows_per_s": MetadataValue.float(round(result.rows_read / result.seconds, 1) if result.seconds else 0.0),
        "dagster/column_schema": column_schema(table),
    }


def build_table_asset(table: TablePlan) -> AssetsDefinition:
    parents = {
        AssetKey([dagster_safe_name(table.target_schema), dagster_safe_name(key.referenced_target)])
        for key in table.foreign_keys if key.referenced_table != table.source_table
    }

    @asset(
        key=asset_key(table),
        deps=sorted(parents, key=lambda k: k.path),  # MySQL's foreign keys, as lineage
        group_name=dagster_safe_name(table.source_database),
        kinds={"mysql", "postgres"},
        description=f"MySQL table `{table.source_label}` kept in PostgreSQL as `{table.target_label}`.",
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": table.target_label,
            "source_table": table.source_label,
            "primary_key": ", ".join(table.primary_key) or "(none: each load replaces the table)",
        },
    )
    def _sync(context: AssetExecutionContext, mysql: MySQLSource, postgres: PostgresTarget) -> MaterializeResult:
        result = sync_table(table, mysql.database_url, postgres.database_url, run_id=context.run.run_id)
        context.log.info(
            f"{table.source_label} → {table.target_label}: {result.rows_read} rows read, "
            f"{result.inserted} inserted, {result.updated} updated, {result.deleted} deleted, "
            f"{result.rejected_rows} rejected, {result.conversions.total} values converted "
            f"in {result.seconds:.2f}s"
        )
        if result.rejected_rows:
            context.log.warning(
                f"{result.rejected_rows} rows of {table.source_label} were rejected: see "
                f"{REJECTS_TABLE} WHERE run_id = '{context.run_id}'"
            )
        return MaterializeResult(metadata=materialization_metadata(table, result))

    return _sync


def build_table_assets(catalog: Catalog) -> Sequence[AssetsDefinition]:
    return [build_table_asset(table) for table in catalog.tables]
