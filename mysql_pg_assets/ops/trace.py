"""Trace one record: where is order 42, and how did it get there?

``python -m mysql_pg_assets.cli trace shop.orders 42`` (and the ``trace_record`` job in the Dagster UI)
puts together, for one key of one synced table:

1. the MySQL row now (the spec's filter applies: a row it leaves out is not synced);
2. its change-log entries, oldest first: binlog position, source commit time, when applied, by which
   run, operation, before and after images (change capture);
3. the loads of the table that covered it (the ledger): every full load, the partition loads whose
   window holds the row's partition value, the incremental loads whose watermarks bracket its cursor
   value;
4. its rejects: column, value, reason, run;
5. the PostgreSQL row now;
6. both rows compared column by column, as the parity check compares them (the documented
   conversions, masks applied again to MySQL's value).

A composite key takes its values in the key's column order (``trace shop.order_items 42 7``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from mysql_pg_assets.checks.parity import key_differences, rows_by_key
from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import MetaTables, existing
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident
from mysql_pg_assets.sync.catalog.plans import TablePlan, find_table


class TraceError(ActionableError, ValueError):
    """The record cannot be traced as asked: no such table, a key of the wrong length."""


@dataclass
class Trace:
    table: TablePlan
    key: dict[str, str]
    columns: list[str] = field(default_factory=list)
    mysql_row: tuple | None = None
    postgres_row: tuple | None = None
    differences: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def named(tables: list[TablePlan], name: str) -> TablePlan:
    """The table ``name`` names (``plans.find_table``), or a :class:`TraceError` listing the tables."""
    table = find_table(tables, name)
    if table is None:
        raise TraceError(f"{name}: not a synced table (they are: {', '.join(t.target_label for t in tables[:20])})")
    return table


def trace(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, values: list[str]) -> Trace:
    """Everything known of the row with this key; see the module docstring."""
    key_names = [c.target_name for c in table.key_columns]
    if not key_names:
        raise TraceError(f"{table.target_label} has no primary key: a row of it has no identity to trace")
    if len(values) != len(key_names):
        raise TraceError(f"{table.target_label}'s key is ({', '.join(key_names)}): give {len(key_names)} value(s)")
    found = Trace(table, dict(zip(key_names, values, strict=True)))
    source, copy, found.columns = rows_by_key(mysql_url, postgres_url, table, [values])
    found.mysql_row = next(iter(source.values()), None)
    found.postgres_row = next(iter(copy.values()), None)
    key = next(iter(copy or source), tuple(values))
    found.differences = key_differences(table, found.columns, key, found.mysql_row, found.postgres_row)
    with pg_connection(postgres_url) as connection:
        meta = existing(connection, table.target_schema)
        if meta is not None:
            found.changes = _changes(connection, meta, table, found.key)
            found.rejects = _rejects(connection, meta, table, found.key)
            found.loads = _loads(connection, meta, table, _row_value(found, table))
    return found


def _key_match(key: dict[str, str]) -> tuple[str, list[str]]:
    """SQL matching a jsonb key column (the change log's and the rejects') by each key value's text."""
    return " AND ".join("primary_key ->> %s = %s" for _ in key), [v for pair in key.items() for v in pair]


def _changes(connection: psycopg.Connection, meta: MetaTables, table: TablePlan,
             key: dict[str, str]) -> list[dict[str, Any]]:
    match, params = _key_match(key)
    rows = connection.execute(
        f"SELECT log_file || ':' || log_pos, committed_at, applied_at, run_id, operation, before, after"
        f" FROM {meta.change_log} WHERE target_table = %s AND {match} ORDER BY log_file, log_pos, id",
        [table.target_label, *params]).fetchall()
    names = ("position", "committed_at", "applied_at", "run_id", "operation", "before", "after")
    return [dict(zip(names, row, strict=True)) for row in rows]


def _rejects(connection: psycopg.Connection, meta: MetaTables, table: TablePlan,
             key: dict[str, str]) -> list[dict[str, Any]]:
    match, params = _key_match(key)
    rows = connection.execute(
        f"SELECT rejected_at, run_id, column_name, value, reason FROM {meta.rejects}"
        f" WHERE target_table = %s AND {match} ORDER BY id", [table.target_label, *params]).fetchall()
    return [dict(zip(("rejected_at", "run_id", "column", "value", "reason"), row, strict=True)) for row in rows]


def _row_value(found: Trace, table: TablePlan) -> Any:
    """The row's partition value (partitioned tables) or cursor value (incremental ones), from either side."""
    column = table.partition.column if table.partition is not None else table.cursor_column
    row = found.postgres_row or found.mysql_row
    if column is None or row is None or column not in found.columns:
        return None
    return row[found.columns.index(column)]


def _loads(connection: psycopg.Connection, meta: MetaTables, table: TablePlan, value: Any) -> list[dict[str, Any]]:
    """The ledger's loads of the table that covered the row, newest first (at most 50)."""
    covering = ["scope = 'full'"]
    params: list[Any] = [table.target_label]
    if value is not None and table.partition is not None:
        covering.append("(scope = 'partition' AND window_start <= %s AND %s < window_end)")
        params += [value, value]
    rows = connection.execute(
        f"SELECT loaded_at, run_id, scope, partition, window_start, window_end, watermark_from, watermark_to,"
        f" rows_read, rows_inserted, rows_updated, rows_deleted, rows_rejected FROM {meta.ledger}"
        f" WHERE target_table = %s AND ({' OR '.join(covering)} OR scope = 'incremental') ORDER BY id DESC LIMIT 200",
        params).fetchall()
    names = ("loaded_at", "run_id", "scope", "partition", "window_start", "window_end", "watermark_from",
             "watermark_to", "rows_read", "rows_inserted", "rows_updated", "rows_deleted", "rows_rejected")
    loads = [dict(zip(names, row, strict=True)) for row in rows]
    return [load for load in loads if load["scope"] != "incremental" or _brackets(load, value)][:50]


def _brackets(load: dict[str, Any], value: Any) -> bool:
    """Whether an incremental load's watermarks bracket the row's cursor value (from, to]."""
    if value is None or load["watermark_to"] is None:
        return False
    try:
        low = _comparable(load["watermark_from"], value) if load["watermark_from"] else None
        high = _comparable(load["watermark_to"], value)
    except ValueError:
        return False
    return (low is None or low < value) and value <= high


def _comparable(text: str, like: Any) -> Any:
    if isinstance(like, datetime):
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=like.tzinfo) if parsed.tzinfo is None else parsed.astimezone(like.tzinfo)
    return type(like)(text)


def render(found: Trace) -> str:
    """The trace as a person reads it."""
    table = found.table
    lines = [f"{table.source_label} → {table.target_label}, key {_text(found.key)}", "", "MySQL now:"]
    lines += _row_lines(found.columns, found.mysql_row)
    lines += ["", f"change log ({len(found.changes)} entries):"]
    lines += [f"  {c['position']}  committed {c['committed_at']}  applied {c['applied_at']}  {c['operation']}"
              f"  run {c['run_id'] or '-'}\n    before {_text(c['before'])}\n    after  {_text(c['after'])}"
              for c in found.changes] or ["  (none: the table is not change-captured, or the row never changed)"]
    lines += ["", f"loads that covered it ({len(found.loads)}, newest first):"]
    lines += [f"  {load['loaded_at']}  {load['scope']}{' ' + load['partition'] if load['partition'] else ''}"
              f"  run {load['run_id'] or '-'}  read {load['rows_read']}, inserted {load['rows_inserted']}, updated"
              f" {load['rows_updated']}, deleted {load['rows_deleted']}, rejected {load['rows_rejected']}"
              for load in found.loads] or ["  (none)"]
    lines += ["", f"rejects ({len(found.rejects)}):"]
    lines += [f"  {r['rejected_at']}  {r['column']} = {r['value']!r}: {r['reason']}  run {r['run_id'] or '-'}"
              for r in found.rejects] or ["  (none)"]
    lines += ["", "PostgreSQL now:"] + _row_lines(found.columns, found.postgres_row)
    lines += ["", "equal, every column" if found.equal else "DIFFERENT:"]
    lines += [f"  {d['column'] or '(row)'}: MySQL {d['mysql']}, PostgreSQL {d['postgres']}" for d in found.differences]
    return "\n".join(lines)


def _row_lines(columns: list[str], row: tuple | None) -> list[str]:
    if row is None:
        return ["  (no such row)"]
    width = max(len(c) for c in columns)
    return [f"  {pg_ident(c) if not c.isidentifier() else c:<{width}}  {v!r}" for c, v in zip(columns, row,
                                                                                             strict=True)]


def _text(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False) if value is not None else "-"
