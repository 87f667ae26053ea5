"""Benchmark: change capture's lag under a steady write rate, and its catch-up after one huge transaction.

1. A table ``events`` in a MySQL database of its own (``mpa_bench_cdc``) with ``--big-rows`` rows, snapshotted
   into PostgreSQL (``POSTGRES_URL``'s server, database ``mpa_bench_cdc``: point it at a durable server).
2. ``python -m mysql_pg_assets.cli cdc`` started as its own process, as production runs it.
3. Steady: ``--rate`` row changes a second for ``--seconds`` (every 50 ms a transaction of inserts and
   updates, each stamping ``written_at = NOW(6)``). The lag of each change is the time from that stamp
   to its change-log row being written, just before the apply's commit: p50, p95 and max.
4. Big: one ``UPDATE`` of every row in one transaction; catch-up is from its commit to the capture's
   position passing it, in rows/s, and the capture process's peak RSS (``wait4``) over the whole run.
5. Parity: both sides compared (count and every row) at the end.
6. pg_chameleon, the reference, on the same workload (a table made anew) when it is installed (``make
   chameleon``; ``bench/chameleon.py``); otherwise the bench says why.

Usage: ``make bench-cdc ARGS="--rate 2000 --seconds 300 --big-rows 1000000"``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from chameleon import Chameleon, exercise, missing  # bench/chameleon.py, beside this file

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connect, pg_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl
from mysql_pg_assets.sync.capture.binlog import master_position
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec

DATABASE = "mpa_bench_cdc"
SCHEMA = "cdc"


def _source(url: DatabaseUrl, rows: int) -> None:
    with mysql_connection(url, database="") as connection, connection.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cur.execute(f"CREATE DATABASE {DATABASE}")
        cur.execute(f"USE {DATABASE}")  # seq_1_to_N (MariaDB's sequence engine) is looked up in it
        cur.execute(f"CREATE TABLE {DATABASE}.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL,"
                    f" written_at DATETIME(6) NOT NULL, payload VARCHAR(64))")
        cur.execute(f"INSERT INTO {DATABASE}.events (n, written_at, payload) SELECT MOD(seq, 1000), NOW(6),"
                    f" CONCAT('row ', seq) FROM seq_1_to_{int(rows)}")


def _target(server: DatabaseUrl) -> DatabaseUrl:
    with pg_connect(server, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DATABASE}")
    return server.with_database(DATABASE)


def _writer(url: DatabaseUrl, rate: int, seconds: float, stop: threading.Event) -> int:
    """Every 50 ms one transaction of ``rate / 20`` changes: half inserts, half updates of recent rows."""
    per_tick, written, deadline = max(2, rate // 20), 0, time.monotonic() + seconds
    with mysql_connection(url) as connection, connection.cursor() as cur:
        connection.autocommit(False)
        while time.monotonic() < deadline and not stop.is_set():
            tick = time.monotonic()
            inserts = per_tick // 2
            cur.executemany(f"INSERT INTO {DATABASE}.events (n, written_at, payload) VALUES (%s, NOW(6), %s)",
                            [(i, "steady") for i in range(inserts)])
            cur.execute(f"SELECT max(id) FROM {DATABASE}.events")
            newest = int(cur.fetchone()[0])
            cur.execute(f"UPDATE {DATABASE}.events SET n = n + 1, written_at = NOW(6) WHERE id > %s"
                        f" ORDER BY id DESC LIMIT %s", (newest - per_tick * 40, per_tick - inserts))
            connection.commit()
            written += per_tick
            time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
    return written


def _caught_up(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, timeout_s: float) -> float:
    """Seconds until the capture's position reaches MySQL's current end."""
    end, started = master_position(mysql_url), time.monotonic()
    while time.monotonic() - started < timeout_s:
        with pg_connection(postgres_url) as connection:
            row = connection.execute("SELECT log_file, log_pos FROM mysql_pg_assets.cdc_positions").fetchone()
        if row and (row[0], int(row[1])) >= (end.log_file, end.log_pos):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"change capture did not reach {end} within {timeout_s} s")


def _lags(postgres_url: DatabaseUrl, since_id: int) -> list[float]:
    with pg_connection(postgres_url) as connection:
        return [float(v) for (v,) in connection.execute(
            "SELECT extract(epoch FROM applied_at - ((after->>'written_at')::timestamp AT TIME ZONE 'UTC'))"
            " FROM mysql_pg_assets.change_log WHERE id > %s AND after IS NOT NULL", (since_id,))]


def _last_log_id(postgres_url: DatabaseUrl) -> int:
    with pg_connection(postgres_url) as connection:
        return int(connection.execute("SELECT coalesce(max(id), 0) FROM mysql_pg_assets.change_log").fetchone()[0])


def _chameleon(mysql_server: DatabaseUrl, pg_server: DatabaseUrl, args: argparse.Namespace) -> None:
    """The same workload, on a table made anew, replicated by pg_chameleon into a database of its own."""
    reason = missing()
    if reason:
        print(f"pg_chameleon: not run: {reason} (make chameleon installs it)")
        return
    _source(mysql_server, args.big_rows)
    mysql_url = mysql_server.with_database(DATABASE)
    print("pg_chameleon, the same workload (its lag: staleness of the copy, sampled every 50 ms):")
    with Chameleon(mysql_server.host, mysql_server.port, mysql_server.user, mysql_server.password,
                             DATABASE, pg_server.secret, "mpa_bench_chameleon", SCHEMA) as replica:
        exercise(replica, args.big_rows, args.seconds,
                           lambda: _writer(mysql_url, args.rate, args.seconds, threading.Event()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="row changes a second in the steady phase (2000)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the steady phase (60; the target: 300)")
    parser.add_argument("--big-rows", type=int, default=200_000, help="rows of the table, all updated in one "
                                                                        "transaction (200000; the target: 1000000)")
    args = parser.parse_args(argv)
    mysql_server = DatabaseUrl.parse(os.environ["MYSQL_URL"])
    pg_url = _target(DatabaseUrl.parse(os.environ["POSTGRES_URL"]))
    mysql_url = mysql_server.with_database(DATABASE)
    print(f"change capture bench: {args.rate} changes/s for {args.seconds:g} s, then one UPDATE of "
          f"{args.big_rows:,} rows; PostgreSQL {pg_url}")
    _source(mysql_server, args.big_rows)
    spec = Path(tempfile.mkdtemp(prefix="mpa-bench-cdc-")) / "sync.yaml"
    spec.write_text(yaml.safe_dump({"source": {"database": DATABASE}, "target": {"schema": SCHEMA},
                                    "tables": {"events": {"mode": "cdc"}}}))
    table = discover(load_spec(spec), mysql_url).tables[0]
    started = time.perf_counter()
    sync_table(table, mysql_url, pg_url)
    print(f"snapshot: {args.big_rows:,} rows in {time.perf_counter() - started:.1f} s")

    env = {**os.environ, "MYSQL_URL": mysql_url.secret, "POSTGRES_URL": pg_url.secret, "SYNC_CONFIG": str(spec)}
    logged = spec.with_name("cdc.log")  # its log lines (a pipe nobody reads would stop it once full)
    print(f"capture process log: {logged}")
    capture = subprocess.Popen([sys.executable, "-m", "mysql_pg_assets.cli", "cdc"], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=logged.open("w"))
    try:
        _caught_up(mysql_url, pg_url, 60)
        first = _last_log_id(pg_url)
        stop = threading.Event()
        written = _writer(mysql_url, args.rate, args.seconds, stop)
        _caught_up(mysql_url, pg_url, 600)
        lags = sorted(_lags(pg_url, first))
        p95 = lags[int(len(lags) * 0.95)] if lags else float("nan")
        print(f"steady: {written:,} changes at {written / args.seconds:,.0f}/s; lag p50 "
              f"{statistics.median(lags):.2f} s, p95 {p95:.2f} s, max {lags[-1]:.2f} s over {len(lags):,} changes "
              f"(target p95 <= 2 s: {'MET' if p95 <= 2 else 'NOT MET'})")
        with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
            cur.execute(f"UPDATE {DATABASE}.events SET n = n + 1")
            big = cur.rowcount
        seconds = _caught_up(mysql_url, pg_url, 3600)
        rate = big / seconds
        print(f"big: one transaction of {big:,} row changes caught up in {seconds:.1f} s: {rate:,.0f} rows/s "
              f"(target >= 100,000 rows/s: {'MET' if rate >= 100_000 else 'NOT MET'})")
    finally:
        capture.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(capture.pid, 0)
    print(f"capture process peak RSS: {usage.ru_maxrss / 1024:,.0f} MiB (target <= 600 MiB)")
    parity = compare_rows(mysql_url, pg_url, table)
    print(f"parity: MySQL {parity.mysql_rows:,} rows, PostgreSQL {parity.postgres_rows:,}: "
          f"{'every row equal' if parity.equal else 'DIFFERENT ' + str(parity.differences[:2])}")
    _chameleon(mysql_server, DatabaseUrl.parse(os.environ["POSTGRES_URL"]), args)
    return 0 if parity.equal else 1


if __name__ == "__main__":
    sys.exit(main())
