"""Benchmark: a full reload of an existing table, replaced (built aside, swapped in) against merged into.

The 5-million-row demo ``orders`` (``bench/run.py``'s source, ``mpa_bench``) is first loaded into two schemas
of a durable PostgreSQL (not measured). Each round then changes 1 % of the orders in MySQL
(``run.change_one_percent``) and reloads both schemas, each by a fresh child process (``sync_one.py``), the
order alternating from round to round:

* ``full_reload: replace`` (the default; ``sync.load.replace``): the rows COPYed into ``orders__next`` by
  parallel sessions, key and indexes built, compared with the live table by key, swapped in;
* ``full_reload: merge`` (``sync.load.loader``): every row staged, upserted where it changed, deletes
  reconciled.

Each reload must end with every source row in PostgreSQL and report the rows the round changed as updated,
and nothing inserted or deleted: both paths count alike. Printed per reload: seconds, rows/s, peak RSS
(``wait4``) and the WAL it wrote (``pg_current_wal_lsn`` before and after, on a bench server nothing else
writes to); then medians and the ratio. The merge writes far less WAL when little changed; the replacement
is faster: the choice is ``options.full_reload``.

Usage: ``make bench-reload ARGS="--repeat 3"`` (``POSTGRES_URL`` of a durable server).
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
from run import BENCH_DB, TABLE, change_one_percent, child_env, ensure_target, load_avg, mib, pg_connect, runner_result

from mysql_pg_assets.core.settings import DatabaseUrl

WAYS = ("replace", "merge")


def reload(way: str, mysql_url: DatabaseUrl, pg_url: DatabaseUrl, log: Path) -> tuple[run.Measured, dict, int]:
    """One load of ``orders`` into the schema ``reload_<way>``; returns it, its result and the WAL bytes written."""
    with pg_connect(pg_url) as connection:
        connection.execute("CHECKPOINT")
        before = connection.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    argv = [sys.executable, str(run.RUNNER), "--database", BENCH_DB, "--schema", f"reload_{way}", "--table", TABLE,
            "--full-reload", way]
    measured = run.run_measured(argv, child_env(mysql_url, pg_url), log, 3600)
    with pg_connect(pg_url) as connection:
        wal = connection.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (before,)).fetchone()[0]
    return measured, runner_result(measured.log) or {}, wal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (3)")
    args = parser.parse_args()
    mysql_url = DatabaseUrl.parse(os.environ["MYSQL_URL"]).with_database(BENCH_DB)
    pg_server = DatabaseUrl.parse(os.environ["POSTGRES_URL"])
    pg_url = pg_server.with_database(BENCH_DB)
    expected = run.source_orders(mysql_url)
    if not expected:
        print(f"no {BENCH_DB}.{TABLE} in MySQL: run make bench first, which seeds it")
        return 1
    ensure_target(pg_server)
    logs = Path(tempfile.mkdtemp(prefix=f"mpa-bench-reload-{datetime.now():%Y%m%d-%H%M%S}-"))
    print(f"full reload of {expected:,} orders, replace against merge; started {datetime.now():%Y-%m-%d %H:%M:%S}, "
          f"load average {load_avg()}; PostgreSQL {pg_server}; logs in {logs}")
    for way in WAYS:  # the first load of each schema, not measured
        with pg_connect(pg_url) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "reload_{way}" CASCADE')
        reload(way, mysql_url, pg_url, logs / f"first-{way}.log")
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    failed = False
    for round_no in range(1, args.repeat + 1):
        changed = change_one_percent(mysql_url)
        for way in WAYS if round_no % 2 else WAYS[::-1]:
            started = time.perf_counter()
            measured, result, wal = reload(way, mysql_url, pg_url, logs / f"{way}-{round_no}.log")
            with pg_connect(pg_url) as connection:
                loaded = connection.execute(f'SELECT count(*) FROM "reload_{way}"."{TABLE}"').fetchone()[0]
            counts = (result.get("inserted"), result.get("updated"), result.get("deleted"))
            ok = measured.exit_code == 0 and loaded == expected and counts == (0, changed, 0)
            failed |= not ok
            if ok:
                seconds[way].append(measured.seconds)
            print(f"  round {round_no} {way:>7} ({result.get('written')}): {'ok' if ok else 'FAILED'} "
                  f"{measured.seconds:6.1f} s {expected / measured.seconds:>9,.0f} rows/s  peak RSS "
                  f"{mib(measured.max_rss_kib)}  WAL {wal / 2**20:,.0f} MiB  inserted/updated/deleted {counts} "
                  f"(changed {changed:,})  load avg {load_avg()}  ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    if all(seconds.values()):
        replace, merge = (statistics.median(seconds[way]) for way in WAYS)
        print(f"\nmedians: replace {replace:.1f} s, merge {merge:.1f} s: replace is {merge / replace:.2f}x faster")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
