"""The handoff from a snapshot to the stream: no gap, no double, no step back.

A change-captured table's snapshot is a full load through connectorx, whose connections read while
MySQL goes on writing: each row is read as it was at some moment between the binlog position taken
just before the read (``start``) and the end of the read. Left at that, PostgreSQL would show a
table that was never MySQL's at any one moment, and the stream, starting at ``start``, would apply
again changes the snapshot already holds (a row could go back to an older version, then forward).

So the load settles its snapshot before it commits, in its own transaction (which holds the table's
lock: the stream, after a short wait, leaves the table out meanwhile and goes on with the others). It reads the binlog
from ``start`` to where it ends once the read is over, applies those changes of the table through
the apply path (casting, transforms, validation, rejects), and records that end as the table's
position. Every row then holds its version at that one position: a row the read missed or saw
early is put right by its last change in the window, a row nobody touched was read as it is. What
PostgreSQL shows after the commit is MySQL's table at the recorded position, and the stream goes on
from exactly there.

The change log stays whole: each change is logged once, by whichever applied it first. A re-snapshot
of a table the stream follows reads from the table's stored position when that is older than
``start`` (the stream had not yet applied what came before the read), and logs only what is past
the stored position. Where the binlog no longer has the stored position (purged: the reason to
snapshot again), or the table was held, the log resumes at ``start``.

A table whose definition changed during the read fails the load (materialize it again): its rows
were read under one definition and the binlog speaks of another.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

import psycopg

from mysql_pg_assets.core.meta import MetaTables, live_position
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.capture.apply import TableApplied, apply_in_load
from mysql_pg_assets.sync.capture.binlog import (
    CaptureError,
    Position,
    SchemaEvent,
    Transaction,
    binlog_has,
    master_position,
    read,
)
from mysql_pg_assets.sync.catalog.plans import TablePlan

log = logging.getLogger(__name__)

Settle = Callable[[psycopg.Connection, MetaTables, TablePlan], tuple[str, int]]


def settler(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan, start: Position,
            run_id: str | None, part_rows: int = 20_000) -> Settle:
    """What the load calls in its transaction, once its rows are merged: returns the position to record."""

    def settle(connection: psycopg.Connection, meta: MetaTables, into: TablePlan) -> tuple[str, int]:
        """``into``: the table the load writes (a blue/green load's shadow)."""
        stop = master_position(mysql_url)  # the read is over: every row it saw is in the binlog before this
        logged = _logged_to(connection, meta, mysql_url, table)
        reached, done, batch = min(start, logged or start), TableApplied(), list[Transaction]()

        def flush() -> None:
            if batch:  # those at or before the stored position were logged by the stream
                done.add(apply_in_load(connection, postgres_url, meta, into, batch, run_id, logged))
                batch.clear()

        server_id = 2_000_000 + zlib.crc32(table.target_label.encode()) % 1_000_000  # not the stream's
        for item in read(mysql_url, table.source_database, {table.source_table}, reached, server_id,
                         blocking=False, part_rows=part_rows, until=stop):
            if isinstance(item, SchemaEvent):
                raise CaptureError(f"{table.source_label} changed its definition while its snapshot was read "
                                   f"({item.statement[:200]}): materialize it again")
            if isinstance(item, Transaction):
                batch.append(item)
                if sum(len(t.changes) for t in batch) >= part_rows:
                    flush()
                if item.complete:
                    reached = item.end
            else:
                reached = item
        flush()
        if done.changes:
            log.info("%s: %s changes made while its snapshot was read applied to it (up to %s)",
                     table.target_label, done.changes, reached)
        return reached.log_file, reached.log_pos

    return settle


def _logged_to(connection: psycopg.Connection, meta: MetaTables, mysql_url: DatabaseUrl,
               table: TablePlan) -> Position | None:
    """How far the change log has the table's changes: its stored position, if it is followed, not held, and
    still in the binlog."""
    stored = live_position(connection, meta, table.target_label)
    position = Position(*stored) if stored is not None else None
    return position if position is not None and binlog_has(mysql_url, position) else None
