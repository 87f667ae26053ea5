"""Sensors: watch for divergence between MySQL and PostgreSQL and request the runs that repair it.

The schema-drift sensor reads MySQL's information_schema every tick and plans the migration of
each synced table (``migrate``): compatible changes get a run that migrates and reloads,
destructive ones wait for the ``approve_schema_change`` job.

The data-drift sensor compares fingerprints (row count and checksum, computed inside each
database: ``parity.fingerprints``) of what has been materialized: every loaded partition of a
partitioned table, the whole of any other table. Each tick checks at most ``budget`` of them and
its cursor moves on, so a tick's cost is bounded (two aggregate queries per partition or table)
and every unit is checked in turn. A difference requests a run of exactly that partition, with a
run key made of both fingerprints: the same drift is never repaired twice, and a new change in
MySQL gets a new repair.
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

from mysql_pg_assets.checks.parity import fingerprints
from mysql_pg_assets.core import alerts
from mysql_pg_assets.core.connections import pg_connect
from mysql_pg_assets.defs.assets import SCHEMA_CONFORMS, asset_key, partition_window, partitions_for, severity
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.discover import current_plans
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name
from mysql_pg_assets.sync.load.migrate import APPROVAL_JOB, Migration, applied_count, approved, plan_tables
from mysql_pg_assets.sync.spec import Freshness, SyncSpec

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
    """What has been materialized: (table, partition key) pairs, or (table, None) for a whole table."""
    units: list[tuple[TablePlan, str | None]] = []
    for table in tables:
        key = asset_key(table)
        if table.partition is None:
            if context.instance.get_latest_materialization_event(key) is not None:
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
        with pg_connect(postgres.database_url, autocommit=True) as connection:
            migrating = {label for label, migration in plan_tables(connection, tables).items() if migration}
        # A table whose schema changed is the schema-drift sensor's: its checksums cannot compare yet.
        units = [(t, p) for t, p in _units(context, tables) if t.target_label not in migrating]
        if not units:
            return SensorResult(skip_reason=SkipReason("nothing materialized yet"))
        start = int(json.loads(context.cursor)["next"]) % len(units) if context.cursor else 0
        checked = [units[(start + i) % len(units)] for i in range(min(budget, len(units)))]
        requests = []
        for table, partition in checked:
            window = partition_window(table, partition, partition) if partition is not None else None
            source, target = fingerprints(mysql.database_url, postgres.database_url, table, window)
            if source != target:
                context.log.info(f"{table.target_label} [{partition or 'all'}] drifted: MySQL {source}, "
                                 f"PostgreSQL {target}")
                requests.append(RunRequest(
                    run_key=f"drift:{table.target_label}:{partition}:{source.rows}:{source.checksum}:"
                            f"{target.rows}:{target.checksum}",
                    asset_selection=[asset_key(table)], partition_key=partition,
                    tags={"mysql_pg_assets/reason": "data drift"},
                ))
        return SensorResult(run_requests=requests, cursor=json.dumps({"next": (start + len(checked)) % len(units)}))

    return data_drift


def _rematerialize(context: SensorEvaluationContext, table: TablePlan, migration: Migration, run_key: str,
                   reason: str) -> RunRequest:
    """One run that loads what the migration touches: every materialized partition (one single-run range,
    gaps included) when rows must be read again, else the newest one; the whole of an unpartitioned table."""
    key = asset_key(table)
    tags = {"mysql_pg_assets/reason": reason}
    partitions = partitions_for(table)
    if partitions is None:
        return RunRequest(run_key=run_key, asset_selection=[key], tags=tags)
    # Nothing materialized in this instance (loads made elsewhere): every partition, the table may hold any.
    done = sorted(context.instance.get_materialized_partitions(key)) or partitions.get_partition_keys()
    first = done[0] if migration.reloads_rows else done[-1]
    return RunRequest(run_key=run_key, asset_selection=[key], tags={
        **tags, RANGE_START_TAG: first, RANGE_END_TAG: done[-1]})


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
        held: dict[str, str] = json.loads(context.cursor)["held"] if context.cursor else {}
        requests, events = [], []
        with pg_connect(postgres.database_url, autocommit=True) as connection:
            migrations = plan_tables(connection, tables)
            approvals = {label: approved(connection, m) for label, m in migrations.items() if m.destructive}
            applied = {t.target_label: applied_count(connection, t) for t in tables if migrations.get(t.target_label)}
        for table in tables:
            migration = migrations.get(table.target_label)
            if not migration:
                held.pop(table.target_label, None)
                continue
            label, fingerprint = table.target_label, migration.fingerprint
            changes = "; ".join(migration.summary())
            if not migration.destructive or approvals[label]:
                context.log.info(f"{label}: schema changed in MySQL ({changes}): requesting the migrating run")
                reason = "schema drift" + (" (approved)" if migration.destructive else "")
                run_key = f"schema:{label}:{fingerprint}:{applied[label]}"
                requests.append(_rematerialize(context, table, migration, run_key, reason))
                continue
            if held.get(label) == fingerprint:
                continue  # reported already
            held[label] = fingerprint
            how = f"launch the job {APPROVAL_JOB} with config table: {label}, approve: true"
            context.log.warning(f"{label}: destructive schema change held: {changes}; {how}")
            events.append(AssetCheckEvaluation(
                asset_key=asset_key(table), check_name=SCHEMA_CONFORMS, passed=False,
                severity=severity(table, SCHEMA_CONFORMS),
                description="MySQL's schema changed destructively; nothing changes until it is approved.",
                metadata={"differences": MetadataValue.json(migration.summary()),
                          "fingerprint": MetadataValue.text(fingerprint), "to_approve": MetadataValue.text(how)},
            ))
            alerts.send(alerts.Alert("schema_change_held", asset_key(table).to_user_string(),
                                     f"{changes}; {how}", check=SCHEMA_CONFORMS,
                                     severity=table.checks.schema_conforms.severity))
        return SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps({"held": held}))

    return schema_drift


def freshness_state(last_materialized: float | None, now: float, freshness: Freshness) -> str:
    """PASS, WARN, FAIL or UNKNOWN (never materialized): the rule of Dagster's time-window freshness policy,
    which the UI shows, applied to the time of the asset's latest materialization."""
    if last_materialized is None:
        return "UNKNOWN"
    age = now - last_materialized
    if age >= freshness.fail_after.total_seconds():
        return "FAIL"
    if freshness.warn_after is not None and age >= freshness.warn_after.total_seconds():
        return "WARN"
    return "PASS"


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
        states: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        for table in tables:
            assert table.freshness is not None
            key = asset_key(table)
            event = context.instance.get_latest_materialization_event(key)
            state = freshness_state(event.timestamp if event else None, now, table.freshness)
            label, previous = key.to_user_string(), states.get(key.to_user_string(), "UNKNOWN")
            states[label] = state
            if state == previous or state == "UNKNOWN" or (state == "PASS" and previous == "UNKNOWN"):
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
    assets = ", ".join(k.to_user_string() for k in sorted(keys, key=lambda k: k.path))
    alerts.send(alerts.Alert(
        "run_failed", assets or run.job_name, context.failure_event.message or "run failed",
        partition=run.tags.get("dagster/partition") or run.tags.get(RANGE_START_TAG),
        run_id=run.run_id,
    ))
