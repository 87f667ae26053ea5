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
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import polars as pl
from polars._typing import PolarsDataType

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
    collation: str | None = None  # COLLATION_NAME: the order of a text column (a read pages by it, ``extract``)
    extra: str = ""
    default: str | None = None  # COLUMN_DEFAULT as information_schema shows it

    @property
    def auto_increment(self) -> bool:
        return "auto_increment" in self.extra.lower()

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
    # What the value is, for the checks that compare both sides (parity): boolean, integer, decimal,
    # float, double, bit, string, set, json, binary, date, datetime, timestamp, time, spatial, other.
    kind: str = "other"
    read: str = "{col}"
    to_staging: Callable[[pl.Expr], pl.Expr] = _same
    when: Callable[[MySQLColumn], bool] = _always
    # A MySQL condition, read beside the value, that is true where ``read`` changed the value on
    # the server (a zero date made NULL): each such value is counted as ``converted``.
    converted: str | None = None
    converted_as: str = ""
    # A MySQL condition, read beside the value, that is true where MySQL holds a value it should
    # not have let in (an invalid ENUM): such a row is rejected with ``invalid_as`` as the reason.
    invalid: str | None = None
    invalid_as: str = ""
    note: str = ""  # shown in the README's casting table
    # ``to_staging`` made for the column (``rule_for``), where it needs more than the value (a scale).
    to_staging_for: Callable[[MySQLColumn], Callable[[pl.Expr], pl.Expr]] | None = None
    # A DECIMAL read as an integer, its value times 10^scale (``read`` has ``{factor}``): change capture's row
    # images must be read alike (``capture.images``).
    scaled: bool = False


def _fixed(type_name: str) -> Callable[[MySQLColumn], str]:
    return lambda _column: type_name


def _cast(dtype: PolarsDataType) -> Callable[[pl.Expr], pl.Expr]:
    return lambda expr: expr.cast(dtype)


def _signed(column: MySQLColumn) -> bool:
    return not column.unsigned


def _set_to_list(expr: pl.Expr) -> pl.Expr:
    # MySQL sends a SET as 'a,b'; the empty set is '' and must become {} rather than {""}.
    return pl.when(expr == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(expr.str.split(","))


# connectorx cannot represent MySQL's zero dates ('0000-00-00', '2024-00-10'): they become NULL
# on the server, where the value is still typed, so the column keeps its native fast path.
# DAYOFYEAR is NULL for a date with a zero month or day and 1-366 for any other, whatever the sql_mode: one
# function, where MONTH() = 0 OR DAYOFMONTH() = 0 took two (a 5M-row read with three such columns: MariaDB
# spent 0.7 CPU-s less).
ZERO_DATE = "({col} IS NOT NULL AND DAYOFYEAR({col}) IS NULL)"  # also a window's test (extract)
ZERO_DATE_TO_NULL = "IF(DAYOFYEAR({col}), {col}, NULL)"
_ZERO_DATES: dict[str, Any] = {"converted": ZERO_DATE, "converted_as": "zero date → NULL"}


def _varchar(column: MySQLColumn) -> str:
    return f"varchar({column.char_length})" if column.char_length else "text"


def _numeric(column: MySQLColumn) -> str:
    return f"numeric({column.numeric_precision},{column.numeric_scale or 0})"


# A DECIMAL of up to 18 digits is read as an integer (its value times 10^scale, which fits in 64 bits) and
# made a decimal again in polars: for the 5M orders' three DECIMAL(12,2), connectorx spent 1.0 CPU-s less than
# decoding their text, polars 0.75 less than parsing it, MariaDB 0.2 more. Exact: DECIMAL times an integer is
# a DECIMAL in MySQL, and an integer once scaled.
SCALED_DIGITS = 18


@dataclass(frozen=True)
class _Unscaled:
    """The read integer as the column's decimal: times 10^-scale, exactly (polars' decimal product)."""

    precision: int
    scale: int

    def __call__(self, expr: pl.Expr) -> pl.Expr:
        step = pl.lit(Decimal(1).scaleb(-self.scale), dtype=pl.Decimal(38, self.scale))
        return (expr.cast(pl.Decimal(38, 0)) * step).cast(pl.Decimal(self.precision, self.scale))


def _unscaled(column: MySQLColumn) -> Callable[[pl.Expr], pl.Expr]:
    return _Unscaled(column.numeric_precision or SCALED_DIGITS, column.numeric_scale or 0)


def _bit(column: MySQLColumn) -> str:
    return f"bit varying({column.numeric_precision})"


def _time_zone_utc(expr: pl.Expr) -> pl.Expr:
    # The extract session runs with time_zone '+00:00', so MySQL renders TIMESTAMPs in UTC.
    return expr.dt.replace_time_zone("UTC")


_TEXT_TYPES = frozenset({"tinytext", "text", "mediumtext", "longtext"})
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_SPATIAL_TYPES = frozenset(
    {
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    }
)

CASTING_RULES: tuple[CastRule, ...] = (
    CastRule(
        "tinyint(1) → boolean",
        frozenset({"tinyint"}),
        _fixed("boolean"),
        to_staging=_cast(pl.Boolean),
        when=lambda c: c.display_width == 1,
        converted="({col} NOT IN (0, 1))",
        converted_as="non-0/1 value → true",
        note="MySQL's boolean idiom; a value other than 0 and 1 becomes true and is counted",
        kind="boolean",
    ),
    CastRule(
        "tinyint → smallint",
        frozenset({"tinyint"}),
        _fixed("smallint"),
        to_staging=_cast(pl.Int16),
        note="signed and unsigned",
        kind="integer",
    ),
    CastRule(
        "smallint → smallint",
        frozenset({"smallint"}),
        _fixed("smallint"),
        to_staging=_cast(pl.Int16),
        when=_signed,
        kind="integer",
    ),
    CastRule(
        "smallint unsigned → integer",
        frozenset({"smallint"}),
        _fixed("integer"),
        to_staging=_cast(pl.Int32),
        kind="integer",
    ),
    CastRule(
        "mediumint → integer",
        frozenset({"mediumint"}),
        _fixed("integer"),
        to_staging=_cast(pl.Int32),
        note="signed and unsigned",
        kind="integer",
    ),
    CastRule(
        "int → integer",
        frozenset({"int", "integer"}),
        _fixed("integer"),
        to_staging=_cast(pl.Int32),
        when=_signed,
        kind="integer",
    ),
    CastRule(
        "int unsigned → bigint",
        frozenset({"int", "integer"}),
        _fixed("bigint"),
        to_staging=_cast(pl.Int64),
        kind="integer",
    ),
    CastRule(
        "bigint → bigint",
        frozenset({"bigint"}),
        _fixed("bigint"),
        to_staging=_cast(pl.Int64),
        when=_signed,
        kind="integer",
    ),
    # An AUTO_INCREMENT key never nears 2^63 in practice and must stay an integer to be an
    # identity; it travels as text so that a value beyond bigint is refused by PostgreSQL and
    # rejected with a reason, never wrapped around.
    CastRule(
        "bigint unsigned auto_increment → bigint",
        frozenset({"bigint"}),
        _fixed("bigint"),
        to_staging=_cast(pl.String),
        when=lambda c: c.auto_increment,
        note="an identity; a value past 2^63-1 is rejected with a reason",
        kind="integer",
    ),
    # 2^64-1 does not fit in bigint; numeric(20) holds the whole unsigned range exactly.
    CastRule(
        "bigint unsigned → numeric(20)",
        frozenset({"bigint"}),
        _fixed("numeric(20)"),
        to_staging=_cast(pl.String),
        note="exact up to 18446744073709551615",
        kind="integer",
    ),
    CastRule(
        "decimal(p ≤ 18,s) → numeric(p,s)",
        frozenset({"decimal", "numeric"}),
        _numeric,
        read="CAST({col} * {factor} AS SIGNED)",
        when=lambda c: (c.numeric_precision or SCALED_DIGITS + 1) <= SCALED_DIGITS,
        note="read as an integer, the value times 10^scale: exact",
        kind="decimal",
        to_staging_for=_unscaled,
        scaled=True,
    ),
    CastRule(
        "decimal(p,s) → numeric(p,s)",
        frozenset({"decimal", "numeric"}),
        _numeric,
        read="CAST({col} AS CHAR)",
        note="read as text: exact up to DECIMAL(65,30)",
        kind="decimal",
    ),
    CastRule("float → real", frozenset({"float"}), _fixed("real"), to_staging=_cast(pl.Float32), kind="float"),
    CastRule(
        "double → double precision",
        frozenset({"double", "real"}),
        _fixed("double precision"),
        to_staging=_cast(pl.Float64),
        kind="double",
    ),
    CastRule(
        "bit(1) → boolean",
        frozenset({"bit"}),
        _fixed("boolean"),
        read="CAST({col} AS UNSIGNED)",
        to_staging=_cast(pl.Boolean),
        when=lambda c: c.numeric_precision == 1,
        kind="boolean",
    ),
    CastRule("bit(n) → bit varying(n)", frozenset({"bit"}), _bit, read="LPAD(BIN({col}), {width}, '0')", kind="bit"),
    CastRule(
        "char(n)/varchar(n) → varchar(n)",
        frozenset({"char", "varchar"}),
        _varchar,
        note="NUL bytes removed and counted",
        kind="string",
    ),
    CastRule(
        "text → text",
        _TEXT_TYPES,
        _fixed("text"),
        note="TINYTEXT … LONGTEXT; NUL bytes removed and counted",
        kind="string",
    ),
    CastRule(
        "enum → text",
        frozenset({"enum"}),
        _fixed("text"),
        # MySQL stores a value outside the list as '' with index 0, whatever the list holds.
        invalid="({col} + 0 = 0)",
        invalid_as="not one of the ENUM's values (MySQL's invalid-ENUM marker '')",
        note="with a CHECK of its values (option enum_check); '' (MySQL's invalid ENUM) is rejected",
        kind="string",
    ),
    CastRule(
        "set → text[]",
        frozenset({"set"}),
        _fixed("text[]"),
        to_staging=_set_to_list,
        note="the empty set is {}",
        kind="set",
    ),
    CastRule(
        "json → jsonb",
        frozenset({"json"}),
        _fixed("jsonb"),
        note="MariaDB's JSON (LONGTEXT with json_valid) too; a \\u0000 escape is rejected: jsonb cannot hold it",
        kind="json",
    ),
    CastRule(
        "binary/blob → bytea",
        _BINARY_TYPES,
        _fixed("bytea"),
        note="BINARY, VARBINARY, TINYBLOB … LONGBLOB",
        kind="binary",
    ),
    CastRule(
        "date → date",
        frozenset({"date"}),
        _fixed("date"),
        read=ZERO_DATE_TO_NULL,
        **_ZERO_DATES,
        note="zero dates ('0000-00-00', '2024-00-10') and days no calendar has ('2024-02-31') become NULL, counted",
        kind="date",
    ),
    CastRule(
        "datetime → timestamp",
        frozenset({"datetime"}),
        _fixed("timestamp"),
        read=ZERO_DATE_TO_NULL,
        **_ZERO_DATES,
        note="zero and invalid dates become NULL and are counted",
        kind="datetime",
    ),
    CastRule(
        "timestamp → timestamptz",
        frozenset({"timestamp"}),
        _fixed("timestamptz"),
        read=ZERO_DATE_TO_NULL,
        to_staging=_time_zone_utc,
        **_ZERO_DATES,
        note="read in UTC (session time_zone '+00:00'): the same instant whatever the server's zone",
        kind="timestamp",
    ),
    # TIME spans -838:59:59 to 838:59:59: an interval, not a time of day.
    CastRule(
        "time → interval",
        frozenset({"time"}),
        _fixed("interval"),
        read="CAST({col} AS CHAR)",
        note="-838:59:59 … 838:59:59 is a duration, not a time of day",
        kind="time",
    ),
    CastRule("year → smallint", frozenset({"year"}), _fixed("smallint"), to_staging=_cast(pl.Int16), kind="integer"),
    CastRule(
        "spatial → bytea (WKB)",
        _SPATIAL_TYPES,
        _fixed("bytea"),
        read="ST_AsBinary({col})",
        note="ST_AsBinary: well-known binary",
        kind="spatial",
    ),
)

FALLBACK_RULE = CastRule(
    "anything else → text",
    data_types=frozenset(),
    pg_type=_fixed("text"),
    read="CAST({col} AS CHAR)",
    note="CAST(... AS CHAR): MariaDB's UUID, INET6, ...",
)


def _same_type(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def rule_for(column: MySQLColumn, pg_type: str | None = None) -> CastRule:
    """The first matching rule; with ``pg_type`` (an override), preferably one that produces it.

    Preferring a rule that produces the override keeps the staging value in a form PostgreSQL
    can cast (TINYINT(1) overridden to smallint travels as an integer, not as a boolean).
    """
    matching = [r for r in CASTING_RULES if column.data_type.lower() in r.data_types and r.when(column)]
    chosen = matching[0] if matching else FALLBACK_RULE
    if pg_type:
        chosen = next((rule for rule in matching if _same_type(rule.pg_type(column), pg_type)), chosen)
    return replace(chosen, to_staging=chosen.to_staging_for(column)) if chosen.to_staging_for else chosen


def read_expression(rule: CastRule, quoted_column: str, column: MySQLColumn) -> str:
    return rule.read.format(col=quoted_column, width=column.numeric_precision or 64,
                            factor=10 ** (column.numeric_scale or 0))


def converted_expression(rule: CastRule, quoted_column: str) -> str | None:
    return rule.converted.format(col=quoted_column) if rule.converted else None


def converted_is_null(rule: CastRule, column: MySQLColumn) -> bool:
    """Whether a converted value is exactly a NULL in a column MySQL declares NOT NULL (a zero date there): then
    MySQL is not asked for the flag, which is the value's being NULL (a tenth of a load's CPU on the demo's
    orders, three such columns)."""
    return bool(rule.converted) and rule.converted_as.endswith("→ NULL") and not column.nullable


def invalid_expression(rule: CastRule, quoted_column: str) -> str | None:
    return rule.invalid.format(col=quoted_column) if rule.invalid else None


def rules_markdown() -> str:
    """The casting table as the README shows it (a test keeps the two equal)."""
    lines = ["| rule (MySQL → PostgreSQL) | notes |", "| --- | --- |"]
    lines += [f"| {rule.name} | {rule.note} |" for rule in (*CASTING_RULES, FALLBACK_RULE)]
    return "\n".join(lines)
