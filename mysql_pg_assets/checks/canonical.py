"""One text for one value, written alike by MySQL and PostgreSQL: what the checksum compares.

The checksum (``parity.fingerprints``) hashes each row's text inside each database, so both must
render a value identically, and render it as the mapping promises it arrives: a zero date is NULL,
a TINYINT(1) of 5 is true, a ZEROFILL 00042 is 42, NUL bytes are gone from text. :data:`CANONICAL`
is that decision, as data: per kind of value (``CastRule.kind``), the MySQL and the PostgreSQL
expression (``{m}`` and ``{p}`` stand for the quoted column). Each pair was checked equal on edge
values and hundreds of thousands of random ones.

- Floats: naive text differs (``1e20`` / ``1e+20``; PostgreSQL does not always print the shortest
  digits), so a double is written exactly as sign, integer mantissa and binary exponent
  (``7205759403792794p-4`` for 0.1), from arithmetic by powers of two, which is exact on both sides.
- TIMESTAMP: microseconds since the epoch, which no session time zone can shift.
- TIME: microseconds, signed (``-838:59:59`` … ``838:59:59``).
- Binary and spatial values: their MD5, so a row's text stays small.
- JSON: its kind and top-level size (``object:3``). An exact canonical form of JSON text costs
  40–80 µs a document in PostgreSQL (minutes per million rows, on every load); JSON values are
  compared exactly, value by value, by the sampled-rows check instead.

A column whose PostgreSQL type was overridden in the spec is not comparable as text and is left
out (the checks name it); its rows are still counted.
"""

from __future__ import annotations

from mysql_pg_assets.sync.catalog.plans import ColumnPlan

# Sign, integer mantissa in [2^52, 2^53) and binary exponent of a non-zero double x: with
# e = floor(log2|x|) clamped to the double range and corrected by one where log2 rounds, m = |x|/2^e
# lies in [1, 2) and m * 2^52 is an exact integer. Written once per dialect, x substituted.
_MYSQL_E = "GREATEST(LEAST(FLOOR(LOG2(ABS({x}))), 1023), -1074)"
_MYSQL_M = f"(ABS({{x}}) / POW(2, {_MYSQL_E}))"
_MYSQL_DOUBLE = (
    "CASE WHEN {x} = 0 THEN '0' ELSE CONCAT(IF({x} < 0, '-', ''), "
    f"CAST({_MYSQL_M} * POW(2, 52 - ({_MYSQL_M} >= 2) + ({_MYSQL_M} < 1)) AS UNSIGNED), 'p', "
    f"CAST({_MYSQL_E} + ({_MYSQL_M} >= 2) - ({_MYSQL_M} < 1) AS SIGNED)) END"
)
_PG_E = "greatest(least(floor(ln(abs({x})) / ln(2::float8)), 1023), -1074)"
_PG_M = f"(abs({{x}}) / power(2::float8, {_PG_E}))"
_PG_DOUBLE = (
    "CASE WHEN {x} = 0 THEN '0' ELSE CASE WHEN {x} < 0 THEN '-' ELSE '' END || "
    f"({_PG_M} * power(2::float8, 52 - ({_PG_M} >= 2)::int + ({_PG_M} < 1)::int))::bigint::text || 'p' || "
    f"({_PG_E} + ({_PG_M} >= 2)::int - ({_PG_M} < 1)::int)::int::text END"
)

# A day of the calendar: not a zero date, nor one ALLOW_INVALID_DATES let in ('2024-02-31'), which the load makes
# NULL (``catalog.dates``); LAST_DAY is NULL for a zero month, DAYOFMONTH 0 for a zero day.
_MYSQL_VALID_DATE = "DAYOFMONTH({m}) BETWEEN 1 AND DAYOFMONTH(LAST_DAY({m}))"
# MySQL's year 0 is PostgreSQL's 1 BC: written 0000 on both sides.
_PG_YEAR_ZERO = "CASE WHEN {p} < '0001-01-01' THEN '0000' || to_char({p}, '{rest}') ELSE to_char({p}, 'YYYY{rest}') END"
_PG_JSON_SIZE = ("CASE jsonb_typeof({p}) WHEN 'object' THEN (SELECT count(*) FROM jsonb_object_keys({p}))::text "
                 "WHEN 'array' THEN jsonb_array_length({p})::text ELSE '1' END")
_MYSQL_JSON_KIND = ("CASE JSON_TYPE({m}) WHEN 'OBJECT' THEN 'object' WHEN 'ARRAY' THEN 'array' WHEN 'STRING' THEN "
                    "'string' WHEN 'BOOLEAN' THEN 'boolean' WHEN 'NULL' THEN 'null' ELSE 'number' END")

CANONICAL: dict[str, tuple[str, str]] = {
    "boolean": ("IF({m} <> 0, '1', '0')", "CASE WHEN {p} THEN '1' ELSE '0' END"),
    "integer": ("CAST({m} + 0 AS CHAR)", "{p}::text"),  # + 0: ZEROFILL and YEAR as plain numbers
    "decimal": ("CAST({m} AS CHAR)", "{p}::text"),
    "float": (_MYSQL_DOUBLE.replace("{x}", "CAST({m} AS DOUBLE)"), _PG_DOUBLE.replace("{x}", "{p}::float8")),
    "double": (_MYSQL_DOUBLE.replace("{x}", "{m}"), _PG_DOUBLE.replace("{x}", "{p}")),
    "bit": ("LPAD(BIN({m} + 0), {width}, '0')", "{p}::text"),
    "string": ("REPLACE(CONVERT({m} USING utf8mb4), CHAR(0 USING utf8mb4), '')", "{p}"),
    # NUL is removed from a SET's text as from any text (a member may hold one): on the MySQL side too.
    "set": ("REPLACE(CONVERT({m} USING utf8mb4), CHAR(0 USING utf8mb4), '')", "array_to_string({p}, ',')"),
    "json": (f"CONCAT({_MYSQL_JSON_KIND}, ':', JSON_LENGTH({{m}}))", f"jsonb_typeof({{p}}) || ':' || {_PG_JSON_SIZE}"),
    "binary": ("MD5({m})", "md5({p})"),
    "spatial": ("MD5(ST_AsBinary({m}))", "md5({p})"),
    "date": (f"CASE WHEN {_MYSQL_VALID_DATE} THEN DATE_FORMAT({{m}}, '%Y-%m-%d') END",
             _PG_YEAR_ZERO.replace("{rest}", "-MM-DD")),
    "datetime": (f"CASE WHEN {_MYSQL_VALID_DATE} THEN DATE_FORMAT({{m}}, '%Y-%m-%d %H:%i:%s.%f') END",
                 _PG_YEAR_ZERO.replace("{rest}", "-MM-DD HH24:MI:SS.US")),
    "timestamp": ("CASE WHEN UNIX_TIMESTAMP({m}) > 0 THEN CAST(CAST(UNIX_TIMESTAMP({m}) * 1000000 AS SIGNED) AS CHAR)"
                  " END", "(extract(epoch FROM {p}) * 1000000)::bigint::text"),
    "time": ("CAST(CAST(TIME_TO_SEC({m}) * 1000000 AS SIGNED) AS CHAR)",
             "(extract(epoch FROM {p}) * 1000000)::bigint::text"),
    "other": ("CONVERT(CAST({m} AS CHAR) USING utf8mb4)", "{p}::text"),
}


def comparable(column: ColumnPlan) -> bool:
    """Whether both sides can write the column alike: not when the spec overrode its PostgreSQL type, nor
    when a transform masked, derived or changed it."""
    return column.comparable and column.pg_type == column.rule.pg_type(column.source) and column.rule.kind in CANONICAL


def mysql_text(column: ColumnPlan, quoted: str) -> str:
    template = CANONICAL[column.rule.kind][0]
    return template.replace("{width}", str(column.source.numeric_precision or 64)).replace("{m}", quoted)


def pg_text(column: ColumnPlan, quoted: str) -> str:
    return CANONICAL[column.rule.kind][1].replace("{p}", quoted)
