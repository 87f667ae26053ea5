"""A table's first load (or a big table's full reload, ``replace``), written straight into a new table and moved
into place at the commit.

The merge path (``loader``) COPYs each batch into a staging table, then inserts it into the target with
casts: every row is written twice, and parsed twice by PostgreSQL. A table the load creates has nothing to
merge with, so its rows go straight in, all in the load's one transaction:

1. ``<table>__next`` is created with the mapping's DDL (no key yet); the loader has dropped, under the table's
   lock, one a killed load of an earlier version left (``loader._clear_build_name``).
2. Each validated batch is converted in polars to the target's own types (text to bigint and numeric),
   encoded into PostgreSQL's binary COPY format by pgpq (jsonb in its own binary form) and streamed into it by
   one ``COPY … FREEZE`` while the next batch is read (``_Writer``). Rejects go to staging as on the merge
   path.
3. The primary key is built (with ``MAINTENANCE_WORK_MEM``), then indexes, foreign keys, identities;
   rejects, ledger, a change-captured snapshot's settling; last, the table takes its name (its constraints
   and indexes theirs). Readers see no table, then the whole of it.

A killed load leaves the previous state: its transaction, table included, is rolled back. Only columns whose
PostgreSQL type has a known binary form (``target_dtype``) take this path; a table with any other (arrays,
intervals, a type a spec names) uses the merge path, and so does every load of an existing table but a
replacement. A value PostgreSQL refuses in a COPY (which validation did not foresee), or one too big for a type
a spec narrowed (``pg_type``), raises :class:`DirectWriteRefused`, and the pipeline loads the table again by
the merge path, which rejects exactly that value: a fresh read, paid only in that rare case.

``FREEZE`` writes the rows as vacuum would leave them, frozen and their pages all-visible: no later pass sets
their hint bits (the key's build used to, writing the whole table again) or freezes them. PostgreSQL allows it
only in the transaction that created the table; the rows are visible to other sessions from the commit on, as
any row: the table itself does not exist for them before.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

import pgpq
import pgpq.encoders
import pgpq.schema
import polars as pl
import psycopg
import pyarrow as pa

from mysql_pg_assets.core.connections import TargetError, adbc_connection, explain
from mysql_pg_assets.core.meta import MetaTables, record_load, record_position, write_rejects
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident, pg_idents
from mysql_pg_assets.sync.catalog.plans import TablePlan, staging_name
from mysql_pg_assets.sync.extract import Scope
from mysql_pg_assets.sync.load import replace as replaced
from mysql_pg_assets.sync.load.ddl import comments_sql, create_table_sql
from mysql_pg_assets.sync.load.result import Counts, LoadResult, by_partition
from mysql_pg_assets.sync.load.staging import Staging, Tally, ingest
from mysql_pg_assets.sync.load.swap import BUILD_MARK, mark, rename, restore_note, shadow_plan
from mysql_pg_assets.sync.validate import ValidatedBatch

ENCODED_ROWS = 16_384  # rows per buffer pgpq encodes: a few MB each, not a whole batch's COPY bytes at once
# For the key and index builds of a load, a ceiling (a small table's sort takes what it needs): the 5M orders'
# key, built by the leader and PostgreSQL's two parallel workers that share it, sorts in memory with 512 MB
# (1.3 s), where 256 MB spilled to files (1.6 s).
MAINTENANCE_WORK_MEM = "512MB"

_INTEGERS = {"smallint": pl.Int16, "integer": pl.Int32, "bigint": pl.Int64}
_NUMERIC = re.compile(r"^numeric\((\d+)(?:,\s*(\d+))?\)$")
_TEXT = re.compile(r"^(text|(character varying|varchar|character|char)(\(\d+\))?)$")
_TIMESTAMP = re.compile(r"^timestamp(\(\d\))?( without time zone)?$")
_TIMESTAMPTZ = re.compile(r"^(timestamptz|timestamp(\(\d\))? with time zone)(\(\d\))?$")
JSONB = "jsonb"


Finish = Callable[[psycopg.Connection, TablePlan], tuple[str | None, datetime | None]]


class DirectWriteRefused(RuntimeError):
    """PostgreSQL refused a value in a first load's COPY; the merge path loads the table instead."""


def target_dtype(pg_type: str) -> pl.DataType | str | None:
    """The polars type whose binary COPY form PostgreSQL's ``pg_type`` reads (``JSONB``: jsonb's own), or
    None when there is none known here."""
    kind = pg_type.strip().lower()
    fixed: dict[str, pl.DataType] = {"real": pl.Float32(), "double precision": pl.Float64(),
                                     "boolean": pl.Boolean(), "bytea": pl.Binary(), "date": pl.Date(),
                                     "json": pl.String()}
    if kind in _INTEGERS:
        return _INTEGERS[kind]()
    if kind in fixed:
        return fixed[kind]
    numeric = _NUMERIC.match(kind)
    if numeric and int(numeric[1]) <= 38:
        return pl.Decimal(int(numeric[1]), int(numeric[2] or 0))
    if _TEXT.match(kind):
        return pl.String()
    if _TIMESTAMP.match(kind):
        return pl.Datetime("us")
    if _TIMESTAMPTZ.match(kind):
        return pl.Datetime("us", "UTC")
    return JSONB if kind == JSONB else None


def writes_directly(table: TablePlan) -> bool:
    return all(target_dtype(c.pg_type) is not None for c in table.columns)


def target_frame(table: TablePlan, rows: pl.DataFrame) -> pl.DataFrame:
    """A validated batch (staging names and types) as the target's columns, in their binary COPY types (jsonb:
    its text, which the encoder writes in jsonb's binary form, ``_encoder``)."""
    columns = []
    for i, column in enumerate(table.columns):
        dtype = target_dtype(column.pg_type)
        columns.append(pl.col(staging_name(i)).cast(dtype if isinstance(dtype, pl.DataType) else pl.String(),
                                                     strict=True).alias(column.target_name))
    return rows.select(columns)


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """``frame`` in Arrow as polars holds it (text as string views: no copy), but binary as large binary, which
    pgpq encodes (it has no binary-view encoder)."""
    arrow = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    if any(f.type == pa.binary_view() for f in arrow.schema):
        arrow = arrow.cast(pa.schema(f.with_type(pa.large_binary()) if f.type == pa.binary_view() else f
                                     for f in arrow.schema))
    return arrow


def _encoder(schema: pa.Schema, build: TablePlan) -> pgpq.ArrowToPostgresBinaryEncoder:
    """pgpq's encoder of ``schema``'s batches, jsonb columns in jsonb's binary form (a version byte, then the
    text)."""
    jsonb = {c.target_name for c in build.columns if target_dtype(c.pg_type) == JSONB}
    encoders = {f.name: pgpq.encoders.StringViewEncoderBuilder.new_with_output(f, pgpq.schema.Jsonb())
                if f.name in jsonb else pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(f) for f in schema}
    return pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(schema, encoders)


class _Writer:
    """A thread streaming frames into the new table through one binary ``COPY … FREEZE`` on the load's own
    connection, in the transaction that created the table, while the reading thread reads, converts and
    validates the next batch.

    pgpq encodes Arrow into PostgreSQL's binary COPY format: a quarter of the CPU ADBC's ingest spends on the
    same batches (1M rows of the demo's orders: 0.41 s against 1.84 s), and psycopg sends the bytes.

    One session, not several: ``FREEZE`` (rows written frozen, their pages all-visible) needs the table created
    in the COPY's own transaction, which no second session can write into; and one COPY session keeps up with
    the reader on two cores (measured: two sessions in parallel were no faster, the one ``FREEZE`` session 7 %
    faster, its key built 20 % faster, and nothing is left to vacuum or to set hint bits on)."""

    def __init__(self, connection: psycopg.Connection, build: TablePlan) -> None:
        self.connection, self.build = connection, build
        self.queue: queue.Queue[pl.DataFrame | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.ended = False  # the thread took the queue's end: a failure after it must not wait for more

    def _stream(self, copy: psycopg.Copy, first: pl.DataFrame) -> None:
        """``first`` and every frame after it into the COPY, until the queue's end (then ``ended``)."""
        arrow = _arrow(first)
        schema, encoder = arrow.schema, _encoder(arrow.schema, self.build)
        copy.write(encoder.write_header())
        while True:
            for batch in arrow.to_batches(max_chunksize=ENCODED_ROWS):
                copy.write(encoder.write_batch(batch))
            frame = self.queue.get()
            if frame is None:
                self.ended = True
                break
            arrow = _arrow(frame)
            arrow = arrow if arrow.schema == schema else arrow.cast(schema)
        copy.write(encoder.finish())

    def _run(self) -> None:
        names = pg_idents(c.target_name for c in self.build.columns)
        try:
            first = self.queue.get()
            if first is None:
                return
            with self.connection.cursor().copy(
                    f"COPY {self.build.target} ({names}) FROM STDIN (FORMAT BINARY, FREEZE)") as copy:
                self._stream(copy, first)
        except BaseException as exc:
            self.error = exc
            while not self.ended and self.queue.get() is not None:  # drain: the reader is never left blocked
                pass

    def put(self, frame: pl.DataFrame) -> None:
        self._raise()
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="mysql-pg-assets-copy", daemon=True)
            self.thread.start()
        self.queue.put(frame)

    def finish(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is None:
            return
        state = getattr(self.error, "sqlstate", None) or ""
        if isinstance(self.error, psycopg.Error) and state[:2] in ("22", "23"):
            raise DirectWriteRefused(f"{self.build.target_label}: PostgreSQL refused a value of the COPY: "
                                     f"{explain(str(self.error))}") from None
        if isinstance(self.error, psycopg.Error):
            raise TargetError(f"writing {self.build.target_label} into PostgreSQL: "
                              f"{explain(str(self.error))}") from None
        raise self.error


def _copy(connection: psycopg.Connection, postgres_url: DatabaseUrl, build: TablePlan, staging: Staging,
          batches: Iterable[ValidatedBatch], tally: Tally) -> bool:
    """Every batch COPYed into the new table; returns whether any reject was staged (by a connection of its
    own: staging is not the load's transaction)."""
    writer, rejects = _Writer(connection, build), None
    with contextlib.ExitStack() as stack:
        try:
            for batch in batches:
                try:
                    frame = target_frame(build, batch.rows)
                except pl.exceptions.InvalidOperationError as exc:  # a type narrower than MySQL's (pg_type)
                    raise DirectWriteRefused(f"{build.target_label}: a value does not fit its column's type: "
                                             f"{exc}") from None
                writer.put(frame)
                if batch.rejects.height:
                    first = rejects is None
                    if first:
                        rejects = stack.enter_context(stack.enter_context(adbc_connection(postgres_url)).cursor())
                    ingest(rejects, staging.meta.schema, staging.name("rejects"), batch.rejects, create=first)
                    if build.primary_key:  # a reload keeps their live versions (``replace.keep_rejected``)
                        ingest(rejects, staging.meta.schema, staging.name("rejected_keys"), batch.rejected_keys,
                               create=first)
                tally.add(batch)
        finally:
            writer.finish()
    return rejects is not None


def _create(connection: psycopg.Connection, build: TablePlan) -> None:
    """The new table, empty, in the load's transaction."""
    connection.execute(create_table_sql(build, with_key=False))
    for statement in comments_sql(build):
        connection.execute(statement)
    mark(connection, build.target, BUILD_MARK, build.target_label)


def load_new(
    connection: psycopg.Connection, meta: MetaTables, table: TablePlan, batches: Iterable[ValidatedBatch],
    postgres_url: DatabaseUrl, staging: Staging, scope: Scope, finish: Finish,
    settle: Callable[[psycopg.Connection, MetaTables, TablePlan], tuple[str, int]] | None, run_id: str | None,
    ledger_row: Callable[[LoadResult], dict[str, object]], replacing: bool = False,
) -> LoadResult:
    """The first load of ``table``, straight into a new table (see the module docstring); or, ``replacing``, a
    full reload that replaces the live table (``replace``). ``finish`` is the loader's work once rows are in
    (keys, indexes, foreign keys, identities; the newest values)."""
    started, build, tally = time.perf_counter(), shadow_plan(table), Tally()
    with connection.transaction():
        _create(connection, build)
        rejects = _copy(connection, postgres_url, build, staging, batches, tally)
        connection.execute("SET LOCAL TimeZone = 'UTC'")
        connection.execute("SELECT set_config('maintenance_work_mem', %s, true)", (MAINTENANCE_WORK_MEM,))
        if build.primary_key:
            connection.execute(f"ALTER TABLE {build.target} ADD PRIMARY KEY ({pg_idents(build.primary_key)})")
        watermark, newest = finish(connection, build)
        if replacing and rejects:
            replaced.keep_rejected(connection, table, build, staging)
        counts = replaced.compare(connection, table, build) if replacing \
            else Counter(inserted=tally.rows_read - tally.rejected_rows)
        rejected_values = write_rejects(connection, meta, staging.rejects, run_id, table.source_label,
                                        table.target_label) if rejects else 0
        written: Counts = {b: Counter(inserted=c["read"] - c["rejected"]) for b, c in tally.by_partition.items()}
        result = LoadResult(
            rows_read=tally.rows_read, inserted=counts["inserted"], updated=counts["updated"],
            deleted=counts["deleted"],
            rejected_rows=tally.rejected_rows, rejected_values=rejected_values,
            seconds=time.perf_counter() - started, conversions=tally.conversions, watermark=watermark,
            newest_source_value=newest, rejects_table=meta.label("rejects"),
            by_partition=by_partition(scope, tally.by_partition, written),
            expectations={name: (f.rows, tuple(f.cases)) for name, f in tally.expectations.items()},
            written="replaced" if replacing else "built")
        record_load(connection, meta, ledger_row(result))
        if settle is not None:
            record_position(connection, meta, table.source_label, table.target_label,
                            *settle(connection, meta, build))
        if replacing:
            replaced.take_place(connection, table, build)
        rename(connection, table.target_schema, build.relation_name, table.target_table)
        restore_note(connection, table)
    return result


def column_values(table: TablePlan) -> dict[str, str]:
    """The table's own columns, for SQL over it (as ``merge.staged_values`` gives a staging table's)."""
    return {c.target_name: f"s.{pg_ident(c.target_name)}" for c in table.columns}
