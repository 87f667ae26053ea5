"""The ``rebuild_table`` job: ``cli rebuild`` and ``cli swap-back`` from the Launchpad.

A blue/green table (``schema_change: blue_green``) whose schema change its own loads cannot make (a
partition's load reads only its window) is rebuilt whole here: its new shape built aside and swapped in
(``sync.load.swap``). ``swap_back: true`` puts the previous table back, and a second run undoes that.
"""

# No `from __future__ import annotations` here: Dagster reads the op's config class from its annotation.
from dagster import AssetObservation, Config, Failure, JobDefinition, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import asset_key
from mysql_pg_assets.sync.catalog.discover import current_plans
from mysql_pg_assets.sync.catalog.plans import Catalog, find_table
from mysql_pg_assets.sync.load.swap import swap_back
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import SyncSpec

REBUILD_JOB = "rebuild_table"


class Rebuild(Config):
    table: str = Field(description="the table: schema.table, or its MySQL name")
    swap_back: bool = Field(False, description="true: put the previous table of a blue/green swap back instead")


def build_rebuild_job(spec: SyncSpec, catalog: Catalog) -> JobDefinition:
    @op(name="rebuild", description="Load a table whole; a blue/green table's new shape is built aside and swapped "
                                    "in. With swap_back: true, the previous table is put back.")
    def rebuild(context: OpExecutionContext, config: Rebuild, mysql: MySQLSource, postgres: PostgresTarget) -> None:
        table = find_table(current_plans(spec, catalog, mysql.database_url), config.table)
        if table is None:
            raise Failure(f"no synced table {config.table!r}")
        try:
            if config.swap_back:
                previous = swap_back(postgres.database_url, table, context.run_id)
                done = [f"swapped back; the table that was live is now {previous}"]
            else:
                result = sync_table(table, mysql.database_url, postgres.database_url, run_id=context.run_id)
                done = [f"{result.rows_read} rows read, {result.rejected_rows} rejected", *result.schema_changes]
        except ActionableError as exc:
            raise Failure(str(exc)) from None
        context.log.info(f"{table.target_label}: {'; '.join(done)}")
        context.log_event(AssetObservation(asset_key=asset_key(table),
                                           metadata={"rebuild": MetadataValue.json(done)}))

    @job(name=REBUILD_JOB, description="Rebuild one table whole (blue/green: build aside, swap in), or swap back.")
    def rebuild_job() -> None:
        rebuild()

    return rebuild_job
