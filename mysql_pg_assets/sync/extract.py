"""Extract: read a table from MySQL with connectorx, as a stream of Arrow record batches.

Columns are read through their casting rule's expression and aliased ``c0 … cN`` so that no
MySQL identifier, however odd, reaches connectorx or the staging table. The session runs with
``time_zone = '+00:00'`` so TIMESTAMP values arrive in UTC whatever the server's zone.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import connectorx as cx
import pyarrow as pa

from mysql_pg_assets.core.connections import (
    SourceUnavailable,
    connectorx_url,
    explain,
    mysql_connection,
    mysql_timeouts,
)
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import mysql_ident, mysql_qualified
from mysql_pg_assets.sync.catalog.casting import converted_expression, invalid_expression, read_expression
from mysql_pg_assets.sync.catalog.plans import (
    ColumnPlan,
    TablePlan,
    converted_flag_name,
    invalid_flag_name,
    staging_name,
)

DEFAULT_BATCH_ROWS = 100_000
CHUNK_ROWS = 500_000  # rows of one query of a big table's read (see read_batches)
_INTEGER_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}


@dataclass(frozen=True)
class Window:
    """A partition range's rows: the partition column in [start, end), in UTC.

    Every row belongs to exactly one partition, so no row is left out: ``start`` is None when the
    range begins with the first partition, which also takes the rows before it and the rows whose
    partition column is NULL or a zero date (made NULL on the way); ``end`` is None when the range
    ends with the last partition, which also takes the rows after it. Both None: the whole table.
    """

    start: datetime | None
    end: datetime | None
    # A range of several partitions: where the 2nd, 3rd, … begin, so each row's partition (0: the
    # first) can be counted on the way: a range's figures are reported per partition.
    splits: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Since:
    """An incremental load's rows: the cursor at or past ``value``, the last load's newest.

    Inclusive, so rows that share the newest cursor value of the last load are read again; the
    upsert makes that harmless, and a row written in the same second is never skipped.
    """

    value: datetime | int


Scope = Window | Since | None  # None: the whole table


def mysql_literal(value: datetime | date | int) -> str:
    """A partition bound or watermark as a MySQL literal.

    connectorx takes no bind parameters, so the bounds of a read are rendered into its SQL. Only
    typed values the project computes itself (partition windows, watermarks from the ledger)
    come here, and they are rendered from their type, never from text.
    """
    if isinstance(value, bool):
        raise TypeError("a boolean is not a bound")
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)  # the session runs in UTC
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    raise TypeError(f"not a bound: {value!r}")


def window_sql(table: TablePlan, window: Window) -> str:
    """The MySQL condition of a window ('' for the whole table); bounds rendered by ``mysql_literal``.

    A zero date ('0000-00-00', '2024-00-10') becomes NULL on the way, so like NULL it belongs to the
    first partition, wherever MySQL would sort it.
    """
    assert table.partition is not None, table.target_label
    column = mysql_ident(table.partition.source_column)
    bounds = ([f"{column} >= {mysql_literal(window.start)}"] if window.start is not None else []) + \
             ([f"{column} < {mysql_literal(window.end)}"] if window.end is not None else [])
    if not bounds:
        return ""
    zero = f"(MONTH({column}) = 0 OR DAYOFMONTH({column}) = 0)"
    if window.start is None:
        return f"({bounds[0]} OR {column} IS NULL OR {zero})"
    return f"{' AND '.join(bounds)} AND NOT {zero}"


def where_sql(table: TablePlan, scope: Scope, key_range: tuple[int, int] | None = None) -> str:
    """The WHERE clause of a read: the scope's rows that pass the table's row filter ('' for all rows), within
    ``key_range`` of the primary key if given."""
    conditions = [f"({table.filter_sql})"] if table.filter_sql else []
    if key_range is not None:
        key = mysql_ident(_integer_key(table).source.name)
        conditions.append(f"{key} >= {mysql_literal(key_range[0])} AND {key} < {mysql_literal(key_range[1])}")
    if isinstance(scope, Window):
        conditions += [c for c in [window_sql(table, scope)] if c]
    if isinstance(scope, Since):
        cursor = table.cursor
        assert cursor is not None, table.target_label
        conditions.append(f"{mysql_ident(cursor.source.name)} >= {mysql_literal(scope.value)}")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def select_sql(table: TablePlan, scope: Scope = None, key_range: tuple[int, int] | None = None) -> str:
    expressions = []
    for i, column in table.read_columns:
        quoted = mysql_ident(column.source.name)
        expressions.append(f"{read_expression(column.rule, quoted, column.source)} AS {staging_name(i)}")
        flag = converted_expression(column.rule, quoted)
        if flag:
            expressions.append(f"{flag} AS {converted_flag_name(i)}")
        invalid = invalid_expression(column.rule, quoted)
        if invalid:
            expressions.append(f"{invalid} AS {invalid_flag_name(i)}")
    source = mysql_qualified(table.source_database, table.source_table)
    return f"SELECT {', '.join(expressions)} FROM {source}{where_sql(table, scope, key_range)}"


def keys_sql(table: TablePlan) -> str:
    """Every primary key of the table (that passes its row filter): what an incremental load compares to find
    deletes. A row changed so that the filter no longer takes it is gone from PostgreSQL too."""
    expressions = [
        f"{read_expression(c.rule, mysql_ident(c.source.name), c.source)} AS {staging_name(i)}"
        for i, c in table.read_columns if c.target_name in table.primary_key
    ]
    return (f"SELECT {', '.join(expressions)} FROM {mysql_qualified(table.source_database, table.source_table)}"
            f"{where_sql(table, None)}")


def in_session(select: str, server: str, lock_wait_s: int) -> str:
    """``select`` carrying the session it needs: UTC (a TIMESTAMP is rendered in the session's zone, and
    the server's default may be anything) and bounded lock waits (a table locked by a DDL or LOCK TABLES
    must not hold the read for good).

    connectorx ignores ``pre_execution_queries`` for MySQL, so the settings travel in the statement:
    MariaDB's ``SET STATEMENT … FOR``, MySQL 8's ``SET_VAR`` optimizer hints.
    """
    settings = {"time_zone": "'+00:00'", "lock_wait_timeout": str(int(lock_wait_s)),
                "innodb_lock_wait_timeout": str(int(lock_wait_s))}
    if server == "mysql":
        hints = " ".join(f"SET_VAR({name} = {value})" for name, value in settings.items())
        return select.replace("SELECT ", f"SELECT /*+ {hints} */ ", 1)
    return f"SET STATEMENT {', '.join(f'{name} = {value}' for name, value in settings.items())} FOR {select}"


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def _integer_key(table: TablePlan) -> ColumnPlan | None:
    keys = table.key_columns
    return keys[0] if len(keys) == 1 and keys[0].source.data_type in _INTEGER_TYPES else None


def key_ranges(mysql_url: DatabaseUrl, table: TablePlan, scope: Scope) -> list[tuple[int, int]] | None:
    """A read of the whole table, or of a window, split into ranges of its integer primary key of about
    ``CHUNK_ROWS`` rows each (by the key's span and InnoDB's estimate of the rows); None: read it in one."""
    key = _integer_key(table)
    if key is None or isinstance(scope, Since):
        return None
    with mysql_connection(mysql_url, table.source_database) as connection, connection.cursor() as cur:
        cur.execute("SELECT table_rows FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                    (table.source_database, table.source_table))
        estimate = int((cur.fetchone() or (0,))[0] or 0)
        if estimate <= CHUNK_ROWS:
            return None
        name = mysql_ident(key.source.name)
        source = mysql_qualified(table.source_database, table.source_table)
        cur.execute(f"SELECT MIN({name}), MAX({name}) FROM {source}")
        low, high = cur.fetchone()
    if low is None:
        return None
    chunks = -(-estimate // CHUNK_ROWS)
    width = max(1, -(-(int(high) - int(low) + 1) // chunks))
    return [(start, start + width) for start in range(int(low), int(high) + 1, width)]


def read_batches(
    mysql_url: DatabaseUrl, table: TablePlan, batch_rows: int = DEFAULT_BATCH_ROWS, scope: Scope = None,
    sql: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the scope's rows (or ``sql``'s) in batches of at most ``batch_rows``; a big table's rows range by
    range of its key (``key_ranges``), each range a query of its own.

    Why ranges: connectorx reads ahead of its consumer without bound, and MySQL is read faster than
    PostgreSQL is written, so one query over a big table held most of it in memory by its end (peak RSS
    grew with the table). A range's query holds at most that range. Each range is its own statement, so a
    table written to while it is read is read range by range as MySQL has it at each one's moment, as any
    reader that pages sees it; change capture's snapshot is settled at one position all the same
    (``capture.handoff``).

    connectorx raises Rust panics as ``BaseException`` subclasses; they are turned into
    :class:`SourceUnavailable` with the table named and any password masked.
    """
    url = mysql_url.with_database(table.source_database)
    try:
        ranges = key_ranges(mysql_url, table, scope) if sql is None else None
        if not ranges:
            yield from _reader(mysql_url, table, sql or select_sql(table, scope), batch_rows)
            return
        queries = [select_sql(table, scope, key_range) for key_range in ranges]
        yield from _ahead(lambda: (batch for query in queries
                                   for batch in _reader(mysql_url, table, query, batch_rows)))
    except BaseException as exc:
        if _is_fatal(exc):
            raise
        raise SourceUnavailable(f"reading {table.source_label} from {url}: {explain(str(exc))}") from None


def _reader(mysql_url: DatabaseUrl, table: TablePlan, query: str, batch_rows: int) -> pa.RecordBatchReader:
    return cx.read_sql(connectorx_url(mysql_url, table.source_database),
                       in_session(query, table.source_server, mysql_timeouts(mysql_url).lock),
                       return_type="arrow_stream", batch_size=batch_rows)


AHEAD_BATCHES = 3  # batches read ahead of the load across the ranges' queries


def _ahead(batches: Callable[[], Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """``batches`` read in a thread, at most ``AHEAD_BATCHES`` ahead: the next range's query starts while the
    load still writes the last one's rows, and no more than that is held."""
    buffer: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(maxsize=AHEAD_BATCHES)
    stop = threading.Event()

    def put(item: pa.RecordBatch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for batch in batches():
                if not put(batch):
                    return
            put(None)
        except BaseException as exc:  # connectorx's panics too: handed to the reader
            put(exc)

    thread = threading.Thread(target=run, name="mysql-pg-assets-read", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
