"""The demo shop's command line: ``python -m mysql_pg_assets_demo seed | simulate | alter``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import pymysql
import pymysql.cursors

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.settings import redact
from mysql_pg_assets_demo.schema import (
    DEFAULT_CHUNK_ROWS,
    SCHEMA_CHANGES,
    DemoError,
    _database_url,
    alter,
    create_schema,
    table_counts,
)
from mysql_pg_assets_demo.seeding import seed
from mysql_pg_assets_demo.simulator import simulate

# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--mysql-url",
        default=argparse.SUPPRESS,  # so a value given before the subcommand is not reset
        help="mysql://user:password@host:port/database (default: $MYSQL_URL)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m mysql_pg_assets_demo",
        description="Demo shop database: deterministic seed data and a live change simulator.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed", parents=[common], help="create the tables and fill them")
    p_seed.add_argument("--orders", type=int, default=10_000, help="number of orders (10000)")
    p_seed.add_argument("--seed", type=int, default=42, help="random seed (42)")
    p_seed.add_argument(
        "--keep",
        action="store_true",
        help="keep existing tables and rows and append to them (default: drop and recreate)",
    )
    p_seed.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows/INSERT")
    p_seed.add_argument("--serial", action="store_true", help="use one connection instead of two (same data)")
    p_sim = sub.add_parser("simulate", parents=[common], help="apply live changes")
    p_sim.add_argument("--interval", type=float, default=1.0, help="seconds between ticks (1)")
    p_sim.add_argument("--iterations", type=int, default=None, help="ticks (default: forever)")
    p_sim.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p_alter = sub.add_parser("alter", parents=[common], help="change the schema, for the schema-drift sensor")
    p_alter.add_argument("change", choices=sorted(SCHEMA_CHANGES), help="add-column: compatible; drop-column: not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    url = getattr(args, "mysql_url", None) or os.environ.get("MYSQL_URL")
    if not url:
        parser.error("no database: set MYSQL_URL or pass --mysql-url")
    try:
        target = _database_url(url)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.command == "seed":
            print(f"seeding {target} with {args.orders} orders (seed {args.seed})")
            started = time.perf_counter()
            create_schema(url, drop_existing=not args.keep)
            seed(
                url,
                args.orders,
                args.seed,
                chunk_rows=args.chunk_rows,
                parallel=not args.serial,
                log=lambda msg: print(msg, flush=True),
            )
            print(f"seeded in {time.perf_counter() - started:.1f}s; rows per table:")
            for table, count in table_counts(url).items():
                print(f"  {table:<17} {count:>12,}")
        elif args.command == "alter":
            alter(url, args.change)
            print(f"{target}: {'; '.join(SCHEMA_CHANGES[args.change])}")
        else:
            print(f"simulating changes on {target} (Ctrl-C to stop)", flush=True)
            simulate(
                url,
                args.interval,
                args.iterations,
                args.seed,
                out=lambda line: print(line, flush=True),
            )
    except pymysql.MySQLError as exc:
        print(f"error ({target}): {redact(str(exc))}", file=sys.stderr)
        return 1
    except (DemoError, ActionableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
