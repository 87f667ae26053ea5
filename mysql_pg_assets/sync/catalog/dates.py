"""Dates read as the integers MySQL makes of them, and made dates again in polars.

A DATE, DATETIME or TIMESTAMP column is read through ``casting.ZERO_DATE_TO_NULL``
(``IF(DAYOFYEAR(c), c, NULL)``): connectorx cannot carry a zero date, so MySQL makes it NULL, and a
nullable column's flag (``casting.ZERO_DATE``) says it did. Both cost MariaDB: for the 5M demo orders'
three such columns, 2.53 CPU-s against 1.74 for the bare columns (a tenth of what MariaDB spends on the
whole load), on a server that shares the machine's two cores with the load and PostgreSQL.

Where the whole second is the value (a DATE; a DATETIME or TIMESTAMP without fractional seconds), the read
is ``CAST(c AS SIGNED)`` instead: YYYYMMDD or YYYYMMDDhhmmss, zero dates included ('0000-00-00' is 0,
'2024-00-10' is 20240010), at the cost of the bare column (1.75 CPU-s; connectorx spends less on an
integer than on a date). :func:`unpacked` makes the integer a date again, and NULL where no calendar has
it: a zero date, and a date MySQL's ALLOW_INVALID_DATES let in ('2024-02-31'), which DAYOFYEAR passes
(it counts on into March) and connectorx then fails the whole read on. Each is counted as a zero date
made NULL, its flag computed here (``transform``).

Columns that steer a read keep the server-side form, so that MySQL and the load agree on which values
are NULL: the key a read pages by (its last value is given back to MySQL), the partition column (a zero
date belongs to the first partition, ``extract.window_sql``) and the cursor.
"""

from __future__ import annotations

import polars as pl

from mysql_pg_assets.sync.catalog.casting import ZERO_DATE_TO_NULL, CastRule, MySQLColumn

PACKED_DATE = "CAST({col} AS SIGNED)"
_EPOCH_DAYS = 719_468  # days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar


def reads_packed(rule: CastRule, column: MySQLColumn) -> bool:
    """Whether the column's values are whole seconds (or days) that its rule reads as MySQL holds them."""
    if rule.read != ZERO_DATE_TO_NULL:
        return False
    return rule.kind == "date" or rule.kind in ("datetime", "timestamp") and not column.datetime_precision


def _parts(packed: pl.Expr, with_time: bool) -> tuple[pl.Expr, ...]:
    day = packed // 1_000_000 if with_time else packed
    parts: tuple[pl.Expr, ...] = (day // 10_000, day // 100 % 100, day % 100)
    if with_time:
        clock = packed % 1_000_000
        parts += (clock // 10_000, clock // 100 % 100, clock % 100)
    return parts


def unpacked_valid(packed: pl.Expr, with_time: bool) -> pl.Expr:
    """A packed date whose every value is a day of the calendar, as a polars Date (or a naive Datetime in
    microseconds, ``with_time``): polars' constructor, which fails the whole frame on any other value (then
    :func:`unpacked`). A third of the CPU of :func:`unpacked`."""
    parts = _parts(packed, with_time)
    return pl.datetime(*parts, time_unit="us") if with_time else pl.date(*parts)


def unpacked(packed: pl.Expr, with_time: bool) -> pl.Expr:
    """A packed date (YYYYMMDD, or YYYYMMDDhhmmss ``with_time``) as a polars Date (or a naive Datetime in
    microseconds), NULL where it is no day of the calendar (a zero month or day, a 31st of February). Days from
    the civil date as in H. Hinnant's ``days_from_civil``, years 0 to 9999 as MySQL has them."""
    year, month, dom, *clock = _parts(packed, with_time)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (pl.when(month == 2).then(28 + leap.cast(pl.Int64))
                  .when(month.is_in([4, 6, 9, 11])).then(30).otherwise(31))
    valid = (month >= 1) & (month <= 12) & (dom >= 1) & (dom <= month_days)
    march_year = year - (month <= 2).cast(pl.Int64)
    era = march_year // 400  # floor: year 0's January and February belong to era -1
    of_era = march_year - era * 400
    of_year = (153 * ((month + 9) % 12) + 2) // 5 + dom - 1
    days = era * 146_097 + of_era * 365 + of_era // 4 - of_era // 100 + of_year - _EPOCH_DAYS
    if not with_time:
        return pl.when(valid).then(days).cast(pl.Int32).cast(pl.Date)
    hour, minute, second = clock
    valid = valid & (hour < 24) & (minute < 60) & (second < 60)
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second
    return pl.when(valid).then(seconds * 1_000_000).cast(pl.Datetime("us"))
