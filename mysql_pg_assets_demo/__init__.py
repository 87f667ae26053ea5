"""Demo shop database: schema, deterministic seed data and a live change simulator.

Why this package exists: the sync needs a source database that looks like a real OLTP system
(many MySQL types, NULLs, non-ASCII text, unsigned 64-bit values, rows that keep changing) and
that can be rebuilt bit-for-bit, so that tests and benchmarks are reproducible.

Why it generates data in SQL: seeding millions of rows through Python row loops is far too
slow, so the bulk data is produced server-side with ``INSERT ... SELECT ... FROM seq_1_to_N``
(MariaDB's SEQUENCE engine). Every "random" value is a pure function of the row key, the seed
and a per-column salt, so the same arguments always give the same rows (and the same
``CHECKSUM TABLE``). The anchor date is fixed for the same reason: nothing depends on now().

Usage::

    export MYSQL_URL=mysql://mpa:mpa@127.0.0.1:33061/shop
    python -m mysql_pg_assets_demo seed --orders 200000
    python -m mysql_pg_assets_demo simulate --interval 0.5
    python -m mysql_pg_assets_demo alter add-column     # or drop-column
"""

from mysql_pg_assets_demo.schema import (
    ANCHOR,
    SCHEMA_CHANGES,
    TABLES,
    DemoError,
    DemoRefused,
    SeedFailed,
    alter,
    connect,
    create_schema,
    table_counts,
)
from mysql_pg_assets_demo.seeding import seed
from mysql_pg_assets_demo.simulator import SimulationStats, simulate

__all__ = ["ANCHOR", "SCHEMA_CHANGES", "TABLES", "DemoError", "DemoRefused", "SeedFailed", "SimulationStats", "alter",
           "connect", "create_schema", "seed", "simulate", "table_counts"]
