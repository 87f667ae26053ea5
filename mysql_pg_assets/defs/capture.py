"""Change capture in Dagster: the ``follow_binlog`` job, and the sensor that watches it.

``follow_binlog`` runs the capture loop (``sync.capture.stream``) inside a run, so a user starts and
stops it from the UI (Launchpad: ``seconds``, 0 for until terminated; ``once`` to stop when caught up).
Whenever it has caught up (at most every ``parity_every_s``), it evaluates each table's ``parity``
check at that point of the stream: counts and checksums of both sides, kept only if MySQL's binlog
did not move while they were read. What it applies is recorded on the assets it touched: a
materialization per table at most every ``report_every_s`` (and at the end), with the changes
applied, rows inserted, updated, deleted and rejected, the lag (source commit → committed in
PostgreSQL) and the binlog position. That keeps the asset's freshness and its history of lag in the
UI without an event per micro-batch.

Production runs the same loop as its own service (``python -m mysql_pg_assets.cli cdc``); the sensor
``cdc_watch`` works for both: it alerts when a table's applied position has not moved for
``options.cdc_max_lag_s`` while MySQL's binlog has (capture down or behind), and, when turned on
(it is off by default, so it never competes with a service), starts ``follow_binlog`` whenever no
run of it is going.
"""

# No `from __future__ import annotations` here: Dagster reads the op's config class from its annotation.
import json
import time
from datetime import UTC, datetime

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    AssetObservation,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    job,
    op,
    sensor,
)
from pydantic import Field

from mysql_pg_assets.checks.parity import fingerprints
from mysql_pg_assets.core import alerts
from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.meta import position_ages, positions
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import asset_key
from mysql_pg_assets.sync.capture import recover as recovery
from mysql_pg_assets.sync.capture.apply import Applied, TableApplied
from mysql_pg_assets.sync.capture.binlog import Position, master_position
from mysql_pg_assets.sync.capture.stream import follow
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan, dagster_safe_name, find_table

CAPTURE_JOB = "follow_binlog"
RECOVERY_JOB = "recover_table"


class FollowConfig(Config):
    seconds: float = Field(0, ge=0, description="how long to follow the binlog; 0: until the run is terminated")
    once: bool = Field(False, description="stop as soon as PostgreSQL has caught up")
    report_every_s: float = Field(30, gt=0, description="at most one materialization per table this often")
    parity_every_s: float = Field(600, ge=0, description="when caught up, compare both sides at most this often "
                                                         "(the parity check of each table); 0: never")


def _parity_at_a_point(context: OpExecutionContext, tables: list[TablePlan], mysql_url: DatabaseUrl,
                       postgres_url: DatabaseUrl) -> bool:
    """Each table's parity check (counts and checksums) while PostgreSQL has caught up: valid only if MySQL's
    binlog did not move during the comparison, else it waits for the next quiet moment (returns False)."""
    before = master_position(mysql_url)
    sides = {t.target_label: fingerprints(mysql_url, postgres_url, t, None) for t in tables}
    at = master_position(mysql_url)
    if at != before:
        return False
    for table in tables:
        source, target = sides[table.target_label]
        context.log_event(AssetCheckEvaluation(  # type: ignore[arg-type]  # accepted at run time (tested)
            asset_key=asset_key(table), check_name="parity", passed=source == target,
            severity=AssetCheckSeverity.WARN if table.checks.parity.severity == "warn" else AssetCheckSeverity.ERROR,
            description=None if source == target else f"at {at}: MySQL {source}, PostgreSQL {target}",
            metadata={"binlog_position": MetadataValue.text(str(at)), "mysql_rows": source.rows,
                      "postgres_rows": target.rows, "mysql_checksum": str(source.checksum),
                      "postgres_checksum": str(target.checksum), "mode": "cdc, compared while caught up"}))
    return True


class _Reporter:
    """Sums what batches applied per table and records it as materializations, at most every ``every_s``."""

    def __init__(self, context: OpExecutionContext, tables: list[TablePlan], every_s: float) -> None:
        self.context, self.every_s = context, every_s
        self.by_label = {t.target_label: t for t in tables}
        self.pending: dict[str, TableApplied] = {}
        self.lags: dict[str, float] = {}
        self.position: Position | None = None
        self.last = time.monotonic()

    def __call__(self, applied: Applied) -> None:
        lag = (datetime.now(UTC) - applied.committed_at).total_seconds()  # type: ignore[operator]
        for label, done in applied.tables.items():
            self.pending.setdefault(label, TableApplied()).add(done)
            self.lags[label] = lag
        self.position = applied.end
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        for label, done in self.pending.items():
            self.context.log_event(AssetMaterialization(asset_key=asset_key(self.by_label[label]), metadata={
                "changes_applied": done.changes, "rows_inserted": done.inserted, "rows_updated": done.updated,
                "rows_deleted": done.deleted, "rows_rejected": done.rejected,
                "lag_s": MetadataValue.float(round(self.lags[label], 3)),
                "binlog_position": MetadataValue.text(str(self.position)),
                "mode": "cdc",
            }))
        self.pending.clear()
        self.last = time.monotonic()


def build_capture_job(catalog: Catalog, retention_days: int = 30) -> JobDefinition:
    tables = [t for t in catalog.tables if t.cdc]

    @op(name="follow", description="Applies the binlog's changes to the tables with mode: cdc.")
    def follow_op(context: OpExecutionContext, config: FollowConfig, mysql: MySQLSource,
                  postgres: PostgresTarget) -> None:
        reporter = _Reporter(context, tables, config.report_every_s)
        compared = [-float("inf")]

        def idle() -> None:
            if config.parity_every_s and time.monotonic() - compared[0] >= config.parity_every_s and \
                    _parity_at_a_point(context, tables, mysql.database_url, postgres.database_url):
                compared[0] = time.monotonic()

        try:
            followed = follow(mysql.database_url, postgres.database_url, tables, config.seconds or None,
                              once=config.once, run_id=context.run_id, on_batch=reporter,
                              retention_days=retention_days, on_idle=idle)
        finally:
            reporter.flush()
        for label in followed.not_snapshotted:
            context.log.warning(f"{label}: never snapshotted, its changes are not applied: materialize its asset")
        for label, why in followed.held.items():
            context.log.warning(f"{label}: held {why}; materialize it to snapshot it again")
        context.log.info(f"{followed.changes} changes in {followed.batches} batches, at {followed.position}")

    @job(name=CAPTURE_JOB, description="Follow MySQL's binlog into the tables with mode: cdc (change capture). "
                                       "Runs until terminated, for `seconds`, or until caught up (`once`).")
    def capture_job() -> None:
        follow_op()

    return capture_job


class Recovery(Config):
    table: str = Field(description="the table (schema.table, or its MySQL name), one with mode: cdc")
    rollback_run: str = Field("", description="undo what this run of follow_binlog applied (its run id), in place")
    restore_to: str = Field("", description="the table as of a binlog position (FILE:POS) or a time (ISO 8601)")
    into: str = Field("", description="restore_to: the new table to build, in the same schema")
    in_place: bool = Field(False, description="restore_to: rewrite the table itself (your approval)")
    replay_from: str = Field("", description="apply the changes after this binlog position (FILE:POS) again")


def build_recovery_job(catalog: Catalog) -> JobDefinition:
    tables = [t for t in catalog.tables if t.cdc]

    @op(name="recover", description="Rollback, restore or replay a change-captured table from the change log.")
    def recover_op(context: OpExecutionContext, config: Recovery, postgres: PostgresTarget) -> None:
        table = find_table(tables, config.table)
        if table is None:
            raise Failure(f"no table with mode: cdc named {config.table!r}; they are: "
                          f"{', '.join(t.target_label for t in tables)}")
        asked = [bool(config.rollback_run), bool(config.restore_to), bool(config.replay_from)]
        if sum(asked) != 1:
            raise Failure("say one of rollback_run, restore_to, replay_from")
        url = postgres.database_url
        if config.rollback_run:
            done = recovery.rollback(url, table, config.rollback_run, by_run=context.run_id)
        elif config.restore_to:
            position, time_ = recovery.parse_point(config.restore_to)
            done = recovery.restore(url, table, position, time_, config.into or None, config.in_place,
                                    by_run=context.run_id)
        else:
            position, _ = recovery.parse_point(config.replay_from)
            if position is None:
                raise Failure("replay_from takes a binlog position, FILE:POS")
            done = recovery.replay(url, table, position)
        context.log.info(f"{done.table}: {done.keys} rows recovered from {done.changes} logged changes")
        context.log_event(AssetObservation(asset_key=asset_key(table), metadata={
            "recovery": MetadataValue.text(" ".join(f"{k}={v}" for k, v in config.model_dump().items() if v)),
            "table_written": MetadataValue.text(done.table), "rows_recovered": done.keys}))

    @job(name=RECOVERY_JOB, description="Undo a capture run, restore a change-captured table as of a point in "
                                        "the binlog (into a new table or in place), or replay its changes.")
    def recovery_job() -> None:
        recover_op()

    return recovery_job


def build_capture_sensor(catalog: Catalog, max_lag_s: int, interval_s: int = 30) -> SensorDefinition:
    tables = [t for t in catalog.tables if t.cdc]

    @sensor(name=f"cdc_watch_{dagster_safe_name(catalog.target_schema)}", minimum_interval_seconds=interval_s,
            job_name=CAPTURE_JOB, default_status=DefaultSensorStatus.STOPPED,
            description=f"Alerts when change capture stops following MySQL's binlog for {max_lag_s} s (down or "
                        f"behind), and starts {CAPTURE_JOB} when no run of it is going. Off by default: turn it "
                        f"on when Dagster, not a service of its own, runs the capture.")
    def cdc_watch(context: SensorEvaluationContext, mysql: MySQLSource, postgres: PostgresTarget) -> SensorResult:
        behind: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        end = master_position(mysql.database_url)
        with pg_connection(postgres.database_url) as connection:
            stored = positions(connection, catalog.target_schema)
            ages = position_ages(connection, catalog.target_schema)
        now_behind = {}
        for table in tables:
            found = stored.get(table.target_label)
            if found is None or found[2] is not None:
                continue
            if Position(found[0], found[1]) < end and ages.get(table.target_label, 0.0) > max_lag_s:
                now_behind[table.target_label] = f"at {found[0]}:{found[1]}, MySQL at {end}"
        for label, where in now_behind.items():
            if label not in behind:
                alerts.send(alerts.Alert("cdc_lag", label, f"change capture has not moved for over {max_lag_s} s: "
                                                           f"{where}", severity="error"))
        going = context.instance.get_runs(RunsFilter(job_name=CAPTURE_JOB, statuses=[
            DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED]), limit=1)
        requests = [] if going else [RunRequest(run_key=f"{CAPTURE_JOB}:{int(time.time())}")]
        return SensorResult(run_requests=requests, cursor=json.dumps(now_behind))

    return cdc_watch
