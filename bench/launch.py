"""Benchmark: from launch to committed, one partition (and one small table) through Dagster.

What a user waits for after a click is mostly not the load. Each round runs, in a fresh process as the UI's
run launcher would, ``dagster asset materialize -m mysql_pg_assets.definitions --select <asset>
--partition <key>`` against a Dagster instance in PostgreSQL, and splits its wall time (spawn to exit) into:

- ``python + imports``: a process importing ``mysql_pg_assets.definitions`` and nothing else;
- ``code location``: building the definitions (the spec, MySQL's catalog, the assets), timed in process;
- ``load``: the load itself, from the ledger (``mysql_pg_assets.loads.seconds``);
- ``run + step``: the rest: Dagster's run, the step process, events, checks.

Source: the demo shop in ``MYSQL_URL`` (``make seed``); target: ``POSTGRES_URL`` (a durable server for
figures). Before each partition round 1 % of that day's orders change, as in ``make bench``.

Usage: ``make bench-launch ARGS="--repeat 5"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
TARGET = 10.0  # seconds, launch to committed, one partition


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - started, done


def last_load(postgres_url: str, table: str) -> tuple[float, str | None]:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT seconds, partition FROM mysql_pg_assets.loads WHERE target_table = %s "
                                 "ORDER BY id DESC LIMIT 1", (table,)).fetchone()
    return (float(row[0]), row[1]) if row else (0.0, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--partitioned", default="shop/orders", help="a partitioned asset")
    parser.add_argument("--plain", default="shop/customers", help="an unpartitioned asset")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mpa-bench-launch-"))
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    python, dagster = sys.executable, str(Path(sys.executable).with_name("dagster"))
    postgres = os.environ["POSTGRES_URL"]
    sys.path.insert(0, str(REPO))
    from mysql_pg_assets.core.settings import Settings
    from mysql_pg_assets.definitions import build_definitions

    settings = Settings.from_env()
    defs = build_definitions(settings)
    asset = next(a for a in defs.assets or [] if any(k.to_user_string() == args.partitioned for k in a.keys))
    partition = asset.partitions_def.get_partition_keys()[-1]
    print(f"launch to committed through Dagster; instance {home}; {args.partitioned} partition {partition}, "
          f"{args.plain}; {args.repeat} rounds")
    # Once first, untimed: the tables exist, as they do for a user's daily partition.
    for select, extra in ((args.partitioned, ["--partition", partition]), (args.plain, [])):
        seconds, done = timed([dagster, "asset", "materialize", "-m", "mysql_pg_assets.definitions", "--select",
                               select, *extra], env)
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
    rows: dict[str, list[tuple[float, float, float, float]]] = {args.partitioned: [], args.plain: []}
    for n in range(1, args.repeat + 1):
        imports, _ = timed([python, "-c", "import mysql_pg_assets.definitions"], env)
        started = time.perf_counter()
        build_definitions(settings)
        location = time.perf_counter() - started
        for select, extra in ((args.partitioned, ["--partition", partition]), (args.plain, [])):
            seconds, done = timed([dagster, "asset", "materialize", "-m", "mysql_pg_assets.definitions",
                                   "--select", select, *extra], env)
            if done.returncode != 0:
                print(done.stderr[-3000:])
                return 1
            load, _ = last_load(postgres, select.replace("/", "."))
            rows[select].append((seconds, imports, location, load))
            print(f"  round {n} {select:<16} {seconds:6.2f} s = python + imports {imports:5.2f} + code location "
                  f"{location:5.2f} + load {load:5.2f} + run and step {seconds - imports - location - load:5.2f}",
                  flush=True)
    print("\nmedians:")
    for select, values in rows.items():
        columns = list(zip(*values, strict=True))
        total, imports, location, load = (statistics.median(c) for c in columns)
        print(f"  {select:<16} {total:6.2f} s (python + imports {imports:.2f}, code location {location:.2f}, load "
              f"{load:.2f}, run and step {total - imports - location - load:.2f})")
    partitioned = statistics.median(v[0] for v in rows[args.partitioned])
    print(f"\ntarget: one partition launch to committed <= {TARGET:g} s: {partitioned:.1f} s -> "
          f"{'MET' if partitioned <= TARGET else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
