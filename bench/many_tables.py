"""Benchmark: a database of many small tables, materialized through Dagster, against pgloader.

What a user does on a real database: ``include: ["*"]`` and ``python -m mysql_pg_assets.cli
materialize`` (every asset, through ``dagster asset materialize``, the Dagster instance of
``DAGSTER_HOME``), timed from the command's start to its exit; and pgloader loading the same
database. Side by side, interleaved (ours, pgloader, ours, …), medians and the per-round ratio; the
load average printed with every trial. It prints figures and does not assert.

* Source: MySQL database ``mpa_bench_many`` with ``--tables`` tables of ``--rows`` rows each
  (``id INT PRIMARY KEY``, VARCHAR, DECIMAL, DATETIME, JSON, ``TIMESTAMP ON UPDATE``), made with
  MariaDB's sequence engine and reused when it already has that shape.
* Target: PostgreSQL database ``mpa_bench_many`` on ``POSTGRES_URL``'s server (use a durable one for
  figures: the machine's own PostgreSQL on 5432, fsync on); ours loads schema ``mpa_many``, pgloader
  schema ``pgloader_many``, each dropped before each of its trials (a first, full load).
* A trial counts only if it exits 0 and the target then holds every table with every row (ours:
  ``cli summary``, which compares the counts of every table; pgloader: the same counts read in
  PostgreSQL).
* pgloader runs with its defaults, and with the known one-clause fixes of ``bench/run.py`` added
  when its log shows the known failure (the fixes are named in the summary).

Usage: ``make bench-many ARGS="--tables 500 --repeat 3"``, or
``source scripts/env.sh && POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres uv run --frozen
python bench/many_tables.py --tables 500``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg import sql

from mysql_pg_assets.core.connections import mysql_connection, pg_connect
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import mysql_ident

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402  (bench/run.py: the pgloader machinery, shared)
    _SECRETS,
    REPO,
    Measured,
    PgloaderVariant,
    drop_schema,
    ensure_pgloader,
    load_avg,
    log_tail,
    pgloader_failure,
    run_measured,
    run_pgloader,
)

DATABASE = "mpa_bench_many"
OURS_SCHEMA, PGLOADER_SCHEMA = "mpa_many", "pgloader_many"


def ensure_source(url: DatabaseUrl, tables: int, rows: int) -> str:
    with mysql_connection(url, database="") as connection, connection.cursor() as cur:
        cur.execute("SELECT COUNT(*), COALESCE(SUM(table_rows), 0) FROM information_schema.tables "
                    "WHERE table_schema = %s", (DATABASE,))
        have, _ = cur.fetchone()
        if have == tables:
            cur.execute(f"SELECT COUNT(*) FROM {mysql_ident(DATABASE)}.`t{tables - 1:04d}`")
            if cur.fetchone()[0] == rows:
                return f"reused: {tables} tables of {rows} rows in MySQL {DATABASE}"
        started = time.perf_counter()
        cur.execute(f"DROP DATABASE IF EXISTS {mysql_ident(DATABASE)}")
        cur.execute(f"CREATE DATABASE {mysql_ident(DATABASE)} CHARACTER SET utf8mb4")
        cur.execute(f"USE {mysql_ident(DATABASE)}")  # the sequence engine's seq_1_to_N is in every database
        for n in range(tables):
            name = f"{mysql_ident(DATABASE)}.`t{n:04d}`"
            cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, name VARCHAR(60), amount DECIMAL(12,2), "
                        "created DATETIME, doc JSON, changed TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP "
                        "ON UPDATE CURRENT_TIMESTAMP)")
            cur.execute(f"INSERT INTO {name} (id, name, amount, created, doc) SELECT seq, CONCAT('name ', seq), "
                        "seq / 7, '2026-01-01' + INTERVAL seq HOUR, JSON_OBJECT('k', seq, 'v', REPEAT('x', seq % 20)) "
                        f"FROM seq_1_to_{rows}")  # no parameters: sent as written
    return f"created: {tables} tables of {rows} rows in {time.perf_counter() - started:.0f} s"


def loaded(url: DatabaseUrl, schema: str) -> tuple[int, int]:
    """(tables, rows) in ``schema``: the exact count of every table."""
    with pg_connect(url, autocommit=True) as connection:
        names = [r[0] for r in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE 't%%'", (schema,))]
        rows = sum(connection.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(name))).fetchone()[0] for name in names)
    return len(names), rows


@dataclass
class Trial:
    contender: str
    round: int
    measured: Measured | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.measured is not None and not self.error


def run_ours(mysql: DatabaseUrl, pg: DatabaseUrl, logs: Path, name: str, timeout: float) -> Measured:
    spec = logs / "sync.yaml"
    spec.write_text(f'source: {{database: {DATABASE}}}\ntarget: {{schema: {OURS_SCHEMA}}}\ninclude: ["*"]\n')
    env = {**os.environ, "MYSQL_URL": mysql.secret, "POSTGRES_URL": pg.secret, "SYNC_CONFIG": str(spec)}
    return run_measured([sys.executable, "-m", "mysql_pg_assets.cli", "materialize"], env, logs / f"{name}.log",
                        timeout)


def judge(trial: Trial, pg: DatabaseUrl, schema: str, tables: int, rows: int) -> Trial:
    measured = trial.measured
    assert measured is not None
    text = measured.log.read_text(errors="replace")
    have = loaded(pg, schema)
    if measured.timed_out:
        trial.error = "timed out"
    elif measured.exit_code:
        trial.error = f"exit code {measured.exit_code}: {pgloader_failure(text) or text.strip().splitlines()[-1:]}"
    elif have != (tables, tables * rows):
        trial.error = f"exit code 0 but {have[0]} tables and {have[1]:,} rows in PostgreSQL"
    return trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--rows", type=int, default=200, help="rows per table (200)")
    parser.add_argument("--repeat", type=int, default=3, help="trials per contender, interleaved (3)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--no-pgloader", action="store_true")
    args = parser.parse_args()
    mysql_server = DatabaseUrl.parse(os.environ["MYSQL_URL"])
    pg_server = DatabaseUrl.parse(os.environ["POSTGRES_URL"])
    mysql, pg = mysql_server.with_database(DATABASE), pg_server.with_database(DATABASE)
    _SECRETS.extend(p for p in {mysql.password, pg.password} if p and len(p) >= 6)
    logs = Path(tempfile.mkdtemp(prefix=f"mpa-bench-many-{datetime.now():%Y%m%d-%H%M%S}-"))
    print(f"mysql-pg-assets benchmark: {args.tables} tables x {args.rows} rows through Dagster, vs pgloader")
    print(f"started {datetime.now():%Y-%m-%d %H:%M:%S}, load average {load_avg()}, {os.cpu_count()} CPUs")
    print(f"MySQL {mysql_server}  PostgreSQL {pg_server}  DAGSTER_HOME {os.environ.get('DAGSTER_HOME')}")
    print(f"logs: {logs}")
    print("  " + ensure_source(mysql, args.tables, args.rows), flush=True)
    with pg_connect(pg_server, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    pgloader, note = (None, "--no-pgloader") if args.no_pgloader else ensure_pgloader()
    variant = PgloaderVariant()
    trials: list[Trial] = []

    def show(trial: Trial) -> None:
        trials.append(trial)
        m = trial.measured
        took = f"{m.seconds:7.1f} s  CPU {m.cpu_seconds:6.1f} s" if m else ""
        state = "ok" if trial.ok else f"FAILED: {trial.error}"
        print(f"  round {trial.round} {trial.contender:<26} {took}  load avg {load_avg()}  {state}", flush=True)
        if not trial.ok and m is not None and trial.contender == "ours":
            print(log_tail(m.log), flush=True)

    for n in range(1, args.repeat + 1):
        drop_schema(pg, OURS_SCHEMA)
        show(judge(Trial("ours", n, run_ours(mysql, pg, logs, f"ours-{n}", args.timeout)), pg, OURS_SCHEMA,
                   args.tables, args.rows))
        while pgloader is not None:
            drop_schema(pg, PGLOADER_SCHEMA)
            trial = judge(Trial(variant.label, n, run_pgloader(pgloader, variant, mysql, pg, logs,
                                                               f"{variant.label}-{n}", args.timeout, only=None,
                                                               schema=PGLOADER_SCHEMA)),
                          pg, PGLOADER_SCHEMA, args.tables, args.rows)
            show(trial)
            fix = None if trial.ok else variant.next_fix(trial.measured.log.read_text(errors="replace"))
            if fix is None:
                break
            variant = PgloaderVariant((*variant.fixes, fix))
            print(f"  -> known pgloader failure ({fix.why}); from here on with: {fix.clause}", flush=True)

    ours = [t.measured.seconds for t in trials if t.ok and t.contender == "ours" and t.measured]
    theirs = {t.round: t.measured.seconds for t in trials if t.ok and t.contender != "ours" and t.measured}
    print(f"\nresults ({args.tables} tables x {args.rows} rows, wall seconds from start to exit, medians):")
    if ours:
        print(f"  mysql-pg-assets (cli materialize, Dagster): {statistics.median(ours):6.1f} s "
              f"({len(ours)}/{args.repeat} ok; {', '.join(f'{s:.1f}' for s in ours)})")
    if theirs:
        print(f"  {variant.label:<42} {statistics.median(theirs.values()):6.1f} s "
              f"({len(theirs)} ok; {', '.join(f'{s:.1f}' for s in theirs.values())})")
        ratios = [theirs[t.round] / t.measured.seconds for t in trials
                  if t.ok and t.contender == "ours" and t.measured and t.round in theirs]
        if ratios:
            print(f"  pgloader / ours, per round: {', '.join(f'{r:.2f}x' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f}x; above 1: ours is faster)")
    elif pgloader is None:
        print(f"  pgloader not run: {note}")
    if ours and (args.tables, args.rows) == (500, 200):  # the target is for this shape
        print(f"  target: <= 60 s -> {'MET' if statistics.median(ours) <= 60 else 'NOT MET'}")
    print(f"finished {datetime.now():%Y-%m-%d %H:%M:%S}; the {DATABASE} databases are left in place; repo {REPO}")
    return 0 if ours else 1


if __name__ == "__main__":
    sys.exit(main())
