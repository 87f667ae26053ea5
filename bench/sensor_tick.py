"""Benchmark: what one tick of each sensor costs over many tables.

Dagster gives a sensor tick 60 seconds by default (``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``). This
creates ``--tables`` tables of ``--rows`` rows each in a MySQL database of its own
(``mpa_bench_sensors``), half of them daily-partitioned over ``--days`` days, materializes them
all through Dagster into a PostgreSQL database of its own, then times ``--repeat`` ticks of:

* ``schema_drift``: the catalog read anew (a handful of information_schema queries for the whole
  database) and, per table, its PostgreSQL shape against the mapping's (the mapping's normalized by
  a temporary table in a rolled-back transaction, once per process);
* ``data_drift``: the same catalog and shapes, then two aggregate queries (count and checksum,
  one scan of the partition on each side) per unit checked, ``budget`` units per tick;
* ``freshness_alerts``: one instance query for every table's latest materialization.

It also prints what loading the code location costs (the catalog read, the assets, checks and
sensors built), and the median and the per-table cost of each tick. ``--instance dagster-home``
uses ``DAGSTER_HOME``'s PostgreSQL instance, as the daemon does, instead of one in memory. Usage:
``source scripts/env.sh && uv run --frozen python bench/sensor_tick.py --tables 50``
(``make bench-sensors``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from datetime import datetime, timedelta

from dagster import BetaWarning, DagsterInstance, Definitions, build_sensor_context, materialize

from mysql_pg_assets.core.connections import mysql_connection, pg_connect
from mysql_pg_assets.core.settings import Settings
from mysql_pg_assets.core.sql import mysql_ident, pg_ident
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.sensors import (
    build_data_drift_sensor,
    build_freshness_alert_sensor,
    build_schema_drift_sensor,
)
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import parse_spec

warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")

DATABASE = "mpa_bench_sensors"
START = datetime(2026, 3, 1)


def _source(settings: Settings, tables: int, rows: int, days: int) -> None:
    with mysql_connection(settings.mysql_url, database="") as connection, connection.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {mysql_ident(DATABASE)}")
        cur.execute(f"CREATE DATABASE {mysql_ident(DATABASE)} CHARACTER SET utf8mb4")
        cur.execute(f"USE {mysql_ident(DATABASE)}")
        for n in range(tables):
            cur.execute(f"CREATE TABLE t{n:04d} (id INT PRIMARY KEY, at DATETIME NOT NULL, name VARCHAR(40),"
                        f" amount DECIMAL(10,2), state ENUM('a','b','c') NOT NULL, note TEXT)")
            cur.execute(
                f"INSERT INTO t{n:04d} SELECT seq, %s + INTERVAL (seq %% %s) DAY + INTERVAL (seq %% 86400) SECOND,"
                f" CONCAT('name ', seq), seq / 7, ELT(1 + seq %% 3, 'a', 'b', 'c'), REPEAT('x', seq %% 50)"
                f" FROM seq_1_to_{rows}", (START, days))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2000, help="rows per table (2000)")
    parser.add_argument("--days", type=int, default=5, help="daily partitions of the partitioned half (5)")
    parser.add_argument("--budget", type=int, default=20, help="data-drift units per tick (20)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--instance", choices=("ephemeral", "dagster-home"), default="ephemeral",
                        help="Dagster instance: in memory (default), or DAGSTER_HOME's (PostgreSQL, as the daemon's)")
    args = parser.parse_args()
    settings = Settings.from_env()
    source = settings.mysql_url.with_database(DATABASE)
    target = settings.postgres_url.with_database(DATABASE)
    with pg_connect(settings.postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {pg_ident(DATABASE)} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {pg_ident(DATABASE)}")
    _source(settings, args.tables, args.rows, args.days)
    partition = {"partition": {"column": "at", "granularity": "daily", "start": START.date().isoformat(),
                               "end_offset": 0}}
    spec = parse_spec({"target": {"schema": "bench"}, "options": {"freshness": {"fail_after": "PT1H"}},
                       "tables": {f"t{n:04d}": partition for n in range(0, args.tables, 2)}})
    began = time.perf_counter()
    catalog = discover(spec, source)
    discovered = time.perf_counter()
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    assets = build_table_assets(catalog)
    Definitions(assets=assets, resources=resources,
                sensors=[build_schema_drift_sensor(spec, catalog), build_data_drift_sensor(spec, catalog),
                         build_freshness_alert_sensor(catalog)]).resolve_asset_graph()
    print(f"code location of {len(catalog.tables)} tables: catalog read in {discovered - began:.1f} s, assets, "
          f"checks and sensors built in {time.perf_counter() - discovered:.1f} s ({len(assets)} steps)", flush=True)
    last = (START + timedelta(days=args.days - 1)).date().isoformat()
    with DagsterInstance.ephemeral() if args.instance == "ephemeral" else DagsterInstance.get() as instance:
        plain = [a for a in assets if a.partitions_def is None]
        partitioned = [a for a in assets if a.partitions_def is not None]
        started = time.perf_counter()
        assert materialize(plain, instance=instance, resources=resources).success
        assert materialize(partitioned, instance=instance, resources=resources, tags={
            "dagster/asset_partition_range_start": START.date().isoformat(),
            "dagster/asset_partition_range_end": last}).success
        partitioned_tables = sum(len(a.keys) for a in partitioned)  # an assets definition loads many tables
        units = sum(len(a.keys) for a in plain) + partitioned_tables * args.days
        print(f"{args.tables} tables ({partitioned_tables} with {args.days} daily partitions), {args.rows} rows each, "
              f"{units} materialized units; loaded in {time.perf_counter() - started:.1f}s")
        sensors = {
            "schema_drift": build_schema_drift_sensor(spec, catalog),
            f"data_drift (budget {args.budget})": build_data_drift_sensor(spec, catalog, budget=args.budget),
            "freshness_alerts": build_freshness_alert_sensor(catalog),
        }
        medians: dict[str, float] = {}
        for name, sensor in sensors.items():
            seconds, cursor = [], None
            for _ in range(args.repeat):
                began = time.perf_counter()
                result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
                seconds.append(time.perf_counter() - began)
                cursor = result.cursor
                assert not result.run_requests, f"{name} found drift in a fresh copy: {result.run_requests}"
            median = medians[name] = statistics.median(seconds)
            print(f"{name:<26} median {median:6.2f}s per tick, {median / args.tables * 1000:6.1f} ms per table "
                  f"(ticks: {', '.join(f'{s:.2f}' for s in seconds)})")
        checked = min(args.budget, units)
        per_unit = (medians[f"data_drift (budget {args.budget})"] - medians["schema_drift"]) / checked
        print(f"data_drift beyond the schema read: {per_unit * 1000:.1f} ms per unit checked ({args.rows // args.days}"
              f"-row partitions and {args.rows}-row tables); a tick checks {checked}")


if __name__ == "__main__":
    main()
