"""Recovery from the change log: undo a run, rebuild a table as of a point in the stream, replay changes.

The change log keeps, for every change capture applied, the row before and after it, written by
PostgreSQL from the target's own types (``apply``), so ``jsonb_populate_record`` gives rows back
exactly. Three operations, each one transaction under the table's advisory lock (no load or apply of
the table runs meanwhile):

- :func:`rollback`: a run's changes undone: each key the run touched gets the image from before the
  run's first change of it (a row the run inserted is deleted). In place; the undo is itself logged
  (operation ``undo``, with the rows it replaced and restored).
- :func:`restore`: the table as of a binlog position or a source commit time: each key changed after
  that point gets the image from before its first change after it. Into a new table (the default:
  the live one is untouched) or in place (``in_place``: the user's explicit approval), then logged.
- :func:`replay`: the changes from a position on, applied again (the last image of each key): what
  brings a table restored in place, or rolled back, to the stream's present. Idempotent.

Capture keeps its positions: after an in-place rollback or restore it goes on applying new changes,
and the rows it does not touch again stay as recovered until a replay or a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import MetaTables, ensure
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident, pg_idents, pg_qualified
from mysql_pg_assets.sync.capture.binlog import Position
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.loader import lock_table


class RecoveryError(ActionableError, ValueError):
    """A recovery that cannot be done as asked: nothing logged to recover from, a table that exists."""


def parse_point(text: str) -> tuple[Position | None, datetime | None]:
    """A point in the stream as a user writes it: a binlog position ``FILE:POS`` or a time (ISO 8601)."""
    name, _, offset = text.strip().rpartition(":")
    if name and offset.isdigit() and "T" not in text:
        return Position(name, int(offset)), None
    try:
        return None, datetime.fromisoformat(text.strip())
    except ValueError:
        raise RecoveryError(f"{text!r} is neither a binlog position (FILE:POS, e.g. binlog.000004:1234) nor a "
                            f"time (ISO 8601, e.g. 2026-11-26T04:00:00+00:00)") from None


@dataclass(frozen=True)
class Recovered:
    table: str  # the table written: the target, or the new one
    keys: int  # rows (keys) given another version
    changes: int  # change-log entries they came from


def _where(after: Position | None, since: datetime | None, run_id: str | None) -> tuple[str, list[object]]:
    if run_id is not None:
        return "run_id = %s", [run_id]
    if after is not None:
        return "(log_file, log_pos) > (%s, %s)", [after.log_file, after.log_pos]
    assert since is not None
    return "committed_at > %s", [since]


def _key_match(table: TablePlan, relation: str) -> str:
    keys = pg_idents(table.primary_key)
    return f"({', '.join(f't.{pg_ident(k)}' for k in table.primary_key)}) = (SELECT {keys} FROM " \
           f"jsonb_populate_record(NULL::{relation}, c.primary_key))"


def _put_back(connection: psycopg.Connection, meta: MetaTables, table: TablePlan, relation: str, where: str,
              params: list[object], newest: bool, log_as: str | None, run_id: str | None) -> Recovered:
    """Give each key the change log chooses (its first change's before-image, or with ``newest`` its last
    change's after-image) its version in ``relation``; log the replaced and restored rows as ``log_as``."""
    image, order = ("after", "DESC") if newest else ("before", "ASC")
    connection.execute(
        f"CREATE TEMP TABLE mpa_chosen ON COMMIT DROP AS SELECT DISTINCT ON (primary_key) primary_key, "
        f"{image} AS image, log_file, log_pos FROM {meta.change_log} WHERE target_table = %s AND operation <> 'undo'"
        f" AND {where} ORDER BY primary_key, id {order}", [table.target_label, *params])
    chosen = connection.execute("SELECT count(*) FROM mpa_chosen").fetchone()[0]
    if not chosen:
        raise RecoveryError(f"{table.target_label}: the change log has no change of it to recover from there")
    if log_as is not None:
        connection.execute(
            f"INSERT INTO {meta.change_log} (log_file, log_pos, committed_at, run_id, source_table, target_table,"
            f" operation, primary_key, before, after) SELECT c.log_file, c.log_pos, now(), %s, %s, %s, %s,"
            f" c.primary_key, (SELECT to_jsonb(t) - %s FROM {relation} t WHERE {_key_match(table, relation)}),"
            f" c.image FROM mpa_chosen c",
            (run_id, table.source_label, table.target_label, log_as, "_deleted_at"))
    connection.execute(f"DELETE FROM {relation} t USING mpa_chosen c WHERE {_key_match(table, relation)}")
    connection.execute(f"INSERT INTO {relation} SELECT (jsonb_populate_record(NULL::{relation}, c.image)).* "
                       f"FROM mpa_chosen c WHERE c.image IS NOT NULL")
    changes = connection.execute(f"SELECT count(*) FROM {meta.change_log} WHERE target_table = %s AND {where}",
                                 [table.target_label, *params]).fetchone()[0]
    return Recovered(relation, int(chosen), int(changes))


def _run(postgres_url: DatabaseUrl, table: TablePlan,
         work: Callable[[psycopg.Connection, MetaTables], Recovered]) -> Recovered:
    with pg_connection(postgres_url) as connection:
        meta = ensure(connection, table.target_schema)
        with connection.transaction():
            connection.execute("SET LOCAL TimeZone = 'UTC'")
            lock_table(connection, table.target_label, until_commit=True)
            return work(connection, meta)


def rollback(postgres_url: DatabaseUrl, table: TablePlan, run_id: str, by_run: str | None = None) -> Recovered:
    """Undo what run ``run_id`` applied to the table, in place (see the module docstring)."""
    where, params = _where(None, None, run_id)
    return _run(postgres_url, table, lambda c, meta: _put_back(c, meta, table, table.target, where, params, False,
                                                              "undo", by_run))


def restore(postgres_url: DatabaseUrl, table: TablePlan, after: Position | None = None, since: datetime | None = None,
            into: str | None = None, in_place: bool = False, by_run: str | None = None) -> Recovered:
    """The table as of a position (or a source commit time): into the new table ``into`` (in the target's
    schema), or in place."""
    if (after is None) == (since is None):
        raise RecoveryError("restore needs a binlog position or a time, one of them")
    if (into is None) == (not in_place):
        raise RecoveryError("restore into a new table (into), or in place (in_place), one of them")
    where, params = _where(after, since, None)

    def work(connection: psycopg.Connection, meta: MetaTables) -> Recovered:
        relation = table.target
        if into is not None:
            relation = pg_qualified(table.target_schema, into)
            if connection.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()[0]:
                raise RecoveryError(f"{table.target_schema}.{into} exists: restore into a new table")
            connection.execute(f"CREATE TABLE {relation} (LIKE {table.target} INCLUDING DEFAULTS)")
            connection.execute(f"INSERT INTO {relation} SELECT * FROM {table.target}")
        return _put_back(connection, meta, table, relation, where, params, False,
                         "undo" if into is None else None, by_run)

    return _run(postgres_url, table, work)


def replay(postgres_url: DatabaseUrl, table: TablePlan, after: Position) -> Recovered:
    """Apply again, in place, the changes after ``after``: each key gets its last change's after-image."""
    where, params = _where(after, None, None)
    return _run(postgres_url, table, lambda c, meta: _put_back(c, meta, table, table.target, where, params, True,
                                                              None, None))
