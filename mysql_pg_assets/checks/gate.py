"""The compatibility gate: a MySQL migration judged before it runs (``cli check-migration FILE.sql``).

What the migration would do to the synced PostgreSQL tables is decided by the same rules the loads and
the schema-drift sensor use (``sync.load.migrate``): compatible changes migrate by themselves, destructive
ones wait for an approval. To know what the migration does, MySQL itself is asked, not a model of it:

1. the file is split into statements with sqlglot's MySQL tokenizer, and each runs as written; a statement
   that is not DDL (an UPDATE, say) is refused: the gate judges schema changes;
2. a scratch database (``mpa_gate_<random>``) gets a copy of the definition of every base table of the
   source database (``SHOW CREATE TABLE``, no rows), the statements run there in order, with the source
   database's name replaced by the scratch one wherever it is written, and the scratch database is
   dropped at the end, whatever happened. A statement MySQL refuses is a failure of the gate: it would
   fail in production too;
3. the spec is resolved against the scratch database (same target schema) and each synced table's new
   mapping is compared with what PostgreSQL holds now (or, for a table never loaded, with the current
   mapping);
4. for every destructive change, what depends on it downstream is named: PostgreSQL views, rules and
   foreign keys on the table (``pg_depend``, ``pg_constraint``), and the synced tables whose foreign keys
   reference it (their assets are downstream of it in Dagster).

The MySQL user needs every privilege on the scratch databases: ``GRANT ALL ON `mpa\\_gate\\_%`.* TO ...``.
Exit codes (for CI): 0 nothing destructive, 2 destructive changes (approval needed), 1 the gate could not
judge (a statement MySQL refuses, a statement that is not DDL, no privilege).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import pymysql
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

from mysql_pg_assets.core.connections import mysql_connection, pg_connection, relation_exists
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import mysql_ident
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.ddl import expected_shape, table_shape
from mysql_pg_assets.sync.load.migrate import Migration, diff_shapes
from mysql_pg_assets.sync.spec import SpecError, SyncSpec

DDL = ("ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE")  # how a schema change begins


class GateError(ActionableError, ValueError):
    """The migration cannot be judged: it is not DDL, or MySQL refuses a statement of it."""


@dataclass
class Verdict:
    """What the migration does to one synced table."""

    table: str  # target label
    status: str  # unchanged | compatible | destructive | new | dropped
    changes: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    statements: int
    verdicts: list[Verdict]

    @property
    def destructive(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status in ("destructive", "dropped")]

    @property
    def exit_code(self) -> int:
        return 2 if self.destructive else 0


def split_statements(text: str) -> list[str]:
    """The file's statements as written (sqlglot's MySQL tokenizer finds where they end: a semicolon in a
    string or a comment does not split). Each must be DDL; they run as written, never re-rendered."""
    tokens = Dialect.get_or_raise("mysql").tokenize(text)
    statements, first = [], None
    for token in [*tokens, None]:
        if token is not None and token.token_type != TokenType.SEMICOLON:
            first = first or token
            last = token
            continue
        if first is not None:
            statement = text[first.start:last.end + 1].strip()
            if first.text.upper() not in DDL:
                raise GateError(f"not a schema change: {statement[:200]} (the gate judges DDL: "
                                f"{', '.join(DDL)})")
            statements.append(statement)
        first = None
    return statements


def _in_scratch(statement: str, database: str, scratch: str) -> str:
    """The statement with the source database's name, where it qualifies a table, replaced by the scratch's."""
    quoted = re.escape(mysql_ident(database))
    plain = re.escape(database)
    return re.sub(rf"(?<![\w`]){quoted}\.|(?<![\w`]){plain}\.(?=[`\w])", f"{mysql_ident(scratch)}.", statement)


@contextmanager
def scratch_copy(url: DatabaseUrl, database: str) -> Iterator[str]:
    """A scratch database with the definitions (no rows) of every base table of ``database``; dropped after."""
    scratch = f"mpa_gate_{uuid.uuid4().hex[:10]}"
    with mysql_connection(url, database="") as connection, connection.cursor() as cur:
        try:
            cur.execute(f"CREATE DATABASE {mysql_ident(scratch)}")
        except pymysql.MySQLError as exc:
            raise GateError(f"cannot create the scratch database {scratch} on MySQL at {url}: {exc.args[-1]}; the "
                            f"gate needs: GRANT ALL ON `mpa\\_gate\\_%`.* TO the user") from None
        try:
            cur.execute("SET SESSION foreign_key_checks = 0")
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND "
                        "table_type = 'BASE TABLE' ORDER BY table_name", (database,))
            names = [row[0] for row in cur.fetchall()]
            cur.execute(f"USE {mysql_ident(scratch)}")
            for name in names:
                cur.execute(f"SHOW CREATE TABLE {mysql_ident(database)}.{mysql_ident(name)}")
                cur.execute(cur.fetchone()[1])
            yield scratch
        finally:
            cur.execute(f"DROP DATABASE IF EXISTS {mysql_ident(scratch)}")


def run_in_scratch(url: DatabaseUrl, database: str, scratch: str, statements: list[str]) -> None:
    with mysql_connection(url, database=scratch) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION foreign_key_checks = 0")
        for number, statement in enumerate(statements, 1):
            try:
                cur.execute(_in_scratch(statement, database, scratch))
            except pymysql.MySQLError as exc:
                said = str(exc.args[-1]).replace(scratch, database)  # the user's database, not the copy's name
                raise GateError(f"statement {number} fails on the current schema of {database}: "
                                f"{statement[:200]}: MySQL says: {said}") from None


def check_migration(spec: SyncSpec, mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, text: str) -> GateResult:
    """The verdict on a migration (the SQL of a file) for every synced table; see the module docstring."""
    statements = split_statements(text)
    before = discover(spec, mysql_url)
    database = before.source_database
    with scratch_copy(mysql_url, database) as scratch:
        run_in_scratch(mysql_url, database, scratch, statements)
        moved = spec.model_copy(update={"source": spec.source.model_copy(update={"database": scratch}),
                                        "target": spec.target.model_copy(update={"schema_name": before.target_schema})})
        spec_error = None
        try:
            resolved = discover(moved, mysql_url.with_database(scratch))
        except SpecError as exc:  # the spec names a table the migration drops: the code location would not load
            spec_error = str(exc).replace(scratch, database)
            resolved = discover(moved, mysql_url.with_database(scratch), missing_ok=True)
        after = {t.target_label: t for t in resolved.tables}
    old = {t.target_label: t for t in before.tables}
    with pg_connection(postgres_url) as connection:
        verdicts = [_verdict(connection, old.get(label), after.get(label), list(before.tables))
                    for label in sorted(set(old) | set(after))]
    for verdict in verdicts:
        if verdict.status == "dropped" and spec_error:
            verdict.changes.append(f"the spec names it, so the code location would fail to load: {spec_error}")
    return GateResult(len(statements), verdicts)


def _verdict(connection: psycopg.Connection, old: TablePlan | None, new: TablePlan | None,
             tables: list[TablePlan]) -> Verdict:
    if old is None:
        assert new is not None
        return Verdict(new.target_label, "new", [f"a new table: {new.source_table} will be synced"])
    if new is None:
        return Verdict(old.target_label, "dropped", [f"{old.source_table} is gone from MySQL: no longer synced, its "
                                                     f"PostgreSQL table stays as last loaded"],
                       _dependents(connection, old, None, tables))
    actual = table_shape(connection, old.target) if relation_exists(connection, old.target) else expected_shape(
        connection, old)
    migration = diff_shapes(new, actual, expected_shape(connection, new))
    if not migration:
        return Verdict(old.target_label, "unchanged")
    status = "destructive" if migration.destructive else "compatible"
    dependents = _dependents(connection, old, migration, tables) if migration.destructive else []
    return Verdict(old.target_label, status, migration.summary(), dependents)


_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, a.attname
FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s::regclass AND v.oid <> d.refobjid
"""
_FOREIGN_KEYS = """
SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass
"""


def _dependents(connection: psycopg.Connection, table: TablePlan, migration: Migration | None,
                tables: list[TablePlan]) -> list[str]:
    """What is downstream of the table's destructive changes (``migration`` None: of the whole table)."""
    columns = {c.column for c in migration.destructive} if migration else set()
    whole = migration is None or any(c.column is None for c in migration.destructive)
    found: list[str] = []
    if relation_exists(connection, table.target):
        views: dict[str, set[str]] = {}
        for view, column in connection.execute(_VIEWS, (table.target,)):
            views.setdefault(view, set()).add(column)
        found += [f"PostgreSQL view {view} (uses {', '.join(sorted(c for c in used if c))})"
                  for view, used in sorted(views.items()) if whole or used & columns]
        found += [f"PostgreSQL foreign key {name} of {owner}"
                  for owner, name in connection.execute(_FOREIGN_KEYS, (table.target,))
                  if whole or _references(tables, owner, table, columns)]
    found += [f"Dagster asset {child.target_label} (its foreign key {fk.name} references {table.target_table})"
              for child in tables for fk in child.foreign_keys
              if fk.referenced_target == table.target_table and (whole or set(fk.referenced_columns) & columns)]
    return found


def _references(tables: list[TablePlan], owner: str, table: TablePlan, columns: set[str]) -> bool:
    """Whether the synced table ``owner`` references one of ``columns`` (a table we do not know: yes)."""
    child = next((t for t in tables if t.target in (owner, f'"{owner}"') or t.target_label == owner), None)
    if child is None:
        return True
    return any(fk.referenced_target == table.target_table and set(fk.referenced_columns) & columns
               for fk in child.foreign_keys)


def render(result: GateResult) -> str:
    lines = [f"{result.statements} statements; {len(result.verdicts)} synced tables"]
    for verdict in result.verdicts:
        if verdict.status == "unchanged":
            continue
        lines.append(f"{verdict.status.upper():<12} {verdict.table}")
        lines += [f"    {change}" for change in verdict.changes]
        lines += [f"    downstream: {dependent}" for dependent in verdict.dependents]
    unchanged = sum(v.status == "unchanged" for v in result.verdicts)
    lines.append(f"{unchanged} unchanged; " + (
        f"{len(result.destructive)} with destructive changes (loads wait for approve_schema_change; a dropped "
        f"table is no longer synced)"
        if result.destructive else "nothing destructive: loads migrate by themselves"))
    return "\n".join(lines)
