"""Jobs a user launches by hand: ``approve_schema_change``, the way a destructive MySQL schema change
reaches PostgreSQL.

Launch it from the Launchpad with the table named. With ``approve: false`` (the default) it only
shows what would change; with ``approve: true`` it records the approval of exactly the pending
changes (their fingerprint), and the schema-drift sensor's next tick launches the run that
migrates the table and reloads it in one transaction. Giving ``fingerprint`` (shown by the failed
``schema_conforms`` check) approves only if MySQL has not changed again since it was reviewed.
"""

# No `from __future__ import annotations` here: Dagster reads the op's config class from its annotation.
from dagster import AssetObservation, Config, Failure, JobDefinition, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import asset_key
from mysql_pg_assets.sync.catalog.discover import current_plans
from mysql_pg_assets.sync.catalog.plans import Catalog, find_table
from mysql_pg_assets.sync.load.migrate import APPROVAL_JOB, approve, plan_tables
from mysql_pg_assets.sync.spec import SyncSpec


class SchemaChangeApproval(Config):
    table: str = Field(description="the PostgreSQL table (schema.table, e.g. shop.orders) or the MySQL table's name")
    approve: bool = Field(False, description="false: only show the pending changes; true: approve exactly those")
    fingerprint: str = Field("", description="if set: approve only while the pending changes still have it")


def build_schema_approval_job(spec: SyncSpec, catalog: Catalog) -> JobDefinition:
    @op(name="review_schema_change", description="Shows a table's pending schema changes and, with approve: true, "
                                                  "approves them.")
    def review_schema_change(context: OpExecutionContext, config: SchemaChangeApproval, mysql: MySQLSource,
                             postgres: PostgresTarget) -> None:
        tables = current_plans(spec, catalog, mysql.database_url)
        table = find_table(tables, config.table)
        if table is None:
            raise Failure(f"no synced table {config.table!r}; the tables are: "
                          f"{', '.join(t.target_label for t in tables)}")
        with postgres.connection() as connection:
            migration = plan_tables(connection, [table]).get(table.target_label)
            if not migration:
                context.log.info(f"{table.target_label} conforms to MySQL's schema: nothing to approve")
                return
            if config.fingerprint and config.fingerprint != migration.fingerprint:
                raise Failure(f"{table.target_label}: the pending changes are now {migration.summary()} "
                              f"(fingerprint {migration.fingerprint}), not the ones reviewed ({config.fingerprint})")
            approving = config.approve and bool(migration.destructive)
            if approving:
                approve(connection, migration, context.run_id)
        changes = "; ".join(migration.summary())
        if approving:
            context.log.info(f"{table.target_label}: approved {changes}; the schema-drift sensor's next tick "
                             f"launches the run that migrates and reloads it (or materialize the asset now)")
        elif not migration.destructive:
            context.log.info(f"{table.target_label}: {changes}: compatible, migrates by itself with the next load")
        else:
            context.log.info(f"{table.target_label}: pending {changes}; run again with approve: true to apply it")
        context.log_event(AssetObservation(asset_key=asset_key(table), metadata={
            "pending_schema_changes": MetadataValue.json(migration.summary()),
            "fingerprint": MetadataValue.text(migration.fingerprint),
            "approved": approving,
        }))

    @job(name=APPROVAL_JOB, description="Review (approve: false) or approve (approve: true) a destructive schema "
                                        "change of one synced table.")
    def approval_job() -> None:
        review_schema_change()

    return approval_job
