"""Connections to both databases: the one place they are opened, configured and their errors worded.

Every consumer (the stages, the checks, the sensors, the CLI) asks here, so every connection:

- binds parameters through :mod:`mysql_pg_assets.core.sql`'s quote-aware scanner: PostgreSQL through a
  ``RawCursor`` (``$n`` placeholders, bound by the server), MySQL through a cursor that escapes
  values into the ``%s`` slots outside quotes. An identifier holding ``%s``, ``%``, ``{}``, ``$1`` or
  quotes is never mistaken for a placeholder;
- has timeouts, so a server that hangs cannot hang a run for good (see :class:`Timeouts`);
- raises :class:`SourceUnavailable` or :class:`TargetError` with the server named and the password
  masked, never a driver's raw message.

Timeouts are set in the URL's query string, where database users look for them: ``POSTGRES_URL``
takes libpq's own parameters (``connect_timeout``, ``keepalives_idle``, ``tcp_user_timeout``,
``options=-c lock_timeout=…``) and ``MYSQL_URL`` takes ``connect_timeout``, ``read_timeout`` and
``lock_wait_timeout`` (seconds); the defaults are in :data:`DEFAULT_TIMEOUTS`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import psycopg
import pymysql
import pymysql.cursors
from psycopg import sql

from mysql_pg_assets.core.errors import ActionableError, ConfigError
from mysql_pg_assets.core.settings import DatabaseUrl, redact
from mysql_pg_assets.core.sql import bound, numbered

if TYPE_CHECKING:  # ADBC (about 150 ms to import) is loaded by the first load that stages
    import adbc_driver_postgresql.dbapi as adbc

# What a driver's message means and what to do about it, first match wins: (pattern, advice).
_ADVICE: tuple[tuple[str, str], ...] = (
    ("lock wait timeout exceeded", "another MySQL session holds a lock on the table (a DDL, LOCK TABLES, a long "
                                   "transaction); the wait is bounded by lock_wait_timeout in MYSQL_URL"),
    ("due to lock timeout", "another PostgreSQL session holds a lock on the table; the wait is bounded by "
                            "lock_timeout (POSTGRES_URL's options=-c lock_timeout=…)"),
    ("due to statement timeout", "one statement ran longer than statement_timeout (POSTGRES_URL's "
                                 "options=-c statement_timeout=…)"),
    ("max_statement_time exceeded", "the read ran longer than MySQL's max_statement_time"),
    ("' to database '", "the user may not use that database: check the database named in MYSQL_URL, and the "
                        "user's grants"),
    ("unknown database", "no such database: check the database named in MYSQL_URL"),
    ("access denied for user", "check the user and password in MYSQL_URL (put special characters percent-encoded)"),
    ("password authentication failed", "check the user and password in POSTGRES_URL (percent-encode special "
                                       "characters)"),
    ("connection refused", "is the server running, and listening on that host and port?"),
    ("can't connect to mysql server", "is the server running, and listening on that host and port?"),
    ("timeout expired", "the server did not answer in time (connect_timeout): is the host reachable?"),
    ("server closed the connection", "the server went away (restarted, crashed, or the connection was cut); "
                                     "nothing of the load was committed: run it again once the server is back"),
    ("terminating connection", "the server went away (restarted, crashed, or the connection was cut); "
                               "nothing of the load was committed: run it again once the server is back"),
    ("lost connection to mysql server", "MySQL went away during the read; nothing of the load was committed: run "
                                        "it again once the server is back"),
    ("mysql server has gone away", "MySQL went away during the read; nothing of the load was committed: run it "
                                   "again once the server is back"),
)


def explain(message: str) -> str:
    """A driver's message, password masked, with what to do about it where that is known."""
    text = redact(message).strip()
    lowered = text.lower()
    advice = next((advice for pattern, advice in _ADVICE if pattern in lowered), None)
    return f"{text} ({advice})" if advice else text


class SourceUnavailable(ActionableError, RuntimeError):
    """MySQL could not be reached or queried; the message names the server, never the password."""


class TargetError(ActionableError, RuntimeError):
    """PostgreSQL refused or lost the load; the message names the server, never the password."""


@dataclass(frozen=True)
class Timeouts:
    """How long a connection waits before it gives up, in seconds.

    ``lock``: for a lock another session holds (a table locked by a DDL or ``LOCK TABLES``), the
    common way a healthy server makes a load wait for good. ``statement``: one PostgreSQL statement
    (a batch's merge, a key build). ``read``: MySQL sending nothing at all for this long (the
    client-side socket timeout of catalog, parity and check queries; the streaming read relies on
    TCP keepalives and ``tcp_user_timeout`` instead). Network loss is found by TCP keepalives
    within about a minute on both sides.
    """

    connect: int = 10
    lock: int = 300
    statement: int = 7200
    read: int = 3600


DEFAULT_TIMEOUTS = Timeouts()

# libpq finds a dead peer by keepalives, and data nobody acknowledges by tcp_user_timeout (ms).
_PG_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                  "keepalives_count": "3", "tcp_user_timeout": "60000"}
_MYSQL_OWN_PARAMETERS = ("connect_timeout", "read_timeout", "lock_wait_timeout")


def _query(url: DatabaseUrl) -> dict[str, str]:
    return dict(parse_qsl(url.query, keep_blank_values=True))


def mysql_timeouts(url: DatabaseUrl) -> Timeouts:
    query = _query(url)

    def seconds(name: str, default: int) -> int:
        try:
            return int(query.get(name, default))
        except ValueError:
            raise ConfigError(f"MYSQL_URL: {name}={query[name]!r} is not a number of seconds") from None

    return Timeouts(connect=seconds("connect_timeout", DEFAULT_TIMEOUTS.connect),
                    lock=seconds("lock_wait_timeout", DEFAULT_TIMEOUTS.lock),
                    read=seconds("read_timeout", DEFAULT_TIMEOUTS.read))


def pg_parameters(url: DatabaseUrl) -> dict[str, Any]:
    """libpq connection parameters: the URL's own, over the project's defaults."""
    query = _query(url)
    options = (f"-c lock_timeout={DEFAULT_TIMEOUTS.lock}s -c statement_timeout={DEFAULT_TIMEOUTS.statement}s "
               + query.pop("options", "")).strip()  # later -c settings win: the URL's
    return {"connect_timeout": str(DEFAULT_TIMEOUTS.connect), **_PG_KEEPALIVES, **query, "options": options}


# --- PostgreSQL -------------------------------------------------------------------------------

class SafeCursor(psycopg.RawCursor):
    """Takes ``%s`` placeholders like psycopg's cursor, found by the quote-aware scanner, and sends
    them as ``$n`` for the server to bind. A query composed with ``psycopg.sql`` is rendered first."""

    def _numbered(self, query: Any) -> Any:
        if isinstance(query, sql.Composable):
            query = query.as_string(self.connection)
        return numbered(query) if isinstance(query, str) else query

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> SafeCursor:
        return super().execute(self._numbered(query), params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        super().executemany(self._numbered(query), params_seq, **kwargs)


def pg_connect(url: DatabaseUrl, autocommit: bool = False) -> psycopg.Connection:
    try:
        return psycopg.connect(
            host=url.host, port=url.port, user=url.user, password=url.password, dbname=url.database,
            autocommit=autocommit, cursor_factory=SafeCursor, **pg_parameters(url),
        )
    except psycopg.Error as exc:
        raise TargetError(f"cannot connect to PostgreSQL at {url}: {explain(str(exc))}") from None


# --- Reuse within a step ------------------------------------------------------------------------

_C = TypeVar("_C")


class _Reuse:
    """Idle connections kept, per kind and URL, while :func:`reusing_connections` is open.

    A step that loads hundreds of small tables would otherwise open a dozen connections per table: a
    psycopg connection costs about 6 ms here (most of it the server's password hashing) and an ADBC one
    about 50 ms (it reads PostgreSQL's type catalog), as much as loading a 200-row table. Connections
    are handed out to one user at a time (any thread), and given back only when healthy and idle.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[Any]] = {}
        self._known: dict[tuple[str, ...], Any] = {}
        self._depth = 0

    def open(self) -> None:
        with self._lock:
            self._depth += 1

    def close(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth:
                return
            idle, self._idle, self._known = self._idle, {}, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    @property
    def active(self) -> bool:
        return self._depth > 0

    def take(self, kind: str, url: DatabaseUrl, connect: Callable[[], _C]) -> _C:
        with self._lock:
            idle = self._idle.get((kind, url.secret)) if self._depth else None
            if idle:
                return idle.pop()
        return connect()

    def known(self, key: tuple[str, ...], find: Callable[[], _C]) -> _C:
        """``find()``, remembered under ``key`` until the outermost scope ends (found anew outside one)."""
        with self._lock:
            if self._depth and key in self._known:
                return self._known[key]
        value = find()
        with self._lock:
            if self._depth:
                self._known[key] = value
        return value

    def give_back(self, kind: str, url: DatabaseUrl, connection: Any, healthy: bool) -> None:
        with self._lock:
            if healthy and self._depth:
                self._idle.setdefault((kind, url.secret), []).append(connection)
                return
        connection.close()


_REUSE = _Reuse()


@contextmanager
def reusing_connections() -> Iterator[None]:
    """Within it (in any thread), :func:`pg_connection` and :func:`adbc_connection` hand out connections
    used before and keep them when released; all are closed when the outermost one ends. A reused
    PostgreSQL session is reset first (``DISCARD ALL`` but prepared statements: settings, advisory locks,
    temporary tables, cursors), so it is as good as a new one."""
    _REUSE.open()
    try:
        yield
    finally:
        _REUSE.close()


def known_while_reusing(key: tuple[str, ...], find: Callable[[], _C]) -> _C:
    """``find()``, remembered under ``key`` while :func:`reusing_connections` is open: what one step of many
    tables would otherwise ask PostgreSQL again for each (that the project's tables exist, say)."""
    return _REUSE.known(key, find)


_RESET = ("CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); "
          "DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES")


def _pg_healthy(connection: psycopg.Connection) -> bool:
    if connection.broken or connection.closed or \
            connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:  # DISCARD ALL but its DEALLOCATE ALL: psycopg keeps its own record of the statements it prepared,
        # and misses a DISCARD ALL it has seen before (then names a statement the server no longer has)
        connection.execute(_RESET)
    except psycopg.Error:
        return False
    return True


@contextmanager
def pg_connection(url: DatabaseUrl) -> Iterator[psycopg.Connection]:
    """An autocommit connection, closed (or kept, see :func:`reusing_connections`) on exit; driver errors
    become :class:`TargetError`."""
    connection = _REUSE.take("pg", url, lambda: pg_connect(url, autocommit=True))
    healthy = False
    try:
        yield connection
        healthy = True
    except psycopg.OperationalError as exc:
        raise TargetError(f"PostgreSQL at {url}: {explain(str(exc))}") from None
    finally:
        # Reset for the next user only when there is one (no statement spent on a connection to close).
        _REUSE.give_back("pg", url, connection, healthy and _REUSE.active and _pg_healthy(connection))


def adbc_connect(url: DatabaseUrl) -> adbc.Connection:
    """The ADBC connection that COPYs Arrow batches (binary COPY) into staging tables, with the same libpq
    parameters. Its commits do not wait for the WAL flush (``synchronous_commit=off``): staging is thrown
    away after the load, and a crash loses nothing the load's own transaction (which does wait) needs."""
    parameters = pg_parameters(url)
    parameters["options"] = f"-c synchronous_commit=off {parameters['options']}"
    uri = url.with_query(urlencode(parameters, quote_via=quote)).secret
    import adbc_driver_postgresql.dbapi as adbc

    try:
        return adbc.connect(uri, autocommit=True)
    except Exception as exc:
        raise TargetError(f"cannot connect to PostgreSQL at {url}: {explain(str(exc))}") from None


@contextmanager
def adbc_connection(url: DatabaseUrl) -> Iterator[adbc.Connection]:
    """An ADBC connection, closed (or kept, see :func:`reusing_connections`) on exit; kept only when
    nothing raised."""
    connection = _REUSE.take("adbc", url, lambda: adbc_connect(url))
    healthy = False
    try:
        yield connection
        healthy = True
    finally:
        _REUSE.give_back("adbc", url, connection, healthy)


def relation_exists(connection: psycopg.Connection, relation: str) -> bool:
    """Whether ``relation`` (a qualified, quoted name) exists and this role may see it."""
    return bool(connection.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()[0])


# --- MySQL ------------------------------------------------------------------------------------

class SafeMySQLCursor(pymysql.cursors.Cursor):
    """Binds ``%s`` placeholders found by the quote-aware scanner: a ``%`` inside a backquoted
    identifier or a string literal stays text."""

    def _mogrify(self, query: str, args: Sequence[Any] | dict) -> str:
        escape = self._get_db().escape
        if isinstance(args, dict):
            return bound(query, {name: escape(value) for name, value in args.items()})
        return bound(query, [escape(value) for value in args])

    def executemany(self, query: str, args: Sequence[Sequence[Any]]) -> int:
        # pymysql's multi-row fast path formats the statement's head with %: not for our identifiers.
        self.rowcount = sum(self.execute(query, values) for values in args)
        return self.rowcount


def mysql_session_setup(url: DatabaseUrl) -> list[str]:
    """Statements each MySQL session starts with: UTC (TIMESTAMPs arrive as instants) and lock waits
    bounded (``lock_wait_timeout`` covers metadata locks, ``innodb_lock_wait_timeout`` row locks)."""
    lock = int(mysql_timeouts(url).lock)
    return ["SET time_zone = '+00:00'", f"SET SESSION lock_wait_timeout = {lock}",
            f"SET SESSION innodb_lock_wait_timeout = {lock}"]


@cache
def _preferred_tls() -> ssl.SSLContext:
    """pymysql's context for TLS when the server offers it (no certificate checked, as its own default),
    made once: pymysql makes a new one per connection, loading the system's certificates for nothing
    (about 30 ms, more than the rest of the connection)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


class _MySQLConnection(pymysql.Connection):
    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        return _preferred_tls() if sslp == {} else super()._create_ssl_ctx(sslp)


def mysql_connect(url: DatabaseUrl, database: str | None = None, autocommit: bool = True,
                  session: Sequence[str] = ()) -> pymysql.Connection:
    """A connection; ``database=""`` connects to the server only; ``session``: statements the session starts
    with, after the project's own (UTC, bounded lock waits)."""
    timeouts = mysql_timeouts(url)
    try:
        connection = _MySQLConnection(
            host=url.host, port=url.port, user=url.user, password=url.password,
            database=(database if database is not None else url.database) or None,
            charset="utf8mb4", autocommit=autocommit, cursorclass=SafeMySQLCursor,
            connect_timeout=timeouts.connect, read_timeout=timeouts.read, write_timeout=timeouts.read,
        )
    except pymysql.MySQLError as exc:
        raise SourceUnavailable(f"cannot connect to MySQL at {url}: {explain(str(exc))}") from None
    try:
        with connection.cursor() as cursor:
            for statement in [*mysql_session_setup(url), *session]:
                cursor.execute(statement)
    except pymysql.MySQLError as exc:
        connection.close()
        raise SourceUnavailable(f"MySQL at {url}: {explain(str(exc))}") from None
    return connection


@contextmanager
def mysql_connection(url: DatabaseUrl, database: str | None = None) -> Iterator[pymysql.Connection]:
    """A connection (autocommit, UTC, bounded lock waits), closed on exit; a lost server becomes
    :class:`SourceUnavailable`."""
    connection = mysql_connect(url, database)
    try:
        yield connection
    except pymysql.OperationalError as exc:
        raise SourceUnavailable(f"MySQL at {url}: {explain(str(exc))}") from None
    finally:
        connection.close()


def connectorx_url(url: DatabaseUrl, database: str) -> str:
    """The URL connectorx reads with (password included: for the driver only). connectorx's MySQL
    driver has no read timeout; TCP keepalives and tcp_user_timeout find a lost server."""
    timeouts = mysql_timeouts(url)
    query = {k: v for k, v in _query(url).items() if k not in _MYSQL_OWN_PARAMETERS}
    query = {"tcp_connect_timeout_ms": str(timeouts.connect * 1000), "tcp_keepalive_time_ms": "30000",
             "tcp_user_timeout_ms": "60000", **query}
    return url.with_database(database).with_query(urlencode(query, quote_via=quote)).secret
