"""Benchmark: the peak memory of a full load does not grow with the table (5 and 20 million rows).

A table shaped like the demo's ``orders`` (an unsigned key, an ENUM, a DECIMAL, text, JSON, DATETIME and
TIMESTAMP(6)) is made in MySQL with MariaDB's sequence engine at each size (``mpa_bench.wide_<rows>``,
reused when it already has its rows), then loaded by this project in a fresh child process
(``sync_one.py``) into a durable PostgreSQL; the kernel's high-water mark of that process (``wait4``) is its
peak RSS. Rounds are interleaved (5M, 20M, 5M, 20M, ...). Targets: peak RSS at most 600 MiB, and the
20-million-row load's within 10 % of the 5-million-row one's.

Usage: ``make bench-memory ARGS="--rows 5000000 20000000 --repeat 2"`` (``POSTGRES_URL`` of a durable
server; every row is compared by count at the end of each load); ``--key text`` keys the same rows by a
VARCHAR (``mpa_bench.wide_text_<rows>``), paged by MySQL's collation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import run  # bench/run.py: the measured child process, the databases
from run import BENCH_DB, child_env, ensure_target, load_avg, mib, pg_connect, run_measured

from mysql_pg_assets.core.settings import DatabaseUrl

SCHEMA = "mem"
RSS_LIMIT_MIB = 600
FLAT = 0.10
CHUNK = 1_000_000  # rows per INSERT when the table is made

WIDE = """CREATE TABLE IF NOT EXISTS `{name}` (
  id BIGINT UNSIGNED PRIMARY KEY, customer_id INT UNSIGNED NOT NULL,
  status ENUM('pending','paid','shipped','delivered') NOT NULL, total DECIMAL(12,2) NOT NULL,
  note VARCHAR(64), doc JSON, created_at DATETIME NOT NULL, updated_at TIMESTAMP(6) NOT NULL)"""
FILL = """INSERT INTO `{name}` SELECT seq, seq % 100003, ELT(1 + seq % 4, 'pending','paid','shipped','delivered'),
  (seq % 100000) / 7, IF(seq % 5 = 0, NULL, CONCAT('note for row ', seq)),
  JSON_OBJECT('city', CONCAT('city ', seq % 977), 'zip', LPAD(seq % 99999, 5, '0'), 'lines', seq % 9),
  '2025-01-01' + INTERVAL (seq % 31536000) SECOND, '2025-06-01' + INTERVAL (seq % 15768000) SECOND
FROM seq_{low}_to_{high}"""


# --key text: the same rows keyed by a VARCHAR ('order-0000000001', …, in the key's order, so MySQL fills it fast).
WIDE_TEXT = WIDE.replace("id BIGINT UNSIGNED PRIMARY KEY", "id VARCHAR(24) CHARACTER SET utf8mb4 PRIMARY KEY")
FILL_TEXT = FILL.replace("SELECT seq, seq % 100003", "SELECT CONCAT('order-', LPAD(seq, 10, '0')), seq % 100003")


def ensure_table(url: DatabaseUrl, rows: int, key: str = "integer") -> str:
    name = f"wide_{rows}" if key == "integer" else f"wide_{key}_{rows}"
    create, fill = (WIDE, FILL) if key == "integer" else (WIDE_TEXT, FILL_TEXT)
    import mysql_pg_assets_demo as demo

    with demo.connect(url) as connection, connection.cursor() as cur:
        cur.execute(create.format(name=name))
        cur.execute(f"SELECT COUNT(*) FROM `{name}`")
        have = cur.fetchone()[0]
        if have == rows:
            return name
        print(f"  making {name}: {rows:,} rows", flush=True)
        cur.execute(f"TRUNCATE `{name}`")
        for low in range(1, rows + 1, CHUNK):
            cur.execute(fill.format(name=name, low=low, high=min(rows, low + CHUNK - 1)))
            connection.commit()
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5_000_000, 20_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--key", choices=["integer", "text"], default="integer",
                        help="the table's primary key: BIGINT UNSIGNED (the demo's) or VARCHAR(24)")
    args = parser.parse_args()
    mysql_url = DatabaseUrl.parse(os.environ["MYSQL_URL"]).with_database(BENCH_DB)
    pg_server = DatabaseUrl.parse(os.environ["POSTGRES_URL"])
    pg_url = pg_server.with_database(BENCH_DB)
    logs = Path(tempfile.mkdtemp(prefix=f"mpa-bench-memory-{datetime.now():%Y%m%d-%H%M%S}-"))
    print(f"peak RSS of a full load against the table's size; started {datetime.now():%Y-%m-%d %H:%M:%S}, "
          f"load average {load_avg()}; PostgreSQL {pg_server}; logs in {logs}")
    import mysql_pg_assets_demo as demo

    with demo.connect(mysql_url, with_database=False) as connection, connection.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{BENCH_DB}`")
    ensure_target(pg_server)
    tables = {rows: ensure_table(mysql_url, rows, args.key) for rows in args.rows}
    peaks: dict[int, list[int]] = {rows: [] for rows in args.rows}
    for round_no in range(1, args.repeat + 1):
        for rows, name in tables.items():
            with pg_connect(pg_url) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
                connection.execute("CHECKPOINT")
            started = time.perf_counter()
            measured = run_measured([sys.executable, str(run.RUNNER), "--database", BENCH_DB, "--schema", SCHEMA,
                                     "--table", name], child_env(mysql_url, pg_url), logs / f"{name}-{round_no}.log",
                                    3600)
            with pg_connect(pg_url) as connection:
                loaded = connection.execute(f'SELECT count(*) FROM "{SCHEMA}"."{name}"').fetchone()[0] \
                    if measured.exit_code == 0 else 0
            ok = measured.exit_code == 0 and loaded == rows
            if ok:
                peaks[rows].append(measured.max_rss_kib)
            print(f"  round {round_no} {rows:>11,} rows: {'ok' if ok else 'FAILED'} {measured.seconds:7.1f} s "
                  f"{rows / measured.seconds:>9,.0f} rows/s  peak RSS {mib(measured.max_rss_kib)}  load avg "
                  f"{load_avg()}  ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\nresults (median peak RSS per size):")
    medians = {rows: statistics.median(values) / 1024 for rows, values in peaks.items() if values}
    for rows, value in medians.items():
        print(f"  {rows:>11,} rows: {value:6,.0f} MiB")
    if len(medians) >= 2:
        low, high = medians[min(medians)], medians[max(medians)]
        print(f"  {max(medians):,} rows / {min(medians):,} rows: {high / low:.2f}x "
              f"-> {'MET' if high <= low * (1 + FLAT) else 'NOT MET'} (within {FLAT:.0%})")
    worst = max(medians.values(), default=0)
    print(f"  peak RSS <= {RSS_LIMIT_MIB} MiB: {worst:,.0f} MiB -> {'MET' if worst <= RSS_LIMIT_MIB else 'NOT MET'}")
    return 0 if all(peaks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
