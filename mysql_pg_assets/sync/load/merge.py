"""The SQL that merges staged rows into the target: pure functions of a table plan, no database needed.

Each returns a statement (and its parameters) for the loader to run on its transaction:

- :func:`insert_sql`: a table the load creates, filled before its key is built;
- :func:`upsert_sql`: an existing table, by primary key, writing only rows whose values changed;
- :func:`delete_missing_sql`: the rows of the scope MySQL no longer has, deleted or tombstoned;
- :func:`pg_window_sql`: the rows of a partition window, as ``extract.window_sql`` reads them;
- :func:`bucket_sql`: which partition of a range a row is in, so a range's figures are per partition.

Change capture's apply step writes through the same statements.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mysql_pg_assets.core.sql import pg_ident, pg_idents, pg_type
from mysql_pg_assets.sync.catalog.plans import TOMBSTONE_COLUMN, TablePlan, staging_name
from mysql_pg_assets.sync.extract import Scope, Since, Window
from mysql_pg_assets.sync.load.staging import Staging


def staged_values(table: TablePlan, alias: str = "s") -> dict[str, str]:
    return {c.target_name: f"{alias}.{staging_name(i)}::{pg_type(c.pg_type)}" for i, c in enumerate(table.columns)}


def staged_key_matches(table: TablePlan, alias: str) -> str:
    """SQL: the staged row ``s``'s primary key equals the row ``alias``'s."""
    staged = staged_values(table)
    return " AND ".join(f"{staged[k]} = {alias}.{pg_ident(k)}" for k in table.primary_key)


def rows_differ(left: list[str], right: list[str], differ: bool = True) -> str:
    """SQL: the values ``left`` are (``differ``) or are not distinct from ``right``, NULLs compared as values."""
    return f"ROW({', '.join(left)}) IS {'' if differ else 'NOT '}DISTINCT FROM ROW({', '.join(right)})"


_COUNT_WRITTEN = ("SELECT bucket, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
                  " FROM written GROUP BY bucket")


def insert_sql(table: TablePlan, rows: str, bucket: str | None = None) -> str:
    """A plain INSERT of every staged row: for a table created by this load, still without a key.
    With ``bucket`` (an expression over the target row ``t``), the rows written per bucket."""
    target = table.target
    values = ", ".join(staged_values(table).values())
    names = pg_idents(c.target_name for c in table.columns)
    insert = f"INSERT INTO {target} AS t ({names}) SELECT {values} FROM {rows} s"
    if bucket is None:
        return insert
    return f"WITH written AS ({insert} RETURNING true AS inserted, {bucket} AS bucket)\n" + _COUNT_WRITTEN


def upsert_sql(table: TablePlan, rows: str, bucket: str | None = None) -> str:
    target = table.target
    names = [c.target_name for c in table.columns]
    values = list(staged_values(table).values())
    if table.tombstones:  # a row MySQL has again is alive again
        names.append(TOMBSTONE_COLUMN)
        values.append("NULL::timestamptz")
    insert = f"INSERT INTO {target} AS t ({pg_idents(names)})\n  SELECT {', '.join(values)} FROM {rows} s"
    by = bucket or "0"
    if not table.primary_key:
        return f"WITH written AS ({insert}\n  RETURNING true AS inserted, {by} AS bucket)\n" + _COUNT_WRITTEN
    others = [n for n in names if n not in table.primary_key]
    if others:
        assignments = ", ".join(f"{pg_ident(n)} = EXCLUDED.{pg_ident(n)}" for n in others)
        changed = rows_differ([f"t.{pg_ident(n)}" for n in others], [f"EXCLUDED.{pg_ident(n)}" for n in others])
        conflict = f"DO UPDATE SET {assignments}\n  WHERE {changed}"
        # Rows PostgreSQL already has as they are are left out before the INSERT: ON CONFLICT locks every row
        # it meets, even one its WHERE then leaves alone, and a row lock is a write (WAL, a dirtied page).
        value = dict(zip(names, values, strict=True))
        same = rows_differ([f"u.{pg_ident(n)}" for n in others], [value[n] for n in others], differ=False)
        insert += f"\n  WHERE NOT EXISTS (SELECT 1 FROM {target} u WHERE {staged_key_matches(table, 'u')} AND {same})"
    else:
        conflict = "DO NOTHING"
    # xmax = 0 tells a freshly inserted row from one the ON CONFLICT branch updated.
    return (f"WITH written AS ({insert}\n  ON CONFLICT ({pg_idents(table.primary_key)}) {conflict}\n"
            f"  RETURNING (t.xmax = 0) AS inserted, {by} AS bucket)\n" + _COUNT_WRITTEN)


def pg_window_bound(table: TablePlan, value: datetime) -> datetime:
    """A window bound typed like the target column: aware for timestamptz, naive UTC otherwise."""
    column = table.partition_column
    assert column is not None
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return utc if column.pg_type == "timestamptz" else utc.replace(tzinfo=None)


def pg_window_sql(table: TablePlan, window: Window, alias: str = "t") -> tuple[str, list[object]]:
    """The PostgreSQL condition of a window ('' for the whole table), as ``extract.window_sql`` draws it:
    the first partition also holds the rows whose partition column is NULL."""
    assert table.partition is not None, table.target_label
    column = f"{alias}.{pg_ident(table.partition.column)}" if alias else pg_ident(table.partition.column)
    bounds: list[str] = []
    params: list[object] = []
    if window.start is not None:
        bounds.append(f"{column} >= %s")
        params.append(pg_window_bound(table, window.start))
    if window.end is not None:
        bounds.append(f"{column} < %s")
        params.append(pg_window_bound(table, window.end))
    if not bounds:
        return "", []
    if window.start is None:
        return f"({bounds[0]} OR {column} IS NULL)", params
    return " AND ".join(bounds), params


def bucket_sql(table: TablePlan, scope: Scope, column: str) -> tuple[str, list[object]] | None:
    """The partition of a range that a row is in (0: the first; NULL and earlier rows are the first's),
    given the SQL of its partition column; None when the load is not a range of several partitions.
    The load's transaction runs in UTC, so a timestamp column compares as the instant it stands for."""
    if not isinstance(scope, Window) or not scope.splits:
        return None
    splits = [b.astimezone(UTC) if b.tzinfo else b.replace(tzinfo=UTC) for b in scope.splits]
    return f"coalesce(width_bucket(({column})::timestamptz, %s::timestamptz[]), 0)", [splits]


def target_bucket(table: TablePlan, scope: Scope) -> tuple[str, list[object]] | None:
    return bucket_sql(table, scope, f"t.{pg_ident(table.partition.column)}") if table.partition else None


def staged_bucket(table: TablePlan, scope: Scope) -> tuple[str, list[object]] | None:
    column = table.partition_column
    return bucket_sql(table, scope, staged_values(table)[column.target_name]) if column else None


def delete_missing_sql(
    table: TablePlan, staging: Staging, scope: Scope, rows_staged: bool, keys_staged: bool
) -> tuple[str, list[object]]:
    """Remove target rows of the scope that MySQL no longer has (delete, or set _deleted_at).

    Full load: every row whose key is neither staged nor rejected. Partition: the same, within
    the window. Incremental: every row whose key is not among MySQL's current keys.
    """
    target = table.target
    conditions: list[str] = []
    params: list[object] = []
    if isinstance(scope, Window):
        condition, params = pg_window_sql(table, scope)
        conditions += [condition] if condition else []
    if table.primary_key:
        matches = staged_key_matches(table, "t")
        if isinstance(scope, Since):
            sources = [staging.source_keys] if keys_staged else []
        else:
            sources = [staging.loaded_keys, staging.rejected_keys] if rows_staged else []
        conditions += [f"NOT EXISTS (SELECT 1 FROM {source} s WHERE {matches})" for source in sources]
    if table.tombstones:
        tombstone = pg_ident(TOMBSTONE_COLUMN)
        conditions.append(f"t.{tombstone} IS NULL")
        statement = f"UPDATE {target} t SET {tombstone} = now() WHERE {' AND '.join(conditions)}"
    else:
        statement = f"DELETE FROM {target} t" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
    bucket = target_bucket(table, scope)
    by, by_params = bucket if bucket else ("0", [])
    return (f"WITH gone AS ({statement} RETURNING {by} AS bucket) SELECT bucket, count(*) FROM gone GROUP BY bucket",
            [*params, *by_params])


def delete_keys_sql(table: TablePlan, keys: str) -> str:
    """Delete (or tombstone) the target rows whose key is staged in ``keys``: change capture's deletes."""
    matches = staged_key_matches(table, "t")
    if table.tombstones:
        tombstone = pg_ident(TOMBSTONE_COLUMN)
        return (f"UPDATE {table.target} t SET {tombstone} = now() FROM {keys} s WHERE {matches}"
                f" AND t.{tombstone} IS NULL")
    return f"DELETE FROM {table.target} t USING {keys} s WHERE {matches}"
