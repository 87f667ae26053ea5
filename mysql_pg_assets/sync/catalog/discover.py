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
from dataclasses import dataclass, field, replace

import pymysql

from mysql_pg_assets.core.connections import SourceUnavailable, explain, mysql_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_fit_name
from mysql_pg_assets.sync.catalog.casting import MySQLColumn, rule_for
from mysql_pg_assets.sync.catalog.grants import (
    Access,
    column_grant_error,
    read_access,
    unreadable,
    warn_table_level_only,
)
from mysql_pg_assets.sync.catalog.lineage import attach_foreign_keys
from mysql_pg_assets.sync.catalog.plans import (
    CURSOR_TYPES,
    TEMPORAL_TYPES,
    TOMBSTONE_COLUMN,
    Catalog,
    ColumnPlan,
    IndexPlan,
    PartitionPlan,
    TablePlan,
)
from mysql_pg_assets.sync.catalog.schema_text import enum_values, pg_default
from mysql_pg_assets.sync.catalog.transforms import apply_transforms
from mysql_pg_assets.sync.spec import ColumnOverride, Options, SpecError, SyncSpec, TableOverride

_COLUMNS_SQL = """
SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE,
       NUMERIC_PRECISION, NUMERIC_SCALE, CHARACTER_MAXIMUM_LENGTH, DATETIME_PRECISION,
       CHARACTER_SET_NAME, COLLATION_NAME, EXTRA, COLUMN_DEFAULT
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = %s
ORDER BY TABLE_NAME, ORDINAL_POSITION
"""

_TABLES_SQL = """
SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES
WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'
ORDER BY TABLE_NAME
"""

_FOREIGN_KEYS_SQL = """
SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME,
       r.DELETE_RULE, r.UPDATE_RULE
FROM information_schema.KEY_COLUMN_USAGE k
JOIN information_schema.REFERENTIAL_CONSTRAINTS r
  ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME
 AND r.TABLE_NAME = k.TABLE_NAME
WHERE k.TABLE_SCHEMA = %s AND k.REFERENCED_TABLE_SCHEMA = %s AND k.REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION
"""

_INDEXES_SQL = """
SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, INDEX_TYPE, SUB_PART FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = %s
ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""

# MariaDB stores JSON as LONGTEXT guarded by CHECK (json_valid(`col`)); MySQL 8 reports 'json'
# directly and has no TABLE_NAME in this view, so the query failing there is expected.
_MARIADB_JSON_SQL = """
SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = %s AND CHECK_CLAUSE LIKE 'json_valid(%'
"""
_JSON_VALID = re.compile(r"^json_valid\(`((?:[^`]|``)+)`\)$", re.I)


@dataclass(frozen=True)
class Index:
    name: str
    columns: list[str]
    unique: bool
    kind: str
    prefixes: list[int | None] = field(default_factory=list)  # SUB_PART per column: a prefix of it is indexed


@dataclass(frozen=True)
class _ForeignKey:
    name: str
    columns: list[str]
    referenced_table: str
    referenced_columns: list[str]
    on_delete: str
    on_update: str


@dataclass(frozen=True)
class _Schema:
    """information_schema for one database, read in a handful of queries."""

    tables: list[str]
    columns: dict[str, list[MySQLColumn]]
    indexes: dict[str, dict[str, Index]]
    foreign_keys: dict[str, dict[str, _ForeignKey]]
    engines: dict[str, str]  # table → its storage engine (InnoDB, MyISAM, …)


def _read_information_schema(cur: pymysql.cursors.Cursor, database: str) -> _Schema:
    cur.execute(_TABLES_SQL, (database,))
    engines = {row[0]: row[1] or "" for row in cur.fetchall()}
    tables = sorted(engines)
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
         char_length, dt_precision, charset, collation, extra, default) in cur.fetchall():
        if (table, name) in json_columns:
            data_type = column_type = "json"
        columns[table].append(MySQLColumn(
            name=name, position=int(position), data_type=data_type.lower(),
            column_type=column_type, nullable=is_nullable == "YES",
            numeric_precision=precision, numeric_scale=scale, char_length=char_length,
            datetime_precision=dt_precision, charset=charset, collation=collation, extra=extra or "",
            default=default,
        ))
    cur.execute(_INDEXES_SQL, (database,))
    indexes: dict[str, dict[str, Index]] = defaultdict(dict)
    for table, index, non_unique, column, kind, prefix in cur.fetchall():
        entry = indexes[table].setdefault(index, Index(index, [], not int(non_unique), kind.upper()))
        entry.columns.append(column)
        entry.prefixes.append(int(prefix) if prefix is not None else None)
    cur.execute(_FOREIGN_KEYS_SQL, (database, database))
    foreign_keys: dict[str, dict[str, _ForeignKey]] = defaultdict(dict)
    for table, name, column, referenced, referenced_column, on_delete, on_update in cur.fetchall():
        key = foreign_keys[table].setdefault(name, _ForeignKey(name, [], referenced, [], on_delete, on_update))
        key.columns.append(column)
        key.referenced_columns.append(referenced_column)
    return _Schema(tables, columns, indexes, foreign_keys, engines)


def _listing(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def select_tables(spec: SyncSpec, base_tables: list[str], database: str, access: Access | None = None,
                  missing_ok: bool = False) -> list[str]:
    """The base tables ``include`` and ``exclude`` select. A literal name that is not there, a selection
    that is empty, or a ``tables`` entry for a table not selected is an error: a typo, or a table the
    MySQL user may not see (``access`` names it and the grant)."""
    def matches(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    selected = [t for t in base_tables if matches(t, spec.include) and not matches(t, spec.exclude)]
    if missing_ok:
        return selected
    who = f"MySQL user {access.user}" if access else "the MySQL user"
    hint = f" (its tables: {_listing(base_tables)})"
    absent = [p for p in spec.include if not any(c in p for c in "*?[") and p not in base_tables]
    if absent:
        grant = f"; if it exists, run {access.grant(database, absent[0])}" if access else ""
        raise SpecError(f"include: no base table {', '.join(map(repr, absent))} in database {database} that "
                        f"{who} may see{grant}{hint}")
    if not selected:
        raise SpecError(f"include: {spec.include} (exclude: {spec.exclude}) selects no base table of database "
                        f"{database} that {who} may see{hint}")
    unknown = sorted(set(spec.tables) - set(selected))
    if unknown:
        raise SpecError(f"tables: {', '.join(unknown)} configured but not among the synced base tables of "
                        f"{database} ({_listing(selected)}): misspelled, excluded, or not visible to {who}")
    return selected


_SYSTEM_SCHEMAS = {"information_schema", "mysql", "performance_schema", "sys"}


def _check_database(cur: pymysql.cursors.Cursor, url: DatabaseUrl, database: str) -> None:
    cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
    names = [row[0] for row in cur.fetchall()]
    if database not in names:
        visible = [n for n in names if n not in _SYSTEM_SCHEMAS]
        raise SpecError(f"source.database: MySQL at {url} has no database {database!r} that its user may see "
                        f"(databases it may see: {_listing(visible)}); set source.database in the sync spec, or "
                        f"the database in MYSQL_URL")


def _visible_columns(tables: list[str], found: _Schema, spec: SyncSpec, access: Access, refused: dict[str, str],
                     database: str) -> None:
    for table in tables:
        if table in refused and not spec.tables.get(table, TableOverride()).visible_columns_only:
            raise column_grant_error(access, database, table, [c.name for c in found.columns[table]], refused[table])


def snake_case(name: str) -> str:
    """'OrderDate' → 'order_date', 'Order Details' → 'order_details', 'HTTPCode' → 'http_code'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^\w]+|_+", "_", spaced).strip("_").lower() or name


def _type_override(column: MySQLColumn, options: Options) -> str | None:
    for cast in options.casts:
        pattern = cast.match.lower()
        if fnmatch.fnmatchcase(column.column_type.lower(), pattern) or pattern == column.data_type:
            return cast.pg_type
    return None


def _plan_column(column: MySQLColumn, override: ColumnOverride | None, options: Options) -> ColumnPlan:
    chosen_type = (override and override.pg_type) or _type_override(column, options)
    rule = rule_for(column, chosen_type)
    pg_type = chosen_type or rule.pg_type(column)
    default_name = pg_fit_name(snake_case(column.name) if options.naming == "snake_case" else column.name)
    name = (override and override.rename) or default_name
    is_enum_text = column.data_type == "enum" and pg_type == "text"
    members = enum_values(column.column_type) if is_enum_text else []
    # A '?' may stand for a member information_schema could not show (beyond the BMP), and a
    # member with NUL loses it on the way: no CHECK can be trusted for such a list.
    checkable = is_enum_text and options.enum_check and not any("?" in m or "\x00" in m for m in members)
    return ColumnPlan(
        source=column, target_name=name, pg_type=pg_type, rule=rule,
        default_sql=pg_default(column, pg_type),
        identity=column.auto_increment and pg_type in ("smallint", "integer", "bigint"),
        allowed_values=tuple(members) if checkable else None,
    )


def _page_index(indexes: dict[str, Index], columns: list[MySQLColumn], override: TableOverride) -> list[str]:
    """The columns a read of the whole table may page by (``extract.page_key``): MySQL's primary key, else its
    first unique index of NOT NULL columns (InnoDB's clustered index of a table without a key), in the index's
    order; an index of a column's prefix orders nothing, nor does a hash. Nothing where the spec declares the
    key: that also reads a table in one statement, on purpose."""
    if override.primary_key:
        return []
    nullable = {c.name for c in columns if c.nullable}
    unique = sorted((i for n, i in indexes.items() if n != "PRIMARY" and i.unique), key=lambda i: i.name)
    for index in [i for i in [indexes.get("PRIMARY")] if i is not None] + unique:
        if index.kind == "BTREE" and not nullable & set(index.columns) and not any(index.prefixes):
            return index.columns
    return []


def plan_table(
    database: str, schema: str, table: str, columns: list[MySQLColumn], indexes: dict[str, Index],
    override: TableOverride, options: Options, engine: str = "InnoDB",
) -> TablePlan:
    where = f"tables.{table}"
    known = {c.name for c in columns}
    for name in override.columns:
        if name not in known:
            raise SpecError(f"{where}.columns.{name}: no such column in MySQL table {database}.{table}")
    plans = [_plan_column(c, override.columns.get(c.name), options) for c in columns]
    _reject_collisions(where, [(p.source.name, p.target_name) for p in plans], "column")
    by_source = {p.source.name: p.target_name for p in plans}
    partition_source = override.partition.column if override.partition else None
    for option, names in (("primary_key", override.primary_key or []),
                          ("cursor_column", [override.cursor_column] if override.cursor_column else []),
                          ("partition.column", [partition_source] if partition_source else [])):
        for name in names:
            if name not in by_source:
                raise SpecError(f"{where}.{option}: no column {name!r} in MySQL table {database}.{table}")
    data_types = {c.name: c.data_type for c in columns}
    if partition_source and data_types[partition_source] not in TEMPORAL_TYPES:
        raise SpecError(f"{where}.partition.column: {partition_source!r} is {data_types[partition_source]}; "
                        f"time partitions need a DATE, DATETIME or TIMESTAMP column")
    if override.cursor_column and data_types[override.cursor_column] not in CURSOR_TYPES:
        raise SpecError(f"{where}.cursor_column: {override.cursor_column!r} is {data_types[override.cursor_column]};"
                        f" a cursor must be an integer, DATE, DATETIME or TIMESTAMP column")
    if override.mode == "cdc" and not (override.primary_key or "PRIMARY" in indexes):
        raise SpecError(f"{where}.mode: change capture applies changes by primary key, which the table lacks "
                        f"(give one with primary_key)")
    if override.deletes == "tombstone" and not (override.primary_key or "PRIMARY" in indexes):
        raise SpecError(f"{where}.deletes: tombstones need a primary key to recognise a row")
    if override.deletes == "tombstone" and TOMBSTONE_COLUMN in by_source.values():
        raise SpecError(f"{where}.deletes: tombstones need a column {TOMBSTONE_COLUMN!r}, which the table has")
    primary = indexes.get("PRIMARY")
    key = override.primary_key or (primary.columns if primary else [])
    page_by = _page_index(indexes, columns, override)
    secondary = _indexes(indexes, by_source, options.indexes,
                         by_source[override.partition.column] if override.partition else None)
    target_table = override.rename or pg_fit_name(snake_case(table) if options.naming == "snake_case" else table)
    plan = TablePlan(
        source_database=database, source_table=table, target_schema=schema,
        target_table=target_table, columns=tuple(plans),
        primary_key=tuple(by_source[name] for name in key),
        page_by=tuple(by_source[name] for name in page_by),
        page_by_clustered=engine.lower() == "innodb" and primary is not None and page_by == primary.columns,
        cursor_column=by_source[override.cursor_column] if override.cursor_column else None,
        indexes=secondary,
        partition=PartitionPlan(
            by_source[override.partition.column], override.partition.column, override.partition.granularity,
            override.partition.start, override.partition.end_offset,
        ) if override.partition else None,
        tombstones=override.deletes == "tombstone", cdc=override.mode == "cdc",
        blue_green=(override.schema_change or options.schema_change) == "blue_green",
        full_reload=override.full_reload or options.full_reload,
        freshness=override.freshness or options.freshness,
        checks=override.checks.over(options.checks),
    )
    return apply_transforms(plan, override, options, columns)


def _indexes(indexes: dict[str, Index], by_source: dict[str, str], mysql_indexes: bool, partition: str | None
             ) -> tuple[IndexPlan, ...]:
    """MySQL's secondary indexes (option indexes), and one on the partition column when none starts with it:
    every partition's load deletes, and its checks count, by a range of that column, which PostgreSQL would
    otherwise read the whole table for (a day of the 5M demo orders loaded in 0.95 s, with the index 0.28)."""
    secondary = tuple(
        IndexPlan(index.name, tuple(by_source[c] for c in index.columns), index.unique)
        for index in indexes.values()
        if mysql_indexes and index.name != "PRIMARY" and index.kind == "BTREE"
    )
    if partition and not any(i.columns[0] == partition for i in secondary):
        secondary += (IndexPlan(f"partition_{partition}", (partition,), False),)
    return secondary


def _reject_collisions(where: str, names: list[tuple[str, str]], kind: str) -> None:
    """Fail when two MySQL names map to one PostgreSQL (or, for assets, one case-folded) name."""
    seen: dict[str, str] = {}
    for source, target in names:
        folded = target.lower() if kind == "asset" else target
        if folded in seen:
            raise SpecError(f"{where}: {kind}s {seen[folded]!r} and {source!r} would both be named {target!r}")
        seen[folded] = source


def discover(spec: SyncSpec, mysql_url: DatabaseUrl, missing_ok: bool = False) -> Catalog:
    """The spec resolved against MySQL; ``missing_ok``: a configured table gone from MySQL is left out
    instead of failing (for sensors comparing against tables that were there at load time)."""
    database = spec.source.database or mysql_url.database
    if not database:
        raise SpecError("source.database: not set, and MYSQL_URL names no database")
    schema = spec.target.schema_name or pg_fit_name(database)
    with mysql_connection(mysql_url, database="information_schema") as connection, connection.cursor() as cur:
        try:
            _check_database(cur, mysql_url, database)
            cur.execute("SELECT VERSION()")
            server = "mariadb" if "mariadb" in cur.fetchone()[0].lower() else "mysql"
            access = read_access(cur, database)
            found = _read_information_schema(cur, database)
            selected = select_tables(spec, found.tables, database, access, missing_ok)
            refused = unreadable(cur, database, selected, access)
        except pymysql.MySQLError as exc:
            raise SourceUnavailable(f"reading information_schema of {database!r} at {mysql_url}: "
                                    f"{explain(str(exc))}") from None
    if not missing_ok:
        warn_table_level_only(access, database)
        _visible_columns(selected, found, spec, access, refused, database)
    tables = tuple(
        replace(plan_table(database, schema, table, found.columns[table], found.indexes.get(table, {}),
                           spec.tables.get(table, TableOverride()), spec.options, found.engines.get(table, "")),
                source_server=server,
                migrations=spec.migrations.directory, migrations_required=spec.migrations.require)
        for table in selected if table not in refused or spec.tables.get(table, TableOverride()).visible_columns_only
    )
    _reject_collisions("tables", [(t.source_table, t.target_table) for t in tables], "table")
    _reject_collisions("tables", [(t.source_table, t.asset_name) for t in tables], "asset")
    foreign_keys = {table: list(keys.values()) for table, keys in found.foreign_keys.items()}
    tables = attach_foreign_keys(tables, foreign_keys, spec.options.foreign_keys)
    return Catalog(source_database=database, target_schema=schema, tables=tables,
                   parallel_tables=spec.source.parallel_tables)


def current_plans(spec: SyncSpec, catalog: Catalog, mysql_url: DatabaseUrl) -> list[TablePlan]:
    """The code location's tables as MySQL has them now (the catalog read anew: a handful of queries).

    The code location's own plans date from its last load; a run reads the catalog anew, and so
    must a sensor that compares against MySQL. A table added to MySQL needs the code location
    reloaded (it is a new asset); a table gone from MySQL is left out.
    """
    fresh = {t.source_table: t for t in discover(spec, mysql_url, missing_ok=True).tables}
    return [fresh[t.source_table] for t in catalog.tables if t.source_table in fresh]
