"""Sensors: watch for divergence between MySQL and PostgreSQL and request the runs that repair it.

Each sensor gathers its inputs (the catalog read anew, migrations planned by ``migrate``,
fingerprints from ``parity``, what the Dagster instance has materialized), asks ``checks.drift``
what to do, and turns the answer into Dagster's terms: run requests, check evaluations, alerts.

- ``schema_drift_<schema>``: compatible changes get a run that migrates and reloads; destructive
  ones wait for the ``approve_schema_change`` job, reported once per change.
- ``data_drift_<schema>``: at most ``budget`` materialized partitions (or whole tables) per tick,
  in turn; a unit whose fingerprints differ is reloaded, exactly once per drift.
- ``freshness_alerts_<schema>``: an alert when a table's freshness turns WARN or FAIL, and when it
  is fresh again.
- ``alert_on_run_failure``: every failed run, posted.
"""

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetSelection,
    DagsterEventType,
    DefaultSensorStatus,
    MetadataValue,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from mysql_pg_assets.checks.drift import (
    FreshnessState,
    Held,
    SchemaRun,
    data_repair,
    freshness_change,
    freshness_state,
    reload_range,
    schema_decisions,
    units_to_check,
)
from mysql_pg_assets.checks.parity import fingerprints
from mysql_pg_assets.core import alerts
from mysql_pg_assets.defs.asset_checks import SCHEMA_CONFORMS, severity
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import asset_key, partition_window, partitions_for
from mysql_pg_assets.sync.catalog.discover import current_plans
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.sync.load.migrate import APPROVAL_JOB, applied_count, approved, plan_tables
from mysql_pg_assets.sync.spec import SyncSpec

# The tags of a single-run backfill of a partition range, as Dagster's own backfills set them.
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _repair_sensor(kind: str, catalog: Catalog, interval_s: int, description: str) -> Callable:
    """The decorator of a sensor that requests runs of the catalog's assets, running by default."""
    return sensor(
        name=f"{kind}_{dagster_safe_name(catalog.target_schema)}",
        target=AssetSelection.assets(*(asset_key(t) for t in catalog.tables)),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )


def _units(context: SensorEvaluationContext, tables: Sequence[TablePlan]) -> list[tuple[TablePlan, str | None]]:
    """What has been materialized: (table, partition key) pairs, or (table, None) for a whole table. One
    query for every table's latest materialization, then one per partitioned table that has any."""
    latest = context.instance.get_latest_materialization_events([asset_key(t) for t in tables])
    units: list[tuple[TablePlan, str | None]] = []
    for table in tables:
        key = asset_key(table)
        if latest.get(key) is None:
            continue
        if table.partition is None:
            units.append((table, None))
        else:
            units += [(table, partition) for partition in sorted(context.instance.get_materialized_partitions(key))]
    return units


def build_data_drift_sensor(
    spec: SyncSpec, catalog: Catalog, budget: int = 20, interval_s: int = 300
) -> SensorDefinition:
    @_repair_sensor("data_drift", catalog, interval_s, (
        f"Compares row counts and checksums of materialized partitions of {catalog.source_database}, "
        f"{budget} per tick, and rematerializes the ones that differ."))
    def data_drift(context: SensorEvaluationContext, mysql: MySQLSource, postgres: PostgresTarget) -> SensorResult:
        tables = current_plans(spec, catalog, mysql.database_url)
        with postgres.connection() as connection:
            migrating = {label for label, migration in plan_tables(connection, tables).items() if migration}
        # A table whose schema changed is the schema-drift sensor's: its checksums cannot compare yet. A table
        # with mode cdc moves on between the two sides' reads: a difference is its lag, which cdc_watch watches.
        units = [(t, p) for t, p in _units(context, tables) if t.target_label not in migrating and not t.cdc]
        if not units:
            return SensorResult(skip_reason=SkipReason("nothing materialized yet"))
        checked, cursor = units_to_check(units, int(json.loads(context.cursor)["next"]) if context.cursor else 0,
                                         budget)
        requests = []
        for table, partition in checked:
            window = partition_window(table, [partition]) if partition is not None else None
            repair = data_repair(table, partition, *fingerprints(mysql.database_url, postgres.database_url, table,
                                                                 window))
            if repair is not None:
                context.log.info(repair.reason)
                requests.append(RunRequest(run_key=repair.run_key, asset_selection=[asset_key(table)],
                                           partition_key=partition, tags={"mysql_pg_assets/reason": "data drift"}))
        return SensorResult(run_requests=requests, cursor=json.dumps({"next": cursor}))

    return data_drift


def _rematerialize(context: SensorEvaluationContext, run: SchemaRun) -> RunRequest:
    """One run that loads what the migration touches (``drift.reload_range``): a single-run range of
    partitions, or the whole of an unpartitioned table."""
    key = asset_key(run.table)
    tags = {"mysql_pg_assets/reason": run.reason}
    partitions = partitions_for(run.table)
    if partitions is None:
        return RunRequest(run_key=run.run_key, asset_selection=[key], tags=tags)
    first, last = reload_range(list(context.instance.get_materialized_partitions(key)),
                               partitions.get_partition_keys(), run.migration.reloads_rows)
    return RunRequest(run_key=run.run_key, asset_selection=[key], tags={**tags, RANGE_START_TAG: first,
                                                                         RANGE_END_TAG: last})


def _held_check(held: Held) -> AssetCheckEvaluation:
    return AssetCheckEvaluation(
        asset_key=asset_key(held.table), check_name=SCHEMA_CONFORMS, passed=False,
        severity=severity(held.table, SCHEMA_CONFORMS),
        description="MySQL's schema changed destructively; nothing changes until it is approved.",
        metadata={"differences": MetadataValue.json(held.migration.summary()),
                  "fingerprint": MetadataValue.text(held.migration.fingerprint),
                  "to_approve": MetadataValue.text(held.how)},
    )


def build_schema_drift_sensor(spec: SyncSpec, catalog: Catalog, interval_s: int = 60) -> SensorDefinition:
    """Watches MySQL's information_schema for the synced tables (see ``migrate`` for what is compatible).

    A compatible change requests the run that migrates PostgreSQL and reloads the affected
    partitions. A destructive one requests nothing: it fails the table's ``schema_conforms`` check
    (once per distinct change, with an alert) and waits; once the ``approve_schema_change`` job has
    approved exactly that change, the next tick requests the run that applies it. Run keys carry the
    change's fingerprint: one run per change, never two.
    """
    @_repair_sensor("schema_drift", catalog, interval_s, (
        f"Watches {catalog.source_database}'s information_schema: migrates PostgreSQL for compatible "
        f"changes and rematerializes; holds destructive ones until {APPROVAL_JOB} approves them."))
    def schema_drift(context: SensorEvaluationContext, mysql: MySQLSource, postgres: PostgresTarget) -> SensorResult:
        tables = current_plans(spec, catalog, mysql.database_url)
        reported: dict[str, str] = json.loads(context.cursor)["held"] if context.cursor else {}
        with postgres.connection() as connection:
            migrations = plan_tables(connection, tables)
            approvals = {label: approved(connection, m) for label, m in migrations.items() if m.destructive}
            applied = {t.target_label: applied_count(connection, t) for t in tables if migrations.get(t.target_label)}
        runs, holds, reported = schema_decisions(tables, migrations, approvals, applied, reported)
        for run in runs:
            context.log.info(f"{run.table.target_label}: schema changed in MySQL "
                             f"({'; '.join(run.migration.summary())}): requesting the migrating run")
        for held in holds:
            context.log.warning(f"{held.table.target_label}: destructive schema change held: {held.changes}; "
                                f"{held.how}")
            alerts.send(alerts.Alert("schema_change_held", asset_key(held.table).to_user_string(),
                                     f"{held.changes}; {held.how}", check=SCHEMA_CONFORMS,
                                     severity=held.table.checks.schema_conforms.severity))
        return SensorResult(run_requests=[_rematerialize(context, run) for run in runs],
                            asset_events=[_held_check(held) for held in holds], cursor=json.dumps({"held": reported}))

    return schema_drift


def build_freshness_alert_sensor(
    catalog: Catalog, interval_s: int = 60, clock: Callable[[], float] = time.time
) -> SensorDefinition:
    """Alerts when an asset's freshness turns WARN or FAIL, and when it is fresh again (once per change:
    the cursor holds each asset's last state). The UI shows the same states from Dagster's own
    freshness daemon; this sensor is what reaches ALERT_WEBHOOK_URL."""
    tables = [t for t in catalog.tables if t.freshness is not None]

    @sensor(
        name=f"freshness_alerts_{dagster_safe_name(catalog.target_schema)}",
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Posts to ALERT_WEBHOOK_URL when a table's freshness policy turns WARN or FAIL, and when it "
                    "passes again.",
    )
    def freshness_alerts(context: SensorEvaluationContext) -> SensorResult:
        states: dict[str, FreshnessState] = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        latest = context.instance.get_latest_materialization_events([asset_key(t) for t in tables])
        for table in tables:
            assert table.freshness is not None
            key = asset_key(table)
            event = latest.get(key)
            state = freshness_state(event.timestamp if event else None, now, table.freshness)
            label, previous = key.to_user_string(), states.get(key.to_user_string(), "UNKNOWN")
            states[label] = state
            if not freshness_change(previous, state):
                continue
            if state == "PASS":
                reason, level = "materialized again: fresh", "info"
            else:
                assert event is not None
                limit = table.freshness.fail_after if state == "FAIL" else table.freshness.warn_after
                reason = (f"last materialized {timedelta(seconds=round(now - event.timestamp))} ago, at "
                          f"{datetime.fromtimestamp(event.timestamp, UTC).isoformat(timespec='seconds')}; "
                          f"{'fail' if state == 'FAIL' else 'warn'}_after is {limit}")
                level = "error" if state == "FAIL" else "warn"
            context.log.warning(f"{label}: freshness {state}: {reason}")
            alerts.send(alerts.Alert(f"freshness_{state.lower()}", label, reason, severity=level))
        return SensorResult(cursor=json.dumps(states))

    return freshness_alerts


@run_failure_sensor(name="alert_on_run_failure", default_status=DefaultSensorStatus.RUNNING,
                    description="Posts every failed run's assets, partition and error to ALERT_WEBHOOK_URL.")
def alert_on_run_failure(context: RunFailureSensorContext) -> None:
    run = context.dagster_run
    keys = run.asset_selection or {  # a run launched in process names its assets only in its events
        record.event_log_entry.dagster_event.asset_key
        for record in context.instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    }
    assets = ", ".join(k.to_user_string() for k in sorted(keys, key=lambda k: tuple(k.path)))
    alerts.send(alerts.Alert(
        "run_failed", assets or run.job_name, context.failure_event.message or "run failed",
        partition=run.tags.get("dagster/partition") or run.tags.get(RANGE_START_TAG),
        run_id=run.run_id,
    ))
