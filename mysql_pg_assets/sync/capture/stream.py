"""The capture loop: from the stored positions, read what the binlog has, apply it, again.

Each poll opens the binlog at the oldest position among the change-captured tables, reads to its
end (at most ``batch_rows`` changes, never splitting a transaction), applies that in one PostgreSQL
transaction (``apply``), and waits ``poll_s`` when there was nothing. When what it read held no change
of these tables (other tables, other databases), the positions still move to where it stopped. Reopening at the stored
position each poll is what makes a restart, a lost connection or a kill harmless: the positions
committed with the rows are the only state.

A server that goes away (or restarts) pauses the loop, which tries again after 1, 2, 4 … 30 s: nothing
of the batch in flight was committed, and the positions say where to resume.

A table without a stored position was never snapshotted: its changes are not applied, and the
loop says so (materialize its asset). A table whose definition changed in the binlog is held from
that point, its reason stored; the others go on. A snapshot (a materialization) takes it up again.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mysql_pg_assets.core.connections import SourceUnavailable, TargetError, pg_connection
from mysql_pg_assets.core.meta import positions
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.capture.apply import Applied, Applier, advance, apply, hold, purge
from mysql_pg_assets.sync.capture.binlog import CaptureError, Position, SchemaEvent, Transaction, check_server, read
from mysql_pg_assets.sync.catalog.plans import TablePlan

log = logging.getLogger(__name__)


@dataclass
class Followed:
    """What a run of the loop did."""

    batches: int = 0
    changes: int = 0
    lags_s: list[float] = field(default_factory=list)  # per batch: source commit → committed in PostgreSQL
    held: dict[str, str] = field(default_factory=dict)  # target table → why
    not_snapshotted: list[str] = field(default_factory=list)
    position: Position | None = None


def _server_id(tables: Sequence[TablePlan]) -> int:
    """A replica id of its own per synced database (stable across restarts, unlikely to meet a real one)."""
    return 1_000_000 + zlib.crc32(tables[0].target_schema.encode()) % 1_000_000


def _stored(postgres_url: DatabaseUrl, tables: Sequence[TablePlan]) -> tuple[dict[str, Position], dict[str, str]]:
    with pg_connection(postgres_url) as connection:
        found = positions(connection, tables[0].target_schema)
    labels = {t.target_label for t in tables}
    live = {label: Position(f, p) for label, (f, p, held) in found.items() if label in labels and held is None}
    held = {label: held for label, (_, _, held) in found.items() if label in labels and held is not None}
    return live, held


def poll(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, tables: Sequence[TablePlan], followed: Followed,
         batch_rows: int = 20_000, run_id: str | None = None,
         on_batch: Callable[[Applied], None] | None = None) -> bool:
    """One poll: read from the oldest stored position to the binlog's end, apply it. Returns whether there was
    anything to apply."""
    live, followed.held = _stored(postgres_url, tables)
    followed.not_snapshotted = sorted(t.target_label for t in tables
                                      if t.target_label not in live and t.target_label not in followed.held)
    if not live:
        return False
    plans = {t.source_table: t for t in tables if t.target_label in live}
    batch: list[Transaction] = []
    huge: Applier | None = None  # open across the parts of a huge transaction

    def report(applied: Applied) -> None:
        followed.batches += 1
        followed.changes += applied.changes
        followed.lags_s.append((datetime.now(UTC) - applied.committed_at).total_seconds())  # type: ignore[operator]
        followed.position = applied.end
        for label in applied.tables:
            live[label] = max(live[label], applied.end)
        if on_batch is not None:
            on_batch(applied)

    def flush() -> None:
        if batch:
            report(apply(postgres_url, plans, batch, live, run_id))
            batch.clear()

    start = min(live.values())
    anything = False
    try:
        for item in read(mysql_url, tables[0].source_database, set(plans), start, _server_id(tables),
                         blocking=False, part_rows=batch_rows):
            if isinstance(item, Position):  # the end: nothing after the last transaction was about these tables
                if not batch and item > start and not anything:
                    advance(postgres_url, tables, item)  # so the next poll does not read the same events again
                    followed.position = item
                continue
            anything = True
            if isinstance(item, SchemaEvent):
                flush()
                _hold(postgres_url, plans[item.table], item, live)
                continue
            if not item.complete or huge is not None:  # a huge transaction: its parts into one open transaction
                flush()
                huge = huge or Applier(postgres_url, plans, live, run_id)
                huge.add([item])
                if item.complete:
                    report(huge.finish(item.end, item.committed_at))
                    huge = None
                continue
            batch.append(item)
            if sum(len(t.changes) for t in batch) >= batch_rows:
                flush()
        flush()
    finally:
        if huge is not None:
            huge.abandon()
    return anything


def _hold(postgres_url: DatabaseUrl, table: TablePlan, event: SchemaEvent, live: dict[str, Position]) -> None:
    if event.end > live.get(table.target_label, event.end):
        hold(postgres_url, table, event.end, f"its definition changed: {event.statement[:500]}")
        log.warning("%s: held, its definition changed in MySQL; materialize it to snapshot it again",
                    table.target_label)
        del live[table.target_label]


PURGE_EVERY_S = 600.0


def follow(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, tables: Sequence[TablePlan], seconds: float | None,
           once: bool = False, poll_s: float = 0.2, run_id: str | None = None,
           on_batch: Callable[[Applied], None] | None = None, retention_days: int = 30,
           batch_rows: int = 20_000, on_idle: Callable[[], None] | None = None,
           on_error: Callable[[Exception], None] | None = None) -> Followed:
    """Follow the binlog into PostgreSQL: until caught up (``once``), for ``seconds``, or for good (None). The
    change log keeps ``retention_days`` (entries older are dropped every ten minutes). ``on_idle`` is called
    after each poll that found nothing to apply (PostgreSQL has caught up), ``on_error`` with each error a
    service rides out."""
    if not tables:
        raise CaptureError("no table has mode: cdc in the sync spec")
    check_server(mysql_url)
    followed = Followed()
    deadline = None if seconds is None else time.monotonic() + seconds
    purged, backoff = time.monotonic() - PURGE_EVERY_S, 0.0
    while True:
        try:
            if time.monotonic() - purged >= PURGE_EVERY_S:
                purge(postgres_url, tables[0].target_schema, retention_days)
                purged = time.monotonic()
            busy = poll(mysql_url, postgres_url, tables, followed, batch_rows, run_id, on_batch)
            backoff = 0.0
        except (SourceUnavailable, TargetError) as exc:
            # A server gone away or restarting: nothing of the batch was committed; the positions say where to
            # resume. A service rides it out; a catch-up (once) reports it.
            if once:
                raise
            if on_error is not None:
                on_error(exc)
            backoff = min(30.0, backoff * 2 or 1.0)
            log.warning("change capture paused %.0f s: %s", backoff, exc)
            time.sleep(backoff)
            continue
        if not busy and on_idle is not None:
            on_idle()  # caught up: the moment to compare both sides
        if once and not busy:
            return followed
        if deadline is not None and time.monotonic() >= deadline:
            return followed
        if not busy:
            time.sleep(poll_s)
