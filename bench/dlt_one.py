"""One load of one table by dlt (the contender a Dagster user would most likely pick), in the venv of
``make dlt``: ``sql_table`` with the connectorx backend, into PostgreSQL with its CSV COPY loader.

dlt's fastest loader, parquet through ADBC, fails on the demo ``orders`` (``incorrect binary data format`` on
an unsigned integer column, ``../shared/NOTES.md``), so the bench compares with the fastest that loads it:
``loader_file_format="csv"`` (COPY). Run by ``bench/run.py --dlt`` in a child process of its own (its peak
RSS is the kernel's high-water mark); the URLs come from ``MYSQL_URL`` and ``POSTGRES_URL``, never argv.
Prints one ``BENCH_RESULT`` JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--schema", required=True, help="the PostgreSQL schema (dlt's dataset)")
    parser.add_argument("--loader", default="csv", help="dlt's loader file format (csv, insert_values, parquet)")
    args = parser.parse_args()
    import dlt
    from dlt.sources.sql_database import sql_table

    started = time.perf_counter()
    mysql = os.environ["MYSQL_URL"].replace("mysql://", "mysql+pymysql://", 1)
    postgres = urlsplit(os.environ["POSTGRES_URL"])
    if postgres.password is None:  # dlt insists on one; a server that trusts the user ignores it
        postgres = postgres._replace(netloc=postgres.netloc.replace("@", ":unused@", 1))
    with tempfile.TemporaryDirectory(prefix="mpa-bench-dlt-") as work:
        source = sql_table(credentials=mysql, table=args.table, backend="connectorx", chunk_size=100_000,
                           reflection_level="full_with_precision")
        pipeline = dlt.pipeline(pipeline_name="mpa_bench", pipelines_dir=work, dataset_name=args.schema,
                                destination=dlt.destinations.postgres(credentials=urlunsplit(postgres)))
        info = pipeline.run(source, loader_file_format=args.loader, write_disposition="replace")
    print("BENCH_RESULT " + json.dumps({"status": "ok" if not info.has_failed_jobs else "error",
                                        "seconds": time.perf_counter() - started}), flush=True)
    return 0 if not info.has_failed_jobs else 1


if __name__ == "__main__":
    sys.exit(main())
