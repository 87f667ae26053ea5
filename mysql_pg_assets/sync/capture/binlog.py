"""Capture: the binlog's row changes of the synced tables, read with mysql-replication, as whole transactions.

A :class:`Transaction` is what the source committed: its row changes in binlog order, its commit time,
and the position right after it (where reading resumes). Nothing of a transaction is handed on before
its commit event, so PostgreSQL never sees half of one. A statement that changes a table's definition
(``ALTER``, ``DROP``, ``RENAME``, ``TRUNCATE``) is handed on as a :class:`SchemaEvent` for that table.

Positions are the binlog file and offset. MariaDB's GTIDs would survive a failover, but the reader
(mysql-replication 1.0.17) loops on a big transaction when positioned by GTID on MariaDB (measured:
``NOTES.md``); file and offset are exact on the server they come from.

The server must log rows whole with their column metadata (``binlog_format=ROW``,
``binlog_row_image=FULL``, and on MariaDB ``binlog_row_metadata=FULL``, without which the reader cannot
tell a BLOB from a TEXT): :func:`check_server` says what to set when it is not so.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from mysql_pg_assets.core.connections import SourceUnavailable, explain, mysql_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.settings import DatabaseUrl


class CaptureError(ActionableError, RuntimeError):
    """Change capture cannot go on: a server not logging rows whole, a position the binlog no longer has."""


@dataclass(frozen=True, order=True)
class Position:
    """A place in the binlog: the file, and the offset in it (files are numbered in order)."""

    log_file: str
    log_pos: int

    def __str__(self) -> str:
        return f"{self.log_file}:{self.log_pos}"


@dataclass(frozen=True)
class RowChange:
    table: str  # source table name
    operation: str  # insert | update | delete
    before: dict[str, object] | None  # MySQL's values by column name, as the reader decoded them
    after: dict[str, object] | None


@dataclass
class Transaction:
    """A committed source transaction, or a part of a huge one (``complete`` False: more parts follow; only
    the last part's ``end`` is a place to resume from)."""

    end: Position  # where reading resumes after it
    committed_at: datetime
    changes: list[RowChange] = field(default_factory=list)
    start: Position | None = None  # its first row event: before or at a stored position, it is applied already
    complete: bool = True


@dataclass(frozen=True)
class SchemaEvent:
    end: Position
    table: str
    statement: str


# TRUNCATE may leave out TABLE; its rows never reach the binlog one by one, so it must hold the table too.
_DDL = re.compile(r"^\s*((ALTER|DROP|RENAME|CREATE\s+OR\s+REPLACE)\s+TABLE|TRUNCATE)\s", re.I)


def master_position(url: DatabaseUrl) -> Position:
    """Where the binlog ends now: a snapshot taken from here on is followed from here."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        try:
            cur.execute("SHOW MASTER STATUS")
        except pymysql.MySQLError as exc:
            raise CaptureError(f"MySQL at {url}: cannot read the binlog position ({explain(str(exc))}); the user "
                               f"needs the REPLICATION CLIENT (MariaDB: BINLOG MONITOR) privilege") from None
        row = cur.fetchone()
    if not row:
        raise CaptureError(f"MySQL at {url} has no binlog: start it with log_bin, binlog_format=ROW")
    return Position(row[0], int(row[1]))


def binlog_has(url: DatabaseUrl, position: Position) -> bool:
    """Whether the server still has the binlog file of ``position`` (not purged)."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        return any(row[0] == position.log_file for row in cur.fetchall())


def check_server(url: DatabaseUrl) -> None:
    """Refuse a server whose binlog cannot be followed row by row, saying what to set."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@version")
        log_bin, fmt, image, version = cur.fetchone()
        metadata = "FULL"
        if "mariadb" in version.lower():
            cur.execute("SELECT @@binlog_row_metadata")
            metadata = cur.fetchone()[0]
    wrong = [f"{name}={want} (it is {have})" for name, want, have in (
        ("log_bin", "ON", "ON" if int(log_bin) else "OFF"), ("binlog_format", "ROW", fmt),
        ("binlog_row_image", "FULL", image), ("binlog_row_metadata", "FULL", metadata)) if str(have) != want]
    if wrong:
        raise CaptureError(f"MySQL at {url} does not log rows whole: set {', '.join(wrong)} (SET GLOBAL, and in the "
                           f"server's configuration)")


def _settings(url: DatabaseUrl) -> dict[str, object]:
    return {"host": url.host, "port": url.port, "user": url.user, "password": url.password}


def read(url: DatabaseUrl, database: str, tables: set[str], start: Position, server_id: int,
         blocking: bool, part_rows: int = 20_000,
         until: Position | None = None) -> Iterator[Transaction | SchemaEvent | Position]:
    """The committed transactions (their changes to ``tables`` of ``database``) and the schema changes of
    those tables, from ``start`` on. Not ``blocking``: stop at the binlog's end (catching up), or at the
    first transaction boundary at or past ``until``, and give last the position reached, however little of
    it was about ``tables``. A transaction of more than ``part_rows`` changes comes in parts, so that memory
    stays bounded whatever its size (``apply`` keeps one PostgreSQL transaction open across them)."""
    stream = BinLogStreamReader(
        connection_settings=_settings(url), server_id=server_id, log_file=start.log_file, log_pos=start.log_pos,
        resume_stream=True, blocking=blocking, only_schemas=[database],
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, QueryEvent, RotateEvent],
    )
    pending: Transaction | None = None
    try:
        for event in stream:
            end = Position(stream.log_file, int(event.packet.log_pos))
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                if event.table not in tables:
                    continue
                if pending is None:
                    pending = Transaction(end, datetime.fromtimestamp(event.timestamp, UTC), start=end)
                pending.changes += _changes(event)
                if len(pending.changes) >= part_rows:
                    pending.complete = False
                    yield pending
                    pending = Transaction(end, pending.committed_at, start=pending.start)
            elif isinstance(event, XidEvent) or (isinstance(event, QueryEvent) and _commits(event)):
                if pending is not None:
                    pending.end = end
                    pending.committed_at = datetime.fromtimestamp(event.timestamp, UTC)  # the commit's own time
                    yield pending
                    pending = None
            elif isinstance(event, QueryEvent):
                table = _altered(event, database, tables)
                if table is not None:
                    yield SchemaEvent(end, table, _text(event.query))
            if until is not None and pending is None and end >= until:
                yield end
                return
        if pending is None and stream.log_file:
            yield Position(stream.log_file, int(stream.log_pos))
    except (pymysql.MySQLError, OSError) as exc:  # OSError: the connection reset under the reader
        raise _lost(url, start, exc) from None
    finally:
        stream.close()


def _changes(event: WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent) -> list[RowChange]:
    if isinstance(event, WriteRowsEvent):
        return [RowChange(event.table, "insert", None, row["values"]) for row in event.rows]
    if isinstance(event, UpdateRowsEvent):
        return [RowChange(event.table, "update", row["before_values"], row["after_values"]) for row in event.rows]
    return [RowChange(event.table, "delete", row["values"], None) for row in event.rows]


def _text(query: object) -> str:
    return query.decode(errors="replace") if isinstance(query, bytes) else str(query)


def _commits(event: QueryEvent) -> bool:
    """A COMMIT written as a statement (non-transactional engines, some MariaDB paths) ends a transaction too."""
    return _text(event.query).strip().upper() == "COMMIT"


def _altered(event: QueryEvent, database: str, tables: set[str]) -> str | None:
    """The synced table a DDL statement names (None: not DDL, or not about a synced table)."""
    query = _text(event.query)
    if not _DDL.match(query):
        return None
    schema = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
    if schema and schema != database and f"`{database}`" not in query and f"{database}." not in query:
        return None
    words = re.findall(r"`((?:[^`]|``)+)`|([A-Za-z0-9_$]+)", query)
    names = {(quoted or plain).replace("``", "`") for quoted, plain in words}
    return next((t for t in sorted(tables) if t in names), None)


def _lost(url: DatabaseUrl, start: Position, exc: Exception) -> Exception:
    text = str(exc)
    if "Could not find first log file" in text or "1236" in text:
        return CaptureError(f"MySQL at {url} no longer has the binlog at {start} (purged?): the tables following it "
                            f"must be snapshotted again (materialize their assets); nothing was applied past it")
    return SourceUnavailable(f"reading the binlog of MySQL at {url}: {explain(text)}")


def capture_ready(url: DatabaseUrl, database: str, tables: set[str]) -> str:
    """What change capture needs of the server, checked: rows logged whole, the binlog position readable, the
    binlog itself readable (REPLICATION SLAVE). Returns where the binlog is now."""
    check_server(url)
    here = master_position(url)
    try:
        for _ in read(url, database, tables, here, server_id=999_999, blocking=False):
            break
    except SourceUnavailable as exc:
        raise CaptureError(f"{exc}; the user needs the REPLICATION SLAVE privilege to read the binlog") from None
    return f"binlog readable at {here}, rows logged whole, {len(tables)} tables followed"
