"""Extract: read a table from MySQL with connectorx, as a stream of Arrow record batches.

Columns are read through their casting rule's expression and aliased ``c0 … cN`` so that no
MySQL identifier, however odd, reaches connectorx or the staging table. The session runs with
``time_zone = '+00:00'`` so TIMESTAMP values arrive in UTC whatever the server's zone.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

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
from mysql_pg_assets.sync.catalog.casting import (
    ZERO_DATE,
    ZERO_DATE_TO_NULL,
    converted_expression,
    converted_is_null,
    invalid_expression,
    read_expression,
)
from mysql_pg_assets.sync.catalog.dates import PACKED_DATE, reads_packed
from mysql_pg_assets.sync.catalog.plans import (
    ColumnPlan,
    TablePlan,
    converted_flag_name,
    invalid_flag_name,
    staging_name,
)

DEFAULT_BATCH_ROWS = 50_000
# Rows per statement of a paged read (``page_key``): the most the reader runs ahead of the load, about 100 MB of
# the demo's orders. Each page costs a new connection and the first batch's latency, hidden by the load's queue.
PAGE_ROWS = 500_000


def _few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each new thread a malloc arena of its own (up to 8 per core) and keeps what it freed in
    it: with connectorx's threads, the COPY threads and the merge thread each holding Arrow batches in turn,
    a 5-million-row load peaked at 519 MiB, and at 456 MiB with two arenas (``MALLOC_ARENA_MAX=2``, the same
    speed). Applies to threads started after it; a no-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX


_few_malloc_arenas()


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
    zero = ZERO_DATE.format(col=column)
    if window.start is None:
        return f"({bounds[0]} OR {column} IS NULL OR {zero})"
    return f"{' AND '.join(bounds)} AND NOT {zero}"


def where_sql(table: TablePlan, scope: Scope, after: str | None = None) -> str:
    """The WHERE clause of a read: the scope's rows that pass the table's row filter ('' for all rows); ``after``:
    a page's condition on the key."""
    conditions = [f"({table.filter_sql})"] if table.filter_sql else []
    conditions += [after] if after else []
    if isinstance(scope, Window):
        conditions += [c for c in [window_sql(table, scope)] if c]
    if isinstance(scope, Since):
        cursor = table.cursor
        assert cursor is not None, table.target_label
        conditions.append(f"{mysql_ident(cursor.source.name)} >= {mysql_literal(scope.value)}")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def select_sql(table: TablePlan, scope: Scope = None, after: str | None = None) -> str:
    expressions, steering = [], _steering(table)
    for i, column in table.read_columns:
        quoted = mysql_ident(column.source.name)
        if column.target_name not in steering and reads_packed(column.rule, column.source):
            expressions.append(f"{PACKED_DATE.format(col=quoted)} AS {staging_name(i)}")  # flagged in polars
            continue
        expressions.append(f"{read_expression(column.rule, quoted, column.source)} AS {staging_name(i)}")
        flag = converted_expression(column.rule, quoted)
        if flag and not converted_is_null(column.rule, column.source):
            expressions.append(f"{flag} AS {converted_flag_name(i)}")
        invalid = invalid_expression(column.rule, quoted)
        if invalid and not column.invalid_is_empty:
            expressions.append(f"{invalid} AS {invalid_flag_name(i)}")
    source = mysql_qualified(table.source_database, table.source_table)
    return f"SELECT {', '.join(expressions)} FROM {source}{where_sql(table, scope, after)}"


def _steering(table: TablePlan) -> set[str]:
    """The columns whose values steer a read (the key it pages by, the partition column, the cursor): read in
    the server-side form, never packed (``catalog.dates``)."""
    return {*table.page_by, *(c.target_name for c in (table.cursor, table.partition_column) if c is not None)}


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


def read_batches(
    mysql_url: DatabaseUrl, table: TablePlan, batch_rows: int = DEFAULT_BATCH_ROWS, scope: Scope = None,
    sql: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the scope's rows (or ``sql``'s) in batches of at most ``batch_rows``; the whole of a table with a
    key to page by in pages of ``PAGE_ROWS`` (see :func:`page_key`)."""
    key = page_key(table) if sql is None and scope is None else None
    if key is not None and not table.page_by_clustered and not _walks_index(mysql_url, table, key):
        key = None
    if key is None:
        yield from _read(mysql_url, table, sql or select_sql(table, scope), batch_rows)
        return
    yield from _pages(mysql_url, table, key, batch_rows)


def _pages(mysql_url: DatabaseUrl, table: TablePlan, key: tuple[tuple[int, ColumnPlan], ...],
           batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The table page by page (:func:`page_key`), each after the last key read. A key holding a zero date is read
    as NULL and cannot be given back: batches that end in one are held until a batch ends in a key that can,
    and a page that ends in them ends at the last row before them; the next page reads them again."""
    names, columns = [staging_name(i) for i, _ in key], [c for _, c in key]
    last: tuple[object, ...] | None = None
    while True:
        rows, held, moved = 0, list[pa.RecordBatch](), False
        for batch in _read(mysql_url, table, page_sql(table, columns, last), batch_rows):
            if not batch.num_rows:
                continue
            rows += batch.num_rows
            held.append(batch)
            end = _key_at(batch, names, batch.num_rows - 1)
            if None not in end:
                yield from held
                held, last, moved = [], end, True
        if rows < PAGE_ROWS:
            yield from held
            return
        cut = _last_given(held, names)
        if cut is not None:
            n, row = cut
            yield from [*held[:n], held[n].slice(0, row + 1)]
            last, moved = _key_at(held[n], names, row), True
        if not moved:
            raise SourceUnavailable(
                f"reading {table.source_label}: {rows:,} rows in a row hold a zero date in the primary key, past "
                f"which a page cannot start; name the key in the spec (primary_key) to read the table in one statement")


def _last_given(held: list[pa.RecordBatch], names: list[str]) -> tuple[int, int] | None:
    """(batch, row) of the last row in ``held`` whose key has no NULL (no zero date), if any."""
    import pyarrow.compute as pc  # 20 ms at import, for a rare case

    for n in reversed(range(len(held))):
        given = held[n].column(names[0]).is_valid()
        for name in names[1:]:
            given = pc.and_(given, held[n].column(name).is_valid())
        rows = pc.indices_nonzero(given)
        if len(rows):
            return n, rows[-1].as_py()
    return None


def _walks_index(mysql_url: DatabaseUrl, table: TablePlan, key: tuple[tuple[int, ColumnPlan], ...]) -> bool:
    """Whether MySQL reads a page from the key's index, in the index's order (EXPLAIN of the first page). InnoDB
    walks its primary key so always (``TablePlan.page_by_clustered``: no EXPLAIN); for another index (a unique
    one, a MyISAM table's key) MySQL may prefer to sort the table, and a read that would sort it for every page
    is one statement instead."""
    with mysql_connection(mysql_url, table.source_database) as connection, connection.cursor() as cur:
        cur.execute(f"EXPLAIN {page_sql(table, [c for _, c in key], None)}")
        names = [str(d[0]).lower() for d in cur.description]
        plans = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return len(plans) == 1 and "filesort" not in str(plans[0].get("extra") or "").lower()


def _key_at(batch: pa.RecordBatch, names: list[str], row: int) -> tuple[object, ...]:
    return tuple(batch.column(name)[row].as_py() for name in names)


# A page's key columns are read as MySQL holds them, and the last row's values are given back to MySQL in the
# next page's condition: each must compare there exactly as ORDER BY sorted it. Integers, byte strings and
# dates do (a TIMESTAMP as a UTC literal: the session runs in UTC). CHAR and VARCHAR do in their own collation,
# given back in their own character set: text arrives in utf8mb4 (the connection's), and these sets hold
# nothing utf8mb4 cannot (MySQL's latin1 maps all 256 bytes); in another (a legacy Asian set, ascii with stray
# bytes) a value could come back as '?' and a page skip rows.
_ROUND_TRIP_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "latin1", "ucs2", "utf16", "utf16le", "utf32"})
_NAME = re.compile(r"[A-Za-z0-9_]+")


def _pages_by(column: ColumnPlan) -> bool:
    source = column.source
    if column.rule.kind == "decimal":
        return True  # read exactly: as an integer times 10^scale, or as text
    if column.rule.kind in ("date", "datetime", "timestamp") and column.rule.read == ZERO_DATE_TO_NULL:
        return True  # as MySQL holds it but for zero dates, which ``_pages`` steps around
    if column.rule.read != "{col}":
        return False
    if column.rule.kind == "integer" or source.data_type in ("binary", "varbinary"):
        return True
    # A CHAR is compared without its trailing spaces only in a PAD SPACE collation; NO PAD ones are left out.
    padded = source.data_type == "char" and any(n in (source.collation or "") for n in ("nopad", "0900"))
    return (source.data_type in ("char", "varchar") and source.charset in _ROUND_TRIP_CHARSETS
            and _NAME.fullmatch(source.collation or "") is not None and not padded)


def key_literal(column: ColumnPlan, value: object) -> str:
    """A key value read from MySQL, given back as a literal that compares as the column does: an integer as
    itself, bytes as a hex literal, text as its UTF-8 bytes converted to the column's character set and
    collation (``_pages_by``), a DECIMAL as the exact number it was read as. Rendered from the bytes or the
    number, never pasted as text."""
    if column.rule.kind == "decimal":
        number = None
        if column.rule.scaled and isinstance(value, int) and not isinstance(value, bool):
            number = Decimal(value).scaleb(-(column.source.numeric_scale or 0))  # read times 10^scale
        elif not column.rule.scaled and isinstance(value, str):
            number = Decimal(value)  # read as text; anything but a number is refused here
        if number is None or not number.is_finite():
            raise TypeError(f"not a key to page by: {column.source.name} = {value!r}")
        return format(number, "f")
    if isinstance(value, int | date) and not isinstance(value, bool):
        return mysql_literal(value)  # an integer, a date, a DATETIME or a TIMESTAMP (the session runs in UTC)
    if isinstance(value, bytes | bytearray) and column.source.data_type in ("binary", "varbinary"):
        return f"X'{bytes(value).hex()}'"
    if isinstance(value, str | bytes) and _pages_by(column):  # text in a binary collation may arrive as bytes
        data = (value.encode() if isinstance(value, str) else value).hex()
        source = column.source
        return f"CONVERT(_utf8mb4 X'{data}' USING {source.charset}) COLLATE {source.collation}"
    raise TypeError(f"not a key to page by: {column.source.name} = {value!r}")


def page_sql(table: TablePlan, key: list[ColumnPlan], last: tuple[object, ...] | None) -> str:
    """A page's statement: the rows after ``last`` (None: from the first) in key order, ``PAGE_ROWS`` of them."""
    order = ", ".join(mysql_ident(c.source.name) for c in key)
    after = after_sql(key, last) if last is not None else None
    return f"{select_sql(table, None, after)} ORDER BY {order} LIMIT {PAGE_ROWS}"


def after_sql(key: list[ColumnPlan], last: tuple[object, ...]) -> str:
    """The rows after ``last`` in key order: ``(k1, k2) > (v1, v2)`` written out as ``k1 > v1 OR (k1 = v1 AND
    k2 > v2)``, which MySQL reads as ranges of the key (a row comparison it would scan)."""
    terms = []
    for n, column in enumerate(key):
        equal = [f"{mysql_ident(c.source.name)} = {key_literal(c, v)}" for c, v in zip(key[:n], last[:n], strict=True)]
        terms.append(" AND ".join([*equal, f"{mysql_ident(column.source.name)} > {key_literal(column, last[n])}"]))
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(f"({t})" for t in terms) + ")"


def page_key(table: TablePlan) -> tuple[tuple[int, ColumnPlan], ...] | None:
    """The columns a read of the whole table pages by: MySQL's primary key (else its first unique index of NOT NULL
    columns, where MySQL walks it: :func:`_walks_index`; ``TablePlan.page_by``), in its order, where each column is
    read as MySQL holds it and can be given back (an integer, not a TINYINT(1), which is a boolean; a BINARY or
    VARBINARY; a DECIMAL; a CHAR or VARCHAR, see ``_ROUND_TRIP_CHARSETS``; a DATE, DATETIME or TIMESTAMP, zero
    dates stepped around by :func:`_pages`), and a cursor, if any, is read from MySQL too (see
    :func:`cursor_ceiling`). None: one statement (a table with neither, or a key declared in the spec, a key with
    a TIME, a float, a BIT, or text of a character set left out).

    Why pages: connectorx's stream has no bound. Its reader goes on reading while the load waits on
    PostgreSQL, and a 20-million-row load held 1 GiB (5 million: 420 MiB) where PostgreSQL was the slower.
    A page is a statement of its own (``WHERE key > last ORDER BY key LIMIT n``: InnoDB's key order, no
    sort; a key of several columns by :func:`after_sql`), so the reader is at most a page ahead. Pages are not
    one snapshot: a row changed while the table is read may be read at either version, and the next load
    takes it again (``cursor_ceiling``); a row whose key changes meanwhile may be read under both keys or
    neither, and the next load (its key comparison, or the binlog for a change-captured table) puts it right.
    Such statements commit nothing and hold no lock between pages: MySQL's writers never wait for the load.
    """
    cursor = table.cursor
    if not table.page_by or (cursor is not None and not cursor.from_mysql):
        return None
    by_name = {c.target_name: (i, c) for i, c in table.read_columns}
    if any(name not in by_name for name in table.page_by):
        return None
    key = tuple(by_name[name] for name in table.page_by)
    return key if all(_pages_by(c) for _, c in key) else None


@dataclass(frozen=True)
class Ceiling:
    """The newest cursor value MySQL held as a paged read began (None: none), which caps the load's watermark."""

    value: datetime | int | None

    def cap(self, watermark: str | None) -> str | None:
        """``watermark`` (the newest value read, as the ledger holds it), no newer than the ceiling. None where
        there was no ceiling: the next load reads the whole table again."""
        if watermark is None or self.value is None:
            return None
        if isinstance(self.value, datetime):
            return min(datetime.fromisoformat(watermark), self.value).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return str(min(int(watermark), self.value))


def cursor_ceiling(mysql_url: DatabaseUrl, table: TablePlan) -> Ceiling:
    """The newest cursor value MySQL holds, read before a paged read (:func:`page_key`) begins: the most its
    load may record as its watermark. One statement reads one snapshot, whose newest value is its watermark;
    pages are read at later moments, and a row read in an early page and changed before a later one (whose
    rows may then be newer than that change) would be skipped by the next incremental load if the watermark
    were the newest value read. Read from the cursor's index where it has one (incremental loads need it)."""
    cursor = table.cursor
    assert cursor is not None, table.target_label
    expression = read_expression(cursor.rule, mysql_ident(cursor.source.name), cursor.source)
    sql = f"SELECT MAX({expression}) AS c0 FROM {mysql_qualified(table.source_database, table.source_table)}"
    batches = [b for b in _read(mysql_url, table, sql, 1) if b.num_rows]
    value = batches[0].column(0)[0].as_py() if batches else None
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return Ceiling(value if isinstance(value, datetime | int) else None)


def _read(mysql_url: DatabaseUrl, table: TablePlan, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """``sql``'s rows in batches. connectorx raises Rust panics as ``BaseException`` subclasses; they are turned
    into :class:`SourceUnavailable` with the table named and any password masked."""
    url = mysql_url.with_database(table.source_database)
    try:
        reader = cx.read_sql(
            connectorx_url(mysql_url, table.source_database),
            in_session(sql, table.source_server, mysql_timeouts(mysql_url).lock),
            return_type="arrow_stream", batch_size=batch_rows,
        )
        yield from reader
    except BaseException as exc:
        if _is_fatal(exc):
            raise
        raise SourceUnavailable(f"reading {table.source_label} from {url}: {explain(str(exc))}") from None
