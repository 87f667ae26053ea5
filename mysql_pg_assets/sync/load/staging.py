"""Staging: each batch binary-COPYed (ADBC) into UNLOGGED tables of its own, beside the project's tables.

A batch's valid rows, its rejects and the keys of both land in staging tables named after the
target table and the load, so a killed load's are recognised and dropped by the next load of the
same table. The COPY runs on an ADBC connection of its own (Arrow straight to binary COPY), while
the loader merges the previous batch on its transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl
import psycopg

from mysql_pg_assets.core.connections import TargetError, adbc_connection, explain
from mysql_pg_assets.core.meta import MetaTables
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_qualified
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.result import Counts, add_counts
from mysql_pg_assets.sync.transform import Conversions
from mysql_pg_assets.sync.validate import Failures, ValidatedBatch

if TYPE_CHECKING:
    import adbc_driver_postgresql.dbapi as adbc


@dataclass(frozen=True)
class Staging:
    """The names of one load's staging tables, beside the project's tables (see ``meta``)."""

    meta: MetaTables
    prefix: str  # the meta prefix, then stage_<table digest>_<load>

    @classmethod
    def for_table(cls, table: TablePlan, meta: MetaTables) -> Staging:
        digest = hashlib.sha1(table.target_label.encode()).hexdigest()[:12]
        return cls(meta, meta.name(f"stage_{digest}_{uuid.uuid4().hex[:8]}"))

    @property
    def table_prefix(self) -> str:
        """What every load of this table names its staging tables with: a killed load's are dropped by it."""
        return self.prefix.rsplit("_", 1)[0] + "_"

    def name(self, part: str) -> str:
        return f"{self.prefix}_{part}"

    def relation(self, part: str) -> str:
        return pg_qualified(self.meta.schema, self.name(part))

    def batch(self, number: int) -> str:
        """One batch's valid rows: merged as soon as it is staged, while the next one is read."""
        return f"rows_{number}"

    @property
    def rejects(self) -> str:
        return self.relation("rejects")

    @property
    def rejected_keys(self) -> str:
        return self.relation("rejected_keys")

    @property
    def loaded_keys(self) -> str:
        """The keys of every valid row of this load: what the deletes are reconciled against."""
        return self.relation("loaded_keys")

    @property
    def source_keys(self) -> str:
        """Every key MySQL has, from a keys-only read: an incremental load's delete reconciliation."""
        return self.relation("source_keys")


def drop_staging(connection: psycopg.Connection, schema: str, prefix: str) -> None:
    """Drop staging tables that start with ``prefix`` (a killed run's, or this run's own), in one
    transaction that does not wait for its WAL flush (nothing of value is in them)."""
    outer = connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    names = [row[0] for row in connection.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)", (schema, prefix),
    )]
    if names:
        with connection.transaction():
            if not outer:  # inside a load's or an apply's transaction it would make their commit asynchronous
                connection.execute("SET LOCAL synchronous_commit = off")
            connection.execute(f"DROP TABLE IF EXISTS {', '.join(pg_qualified(schema, name) for name in names)}")


# A staging table for a batch of at least this many rows is UNLOGGED: its rows skip the WAL. Making a
# table UNLOGGED rewrites it (a new file, synced on a durable server: milliseconds), which a small
# table's few rows in the WAL cost less than.
UNLOGGED_FROM_ROWS = 10_000


def ingest(cursor: adbc.Cursor, schema: str, name: str, frame: pl.DataFrame, create: bool) -> None:
    if create:
        cursor.adbc_ingest(name, frame.clear().to_arrow(), mode="create", db_schema_name=schema)
        if frame.height >= UNLOGGED_FROM_ROWS:
            cursor.execute(f"ALTER TABLE {pg_qualified(schema, name)} SET UNLOGGED")
    cursor.adbc_ingest(name, frame.to_arrow(), mode="append", db_schema_name=schema)


@dataclass
class Tally:
    """What the staged batches brought: rows read and rejected, in all and per partition of a range."""

    rows_read: int = 0
    rejected_rows: int = 0
    conversions: Conversions = field(default_factory=Conversions)
    by_partition: Counts = field(default_factory=dict)
    expectations: dict[str, Failures] = field(default_factory=dict)

    def add(self, batch: ValidatedBatch) -> None:
        for name, failures in batch.expectations.items():
            self.expectations.setdefault(name, Failures()).add(failures)
        self.rows_read += batch.rows.height + batch.rejected_rows
        self.rejected_rows += batch.rejected_rows
        self.conversions.add(batch.conversions)
        add_counts(self.by_partition, {b: Counter(read=n) for b, n in batch.read_by_partition.items()})
        add_counts(self.by_partition, {b: Counter(rejected=n) for b, n in batch.rejected_by_partition.items()})


def stage(
    postgres_url: DatabaseUrl, table: TablePlan, staging: Staging, batches: Iterable[ValidatedBatch],
    keys: Iterable[pl.DataFrame], tally: Tally, submit: Callable[[str], None],
) -> tuple[bool, bool]:
    """COPY each batch into staging tables and ``submit`` it for merging; returns what arrived."""
    import adbc_driver_postgresql.dbapi as adbc

    key_names = table.key_staging_names
    rows_staged = keys_staged = False
    try:
        with adbc_connection(postgres_url) as connection, connection.cursor() as cursor:
            for number, batch in enumerate(batches):
                first = not rows_staged
                schema = staging.meta.schema
                ingest(cursor, schema, staging.name(staging.batch(number)), batch.rows, create=True)
                ingest(cursor, schema, staging.name("rejects"), batch.rejects, create=first)
                if table.primary_key:
                    ingest(cursor, schema, staging.name("rejected_keys"), batch.rejected_keys, create=first)
                    ingest(cursor, schema, staging.name("loaded_keys"), batch.rows.select(key_names), create=first)
                rows_staged = True
                submit(staging.relation(staging.batch(number)))
                tally.add(batch)
            for frame in keys:
                ingest(cursor, staging.meta.schema, staging.name("source_keys"), frame, create=not keys_staged)
                keys_staged = True
    except adbc.Error as exc:
        raise TargetError(
            f"staging {table.target_label} in PostgreSQL at {postgres_url}: {explain(str(exc))}") from None
    return rows_staged, keys_staged
