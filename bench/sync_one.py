"""One load of one table by this project, in a process of its own; prints one JSON result line.

Why a separate process: ``bench/run.py`` measures each contender's peak RSS with the kernel's
high-water mark of the process (``wait4``'s ``ru_maxrss``), and a high-water mark only means
something for a fresh process that did nothing but this one load. It also makes the timing
fair to pgloader, which is a process of its own too: both pay for their start-up.

The connection URLs come from ``MYSQL_URL`` and ``POSTGRES_URL`` (set by ``run.py`` to the
benchmark's databases), never from the command line, where ``ps`` would show the passwords.

Modes:

* full load (default): ``sync_table(plan, mysql_url, pg_url)``;
* ``--window START END``: one partition, ``sync_table(..., window=(START, END))``;
* ``--full-reload replace|merge``: how a full load of an existing table writes it (``bench/reload.py``);
* ``--transforms``: the same load with one mask (``coupon_code``: hash) and one derived column
  (``net_total = total - tax``), what a user's spec typically adds.

The result is the last line starting with ``BENCH_RESULT `` on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mysql_pg_assets.sync.spec import SyncSpec

MARK = "BENCH_RESULT "
_RESULT_FIELDS = ("rows_read", "inserted", "updated", "deleted", "rejected_rows", "rejected_values", "seconds",
                  "written")


def emit(payload: dict[str, Any]) -> None:
    """Print the result line that run.py parses; everything else on stdout is only logged."""
    print(MARK + json.dumps(payload, default=str), flush=True)


# The mask a user of orders would write (a customer-facing code, hashed so it can still be joined), and a
# derived value. Hashing a column that is short in every row (currency: 3 bytes → 64) measures PostgreSQL
# writing wider rows rather than the transforms: +61 bytes a row made the load 20-45 % slower here.
TRANSFORMS = {"columns": {"coupon_code": {"mask": "hash"}}, "derived": {"net_total": "total - tax"}}


def build_spec(
    database: str, schema: str, table: str, partition_column: str | None, partition_start: datetime | None,
    transforms: bool = False, full_reload: str | None = None,
) -> SyncSpec:
    """The bench's spec: one table; with a partition only for windowed loads (the target table is the same)."""
    from mysql_pg_assets.sync.spec import parse_spec

    data: dict[str, Any] = {"source": {"database": database}, "target": {"schema": schema}, "include": [table]}
    if full_reload:
        data["options"] = {"full_reload": full_reload}
    settings: dict[str, Any] = dict(TRANSFORMS) if transforms else {}
    if partition_column and partition_start is not None:
        settings["partition"] = {"column": partition_column, "granularity": "daily", "start": partition_start}
    if settings:
        data["tables"] = {table: settings}
    return parse_spec(data, "bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="MySQL database of the table")
    parser.add_argument("--schema", required=True, help="PostgreSQL schema to load into")
    parser.add_argument("--table", required=True)
    parser.add_argument("--window", nargs=2, metavar=("START", "END"), type=datetime.fromisoformat,
                        help="naive datetimes bounding one partition: [START, END)")
    parser.add_argument("--partition-column", default=None, help="the partition column, for --window")
    parser.add_argument("--partition-start", type=datetime.fromisoformat, default=None,
                        help="the first partition's start, for --window")
    parser.add_argument("--transforms", action="store_true", help="mask one column and derive one (TRANSFORMS)")
    parser.add_argument("--full-reload", choices=("replace", "merge"), default=None,
                        help="options.full_reload: how a full load of an existing table writes it")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPA_MASK_SALT", "bench-salt")

    from mysql_pg_assets.core.settings import DatabaseUrl, redact

    try:
        from mysql_pg_assets.sync.catalog.discover import discover
        from mysql_pg_assets.sync.pipeline import sync_table

        mysql_url = DatabaseUrl.parse(os.environ["MYSQL_URL"])
        postgres_url = DatabaseUrl.parse(os.environ["POSTGRES_URL"])
        started = time.perf_counter()
        spec = build_spec(args.database, args.schema, args.table, args.partition_column,
                          args.partition_start if args.window else None, args.transforms, args.full_reload)
        plans = [t for t in discover(spec, mysql_url).tables if t.source_table == args.table]
        if not plans:
            raise LookupError(f"no table {args.table!r} in MySQL database {args.database!r}")
        planned = time.perf_counter()
        window = (args.window[0], args.window[1]) if args.window else None
        result = sync_table(plans[0], mysql_url, postgres_url, window=window)
        finished = time.perf_counter()
        payload: dict[str, Any] = {name: getattr(result, name, None) for name in _RESULT_FIELDS}
        payload.update(status="ok", plan_seconds=planned - started, sync_seconds=finished - planned)
        emit(payload)
        return 0
    except Exception as exc:  # reported, not raised: run.py shows it as this contender's failure
        emit({"status": "error", "error": redact(f"{type(exc).__name__}: {exc}")})
        return 1


if __name__ == "__main__":
    sys.exit(main())
