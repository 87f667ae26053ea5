"""The ``trace_record`` job: ``cli trace`` from the Launchpad (a table and a key in the run's config)."""

from dagster import Config, Failure, JobDefinition, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.ops.trace import TraceError, named, render, trace
from mysql_pg_assets.sync.catalog.discover import Catalog

TRACE_JOB = "trace_record"


class TraceRecord(Config):
    table: str = Field(description="the table: schema.table, or its MySQL name")
    key: list[str] = Field(description="the primary key's values, in its column order, e.g. [\"42\"]")


def build_trace_job(catalog: Catalog) -> JobDefinition:
    tables = list(catalog.tables)

    @op(name="trace", description="One record's path: MySQL now, its change log, the loads that covered it, its "
                                  "rejects, PostgreSQL now, and both compared column by column.")
    def trace_op(context: OpExecutionContext, config: TraceRecord, mysql: MySQLSource,
                 postgres: PostgresTarget) -> None:
        try:
            table = named(tables, config.table)
            found = trace(mysql.database_url, postgres.database_url, table, config.key)
        except TraceError as exc:
            raise Failure(str(exc)) from None
        text = render(found)
        context.log.info(text)
        context.add_output_metadata({"trace": MetadataValue.md(f"```\n{text}\n```"), "equal": found.equal,
                                     "change_log_entries": len(found.changes), "loads": len(found.loads),
                                     "rejects": len(found.rejects)})
        if not found.equal:
            raise Failure(f"{table.target_label} {found.key}: MySQL and PostgreSQL differ",
                          metadata={"trace": MetadataValue.md(f"```\n{text}\n```")})

    @job(name=TRACE_JOB, description="Trace one record from MySQL to PostgreSQL (launch it with a table and a key).")
    def trace_job() -> None:
        trace_op()

    return trace_job
