"""Casting rules: how each MySQL column type is read, converted and typed in PostgreSQL.

The rules are data: :data:`CASTING_RULES` is an ordered table, the first rule whose
``data_types`` and ``when`` match a column wins. Each rule says three things:

- ``read``: the MySQL expression that reads the column (``{col}`` is the quoted column). Types that
  connectorx cannot carry exactly (DECIMAL beyond 38 digits, negative or >24 h TIME, BIT(n)) are
  read as text, zero dates are turned into NULL on the server, spatial values into WKB;
- ``to_staging``: a polars expression applied to the batch (unsigned ranges, booleans, sets);
- ``pg_type``: the PostgreSQL column type. The load casts each staging column with
  ``::pg_type``, so PostgreSQL's own input functions parse the text forms (numeric, interval,
  jsonb, bit varying).

A spec override (``tables.<t>.columns.<c>.pg_type``) replaces only ``pg_type``; the value still
travels the rule's way and PostgreSQL casts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

_DISPLAY_WIDTH = re.compile(r"^\w+\((\d+)\)")


@dataclass(frozen=True)
class MySQLColumn:
    """One column as MySQL's information_schema describes it."""

    name: str
    position: int
    data_type: str  # e.g. "int", "varchar", "decimal"
    column_type: str  # e.g. "int(10) unsigned", "enum('a','b')"
    nullable: bool
    numeric_precision: int | None = None
    numeric_scale: int | None = None
    char_length: int | None = None
    datetime_precision: int | None = None
    charset: str | None = None
    extra: str = ""

    @property
    def unsigned(self) -> bool:
        return " unsigned" in self.column_type.lower()

    @property
    def display_width(self) -> int | None:
        match = _DISPLAY_WIDTH.match(self.column_type)
        return int(match.group(1)) if match else None


def _same(expr: pl.Expr) -> pl.Expr:
    return expr


def _always(_: MySQLColumn) -> bool:
    return True


@dataclass(frozen=True)
class CastRule:
    name: str
    data_types: frozenset[str]
    pg_type: Callable[[MySQLColumn], str]
    read: str = "{col}"
    to_staging: Callable[[pl.Expr], pl.Expr] = _same
    when: Callable[[MySQLColumn], bool] = _always
    # A MySQL condition, read beside the value, that is true where ``read`` changed the value on
    # the server (a zero date made NULL): each such value is counted as ``converted``.
    converted: str | None = None
    converted_as: str = ""


def _fixed(type_name: str) -> Callable[[MySQLColumn], str]:
    return lambda _column: type_name


def _cast(dtype: pl.DataType) -> Callable[[pl.Expr], pl.Expr]:
    return lambda expr: expr.cast(dtype)


def _signed(column: MySQLColumn) -> bool:
    return not column.unsigned


def _set_to_list(expr: pl.Expr) -> pl.Expr:
    # MySQL sends a SET as 'a,b'; the empty set is '' and must become {} rather than {""}.
    return pl.when(expr == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(expr.str.split(","))


# connectorx cannot represent MySQL's zero dates ('0000-00-00', '2024-00-10'): they become NULL
# on the server, where the value is still typed, so the column keeps its native fast path.
_ZERO_DATE = "(MONTH({col}) = 0 OR DAYOFMONTH({col}) = 0)"
_ZERO_DATE_TO_NULL = f"IF({_ZERO_DATE}, NULL, {{col}})"
_ZERO_DATES = {"converted": _ZERO_DATE, "converted_as": "zero date → NULL"}


def _varchar(column: MySQLColumn) -> str:
    return f"varchar({column.char_length})" if column.char_length else "text"


def _numeric(column: MySQLColumn) -> str:
    return f"numeric({column.numeric_precision},{column.numeric_scale or 0})"


def _bit(column: MySQLColumn) -> str:
    return f"bit varying({column.numeric_precision})"


def _time_zone_utc(expr: pl.Expr) -> pl.Expr:
    # The extract session runs with time_zone '+00:00', so MySQL renders TIMESTAMPs in UTC.
    return expr.dt.replace_time_zone("UTC")


_TEXT_TYPES = frozenset({"tinytext", "text", "mediumtext", "longtext"})
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_SPATIAL_TYPES = frozenset(
    {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
     "multipolygon", "geometrycollection"}
)

CASTING_RULES: tuple[CastRule, ...] = (
    CastRule("tinyint(1) → boolean", frozenset({"tinyint"}), _fixed("boolean"),
             to_staging=_cast(pl.Boolean), when=lambda c: c.display_width == 1),
    CastRule("tinyint → smallint", frozenset({"tinyint"}), _fixed("smallint"), to_staging=_cast(pl.Int16)),
    CastRule("smallint → smallint", frozenset({"smallint"}), _fixed("smallint"),
             to_staging=_cast(pl.Int16), when=_signed),
    CastRule("smallint unsigned → integer", frozenset({"smallint"}), _fixed("integer"),
             to_staging=_cast(pl.Int32)),
    CastRule("mediumint → integer", frozenset({"mediumint"}), _fixed("integer"), to_staging=_cast(pl.Int32)),
    CastRule("int → integer", frozenset({"int", "integer"}), _fixed("integer"),
             to_staging=_cast(pl.Int32), when=_signed),
    CastRule("int unsigned → bigint", frozenset({"int", "integer"}), _fixed("bigint"),
             to_staging=_cast(pl.Int64)),
    CastRule("bigint → bigint", frozenset({"bigint"}), _fixed("bigint"), to_staging=_cast(pl.Int64),
             when=_signed),
    # 2^64-1 does not fit in bigint; numeric(20) holds the whole unsigned range exactly.
    CastRule("bigint unsigned → numeric(20)", frozenset({"bigint"}), _fixed("numeric(20)"),
             to_staging=_cast(pl.String)),
    CastRule("decimal(p,s) → numeric(p,s)", frozenset({"decimal", "numeric"}), _numeric,
             read="CAST({col} AS CHAR)"),
    CastRule("float → real", frozenset({"float"}), _fixed("real"), to_staging=_cast(pl.Float32)),
    CastRule("double → double precision", frozenset({"double", "real"}), _fixed("double precision"),
             to_staging=_cast(pl.Float64)),
    CastRule("bit(1) → boolean", frozenset({"bit"}), _fixed("boolean"),
             read="CAST({col} AS UNSIGNED)", to_staging=_cast(pl.Boolean),
             when=lambda c: c.numeric_precision == 1),
    CastRule("bit(n) → bit varying(n)", frozenset({"bit"}), _bit,
             read="LPAD(BIN({col}), {width}, '0')"),
    CastRule("char(n)/varchar(n) → varchar(n)", frozenset({"char", "varchar"}), _varchar),
    CastRule("text → text", _TEXT_TYPES, _fixed("text")),
    CastRule("enum → text", frozenset({"enum"}), _fixed("text")),
    CastRule("set → text[]", frozenset({"set"}), _fixed("text[]"), to_staging=_set_to_list),
    CastRule("json → jsonb", frozenset({"json"}), _fixed("jsonb")),
    CastRule("binary/blob → bytea", _BINARY_TYPES, _fixed("bytea")),
    CastRule("date → date", frozenset({"date"}), _fixed("date"), read=_ZERO_DATE_TO_NULL, **_ZERO_DATES),
    CastRule("datetime → timestamp", frozenset({"datetime"}), _fixed("timestamp"), read=_ZERO_DATE_TO_NULL,
             **_ZERO_DATES),
    CastRule("timestamp → timestamptz", frozenset({"timestamp"}), _fixed("timestamptz"), read=_ZERO_DATE_TO_NULL,
             to_staging=_time_zone_utc, **_ZERO_DATES),
    # TIME spans -838:59:59 to 838:59:59: an interval, not a time of day.
    CastRule("time → interval", frozenset({"time"}), _fixed("interval"), read="CAST({col} AS CHAR)"),
    CastRule("year → smallint", frozenset({"year"}), _fixed("smallint"), to_staging=_cast(pl.Int16)),
    CastRule("spatial → bytea (WKB)", _SPATIAL_TYPES, _fixed("bytea"), read="ST_AsBinary({col})"),
)

FALLBACK_RULE = CastRule("anything else → text", frozenset(), _fixed("text"), read="CAST({col} AS CHAR)")


def rule_for(column: MySQLColumn) -> CastRule:
    for rule in CASTING_RULES:
        if column.data_type.lower() in rule.data_types and rule.when(column):
            return rule
    return FALLBACK_RULE


def read_expression(rule: CastRule, quoted_column: str, column: MySQLColumn) -> str:
    return rule.read.format(col=quoted_column, width=column.numeric_precision or 64)


def converted_expression(rule: CastRule, quoted_column: str) -> str | None:
    return rule.converted.format(col=quoted_column) if rule.converted else None
