"""What MySQL has, mapped to PostgreSQL: the spec resolved against ``information_schema``.

The catalog is read once per process (a code location load or a run), in three queries for the
whole database whatever its number of tables. The result, a :class:`TablePlan` per synced
table, is everything the later stages need: which columns to read and how, what the
PostgreSQL table looks like, which key the load merges on.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pymysql

from mysql_pg_assets.casting import CastRule, MySQLColumn, rule_for
from mysql_pg_assets.settings import DatabaseUrl, redact
from mysql_pg_assets.spec import SpecError, SyncSpec, TableOverride


class SourceUnavailable(RuntimeError):
    """MySQL could not be reached or queried; the message never holds the password."""


@dataclass(frozen=True)
class ColumnPlan:
    source: MySQLColumn
    target_name: str
    pg_type: str
    rule: CastRule

    @property
    def nullable(self) -> bool:
        return self.source.nullable


@dataclass(frozen=True)
class TablePlan:
    source_database: str
    source_table: str
    target_schema: str
    target_table: str
    columns: tuple[ColumnPlan, ...]
    primary_key: tuple[str, ...]  # target column names; empty: the table has no key
    cursor_column: str | None

    @property
    def asset_name(self) -> str:
        return dagster_safe_name(self.target_table)

    @property
    def source_label(self) -> str:
        return f"{self.source_database}.{self.source_table}"

    @property
    def target_label(self) -> str:
        return f"{self.target_schema}.{self.target_table}"


@dataclass(frozen=True)
class Catalog:
    source_database: str
    target_schema: str
    tables: tuple[TablePlan, ...]


def dagster_safe_name(name: str) -> str:
    """Dagster names allow only letters, digits and underscores; anything else becomes '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "_"


@contextmanager
def mysql_connection(url: DatabaseUrl, database: str | None = None) -> Iterator[pymysql.Connection]:
    try:
        connection = pymysql.connect(
            host=url.host, port=url.port, user=url.user, password=url.password,
            database=database if database is not None else url.database or None,
            charset="utf8mb4", connect_timeout=10, autocommit=True,
        )
    except pymysql.MySQLError as exc:
        raise SourceUnavailable(f"cannot connect to MySQL at {url}: {redact(str(exc))}") from None
    try:
        yield connection
    finally:
        connection.close()


_COLUMNS_SQL = """
SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE,
       NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION,
       CHARACTER_SET_NAME, EXTRA
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = %s
ORDER BY TABLE_NAME, ORDINAL_POSITION
"""

_TABLES_SQL = """
SELECT TABLE_NAME FROM information_schema.TABLES
WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""

_PRIMARY_KEYS_SQL = """
SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = %s AND INDEX_NAME = 'PRIMARY'
ORDER BY TABLE_NAME, SEQ_IN_INDEX
"""

# MariaDB stores JSON as LONGTEXT guarded by CHECK (json_valid(`col`)); MySQL 8 reports 'json'
# directly and has no TABLE_NAME in this view, so the query failing there is expected.
_MARIADB_JSON_SQL = """
SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = %s AND CHECK_CLAUSE LIKE 'json_valid(%%'
"""
_JSON_VALID = re.compile(r"^json_valid\(`((?:[^`]|``)+)`\)$", re.I)


def _read_information_schema(url: DatabaseUrl, database: str) -> tuple[
    list[str], dict[str, list[MySQLColumn]], dict[str, list[str]]
]:
    with mysql_connection(url, database="information_schema") as connection, connection.cursor() as cur:
        try:
            cur.execute(_TABLES_SQL, (database,))
            tables = sorted(row[0] for row in cur.fetchall())
            json_columns: set[tuple[str, str]] = set()
            try:
                cur.execute(_MARIADB_JSON_SQL, (database,))
                for table, clause in cur.fetchall():
                    match = _JSON_VALID.match(clause.strip())
                    if match:
                        json_columns.add((table, match.group(1).replace("``", "`")))
            except pymysql.MySQLError:
                pass
            cur.execute(_COLUMNS_SQL, (database,))
            columns: dict[str, list[MySQLColumn]] = defaultdict(list)
            for (table, name, position, data_type, column_type, is_nullable, precision, scale,
                 char_length, dt_precision, charset, extra) in cur.fetchall():
                if (table, name) in json_columns:
                    data_type = column_type = "json"
                columns[table].append(MySQLColumn(
                    name=name, position=int(position), data_type=data_type.lower(),
                    column_type=column_type, nullable=is_nullable == "YES",
                    numeric_precision=precision, numeric_scale=scale, char_length=char_length,
                    datetime_precision=dt_precision, charset=charset, extra=extra or "",
                ))
            cur.execute(_PRIMARY_KEYS_SQL, (database,))
            primary_keys: dict[str, list[str]] = defaultdict(list)
            for table, column in cur.fetchall():
                primary_keys[table].append(column)
        except pymysql.MySQLError as exc:
            raise SourceUnavailable(f"reading information_schema for {database!r}: {redact(str(exc))}") from None
    return tables, columns, primary_keys


def select_tables(spec: SyncSpec, base_tables: list[str]) -> list[str]:
    def matches(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    selected = [t for t in base_tables if matches(t, spec.include) and not matches(t, spec.exclude)]
    unknown = sorted(set(spec.tables) - set(selected))
    if unknown:
        raise SpecError(
            f"tables: {', '.join(unknown)} configured but not among the synced base tables "
            f"({', '.join(selected) or 'none'})"
        )
    return selected


def plan_table(
    database: str, schema: str, table: str, columns: list[MySQLColumn], primary_key: list[str],
    override: TableOverride,
) -> TablePlan:
    where = f"tables.{table}"
    known = {c.name for c in columns}
    for name in override.columns:
        if name not in known:
            raise SpecError(f"{where}.columns.{name}: no such column in MySQL table {database}.{table}")
    plans = []
    for column in columns:
        column_override = override.columns.get(column.name)
        rule = rule_for(column)
        plans.append(ColumnPlan(
            source=column,
            target_name=(column_override and column_override.rename) or column.name,
            pg_type=(column_override and column_override.pg_type) or rule.pg_type(column),
            rule=rule,
        ))
    _reject_collisions(where, [p.target_name for p in plans], "column")
    by_source = {p.source.name: p.target_name for p in plans}
    for option, names in (("primary_key", override.primary_key or []),
                          ("cursor_column", [override.cursor_column] if override.cursor_column else [])):
        for name in names:
            if name not in by_source:
                raise SpecError(f"{where}.{option}: no column {name!r} in MySQL table {database}.{table}")
    key = override.primary_key or primary_key
    return TablePlan(
        source_database=database, source_table=table, target_schema=schema,
        target_table=override.rename or table, columns=tuple(plans),
        primary_key=tuple(by_source[name] for name in key),
        cursor_column=by_source[override.cursor_column] if override.cursor_column else None,
    )


def _reject_collisions(where: str, names: list[str], kind: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        folded = name.lower() if kind == "asset" else name
        if folded in seen:
            raise SpecError(f"{where}: {kind} names {seen[folded]!r} and {name!r} collide in PostgreSQL")
        seen[folded] = name


def discover(spec: SyncSpec, mysql_url: DatabaseUrl) -> Catalog:
    database = spec.source.database or mysql_url.database
    if not database:
        raise SpecError("source.database: not set, and MYSQL_URL names no database")
    schema = spec.target.schema_name or database
    base_tables, columns, primary_keys = _read_information_schema(mysql_url, database)
    tables = tuple(
        plan_table(database, schema, table, columns[table], primary_keys.get(table, []),
                   spec.tables.get(table, TableOverride()))
        for table in select_tables(spec, base_tables)
    )
    _reject_collisions("tables", [t.target_table for t in tables], "table")
    _reject_collisions("tables", [t.asset_name for t in tables], "asset")
    return Catalog(source_database=database, target_schema=schema, tables=tables)
