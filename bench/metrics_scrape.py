"""Benchmark: what one Prometheus scrape of the exporter costs with many synced tables.

``--tables`` small tables (bench/many_tables.py's source, ``mpa_bench_many``), a quarter of them
change-captured, each loaded ``--loads`` times so the ledger has history, and the capture run once over a
burst of changes so the change log and positions are real. Then the exporter (``ops.metrics.serve``)
answers ``--scrapes`` GETs of /metrics, one after another, as Prometheus would: median, p95 and max in ms
(target: under 200 ms with 200 tables), and the size of a scrape. With ``DAGSTER_HOME`` set (scripts/env.sh
sets it), it reads as ``cli exporter`` does the newest check results and failed loads of every table from
Dagster's storage too. Against ``POSTGRES_URL``'s server, database ``mpa_bench_metrics``.

Usage: ``make bench-metrics ARGS="--tables 200"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from many_tables import DATABASE, ensure_source  # bench/many_tables.py, beside this file

from mysql_pg_assets.core.connections import mysql_connection, pg_connect
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_ident
from mysql_pg_assets.ops.metrics import serve
from mysql_pg_assets.sync.capture.stream import follow
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec

TARGET = "mpa_bench_metrics"


def _target(server: DatabaseUrl) -> DatabaseUrl:
    with pg_connect(server, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {TARGET} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {TARGET}")
    return server.with_database(TARGET)


def _spec(tables: int) -> Path:
    spec = {"source": {"database": DATABASE}, "target": {"schema": "metrics"},
            "options": {"freshness": {"fail_after": "PT6H", "warn_after": "PT1H"}},
            "tables": {f"t{n:04d}": {"mode": "cdc"} for n in range(0, tables, 4)}}
    path = Path(tempfile.mkdtemp(prefix="mpa-bench-metrics-")) / "sync.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _changes(url: DatabaseUrl, tables: int) -> None:
    """A burst of updates on the change-captured tables, for the change log."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for n in range(0, tables, 4):
            cur.execute(f"UPDATE {mysql_ident(DATABASE)}.`t{n:04d}` SET amount = amount + 1 WHERE id <= 5")


def _scrape(port: int) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        size = len(response.read())
    return (time.perf_counter() - started) * 1000, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5, help="loads of each table, for the ledger's history (5)")
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--port", type=int, default=19187)
    args = parser.parse_args(argv)
    mysql = DatabaseUrl.parse(os.environ["MYSQL_URL"])
    print(ensure_source(mysql, args.tables, 50))
    settings = Settings(mysql.with_database(DATABASE), _target(DatabaseUrl.parse(os.environ["POSTGRES_URL"])),
                        _spec(args.tables))
    tables = list(discover(load_spec(settings.sync_config), settings.mysql_url).tables)
    started = time.perf_counter()
    for _ in range(args.loads):
        for table in tables:
            sync_table(table, settings.mysql_url, settings.postgres_url)
    _changes(settings.mysql_url, args.tables)
    followed = follow(settings.mysql_url, settings.postgres_url, [t for t in tables if t.cdc], None, once=True)
    print(f"loaded: {len(tables)} tables x {args.loads} loads, {followed.changes} changes captured, in "
          f"{time.perf_counter() - started:.0f} s")
    dagster = os.environ.get("DAGSTER_HOME")  # as `cli exporter` does: the checks' results from its storage
    if dagster:
        from mysql_pg_assets.defs.observe import readers

        checks, failures = readers()
        server, _ = serve(settings, args.port, checks=checks, failures=failures)
    else:
        server, _ = serve(settings, args.port)
    print(f"Dagster's storage read too: {'yes, ' + dagster if dagster else 'no (DAGSTER_HOME unset)'}")
    try:
        first, size = _scrape(args.port)  # discovers the spec's tables (then every REDISCOVER_S)
        times = sorted(_scrape(args.port)[0] for _ in range(args.scrapes))
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"scrape of {len(tables)} tables ({size / 1024:,.0f} KiB): first {first:,.0f} ms (reads the spec and "
          f"MySQL's tables), then over {len(times)}: median {statistics.median(times):,.0f} ms, p95 {p95:,.0f} ms, "
          f"max {times[-1]:,.0f} ms (target < 200 ms: {'MET' if p95 < 200 else 'NOT MET'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
