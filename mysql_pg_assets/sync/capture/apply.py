"""Apply: a batch of whole source transactions in one PostgreSQL transaction, exactly once.

In that one transaction, for every change-captured table the batch touches (in a stable order, each
under the same advisory lock a load of the table takes):

1. every row image (after-images, and before-images of updates and deletes) goes through
   ``pipeline.validated_batches``: the casting rules, the spec's masks, derived columns and Python
   transform, and the validation, exactly as a load's rows do;
2. the last change of each key wins: its after-image is upserted through the load's staging and
   ``upsert_sql``, or its key deleted (tombstoned with ``deletes: tombstone``); a rejected image
   keeps the row's previous version, and its reject is written like a load's;
3. every change goes to the change log with its binlog position, source commit time, operation, key
   and before/after images (transformed: a masked column is masked there too);
4. the position of every change-captured table moves to the batch's end.

A kill at any moment leaves PostgreSQL at the previous batch's end, rows, log and positions alike;
the capture resumes from the stored positions, so no change is applied twice or skipped. A source
transaction is never split between batches.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
import psycopg

from mysql_pg_assets.core.connections import TargetError, adbc_connection, explain, pg_connection
from mysql_pg_assets.core.meta import MetaTables, ensure, live_position, write_rejects
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident
from mysql_pg_assets.sync.capture.binlog import Position, RowChange, Transaction
from mysql_pg_assets.sync.capture.images import read_batch
from mysql_pg_assets.sync.catalog.plans import TablePlan, staging_name
from mysql_pg_assets.sync.load.loader import lock_table, merge_staged
from mysql_pg_assets.sync.load.merge import delete_keys_sql, staged_values
from mysql_pg_assets.sync.load.staging import Staging, Tally, drop_staging, stage
from mysql_pg_assets.sync.pipeline import validated_batches
from mysql_pg_assets.sync.transform import LoadContext, keys_to_staging, to_staging


@dataclass
class TableApplied:
    changes: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: int = 0

    def add(self, other: TableApplied) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Applied:
    """What one batch did, per target table, and the position it reached."""

    end: Position
    committed_at: object  # the newest source commit time of the batch (lag: now minus this)
    tables: dict[str, TableApplied] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return sum(t.changes for t in self.tables.values())


@dataclass(frozen=True)
class _Logged:
    position: Position
    committed_at: object
    change: RowChange


def _key(table: TablePlan, image: dict[str, object]) -> tuple:
    return tuple(image.get(c.source.name) for c in table.key_columns)


def _images(table: TablePlan, images: list[dict[str, object]], seqs: list[int],
            context: LoadContext) -> pl.DataFrame:
    """Row images transformed as a load's rows are (a masked column is masked), numbered by change."""
    columns = [staging_name(i) for i in range(len(table.columns))]
    if not images:
        return pl.DataFrame({"seq": []}, schema={"seq": pl.Int64})
    staged, _ = to_staging(read_batch(table, images), table, context)
    return staged.select(pl.Series("seq", seqs, dtype=pl.Int64), *columns)


def _log_changes(connection: psycopg.Connection, postgres_url: DatabaseUrl, table: TablePlan, staging: Staging,
                 meta: MetaTables, logged: list[_Logged], context: LoadContext, run_id: str | None) -> None:
    """Every change into the change log. Its images are written by PostgreSQL from the transformed values cast
    to the target's types (``to_jsonb``), so ``jsonb_populate_record`` gives the rows back exactly (recovery)."""
    afters = [(n, e.change.after) for n, e in enumerate(logged) if e.change.after is not None]
    befores = [(n, e.change.before) for n, e in enumerate(logged) if e.change.before is not None]
    changes = pl.DataFrame({
        "seq": list(range(len(logged))), "log_file": [e.position.log_file for e in logged],
        "log_pos": [e.position.log_pos for e in logged], "committed_at": [e.committed_at for e in logged],
        "operation": [e.change.operation for e in logged]})
    parts = {"changes": changes, "after": _images(table, [i for _, i in afters], [n for n, _ in afters], context),
             "before": _images(table, [i for _, i in befores], [n for n, _ in befores], context)}
    import adbc_driver_postgresql.dbapi as adbc_dbapi  # here: a first load, which imports this module, needs no ADBC

    try:
        with adbc_connection(postgres_url) as adbc, adbc.cursor() as cursor:
            for part, frame in parts.items():
                cursor.adbc_ingest(staging.name(part), frame.to_arrow(), mode="create", db_schema_name=meta.schema)
            adbc.commit()
    except adbc_dbapi.Error as exc:
        raise TargetError(f"staging the change log of {table.target_label} in PostgreSQL at {postgres_url}: "
                          f"{explain(str(exc))}") from None
    typed = ", ".join(f"{value} AS {pg_ident(name)}" for name, value in staged_values(table, "i").items())
    try:
        with connection.transaction():  # a savepoint: a value PostgreSQL refuses is logged as it arrived
            _insert_log(connection, table, staging, meta, parts, typed, run_id)
    except psycopg.DataError:
        as_arrived = ", ".join(f"i.{staging_name(i)} AS {pg_ident(c.target_name)}" for i, c in enumerate(table.columns))
        _insert_log(connection, table, staging, meta, parts, as_arrived, run_id)


def _insert_log(connection: psycopg.Connection, table: TablePlan, staging: Staging, meta: MetaTables,
                parts: dict[str, pl.DataFrame], typed: str, run_id: str | None) -> None:
    def image(part: str) -> str:
        if parts[part].width == 1:  # no image of this side in the batch
            return f"LEFT JOIN (SELECT NULL::bigint AS seq, NULL::jsonb AS image) {part[0]} ON false"
        return (f"LEFT JOIN (SELECT i.seq, (SELECT to_jsonb(r) FROM (SELECT {typed}) r) AS image "
                f"FROM {staging.relation(part)} i) {part[0]} ON {part[0]}.seq = c.seq")

    connection.execute(
        f"INSERT INTO {meta.change_log} ({_LOG_COLUMNS}, applied_at) SELECT c.log_file, c.log_pos, c.committed_at,"
        f" %s, %s, %s, c.operation, (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(coalesce(a.image,"
        f" b.image)) e WHERE e.key = ANY(%s)), b.image, a.image, clock_timestamp()"  # applied: just before commit
        f" FROM {staging.relation('changes')} c {image('after')} {image('before')} ORDER BY c.seq",
        (run_id, table.source_label, table.target_label, list(table.primary_key)))


_LOG_COLUMNS = ("log_file, log_pos, committed_at, run_id, source_table, target_table, operation, primary_key, "
                "before, after")


def _apply_table(connection: psycopg.Connection, postgres_url: DatabaseUrl, meta: MetaTables, table: TablePlan,
                 logged: list[_Logged], run_id: str | None, inside_load: bool = False,
                 unlogged: int = 0) -> TableApplied:
    context = LoadContext.of(table, run_id)
    last: dict[tuple, RowChange] = {}
    for entry in logged:
        change = entry.change
        if change.before is not None and change.after is not None and _key(table, change.before) != _key(
                table, change.after):  # the key itself changed: the old row goes
            last[_key(table, change.before)] = RowChange(change.table, "delete", change.before, None)
        last[_key(table, change.after if change.after is not None else change.before or {})] = change
    upserts = [c.after for c in last.values() if c.after is not None]
    deletes = [c.before for c in last.values() if c.after is None and c.before is not None]
    staging = Staging.for_table(table, meta)
    if not inside_load:  # a killed apply's or load's (the lock is ours); a load in progress drops its own
        drop_staging(connection, meta.schema, staging.table_prefix)
    tally, staged_rows = Tally(), list[str]()
    keys = [keys_to_staging(read_batch(table, deletes), table)] if deletes else []
    try:
        arrived = stage(postgres_url, table, staging,
                        validated_batches([read_batch(table, upserts)] if upserts else [], table, context=context),
                        keys, tally, staged_rows.append)
        done = TableApplied(changes=len(logged), rejected=tally.rejected_rows)
        for rows in staged_rows:  # as a load merges: a value PostgreSQL refuses becomes a reject, not a stall
            counts = merge_staged(connection, table, staging, rows, False, None)
            done.inserted += sum(c["inserted"] for c in counts.values())
            done.updated += sum(c["updated"] for c in counts.values())
            done.rejected += sum(c["refused"] for c in counts.values())
        if arrived[1]:
            done.deleted = connection.execute(delete_keys_sql(table, staging.source_keys)).rowcount
        if arrived[0] and done.rejected:
            write_rejects(connection, meta, staging.rejects, run_id, table.source_label, table.target_label)
        if logged[unlogged:]:  # the first ``unlogged`` are in the change log already
            _log_changes(connection, postgres_url, table, staging, meta, logged[unlogged:], context, run_id)
    finally:
        with contextlib.suppress(psycopg.Error):
            drop_staging(connection, meta.schema, staging.prefix)
    return done


def apply_in_load(connection: psycopg.Connection, postgres_url: DatabaseUrl, meta: MetaTables, table: TablePlan,
                  transactions: Sequence[Transaction], run_id: str | None,
                  logged_to: Position | None) -> TableApplied:
    """Apply transactions (or parts) of ``table`` in a load's open transaction (``handoff``), and log those of
    their changes the change log does not have yet (those past ``logged_to``)."""
    logged = [_Logged(t.end, t.committed_at, change) for t in transactions for change in t.changes]
    known = sum(len(t.changes) for t in transactions if logged_to is not None and (t.start or t.end) <= logged_to)
    return _apply_table(connection, postgres_url, meta, table, logged, run_id, inside_load=True, unlogged=known)


LOCK_WAIT_S = 10.0


class Applier:
    """One PostgreSQL transaction that applies source transactions (or the parts of a huge one) as they are
    given, and commits with the positions at :meth:`finish`; left without finishing, it rolls back."""

    def __init__(self, postgres_url: DatabaseUrl, plans: dict[str, TablePlan], after: dict[str, Position],
                 run_id: str | None = None) -> None:
        self.postgres_url, self.plans, self.after, self.run_id = postgres_url, plans, dict(after), run_id
        self.by_label = {t.target_label: t for t in plans.values()}
        self.tables: dict[str, TableApplied] = {}
        self.locked: set[str] = set()
        self.waiting: set[str] = set()  # held by a load: not applied, not moved on by this batch
        self._stack = contextlib.ExitStack()
        try:
            self.connection = self._stack.enter_context(pg_connection(postgres_url))
            self.meta = _ensured(self.connection, postgres_url, next(iter(plans.values())).target_schema)
            self._stack.enter_context(self.connection.transaction())
            self.connection.execute("SET LOCAL TimeZone = 'UTC'")
        except psycopg.Error as exc:
            self._stack.close()
            raise TargetError(f"applying changes to PostgreSQL at {postgres_url}: {explain(str(exc))}") from None

    def add(self, transactions: Sequence[Transaction]) -> None:
        """Apply these (whole transactions, or the next part of one), per table, in the open transaction."""
        touched = sorted({self.plans[c.table].target_label for t in transactions for c in t.changes
                          if c.table in self.plans and self.plans[c.table].target_label in self.after})
        try:
            for label in touched:  # one order for every batch: no deadlock with another writer
                self._lock(label)
            per_table: dict[str, list[_Logged]] = {}
            for transaction in transactions:
                for change in transaction.changes:
                    table = self.plans.get(change.table)
                    if table is None or table.target_label not in self.after or (
                            transaction.start or transaction.end) <= self.after[table.target_label]:
                        continue  # not followed, or in PostgreSQL already
                    per_table.setdefault(table.target_label, []).append(
                        _Logged(transaction.end, transaction.committed_at, change))
            for label in sorted(per_table):
                self.tables.setdefault(label, TableApplied()).add(_apply_table(
                    self.connection, self.postgres_url, self.meta, self.by_label[label], per_table[label],
                    self.run_id))
        except psycopg.Error as exc:
            self.abandon()
            raise TargetError(f"applying changes to PostgreSQL at {self.postgres_url}: {explain(str(exc))}") from None
        except BaseException:
            self.abandon()
            raise

    def _lock(self, label: str) -> None:
        """Take the table's lock, then its stored position again (a snapshot committed since this batch was
        read moved it on, and what it reflects must not be applied a second time). A table still held by
        another writer after ``LOCK_WAIT_S`` (a snapshot being taken) is left out of this batch, its position
        kept: the stream goes on without it, and the next poll takes it up from where the snapshot put it.
        (The wait covers a killed capture's transaction, which PostgreSQL ends within moments.)"""
        if label in self.locked or label in self.waiting:
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while not lock_table(self.connection, label, until_commit=True, wait=False):
            if time.monotonic() >= deadline:
                self.waiting.add(label)
                del self.after[label]
                return
            time.sleep(0.1)
        self.locked.add(label)
        stored = live_position(self.connection, self.meta, label)
        if stored is None:
            del self.after[label]  # dropped or held meanwhile: not applied here
        else:
            self.after[label] = max(self.after[label], Position(*stored))

    def finish(self, end: Position, committed_at: object) -> Applied:
        """Move every followed table's position to ``end`` and commit."""
        try:
            _move_positions(self.connection, self.meta, sorted(set(self.by_label) - self.waiting), end)
            self._stack.close()  # commits
        except psycopg.Error as exc:
            self.abandon()
            raise TargetError(f"applying changes up to {end} to PostgreSQL at {self.postgres_url}: "
                              f"{explain(str(exc))}") from None
        applied = Applied(end, committed_at)
        applied.tables = self.tables
        return applied

    def abandon(self) -> None:
        """Roll back whatever was applied (nothing of it was committed)."""
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("abandoned"), None)


def apply(postgres_url: DatabaseUrl, plans: dict[str, TablePlan], batch: Sequence[Transaction],
          after: dict[str, Position], run_id: str | None = None) -> Applied:
    """Apply ``batch`` (whole transactions, in order) in one PostgreSQL transaction; a table's changes at or
    before its stored position (``after``: target table → position) are already in PostgreSQL and skipped."""
    assert batch, "an empty batch"
    applier = Applier(postgres_url, plans, after, run_id)
    applier.add(batch)
    return applier.finish(batch[-1].end, batch[-1].committed_at)


_ENSURED: dict[tuple[str, str], MetaTables] = {}


def _ensured(connection: psycopg.Connection, url: DatabaseUrl, schema: str) -> MetaTables:
    """The project's tables, created once per process and server (not at every batch, a few a second)."""
    key = (url.secret, schema)
    if key not in _ENSURED:
        _ENSURED[key] = ensure(connection, schema)
    return _ENSURED[key]


def purge(postgres_url: DatabaseUrl, schema: str, days: int) -> int:
    """Drop change-log entries older than ``days`` (retention); returns how many."""
    with pg_connection(postgres_url) as connection:
        meta = _ensured(connection, postgres_url, schema)
        return connection.execute(f"DELETE FROM {meta.change_log} WHERE applied_at < now() - %s * interval '1 day'",
                                  (days,)).rowcount


def hold(postgres_url: DatabaseUrl, table: TablePlan, end: Position, why: str) -> None:
    """Stop applying a table's changes from ``end`` on (its schema changed): a snapshot takes it up again."""
    with pg_connection(postgres_url) as connection:
        meta = _ensured(connection, postgres_url, table.target_schema)
        connection.execute(f"UPDATE {meta.positions} SET held = %s, updated_at = now() WHERE target_table = %s",
                           (f"at {end}: {why}"[:2000], table.target_label))


def _move_positions(connection: psycopg.Connection, meta: MetaTables, labels: Sequence[str], to: Position) -> None:
    """The positions of these tables (those not held, and not already past it) moved on to ``to``."""
    connection.execute(
        f"UPDATE {meta.positions} SET log_file = %s, log_pos = %s, updated_at = now() WHERE held IS NULL"
        f" AND target_table = ANY(%s) AND (log_file, log_pos) < (%s, %s)",
        (to.log_file, to.log_pos, list(labels), to.log_file, to.log_pos))


def advance(postgres_url: DatabaseUrl, tables: Sequence[TablePlan], to: Position) -> None:
    """Move the positions of the tables (not held) to ``to``: the binlog up to there held no change of theirs."""
    with pg_connection(postgres_url) as connection:
        meta = _ensured(connection, postgres_url, tables[0].target_schema)
        _move_positions(connection, meta, [t.target_label for t in tables], to)
