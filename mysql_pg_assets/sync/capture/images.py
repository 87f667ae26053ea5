"""Row images from the binlog, as the batch a connectorx read of the same rows gives: so that the casting
rules, the spec's transforms and the validation run on them unchanged (``pipeline.validated_batches``).

The reader (mysql-replication) decodes each value by its MySQL type; each casting rule's ``read``
expression is mirrored here by the kind of the rule: DECIMAL as its exact text, BIT(n) as n binary
digits, SET as its members in definition order joined by ',', TIME as MySQL's own text, spatial values
as WKB without MySQL's SRID prefix, a TINYINT(1) other than 0 and 1 flagged as converted, the invalid
ENUM marker flagged as invalid.

What the binlog cannot say, and how it shows:

- a zero date arrives as NULL, the same as from a read, but uncounted (the binlog does not tell a zero
  date from NULL): in a NOT NULL column the row is a reject ("NULL in a NOT NULL column");
- an empty SET arrives as NULL from the reader: in a NOT NULL column it is the empty set again; in a
  nullable one it stays NULL (the checks' sampled rows show such a row as different);
- a negative TIME with a fraction is decoded wrongly by the reader (1.0.17): the parity check shows it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa

from mysql_pg_assets.sync.catalog.plans import (
    ColumnPlan,
    TablePlan,
    converted_flag_name,
    invalid_flag_name,
    staging_name,
)
from mysql_pg_assets.sync.catalog.schema_text import enum_values


def _bits(value: Any) -> Any:
    return int(value, 2) if isinstance(value, str) else int(value)


def _time_text(value: timedelta, digits: int) -> str:
    """A TIME as ``CAST(t AS CHAR)`` writes it: [-]HH:MM:SS[.fraction], hours unbounded."""
    micros = abs(value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds)
    seconds, fraction = divmod(micros, 1_000_000)
    text = f"{'-' if value < timedelta(0) else ''}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{fraction:06d}"[: digits + 1] if digits else "")


def _json_text(value: Any) -> Any:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _set_text(column: ColumnPlan) -> Callable[[Any], Any]:
    members = enum_values(column.source.column_type)

    def text(value: Any) -> Any:
        chosen = set(value) if not isinstance(value, str) else set(value.split(",")) if value else set()
        return ",".join(m for m in members if m in chosen)
    return text


def _converter(column: ColumnPlan) -> tuple[Callable[[Any], Any], pa.DataType]:
    """How one column's binlog value becomes its read value, and the Arrow type of the read."""
    kind, source = column.rule.kind, column.source
    if kind == "boolean":
        return _bits, pa.int64()
    if kind == "integer":
        return int, pa.uint64() if source.data_type == "bigint" and source.unsigned else pa.int64()
    if kind == "decimal" and column.rule.scaled:  # as the read: the value times 10^scale, an integer
        scale = source.numeric_scale or 0
        return lambda v: int((v if isinstance(v, Decimal) else Decimal(str(v))).scaleb(scale)), pa.int64()
    if kind == "decimal":
        return lambda v: str(v) if isinstance(v, Decimal) else str(Decimal(str(v))), pa.string()
    if kind in ("float", "double"):
        return float, pa.float64()
    if kind == "set":
        return _set_text(column), pa.string()
    if kind == "json":
        return _json_text, pa.string()
    if kind == "time":
        return lambda v: _time_text(v, source.datetime_precision or 0), pa.string()
    if kind == "spatial":
        return lambda v: bytes(v)[4:], pa.binary()  # MySQL's internal form is a 4-byte SRID, then WKB
    if kind == "binary" or column.pg_type == "bytea":
        return bytes, pa.binary()
    if kind == "date":
        return lambda v: v, pa.date32()
    if kind in ("datetime", "timestamp"):
        return lambda v: v, pa.timestamp("us")
    return (lambda v: v.decode() if isinstance(v, bytes) else v), pa.string()  # string, enum, bit(n) as text


def _empty_set(column: ColumnPlan, value: Any) -> Any:
    return "" if value is None and column.rule.kind == "set" and not column.source.nullable else value


def read_batch(table: TablePlan, rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """``rows`` (MySQL column name → the reader's value) as the record batch ``extract`` would read."""
    arrays, names = [], []
    for i, column in table.read_columns:
        convert, arrow_type = _converter(column)
        values = [_empty_set(column, row.get(column.source.name)) for row in rows]
        read = [None if v is None else convert(v) for v in values]
        arrays.append(pa.array(read, type=arrow_type))
        names.append(staging_name(i))
        if column.rule.converted:  # only TINYINT(1)'s can be told here; a zero date is NULL in the binlog
            flags = [column.rule.kind == "boolean" and v is not None and _bits(v) not in (0, 1) for v in values]
            arrays.append(pa.array(flags, type=pa.bool_()))
            names.append(converted_flag_name(i))
        if column.rule.invalid:
            members = enum_values(column.source.column_type)
            arrays.append(pa.array([v == "" and "" not in members for v in values], type=pa.bool_()))
            names.append(invalid_flag_name(i))
    return pa.RecordBatch.from_arrays(arrays, names=names)
