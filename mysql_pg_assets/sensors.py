"""Sensors: watch for divergence between MySQL and PostgreSQL and request the runs that repair it.

The data-drift sensor compares fingerprints (row count and checksum, computed inside each
database: ``parity.fingerprints``) of what has been materialized: every loaded partition of a
partitioned table, the whole of any other table. Each tick checks at most ``budget`` of them and
its cursor moves on, so a tick's cost is bounded (two aggregate queries per partition or table)
and every unit is checked in turn. A difference requests a run of exactly that partition, with a
run key made of both fingerprints: the same drift is never repaired twice, and a new change in
MySQL gets a new repair.
"""

import json
from collections.abc import Sequence

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from mysql_pg_assets import alerts
from mysql_pg_assets.assets import asset_key, partitions_for
from mysql_pg_assets.catalog import Catalog, TablePlan
from mysql_pg_assets.extract import Window
from mysql_pg_assets.parity import fingerprints
from mysql_pg_assets.resources import MySQLSource, PostgresTarget


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


def build_data_drift_sensor(catalog: Catalog, budget: int = 20, interval_s: int = 300) -> SensorDefinition:
    tables = list(catalog.tables)
    keys: list[AssetKey] = [asset_key(t) for t in tables]

    @sensor(
        name=f"data_drift_{catalog.target_schema}".replace(" ", "_"),
        target=AssetSelection.assets(*keys),
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Compares row counts and checksums of materialized partitions of {catalog.source_database}, "
                    f"{budget} per tick, and rematerializes the ones that differ.",
    )
    def data_drift(context: SensorEvaluationContext, mysql: MySQLSource, postgres: PostgresTarget) -> SensorResult:
        units = _units(context, tables)
        if not units:
            return SensorResult(skip_reason=SkipReason("nothing materialized yet"))
        start = int(json.loads(context.cursor)["next"]) % len(units) if context.cursor else 0
        checked = [units[(start + i) % len(units)] for i in range(min(budget, len(units)))]
        requests = []
        for table, partition in checked:
            window = None
            if partition is not None:
                time_window = partitions_for(table).time_window_for_partition_key(partition)  # type: ignore[union-attr]
                window = Window(time_window.start, time_window.end)
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
        partition=run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_start"),
        run_id=run.run_id,
    ))
