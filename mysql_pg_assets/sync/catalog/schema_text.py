"""MySQL's information_schema text, read: an ENUM's or SET's members, and a column's default as a PostgreSQL
default (``discover`` plans with both; change capture reads members too)."""

from __future__ import annotations

import re

from mysql_pg_assets.core.sql import pg_literal
from mysql_pg_assets.sync.catalog.casting import MySQLColumn

_MEMBER_ESCAPES = {"\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\0": "\x00", "\\t": "\t", "\\Z": "\x1a", "''": "'"}


def enum_values(column_type: str) -> list[str]:
    """The members of ``enum('a','it''s','a\\nb')``, unquoted and unescaped as MySQL wrote them.

    information_schema shows members in utf8mb3: a character beyond the BMP comes back as '?',
    so these are good for a CHECK only when none holds a '?' (see ``ColumnPlan.allowed_values``).
    """
    body = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    members = re.findall(r"'((?:[^'\\]|''|\\.)*)'", body)
    return [re.sub(r"\\\\|\\n|\\r|\\0|\\t|\\Z|''", lambda m: _MEMBER_ESCAPES[m.group(0)], m) for m in members]


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NOW = re.compile(r"^(current_timestamp|now)(\(\d*\))?$", re.I)
_NUMERIC_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
_TEXT_TYPES_PG = ("text", "varchar", "character varying", "char", "character")


def pg_default(column: MySQLColumn, pg_type: str) -> str | None:
    """The column's MySQL default as a PostgreSQL default expression, where PostgreSQL can say it.

    MariaDB quotes literal string defaults in information_schema ('abc'); MySQL 8 does not and
    marks expressions with DEFAULT_GENERATED. Expressions other than CURRENT_TIMESTAMP, zero
    dates and defaults of binary, JSON and bit columns are not carried over.
    """
    raw = column.default
    if raw is None or raw.upper() == "NULL" or column.auto_increment:
        return None
    target = pg_type.lower().split("(")[0].strip()
    if _NOW.match(raw):
        return {"timestamptz": "CURRENT_TIMESTAMP", "timestamp": "LOCALTIMESTAMP", "date": "CURRENT_DATE"}.get(target)
    quoted = len(raw) >= 2 and raw[0] == raw[-1] == "'"
    if not quoted and "default_generated" in column.extra.lower():
        return None
    value = raw[1:-1].replace("''", "'").replace("\\\\", "\\") if quoted else raw
    if target == "boolean":
        return {"0": "false", "1": "true", "b'0'": "false", "b'1'": "true"}.get(value)
    if target in _NUMERIC_TYPES:
        return value if _NUMBER.match(value) else None
    if target in _TEXT_TYPES_PG:
        return pg_literal(value) if quoted or not value.endswith(")") else None
    if target in ("date", "timestamp", "timestamptz", "interval"):
        return None if value.startswith("0000-00-00") or "-00" in value[:10] else pg_literal(value)
    if target == "text[]":
        return pg_literal("{" + ",".join('"' + m.replace('"', '\\"') + '"' for m in value.split(",") if m) + "}")
    return None
