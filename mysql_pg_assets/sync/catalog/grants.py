"""What the MySQL user may read, so that nothing it may not read goes missing without a word.

MySQL hides what a user has no privilege on: ``information_schema`` lists only the tables it may
use and, under a column-level grant, only the granted columns. Read naively, a table the user
cannot see is simply not there and a table with three granted columns out of eleven looks like a
three-column table; every check then passes on a copy that is short. So the catalog asks here:

- which grants cover whole tables: a global or database-level ``SELECT`` (the usual reader user)
  covers every table and costs no more queries; a table-level one covers its table;
- for a table no grant of the user explains (a role's, which MariaDB's privilege views do not show
  the user, or a column-level grant), ``SELECT * … LIMIT 0`` tells: MySQL refuses ``*`` when any
  column is not granted.

A table read through a column-level grant is an :class:`AccessDenied` naming the table, the columns
the user may read and the ``GRANT`` that would let it read all of them, unless the spec says the
visible columns are all it wants (``tables.<t>.visible_columns_only: true``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pymysql

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.sql import mysql_ident, mysql_qualified

log = logging.getLogger(__name__)

# ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR
_DENIED = (1142, 1143)


class AccessDenied(ActionableError, RuntimeError):
    """A privilege is missing; the message names the server's user, the table or columns and what to grant."""


@dataclass(frozen=True)
class Access:
    user: str  # 'user'@'host', as GRANT names it
    whole_database: bool  # SELECT on every table of the database: a global or database-level grant
    tables: frozenset[str]  # tables with a table-level SELECT

    def grant(self, database: str, table: str | None = None) -> str:
        on = mysql_qualified(database, table) if table else f"{mysql_ident(database)}.*"
        return f"GRANT SELECT ON {on} TO {self.user}"


def _grantees(cur: pymysql.cursors.Cursor) -> tuple[str, list[str]]:
    """The user as GRANT names it, and the grantees whose privileges it has (itself, its current role)."""
    cur.execute("SELECT CURRENT_USER()")
    name, _, host = cur.fetchone()[0].rpartition("@")
    user = f"'{name}'@'{host}'"
    grantees = [user]
    try:
        cur.execute("SELECT CURRENT_ROLE()")
        role = cur.fetchone()[0]
        if role and role != "NONE":
            grantees.append(f"'{role}'@''")  # MariaDB's spelling of a role as a grantee
    except pymysql.MySQLError:
        pass
    return user, grantees


def read_access(cur: pymysql.cursors.Cursor, database: str) -> Access:
    user, grantees = _grantees(cur)
    marks = ", ".join(["%s"] * len(grantees))
    cur.execute(f"SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE IN ({marks})"
                f" AND PRIVILEGE_TYPE = 'SELECT'", grantees)
    whole = bool(cur.fetchone()[0])
    if not whole:  # a database-level grant may name a LIKE pattern (GRANT SELECT ON `shop%`.*)
        cur.execute(f"SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE IN ({marks})"
                    f" AND PRIVILEGE_TYPE = 'SELECT' AND %s LIKE TABLE_SCHEMA", [*grantees, database])
        whole = bool(cur.fetchone()[0])
    tables: set[str] = set()
    if not whole:
        cur.execute(f"SELECT TABLE_NAME FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE IN ({marks})"
                    f" AND PRIVILEGE_TYPE = 'SELECT' AND TABLE_SCHEMA = %s", [*grantees, database])
        tables = {row[0] for row in cur.fetchall()}
    return Access(user, whole, frozenset(tables))


def unreadable(cur: pymysql.cursors.Cursor, database: str, tables: list[str], access: Access) -> dict[str, str]:
    """Of ``tables``, those the user may not read whole, with MySQL's refusal: only tables no grant of
    the user explains are probed, so a database-level grant costs nothing here."""
    refused = {}
    for table in tables:
        if access.whole_database or table in access.tables:
            continue
        try:
            cur.execute(f"SELECT * FROM {mysql_qualified(database, table)} LIMIT 0")
        except pymysql.MySQLError as exc:
            if exc.args[0] not in _DENIED:
                raise
            refused[table] = str(exc.args[1])
    return refused


def column_grant_error(access: Access, database: str, table: str, visible: list[str], refusal: str) -> AccessDenied:
    return AccessDenied(
        f"MySQL user {access.user} may read only the columns {', '.join(visible) or '(none)'} of "
        f"{database}.{table} (MySQL: {refusal}); its other columns are hidden from the user and would not be "
        f"synced. Run {access.grant(database, table)}, or set tables.{table}.visible_columns_only: true in the "
        f"sync spec to sync those columns alone."
    )


def warn_table_level_only(access: Access, database: str) -> None:
    """A user without a database-level grant sees only the tables granted to it one by one: a table added
    later, or forgotten in the grants, is invisible, so ``include: ["*"]`` cannot know it exists."""
    if not access.whole_database:
        log.warning("MySQL user %s has no SELECT on all of %s, only on single tables: a table it has no grant on "
                    "is invisible to it and is not synced (%s covers every table)", access.user, database,
                    access.grant(database))
