"""Prometheus metrics: what the loads and the change capture already record, read at each scrape.

Nothing is counted twice: a scrape reads the project's own tables in PostgreSQL (the load ledger, the
change-capture positions and the newest change-log entry of each table, the schema changes), MySQL's
binlog position, and, where a Dagster instance is at hand, the newest result of each asset check and
the failed loads (read every ``DAGSTER_EVERY_S`` in a thread of their own: for hundreds of tables they
cost more than a scrape should). The change-capture process adds its own live counters
(``CaptureMetrics``). Every series is labelled by the target table (``schema.table``) at most, and a
check by its name: no key, no value, no URL ever becomes a label.

``SyncCollector`` is what ``python -m mysql_pg_assets.cli exporter`` serves; ``cli cdc --metrics-port``
serves the capture's own counters (``CaptureMetrics``), and the tables' too with ``--exporter`` where no
exporter runs. The alert rules (``deploy/prometheus/alerts.yml``) and
the Grafana dashboard (``deploy/grafana``) use these names; a test keeps the three in step.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import MetaTables, existing
from mysql_pg_assets.core.settings import Settings
from mysql_pg_assets.sync.capture.apply import Applied
from mysql_pg_assets.sync.capture.binlog import Position, master_position
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.spec import load_spec

log = logging.getLogger(__name__)

# What the Dagster side gives (defs/observe.py): (table, check) → whether its newest result failed, and
# table → when its newest materialization attempt failed (only those whose newest attempt failed).
CheckStates = Callable[[Sequence[TablePlan]], dict[tuple[str, str], bool]]
FailedLoads = Callable[[Sequence[TablePlan]], dict[str, float]]

REDISCOVER_S = 300.0  # the spec and MySQL's tables are read again this often, not at every scrape
DAGSTER_EVERY_S = 15.0  # Dagster's check results and failed loads: read this often, in a thread


@dataclass
class _Plans:
    """The spec's tables, read again every ``REDISCOVER_S``."""

    settings: Settings
    tables: list[TablePlan] = field(default_factory=list)
    cdc_max_lag_s: int = 60
    read_at: float = float("-inf")

    def current(self) -> list[TablePlan]:
        if time.monotonic() - self.read_at >= REDISCOVER_S:
            spec = load_spec(self.settings.sync_config)
            self.tables = list(discover(spec, self.settings.mysql_url).tables)
            self.cdc_max_lag_s = spec.options.cdc_max_lag_s
            self.read_at = time.monotonic()
        return self.tables


Family = CounterMetricFamily | GaugeMetricFamily


def _families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
    counters = {
        "loads": "loads committed (the ledger)",
        "rows_read": "rows read from MySQL by loads",
        "rows_inserted": "rows inserted into PostgreSQL by loads",
        "rows_updated": "rows updated in PostgreSQL by loads",
        "rows_deleted": "rows deleted (or tombstoned) in PostgreSQL by loads",
        "rows_rejected": "rows of loads that went to the reject table (transformation and validation errors)",
        "schema_changes_applied": "schema migrations applied to the table",
    }
    gauges = {
        "last_load_timestamp_seconds": "when the table's newest load committed (Unix time)",
        "last_load_rows_per_second": "rows read per second by the table's newest load",
        "last_load_duration_seconds": "how long the table's newest load took",
        "freshness_fail_after_seconds": "the spec's freshness: failed when the newest load is older than this",
        "freshness_warn_after_seconds": "the spec's freshness: a warning when the newest load is older than this",
        "freshness_state": "0 fresh, 1 warning, 2 failed (by the spec's freshness; tables that have one)",
        "cdc_lag_seconds": "change capture: how long the table's position has not moved while behind MySQL's binlog",
        "cdc_max_lag_seconds": "change capture: the spec's cdc_max_lag_s, beyond which the lag alerts",
        "cdc_commit_lag_seconds": "change capture: source commit to PostgreSQL commit of the newest change, when it "
                                  "was applied in the last minute (else 0)",
        "cdc_last_change_timestamp_seconds": "change capture: source commit time of the newest applied change",
        "cdc_position_file": "change capture: the binlog file number the table's copy reflects",
        "cdc_position_offset": "change capture: the offset in that file",
        "cdc_held": "change capture: 1 while the table is held (its definition changed; a snapshot takes it up)",
        "schema_changes_waiting": "destructive schema changes waiting for approval",
        "max_reject_rate": "the spec's checks.rows_valid.max_reject_rate (0: any reject fails the check)",
        "check_failed": "1 when the newest result of the asset check failed, 0 when it passed",
        "load_failed": "1 when the table's newest materialization attempt failed (nothing of it was written)",
        "load_failure_timestamp_seconds": "when that failed attempt ended (Unix time)",
        "binlog_position_file": "MySQL's binlog: the current file number",
        "binlog_position_offset": "MySQL's binlog: the current offset",
        "tables": "tables the spec syncs",
        "exporter_errors": "1 when the last scrape could not read a source (see the exporter's log)",
    }
    families: dict[str, Family] = {}
    for name, text in counters.items():
        families[name] = CounterMetricFamily(f"mpa_{name}", text, labels=["table"])
    for name, text in gauges.items():
        labels = ["table", "check"] if name == "check_failed" else [] if name.startswith(
            ("binlog_", "tables", "exporter_")) else ["table"]
        families[name] = GaugeMetricFamily(f"mpa_{name}", text, labels=labels)
    return families


class SyncCollector(Collector):
    """The project's metrics, read from the databases at each scrape."""

    def __init__(self, settings: Settings, checks: CheckStates | None = None,
                 failures: FailedLoads | None = None, dagster_every_s: float = DAGSTER_EVERY_S) -> None:
        self.plans = _Plans(settings)
        self.settings = settings
        self.dagster = _DagsterView(checks, failures, dagster_every_s) if checks or failures else None

    def describe(self) -> Iterable[Metric]:
        return _families().values()  # no scrape at registration

    def collect(self) -> Iterable[Metric]:
        families = _families()
        errors = 0
        try:
            tables = self.plans.current()
        except (ActionableError, OSError) as exc:
            log.warning("metrics: cannot read the spec or MySQL's tables: %s", exc)
            tables, errors = self.plans.tables, 1
        families["tables"].add_metric([], len(tables))
        positions: dict[str, tuple[Position, float]] = {}  # change capture: table → (position, seconds unmoved)
        for part in (lambda: self._postgres(tables, families, positions),
                     lambda: self._binlog_and_lag(tables, families, positions),
                     lambda: self._checks(tables, families)):
            try:
                part()
            except (ActionableError, psycopg.Error, OSError) as exc:
                log.warning("metrics: %s", exc)
                errors = 1
            except Exception:  # Dagster's storage, say: the scrape still answers with what it could read
                log.exception("metrics: a part of the scrape failed")
                errors = 1
        families["exporter_errors"].add_metric([], errors)
        return families.values()

    def _postgres(self, tables: Sequence[TablePlan], families: dict[str, Family],
                  positions: dict[str, tuple[Position, float]]) -> None:
        now = time.time()
        for table in tables:
            families["max_reject_rate"].add_metric([table.target_label], table.checks.rows_valid.max_reject_rate or 0)
            if table.freshness is not None:
                families["freshness_fail_after_seconds"].add_metric(
                    [table.target_label], table.freshness.fail_after.total_seconds())
                if table.freshness.warn_after is not None:
                    families["freshness_warn_after_seconds"].add_metric(
                        [table.target_label], table.freshness.warn_after.total_seconds())
        schemas = sorted({t.target_schema for t in tables})
        with pg_connection(self.settings.postgres_url) as connection:
            for schema in schemas:
                meta = existing(connection, schema)
                if meta is not None:
                    labels = {t.target_label for t in tables if t.target_schema == schema}
                    last = _ledger(connection, meta, labels, families)
                    _freshness(tables, last, now, families)
                    _schema_changes(connection, meta, labels, families)
                    self._capture(connection, meta, labels, families, positions)

    def _capture(self, connection: psycopg.Connection, meta: MetaTables, labels: set[str],
                 families: dict[str, Family], positions: dict[str, tuple[Position, float]]) -> None:
        rows = connection.execute(
            f"SELECT p.target_table, p.log_file, p.log_pos, p.held IS NOT NULL,"
            f" extract(epoch FROM now() - p.updated_at),"
            f" extract(epoch FROM c.committed_at), CASE WHEN c.applied_at > now() - interval '1 minute'"
            f" THEN extract(epoch FROM c.applied_at - c.committed_at) ELSE 0 END"
            f" FROM {meta.positions} p LEFT JOIN LATERAL (SELECT committed_at, applied_at FROM {meta.change_log} l"
            f" WHERE l.target_table = p.target_table ORDER BY l.log_file DESC, l.log_pos DESC LIMIT 1) c ON true"
            f" WHERE p.target_table = ANY(%s)", (sorted(labels),)).fetchall()
        for label, log_file, log_pos, held, age, committed, commit_lag in rows:
            positions[label] = (Position(log_file, int(log_pos)), float(age))
            families["cdc_position_file"].add_metric([label], _file_number(log_file))
            families["cdc_position_offset"].add_metric([label], int(log_pos))
            families["cdc_held"].add_metric([label], int(held))
            families["cdc_max_lag_seconds"].add_metric([label], self.plans.cdc_max_lag_s)
            if committed is not None:
                families["cdc_last_change_timestamp_seconds"].add_metric([label], float(committed))
                families["cdc_commit_lag_seconds"].add_metric([label], max(0.0, float(commit_lag)))

    def _binlog_and_lag(self, tables: Sequence[TablePlan], families: dict[str, Family],
                        positions: dict[str, tuple[Position, float]]) -> None:
        followed = {t.target_label for t in tables if t.cdc}
        if not followed:
            return
        here = master_position(self.settings.mysql_url)
        families["binlog_position_file"].add_metric([], _file_number(here.log_file))
        families["binlog_position_offset"].add_metric([], here.log_pos)
        for label in sorted(followed & set(positions)):
            position, age = positions[label]
            families["cdc_lag_seconds"].add_metric([label], 0.0 if position >= here else age)

    def _checks(self, tables: Sequence[TablePlan], families: dict[str, Family]) -> None:
        if self.dagster is None:
            return
        checks, failed_at = self.dagster.read(tables)
        for (label, check), failed in sorted(checks.items()):
            families["check_failed"].add_metric([label, check], int(failed))
        if failed_at is not None:
            for table in tables:
                families["load_failed"].add_metric([table.target_label], int(table.target_label in failed_at))
                if table.target_label in failed_at:
                    families["load_failure_timestamp_seconds"].add_metric([table.target_label],
                                                                          failed_at[table.target_label])


class _DagsterView:
    """What Dagster's storage says (check results, failed loads), read in a thread of its own every
    ``every_s`` rather than at each scrape: for hundreds of tables it costs a few hundred milliseconds, and
    a scrape should answer in tens. The first scrape waits for the first read."""

    def __init__(self, checks: CheckStates | None, failures: FailedLoads | None, every_s: float) -> None:
        self.checks, self.failures, self.every_s = checks, failures, every_s
        self.tables: Sequence[TablePlan] = ()
        self.latest: tuple[dict[tuple[str, str], bool], dict[str, float] | None] | None = None
        self.error: Exception | None = None
        self.wanted = threading.Event()
        self.ready = threading.Event()
        threading.Thread(target=self._run, name="mpa-metrics-dagster", daemon=True).start()

    def read(self, tables: Sequence[TablePlan]) -> tuple[dict[tuple[str, str], bool], dict[str, float] | None]:
        if self.latest is None or list(tables) != list(self.tables):
            self.tables = list(tables)
            self.ready.clear()
            self.wanted.set()
            self.ready.wait(timeout=60)
        if self.latest is None:
            raise self.error or TimeoutError("Dagster's storage did not answer within 60 s")
        return self.latest

    def _run(self) -> None:
        while True:
            self.wanted.wait(timeout=self.every_s)
            self.wanted.clear()
            if self.tables:
                try:
                    self.latest = (self.checks(self.tables) if self.checks else {},
                                   self.failures(self.tables) if self.failures else None)
                    self.error = None
                except Exception as exc:  # kept, raised by the next scrape: its errors metric shows it
                    self.error = exc
                    log.warning("metrics: reading Dagster's storage: %s", exc)
            self.ready.set()


def _file_number(log_file: str) -> int:
    found = re.search(r"(\d+)$", log_file)
    return int(found.group(1)) if found else 0


def _ledger(connection: psycopg.Connection, meta: MetaTables, labels: set[str],
            families: dict[str, Family]) -> dict[str, float]:
    """The ledger's sums and newest load per table; returns table → newest load time (Unix)."""
    last: dict[str, float] = {}
    for row in connection.execute(
            f"SELECT target_table, count(*), sum(rows_read), sum(rows_inserted), sum(rows_updated), sum(rows_deleted),"
            f" sum(rows_rejected), extract(epoch FROM max(loaded_at)),"
            f" (array_agg(rows_read ORDER BY id DESC))[1], (array_agg(seconds ORDER BY id DESC))[1]"
            f" FROM {meta.ledger} WHERE target_table = ANY(%s) GROUP BY target_table", (sorted(labels),)):
        label, loads, read, inserted, updated, deleted, rejected, newest, last_rows, last_seconds = row
        for name, value in (("loads", loads), ("rows_read", read), ("rows_inserted", inserted),
                            ("rows_updated", updated), ("rows_deleted", deleted), ("rows_rejected", rejected)):
            families[name].add_metric([label], int(value))
        families["last_load_timestamp_seconds"].add_metric([label], float(newest))
        families["last_load_duration_seconds"].add_metric([label], float(last_seconds))
        families["last_load_rows_per_second"].add_metric([label], last_rows / last_seconds if last_seconds else 0.0)
        last[label] = float(newest)
    return last


def _freshness(tables: Sequence[TablePlan], last: dict[str, float], now: float, families: dict[str, Family]) -> None:
    for table in tables:
        if table.freshness is None or table.cdc:
            continue
        age = now - last.get(table.target_label, float("-inf"))
        warn = table.freshness.warn_after
        state = 2 if age > table.freshness.fail_after.total_seconds() else (
            1 if warn is not None and age > warn.total_seconds() else 0)
        families["freshness_state"].add_metric([table.target_label], state)


def _schema_changes(connection: psycopg.Connection, meta: MetaTables, labels: set[str],
                    families: dict[str, Family]) -> None:
    found = {label: (int(waiting), int(applied)) for label, waiting, applied in connection.execute(
        f"SELECT target_table, count(*) FILTER (WHERE destructive AND approved_at IS NULL AND applied_at IS NULL),"
        f" count(*) FILTER (WHERE applied_at IS NOT NULL) FROM {meta.schema_changes}"
        f" WHERE target_table = ANY(%s) GROUP BY target_table", (sorted(labels),))}
    for label in sorted(labels):  # every table, 0 when none: "nothing waits" is worth a series
        waiting, applied = found.get(label, (0, 0))
        families["schema_changes_waiting"].add_metric([label], waiting)
        families["schema_changes_applied"].add_metric([label], applied)


class CaptureMetrics:
    """The change-capture process's own counters, live (``cli cdc --metrics-port``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.changes = Counter("mpa_cdc_changes_applied", "row changes applied by change capture",
                               ["table", "operation"], registry=registry)
        self.rejected = Counter("mpa_cdc_rows_rejected", "row images change capture sent to the reject table",
                                ["table"], registry=registry)
        self.batches = Counter("mpa_cdc_batches", "batches (PostgreSQL transactions) applied", registry=registry)
        self.failures = Counter("mpa_cdc_apply_failures", "polls that failed (a server gone away: retried)",
                                registry=registry)
        self.lag = Histogram("mpa_cdc_batch_lag_seconds", "source commit of a batch's newest change to its commit "
                             "in PostgreSQL", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
                             registry=registry)
        self.heartbeat = Gauge("mpa_cdc_heartbeat_timestamp_seconds", "when the capture last polled (Unix time)",
                               registry=registry)

    def applied(self, applied: Applied) -> None:
        self.batches.inc()
        self.lag.observe(max(0.0, time.time() - applied.committed_at.timestamp()))  # type: ignore[attr-defined]
        for label, done in applied.tables.items():
            for operation in ("inserted", "updated", "deleted"):
                self.changes.labels(label, operation).inc(getattr(done, operation))
            self.rejected.labels(label).inc(done.rejected)
        self.beat()

    def beat(self) -> None:
        self.heartbeat.set_to_current_time()

    def failed(self, _error: Exception) -> None:
        self.failures.inc()


def serve(settings: Settings, port: int, host: str = "127.0.0.1", capture: bool = False, tables: bool = True,
          checks: CheckStates | None = None,
          failures: FailedLoads | None = None) -> tuple[object, CaptureMetrics | None]:
    """Serve the metrics on ``host:port`` (``/metrics``) from a thread: the tables' (the exporter's), and for the
    change-capture process its own counters. Returns the server (``shutdown()``) and those counters.

    The capture service serves only its counters unless asked for the tables' too (where no exporter runs):
    two jobs exposing the same table series would be summed twice by every ``sum by (table)``."""
    registry = CollectorRegistry()
    if tables:
        registry.register(SyncCollector(settings, checks, failures))
    live = CaptureMetrics(registry) if capture else None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%s/metrics", host, port, extra={"event.action": "metrics-serve"})
    return server, live
