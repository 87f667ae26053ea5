"""The asset factory: one Dagster asset per synced table, loaded many to a step.

Every table is its own asset: key ``[<target schema>, <table>]``, group = source database, kinds
mysql and postgres, MySQL's foreign keys as lineage, its column schema (each MySQL type and the
PostgreSQL type it becomes) before the first materialization, its own checks, freshness,
materializations and partitions.

The tables are *loaded* by subsettable ``multi_asset`` steps, per source database and partitions
definition (``translator.step_name``): ``sync_shop`` for the unpartitioned tables of ``shop``,
``sync_shop_monthly_from_2025_10_01`` for those with those partitions; each split into steps of 50
to 150 tables, as many at a time as Dagster's executor runs side by side (one per CPU), tables joined
by foreign keys always in one step (``translator.steps``). Why:

- A step is a process (Dagster's default executor): about five seconds to start here, where
  loading a table of a few hundred rows takes a tenth of one. A database of 500 small tables took
  45 minutes as 500 steps; as one step it is the rows and a small constant per table.
- Selecting some tables (one in the UI, a sensor's repair, a backfill) runs the step for exactly
  those (``can_subset``); the others are not touched.
- Tables sharing a step must share a partitions definition (a Dagster rule), and that is also the
  right unit: a backfill of a range loads every selected table of that range in one run
  (single-run backfill policy), each table in one transaction over the whole range. A big table
  that needs its own backfills gets them by being selected alone; giving it partitions of its own
  (another start or granularity) gives it a step of its own.

Inside the step ``sync.many`` loads ``source.parallel_tables`` tables at once (4 by default;
parents before children), each in its own transaction. A table's materialization and checks are
reported as soon as it is done; a table that fails does not stop the others: the step goes on,
then fails naming every table that failed and why (and Dagster shows those assets as failed). The
``mysql_<database>`` pool (``dagster.yaml``) counts steps: at most its limit of runs read one MySQL
database at once, each with ``parallel_tables`` connections.
"""

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from mysql_pg_assets.checks.parity import partition_row_counts
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.settings import redact
from mysql_pg_assets.defs.asset_checks import Evidence, check_specs, evaluate, gather
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
    steps,
)
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.result import LoadResult
from mysql_pg_assets.sync.many import Outcome, in_parallel
from mysql_pg_assets.sync.pipeline import sync_table


def table_spec(table: TablePlan) -> AssetSpec:
    return AssetSpec(
        key=asset_key(table),
        deps=parent_keys(table),  # MySQL's foreign keys, as lineage
        group_name=dagster_safe_name(table.source_database),
        kinds={"mysql", "postgres"},
        description=description(table),
        freshness_policy=freshness_for(table),
        metadata={
            "dagster/column_schema": column_schema(table),
            "dagster/table_name": table.target_label,
            "source_table": table.source_label,
            "primary_key": ", ".join(table.primary_key) or "(none: each load replaces the table)",
            "load": load_description(table),
        },
    )


def build_table_assets(catalog: Catalog) -> Sequence[AssetsDefinition]:
    return [build_step(name, tables, catalog.parallel_tables) for name, tables in steps(catalog.tables).items()]


def build_step(name: str, tables: Sequence[TablePlan], parallel: int) -> AssetsDefinition:
    """One subsettable multi-asset loading ``tables`` (one database, one partitions definition)."""
    partitions = partitions_for(tables[0])
    database = tables[0].source_database

    @multi_asset(
        name=name,
        specs=[table_spec(t) for t in tables],
        check_specs=[spec for t in tables for spec in check_specs(t)],
        can_subset=True,
        partitions_def=partitions,
        # A backfill of any range is one run that loads the whole window in one transaction per table.
        backfill_policy=BackfillPolicy.single_run() if partitions else None,
        # Runs reading one MySQL server share a pool, whose limit dagster.yaml sets.
        pool=f"mysql_{dagster_safe_name(database)}",
        description=f"Loads the selected tables of MySQL database {database}, {parallel} at once.",
    )
    def _sync(
        context: AssetExecutionContext, mysql: MySQLSource, postgres: PostgresTarget,
    ) -> Iterator[MaterializeResult]:
        selected = [t for t in tables if asset_key(t) in context.selected_asset_keys]
        yield from materialize(context, selected, mysql, postgres, parallel)

    return _sync


@dataclass(frozen=True)
class RunScope:
    """What every table of one run loads: the window (one partition, or a range) and its keys."""

    run_id: str
    window: Window | None
    partition: str | None  # its label: '2026-03-01' or '2026-03-01...2026-03-05'
    keys: list[str]


@dataclass(frozen=True)
class Loaded:
    result: LoadResult
    evidence: Evidence
    rows_by_partition: dict[int, int]


def materialize(
    context: AssetExecutionContext, tables: Sequence[TablePlan], mysql: MySQLSource, postgres: PostgresTarget,
    parallel: int,
) -> Iterator[MaterializeResult]:
    """Load the run's partitions (or the tables), check what arrived, report each table as it is done;
    then fail naming the tables that failed, if any."""
    if not tables:
        return
    scope = _scope(context, tables[0])
    mysql_url, postgres_url = mysql.database_url, postgres.database_url
    failed: dict[str, str] = {}

    def load(table: TablePlan) -> Loaded:  # in a worker thread: no Dagster context here
        result = sync_table(table, mysql_url, postgres_url, run_id=scope.run_id, window=scope.window,
                            partition=scope.partition)
        evidence = gather(table, result, scope.window, mysql_url, postgres_url, scope.run_id)
        counts = partition_row_counts(postgres_url, table, scope.window) if result.by_partition else {}
        return Loaded(result, evidence, counts)

    started, results = time.perf_counter(), []
    for outcome in in_parallel(tables, load, parallel):
        if outcome.error is not None:
            failed[outcome.table.target_label] = _failure(context, outcome)
            continue
        assert outcome.value is not None
        results.append((outcome.table, outcome.value.result))
        yield _report(context, outcome.table, outcome.value, scope, detailed=len(tables) <= LOG_EACH_UP_TO)
    if len(tables) > LOG_EACH_UP_TO:
        _log_step(context, results, len(failed), time.perf_counter() - started)
    if failed:
        reasons = _reasons(failed)
        loaded = len(tables) - len(failed)
        raise Failure(
            description=reasons if not loaded else f"{len(failed)} of {len(tables)} tables failed to load (the "
                                                   f"other {loaded} loaded and are reported): {reasons}",
            metadata={"failed_tables": MetadataValue.json(failed), "tables_loaded": loaded},
        )


def _reasons(failed: dict[str, str]) -> str:
    """Each reason once, with the tables it stopped: a server that refuses the password stops every table
    alike, and says so in one line, not once per table."""
    tables_by_reason: dict[str, list[str]] = {}
    for label, why in failed.items():
        tables_by_reason.setdefault(why, []).append(label)
    def named(labels: list[str]) -> str:
        return labels[0] if len(labels) == 1 else \
            f"{len(labels)} tables ({', '.join(labels[:5])}{' …' if len(labels) > 5 else ''})"

    return "; ".join(f"{named(labels)}: {why}" for why, labels in tables_by_reason.items())


def _failure(context: AssetExecutionContext, outcome: Outcome[Loaded]) -> str:
    """A table's error, logged; an error a person can act on as its message, anything else with its trace."""
    error, label = outcome.error, outcome.table.target_label
    assert error is not None
    if isinstance(error, ActionableError):
        message = str(error)
        context.log.error(f"{label}: {message}")
    else:  # a defect: its traceback is what the next person needs (a driver's words may hold a URL)
        message = redact(f"{type(error).__name__}: {error}")
        context.log.error(f"{label}: {message}", exc_info=error)
    # Also straight to stderr: when PostgreSQL holds Dagster's storage too and is gone, Dagster cannot
    # record the failure, and this line is what the terminal or compute log shows at once.
    print(f"mysql-pg-assets: {label}: {message}", file=sys.stderr, flush=True)
    return message


def _report(context: AssetExecutionContext, table: TablePlan, loaded: Loaded, scope: RunScope,
            detailed: bool) -> MaterializeResult:
    result = loaded.result
    _log(context, table, result, scope.partition, detailed)
    checks = evaluate(context, table, result, loaded.evidence, scope.partition)
    run_range = None
    if result.by_partition:  # one run over several partitions: each shows its own figures
        run_range = f"{scope.partition} ({len(scope.keys)} partitions, one run)"
        for position, metadata in partition_metadata(result, loaded.rows_by_partition).items():
            context.add_asset_metadata(metadata, asset_key=asset_key(table), partition_key=scope.keys[position])
    return MaterializeResult(asset_key=asset_key(table), metadata=materialization_metadata(table, result, run_range),
                             check_results=checks)


def _log_step(context: AssetExecutionContext, results: list[tuple[TablePlan, LoadResult]], failed: int,
              seconds: float) -> None:
    def total(figure: str) -> int:
        return sum(getattr(result, figure) for _, result in results)

    slowest = max(results, key=lambda pair: pair[1].seconds, default=None)
    context.log.info(
        f"{len(results)} tables loaded{f' ({failed} failed)' if failed else ''} in {seconds:.1f}s: "
        f"{total('rows_read')} rows read, {total('inserted')} inserted, {total('updated')} updated, "
        f"{total('deleted')} deleted, {total('rejected_rows')} rejected"
        + (f"; slowest {slowest[0].target_label} ({slowest[1].seconds:.2f}s)" if slowest else "")
    )


def _scope(context: AssetExecutionContext, table: TablePlan) -> RunScope:
    """The run's window (one partition, or a whole range in a single-run backfill), its label and keys."""
    if table.partition is None:
        return RunScope(context.run.run_id, None, None, [])
    span = context.partition_key_range
    label = span.start if span.start == span.end else f"{span.start}...{span.end}"
    keys = range_keys(table, span.start, span.end)
    return RunScope(context.run.run_id, partition_window(table, keys), label, keys)


# A step of more tables than this logs one line for all of them (what is notable, rejects and schema
# changes, still per table): each log line is an event Dagster stores, and a line per table cost a
# step of 125 small tables 15 % of its time. Each table's figures are in its materialization anyway.
LOG_EACH_UP_TO = 20


def _log(context: AssetExecutionContext, table: TablePlan, result: LoadResult, partition: str | None,
         detailed: bool = True) -> None:
    if detailed:
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

