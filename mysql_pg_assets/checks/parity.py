"""Parity: does PostgreSQL hold what MySQL holds? Counts, and a row-by-row comparison.

The row-by-row comparison reads both sides through their own drivers (PyMySQL and psycopg), not
through the sync's extract path, so it checks the sync rather than repeating it. Each value is
normalized to one Python form per MySQL type (see :func:`_normalizer`) before comparing; the
normalizations are exactly the documented casting rules (zero dates are NULL, a SET is a list,
a FLOAT is compared at single precision, TIMESTAMP is UTC).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from mysql_pg_assets.checks.canonical import comparable, mysql_text, pg_text
from mysql_pg_assets.core.connections import mysql_connection, pg_connection, relation_exists
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import mysql_ident, mysql_qualified, pg_ident, pg_idents
from mysql_pg_assets.sync.catalog.plans import TOMBSTONE_COLUMN, ColumnPlan, TablePlan
from mysql_pg_assets.sync.extract import Window, where_sql
from mysql_pg_assets.sync.load.ddl import expected_shape, table_shape
from mysql_pg_assets.sync.load.merge import bucket_sql, pg_window_sql
from mysql_pg_assets.sync.transform import masked_value


@dataclass(frozen=True)
class TableParity:
    table: TablePlan
    mysql_rows: int
    postgres_rows: int | None  # None: the PostgreSQL table does not exist yet
    differences: tuple[str, ...] = ()

    @property
    def equal(self) -> bool:
        return self.mysql_rows == self.postgres_rows and not self.differences


def mysql_row_count(url: DatabaseUrl, table: TablePlan) -> int:
    """MySQL's rows of the table that its row filter takes (all of them without one)."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {mysql_qualified(table.source_database, table.source_table)}"
                    f"{where_sql(table, None)}")
        return int(cur.fetchone()[0])


def _alive(table: TablePlan) -> str:
    """Rows MySQL still has: a tombstoned row is kept in PostgreSQL but is not MySQL's any more."""
    return f" WHERE {pg_ident(TOMBSTONE_COLUMN)} IS NULL" if table.tombstones else ""


def postgres_row_count(url: DatabaseUrl, table: TablePlan) -> int | None:
    with pg_connection(url) as connection:
        if not relation_exists(connection, table.target):
            return None
        return int(connection.execute(
            f"SELECT count(*) FROM {table.target}{_alive(table)}"
        ).fetchone()[0])


_NULL_MARK = 1  # chr(1) stands for NULL in the row text, which no text column holds in practice


@dataclass(frozen=True)
class Fingerprint:
    """Rows and an order-independent checksum of a table or a partition, computed in the database."""

    rows: int
    checksum: int


def checksum_columns(table: TablePlan) -> list[ColumnPlan]:
    """The columns both databases write alike (``canonical``): every type, as the mapping converts it.
    A column whose PostgreSQL type the spec overrides is left out; the row count still covers it."""
    return [c for c in table.columns if comparable(c)]


def _mysql_text(column: ColumnPlan) -> str:
    text = mysql_text(column, mysql_ident(column.source.name))
    return f"COALESCE(CONVERT({text} USING utf8mb4), CHAR({_NULL_MARK} USING utf8mb4))"


def _pg_text(column: ColumnPlan) -> str:
    return f"COALESCE({pg_text(column, pg_ident(column.target_name))}, chr({_NULL_MARK}))"


def _scope_sql(table: TablePlan, window: Window | None) -> tuple[str, str, tuple]:
    """MySQL's WHERE (bounds rendered), PostgreSQL's WHERE and its parameters: the rows a load of
    ``window`` reads and writes, exactly (None: the whole table)."""
    mysql_where, pg_where, pg_params = where_sql(table, None), _alive(table), tuple[object, ...]()
    if window is not None and table.partition is not None:
        mysql_where = where_sql(table, window)
        condition, params = pg_window_sql(table, window, alias="")
        if condition:
            pg_where = f"{pg_where} AND {condition}" if pg_where else f" WHERE {condition}"
            pg_params = tuple(params)
    return mysql_where, pg_where, pg_params


def fingerprints(
    mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, window: Window | None
) -> tuple[Fingerprint, Fingerprint]:
    """(MySQL, PostgreSQL) fingerprints of a partition window, or of the whole table.

    Each row's text (the checksum columns joined by '|') is hashed with MD5 in its own database;
    the first 60 bits of each hash are summed, so no row leaves either database.
    """
    mysql_where, pg_where, pg_params = _scope_sql(table, window)
    columns = checksum_columns(table)
    mysql_row = f"CONCAT_WS('|', {', '.join(_mysql_text(c) for c in columns)})" if columns else "''"
    # || rather than concat_ws: a PostgreSQL function takes at most 100 arguments.
    pg_row = " || '|' || ".join(_pg_text(c) for c in columns) if columns else "''"
    with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTRING(MD5({mysql_row}), 1, 15), 16, 10) AS UNSIGNED)), 0)"
            f" FROM {mysql_qualified(table.source_database, table.source_table)}{mysql_where}")
        mysql_rows, mysql_sum = cur.fetchone()
    with pg_connection(postgres_url) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        pg_rows, pg_sum = connection.execute(
            f"SELECT count(*), coalesce(sum(('x' || substr(md5({pg_row}), 1, 15))::bit(60)::bigint), 0)"
            f" FROM {table.target}{pg_where}", pg_params).fetchone()
    return Fingerprint(int(mysql_rows), int(mysql_sum)), Fingerprint(int(pg_rows), int(pg_sum))


def partition_row_counts(url: DatabaseUrl, table: TablePlan, window: Window | None) -> dict[int, int]:
    """Rows PostgreSQL holds in each partition of a range (by position in the range), after a load."""
    assert table.partition is not None and window is not None, table.target_label
    bucket = bucket_sql(table, window, pg_ident(table.partition.column))
    by, by_params = bucket if bucket else ("0", [])
    _, pg_where, pg_params = _scope_sql(table, window)
    with pg_connection(url) as connection:
        connection.execute("SET TimeZone = 'UTC'")  # a timestamp column compares as the instant it stands for
        rows = connection.execute(
            f"SELECT {by}, count(*) FROM {table.target}{pg_where}"
            f" GROUP BY 1", [*by_params, *pg_params]).fetchall()
    return {int(bucket): int(count) for bucket, count in rows}


@dataclass(frozen=True)
class TableCounts:
    """Rows of a whole partitioned table on both sides, and the MySQL rows outside the partitions' span
    (the first partition loads those before it, with a NULL or zero date; the last those after it)."""

    mysql_rows: int
    postgres_rows: int
    before_first: int
    after_last: int


def table_counts(
    mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, first_start: datetime, last_end: datetime
) -> TableCounts:
    """Whole-table counts on both sides, and MySQL's rows outside the partitions' span. The outside counts
    are index range scans on the partition column (a date with a zero month or day inside the span, which
    loads with the first partition, is not among them); the exact total is one COUNT(*) a side."""
    assert table.partition is not None, table.target_label
    column = mysql_ident(table.partition.source_column)
    source = mysql_qualified(table.source_database, table.source_table)
    bounds = tuple(b.astimezone(UTC).replace(tzinfo=None) if b.tzinfo else b for b in (first_start, last_end))
    with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
        counts = []
        rows_filter = f" AND ({table.filter_sql})" if table.filter_sql else ""
        for where, params in (("", ()), (f" WHERE ({column} < %s OR {column} IS NULL)", bounds[:1]),
                              (f" WHERE {column} >= %s AND MONTH({column}) <> 0 AND DAYOFMONTH({column}) <> 0",
                               bounds[1:])):
            where = where or (" WHERE TRUE" if rows_filter else "")
            cur.execute(f"SELECT COUNT(*) FROM {source}{where}{rows_filter}", params)
            counts.append(int(cur.fetchone()[0]))
    rows, before, after = counts
    return TableCounts(rows, postgres_row_count(postgres_url, table) or 0, before, after)


def count_parity(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan) -> TableParity:
    return TableParity(table, mysql_row_count(mysql_url, table), postgres_row_count(postgres_url, table))


def _float32(value: Any) -> float:
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def _bits(value: Any) -> int:
    return int.from_bytes(value, "big") if isinstance(value, bytes | bytearray) else int(str(value), 2)


def _set(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split(",")) if value else ()
    return tuple(value)


def _json_text(value: Any) -> Any:
    # Numbers as decimals: a float would make 1e400 infinite on one side and exact on the other.
    return json.loads(value, parse_float=Decimal, parse_int=Decimal)


def _utc(value: Any) -> Any:
    if not isinstance(value, datetime):
        return None  # a zero TIMESTAMP, which the casting rules turn into NULL
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _temporal(value: Any) -> Any:
    # PyMySQL hands back zero dates as strings; the casting rules turn them into NULL.
    return value if isinstance(value, date) else None


def _bytes(value: Any) -> bytes:
    return bytes(value)


def compared_columns(table: TablePlan) -> list[ColumnPlan]:
    """The columns read back from both sides and compared value by value: every column from MySQL that no
    Python transform changes (a masked one compares with its mask applied again to MySQL's value)."""
    return [c for c in table.columns if c.from_mysql and c.python is None]


def _normalizer(column: ColumnPlan, side: str) -> Callable[[Any], Any]:
    """How one column's values compare, by the kind of its casting rule; ``side`` is "mysql" or "postgres"."""
    mask = column.mask
    if mask is not None:
        return (lambda v: masked_value(mask, v)) if side == "mysql" else (lambda v: v)
    kind = column.rule.kind
    if column.pg_type == "boolean":
        return lambda v: bool(_bits(v)) if isinstance(v, bytes) else bool(v)
    if kind == "json":
        return _json_text  # both sides read as text (_pg_read)
    if kind == "spatial" and side == "mysql":
        return lambda v: bytes(v)[4:]  # MySQL's internal form is a 4-byte SRID, then WKB
    if kind == "string" and side == "mysql":
        return lambda v: v.replace("\x00", "")  # the mapping removes NUL, which PostgreSQL text cannot hold
    if kind == "set" and side == "mysql":  # a member may hold NUL too
        return lambda v: _set(v.replace("\x00", "") if isinstance(v, str) else {m.replace("\x00", "") for m in v})
    by_kind: dict[str, Callable[[Any], Any]] = {
        "bit": _bits, "set": _set, "timestamp": _utc, "date": _temporal, "datetime": _temporal,
        "float": _float32, "decimal": Decimal, "integer": int, "binary": _bytes, "spatial": _bytes,
    }
    return by_kind.get(kind, _bytes if column.pg_type == "bytea" else (lambda v: v))


def _normalized(rows: list[tuple], normalizers: list[Callable[[Any], Any]]) -> list[tuple]:
    return [tuple(None if v is None else f(v) for f, v in zip(normalizers, row, strict=True)) for row in rows]


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, repr(v)) for v in row)


def _pg_read(column: ColumnPlan) -> str:
    quoted = pg_ident(column.target_name)
    return f"{quoted}::text" if column.rule.kind == "json" and column.pg_type == "jsonb" else quoted


def _mysql_read(column: ColumnPlan) -> str:
    # The text protocol prints a FLOAT with 6 significant digits; as a DOUBLE it is exact.
    quoted = mysql_ident(column.source.name)
    return f"CAST({quoted} AS DOUBLE)" if column.rule.kind == "float" else quoted


def compare_rows(
    mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, max_differences: int = 10
) -> TableParity:
    """Compare every row and every value of one table (the columns of ``compared_columns``, the rows its row
    filter takes). Meant for tests and demo-sized tables."""
    columns = compared_columns(table)
    with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(_mysql_read(c) for c in columns)} "
            f"FROM {mysql_qualified(table.source_database, table.source_table)}{where_sql(table, None)}"
        )
        source_rows = list(cur.fetchall())
    target_count = postgres_row_count(postgres_url, table)
    target_rows: list[tuple] = []
    if target_count is not None:
        with pg_connection(postgres_url) as connection:
            target_rows = connection.execute(
                f"SELECT {', '.join(_pg_read(c) for c in columns)} "
                f"FROM {table.target}{_alive(table)}"
            ).fetchall()
    expected = sorted(_normalized(source_rows, [_normalizer(c, "mysql") for c in columns]), key=_sort_key)
    actual = sorted(_normalized(target_rows, [_normalizer(c, "postgres") for c in columns]), key=_sort_key)
    differences: list[str] = []
    if len(expected) != len(actual):
        differences.append(f"{len(expected)} rows in MySQL, {len(actual)} in PostgreSQL")
    names = [c.target_name for c in columns]
    for source_row, target_row in zip(expected, actual, strict=False):
        if source_row != target_row and len(differences) < max_differences:
            changed = {n: (s, t) for n, s, t in zip(names, source_row, target_row, strict=True) if s != t}
            differences.append(f"row {dict(zip(names, source_row, strict=True))!r}: {changed!r}")
    return TableParity(table, len(source_rows), target_count, tuple(differences))


@dataclass(frozen=True)
class Sample:
    """Rows picked at random from what PostgreSQL holds in a scope, read again from both sides by their
    key and compared value by value, every column of every type."""

    compared: int
    differences: tuple[dict[str, Any], ...]  # {"key", "column", "mysql", "postgres"}, values as text

    @property
    def equal(self) -> bool:
        return not self.differences


def _shown(value: Any, limit: int = 200) -> str | None:
    text = None if value is None else repr(value)
    return text if text is None or len(text) <= limit else text[:limit] + "…"


def _mysql_key(value: Any) -> Any:
    # A timestamptz key read from PostgreSQL is an aware instant; the MySQL session runs in UTC.
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) and value.tzinfo else value


def sample_rows(
    mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, window: Window | None, rows: int = 20,
    max_differences: int = 20,
) -> Sample:
    """``rows`` keys drawn at random from PostgreSQL's rows of the scope (a big table: from a sample of its
    pages), their rows read from both sides and compared after the documented conversions. A key MySQL no
    longer has is a difference too. Needs a primary key."""
    assert table.primary_key, table.target_label
    key_columns = [c for c in table.columns if c.target_name in table.primary_key]
    target = table.target
    _, pg_where, pg_params = _scope_sql(table, window)
    keys_sql = pg_idents(c.target_name for c in key_columns)
    with pg_connection(postgres_url) as connection:
        estimate = connection.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (target,)).fetchone()
        sampled = f" TABLESAMPLE SYSTEM ({min(100.0, 2000 * 100 / estimate[0]):.4f})" \
            if window is None and estimate and estimate[0] > 200_000 else ""
        keys = connection.execute(f"SELECT {keys_sql} FROM {target}{sampled}{pg_where} ORDER BY random() LIMIT %s",
                                  (*pg_params, rows)).fetchall()
    if not keys:
        return Sample(0, ())
    source, copy, names = rows_by_key(mysql_url, postgres_url, table, keys)
    differences = [d for key in copy for d in key_differences(table, names, key, source.get(key), copy[key])]
    return Sample(len(copy), tuple(differences[:max_differences]))


def rows_by_key(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan,
                keys: Sequence[Sequence[Any]]) -> tuple[dict[tuple, tuple], dict[tuple, tuple], list[str]]:
    """The rows of these keys (values in key-column order) read from both sides and normalized as the
    comparison sees them (the documented conversions, masks applied again): MySQL's and PostgreSQL's, by
    key, and the compared columns' names."""
    key_columns = [c for c in table.columns if c.target_name in table.primary_key]
    columns = compared_columns(table)
    source_filter = f"({table.filter_sql}) AND " if table.filter_sql else ""
    matches = " OR ".join(["(" + " AND ".join(f"{pg_ident(c.target_name)} = %s" for c in key_columns) + ")"]
                          * len(keys))
    with pg_connection(postgres_url) as connection:
        target_rows = connection.execute(
            f"SELECT {', '.join(_pg_read(c) for c in columns)} FROM {table.target} WHERE {matches}",
            [v for key in keys for v in key]).fetchall()
    mysql_matches = " OR ".join(["(" + " AND ".join(f"{mysql_ident(c.source.name)} = %s" for c in key_columns)
                                 + ")"] * len(keys))
    with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(_mysql_read(c) for c in columns)} FROM "
                    f"{mysql_qualified(table.source_database, table.source_table)} WHERE {source_filter}"
                    f"({mysql_matches})",
                    [_mysql_key(v) for key in keys for v in key])
        source_rows = list(cur.fetchall())
    names = [c.target_name for c in columns]
    positions = [names.index(c.target_name) for c in key_columns]

    def by_key(found: list[tuple], side: str) -> dict[tuple, tuple]:
        normalized = _normalized(found, [_normalizer(c, side) for c in columns])
        return {tuple(row[i] for i in positions): row for row in normalized}

    return by_key(source_rows, "mysql"), by_key(target_rows, "postgres"), names


def key_differences(table: TablePlan, names: list[str], key: tuple, source: tuple | None,
                    copy: tuple | None) -> list[dict[str, Any]]:
    """One row's differences ({"key", "column", "mysql", "postgres"}, values shown as text); a row only one
    side has is one difference with no column."""
    shown_key = {c.target_name: _shown(v) for c, v in zip(table.key_columns, key, strict=True)}
    if source is None or copy is None:
        return [] if source is copy else [{"key": shown_key, "column": None,
                                          "mysql": "(row)" if source else "(no such row)",
                                          "postgres": "(row)" if copy else "(no such row)"}]
    return [{"key": shown_key, "column": name, "mysql": _shown(a), "postgres": _shown(b)}
            for name, a, b in zip(names, source, copy, strict=True) if a != b]


def schema_differences(url: DatabaseUrl, table: TablePlan) -> list[str]:
    """How the PostgreSQL table differs from the mapping of MySQL's current columns (empty: it conforms).

    Both shapes come from ``migrate``: the expected one is a temporary table built from the mapping,
    so PostgreSQL itself normalizes the types on both sides.
    """
    target = table.target
    with pg_connection(url) as connection:
        if not relation_exists(connection, target):
            return [f"{table.target_label} does not exist"]
        actual = {c.name: (c.type, c.not_null) for c in table_shape(connection, target).columns}
        expected = {c.name: (c.type, c.not_null) for c in expected_shape(connection, table).columns}
    differences = [f"{name}: missing in PostgreSQL" for name in expected if name not in actual]
    differences += [f"{name}: not in the mapping of MySQL's columns" for name in actual if name not in expected]
    for name, (kind, not_null) in expected.items():
        if name in actual and actual[name] != (kind, not_null):
            have, nullable = actual[name]
            differences.append(f"{name}: {have}{' NOT NULL' if nullable else ''} in PostgreSQL, "
                               f"{kind}{' NOT NULL' if not_null else ''} expected")
    return differences


def duplicated_values(url: DatabaseUrl, table: TablePlan, column: str, limit: int = 20) -> tuple[int, list[dict]]:
    """A ``unique`` check of the user's: how many rows of the PostgreSQL table share a value with another
    (NULLs aside), and the first ``limit`` such values with their count."""
    quoted = pg_ident(column)
    with pg_connection(url) as connection:
        if not relation_exists(connection, table.target):
            return 0, []
        alive = f"{_alive(table)} AND" if table.tombstones else " WHERE"
        rows = connection.execute(
            f"SELECT {quoted}::text, count(*), sum(count(*)) OVER () FROM {table.target}{alive} {quoted} IS NOT NULL"
            f" GROUP BY {quoted} HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT %s", (limit,)).fetchall()
    total = int(rows[0][2]) if rows else 0
    return total, [{column: value, "rows": int(count)} for value, count, _ in rows]
