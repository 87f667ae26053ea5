"""The PostgreSQL table's shape: created from the mapping, or migrated to it when MySQL's changes.

A migration compares the PostgreSQL table with a table built from the mapping of MySQL's current
columns (created in ``pg_temp`` inside a rolled-back savepoint, so PostgreSQL itself normalizes
types, defaults and CHECKs) and lists the changes between them. Each change is either:

- **compatible**: nothing PostgreSQL holds is lost or refused: a new column, a widened type
  (``integer → bigint``, ``numeric(10,2) → numeric(12,4)``, ``varchar(20) → varchar(50)``,
  ``date → timestamp``, more fractional seconds), a column that became nullable or NOT NULL (the
  constraint is added once the reload has left no NULL), new ENUM members, a new default. Loads
  apply these by themselves.
- **destructive**: a dropped or renamed column, a narrowed or otherwise changed type, ENUM
  members removed, a changed primary key. A load refuses to run
  (:class:`SchemaChangeHeld`) until the exact list of changes, identified by its fingerprint, has
  been approved (:func:`approve`, the ``approve_schema_change`` job); then it applies them.

A load applies a migration inside its own transaction: the DDL before the merge, the constraints
that need the reloaded rows (NOT NULL, CHECK) after it. So a migration and the rows it needs
commit together or not at all. Every applied migration is a row of ``mysql_pg_assets.schema_changes``,
which also holds the approvals.

The stages here know nothing of Dagster; the schema-drift sensor and the approval job call them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psycopg

from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import ensure, existing
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident, pg_idents
from mysql_pg_assets.sync.catalog.plans import ColumnPlan, TablePlan
from mysql_pg_assets.sync.load.ddl import (
    NOTE_MARK,
    Shape,
    ShapeColumn,
    check_present,
    check_sql,
    column_note,
    column_sql,
    comment_sql,
    expected_shape,
    table_note,
    table_shape,
)

if TYPE_CHECKING:
    from mysql_pg_assets.sync.load.versioned import Script

APPROVAL_JOB = "approve_schema_change"


# --- which type changes lose nothing ----------------------------------------------------------

_TYPE = re.compile(r"^(?P<base>[a-z ]+?)(?:\((?P<p>\d+)(?:,(?P<s>\d+))?\))?(?P<zone> with(?:out)? time zone)?"
                   r"(?P<array>\[\])?$")
_INTEGER_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_FRACTIONAL = {"timestamp", "time", "interval"}  # precision: digits of fractional seconds, 6 when unset


@dataclass(frozen=True)
class _Type:
    base: str
    precision: int | None
    scale: int | None
    zone: str
    array: bool


def _parse_type(text: str) -> _Type | None:
    match = _TYPE.match(text)
    if match is None:
        return None
    p, s = match["p"], match["s"]
    return _Type(match["base"], int(p) if p else None, int(s) if s else (0 if p else None),
                 (match["zone"] or "").strip(), bool(match["array"]))


def widens(old: str, new: str) -> bool:
    """Whether every value of PostgreSQL type ``old`` converts to ``new`` unchanged."""
    if old == new:
        return True
    a, b = _parse_type(old), _parse_type(new)
    if a is None or b is None or a.array != b.array:
        return False
    if a.base in _INTEGER_DIGITS and b.base in _INTEGER_DIGITS:
        return _INTEGER_DIGITS[b.base] >= _INTEGER_DIGITS[a.base]
    if b.base == "numeric" and (a.base in _INTEGER_DIGITS or a.base == "numeric"):
        if b.precision is None:  # unconstrained numeric holds anything
            return True
        if a.base in _INTEGER_DIGITS:
            return b.precision - (b.scale or 0) >= _INTEGER_DIGITS[a.base]
        if a.precision is None:
            return False
        return (b.scale or 0) >= (a.scale or 0) and b.precision - (b.scale or 0) >= a.precision - (a.scale or 0)
    if (a.base, b.base) == ("real", "double precision"):
        return True
    if a.base in ("character varying", "character") and b.base in ("character varying", "text"):
        return b.base == "text" or b.precision is None or (a.precision or 0) <= b.precision
    if a.base == b.base == "bit varying":
        return b.precision is None or (a.precision is not None and a.precision <= b.precision)
    if (a.base, b.base) == ("date", "timestamp") and b.zone == "without time zone":
        return True
    if a.base == b.base and a.base in _FRACTIONAL and a.zone == b.zone:
        return (6 if b.precision is None else b.precision) >= (6 if a.precision is None else a.precision)
    return False


_CHECK_MEMBER = re.compile(r"'((?:[^']|'')*)'::")


def _members(definition: str) -> set[str]:
    return {m.replace("''", "'") for m in _CHECK_MEMBER.findall(definition)}


# --- the migration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    sql: str
    unless_nulls_in: str | None = None  # SET NOT NULL: skipped while the column still holds NULLs
    unless_present: str | None = None  # SQL, true when what the step makes is already there (a versioned script)


@dataclass(frozen=True)
class Change:
    kind: str
    column: str | None
    detail: str
    destructive: bool
    before: tuple[Step, ...] = ()  # DDL run before the load's merge
    after: tuple[Step, ...] = ()  # constraints that need the reloaded rows, run after it
    old: ShapeColumn | None = None  # the column as PostgreSQL has it (a versioned script's revert)
    new: ShapeColumn | None = None  # the column as the mapping wants it

    def describe(self) -> str:
        return f"{self.kind} {self.column or ''}: {self.detail}".replace(" :", ":")


@dataclass(frozen=True)
class Migration:
    table: TablePlan
    changes: tuple[Change, ...]
    actual: Shape | None = None  # the table PostgreSQL has
    expected: Shape | None = None  # the mapping's

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def destructive(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.destructive)

    @property
    def reloads_rows(self) -> bool:
        """Whether rows already loaded must be read again (a default or a looser constraint needs none)."""
        return any(c.kind not in ("drop_not_null", "set_default", "widen_values") for c in self.changes)

    @property
    def fingerprint(self) -> str:
        """Identifies this exact list of changes: an approval is for it alone."""
        text = json.dumps([self.table.target_label, sorted(c.describe() for c in self.changes)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> list[str]:
        return [f"{'DESTRUCTIVE ' if c.destructive else ''}{c.describe()}" for c in self.changes]


class SchemaChangeHeld(ActionableError, RuntimeError):
    """A destructive change waits for its approval; the message says what it is and how to approve it."""

    def __init__(self, migration: Migration) -> None:
        self.migration = migration
        changes = "; ".join(c.describe() for c in migration.destructive)
        super().__init__(
            f"{migration.table.target_label}: MySQL's schema changed destructively ({changes}); nothing was "
            f"changed. Review, then launch the job {APPROVAL_JOB} with config table: "
            f"{migration.table.target_label}, approve: true (fingerprint {migration.fingerprint}); the next load "
            f"migrates and reloads."
        )


def plan(connection: psycopg.Connection, table: TablePlan) -> Migration:
    """The changes that turn the existing PostgreSQL table into the mapping's (empty: none)."""
    return diff_shapes(table, table_shape(connection, table.target), expected_shape(connection, table))


def diff_shapes(table: TablePlan, actual: Shape, expected: Shape) -> Migration:
    """The changes from the table PostgreSQL has (``actual``) to the mapping's (``expected``): pure, so
    every decision here is tested without a database."""
    renamed = _renames(actual, expected)
    changes = _columns_added_dropped_renamed(table, actual, expected, renamed)
    plans = {c.target_name: c for c in table.columns}
    for new in expected.columns:
        old = actual.column(new.name) or (actual.column(renamed[new.name].name) if new.name in renamed else None)
        if old is not None:
            column = plans.get(new.name)
            changes += _type_or_default(table, old, new, column) + _nullability(table, old, new)
            changes += _checked_values(table, old, new, column)
    if actual.primary_key != expected.primary_key:  # last: the new key may name a column added above
        changes.append(_key_change(table, actual, expected))
    return Migration(table, tuple(changes + _transform_changes(table, actual, renamed)), actual, expected)


def _transform_changes(table: TablePlan, actual: Shape, renamed: dict[str, ShapeColumn]) -> list[Change]:
    """A mask, derived column or row filter that changed in the spec (the notes of ``ddl``): the rows are
    read again, so no value masked before stays, and none that a new filter leaves out."""
    def shown(note: str | None) -> str:
        return note[len(NOTE_MARK):] if note else "as MySQL has it"

    changes = []
    for column in table.columns:
        old = actual.column(column.target_name) or renamed.get(column.target_name)
        have, want = (old.note if old else None), column_note(column)
        if have != want:
            changes.append(Change("transform", column.target_name, f"{shown(have)} → {shown(want)}", False,
                                  (Step(comment_sql(table, column.target_name, want)),), old=old,
                                  new=replace(old or _bare(column.target_name), note=want)))
    if actual.note != table_note(table):
        changes.append(Change("row_filter", None, f"{shown(actual.note)} → {shown(table_note(table))}", False,
                              (Step(comment_sql(table, None, table_note(table))),)))
    return changes


def _bare(name: str) -> ShapeColumn:
    return ShapeColumn(name, "", False, None, None)


def _alter(table: TablePlan, clause: str, unless_nulls_in: str | None = None) -> Step:
    return Step(f"ALTER TABLE {table.target} {clause}", unless_nulls_in)


def _renames(actual: Shape, expected: Shape) -> dict[str, ShapeColumn]:
    """New name → old column, for a column gone and one added with the same type at the same position."""
    expected_names, actual_names = [c.name for c in expected.columns], [c.name for c in actual.columns]
    dropped = [c for c in actual.columns if c.name not in expected_names]
    renamed: dict[str, ShapeColumn] = {}
    for new in (c for c in expected.columns if c.name not in actual_names):
        old = next((c for c in dropped if c.type == new.type and c not in renamed.values()
                    and actual_names.index(c.name) == expected_names.index(new.name)), None)
        if old is not None:
            renamed[new.name] = old
    return renamed


def _columns_added_dropped_renamed(
    table: TablePlan, actual: Shape, expected: Shape, renamed: dict[str, ShapeColumn]
) -> list[Change]:
    plans = {c.target_name: c for c in table.columns}
    expected_names, actual_names = {c.name for c in expected.columns}, {c.name for c in actual.columns}
    changes = [Change("rename_column", old.name, f"renamed to {new_name}", True,
                      (_alter(table, f"RENAME COLUMN {pg_ident(old.name)} TO {pg_ident(new_name)}"),), old=old,
                      new=expected.column(new_name))
               for new_name, old in renamed.items()]
    changes += [Change("drop_column", old.name, f"{old.type} gone from MySQL", True,
                       (_alter(table, f"DROP COLUMN {pg_ident(old.name)}"),), old=old)
                for old in actual.columns if old.name not in expected_names and old not in renamed.values()]
    for new in expected.columns:
        if new.name in actual_names or new.name in renamed:
            continue
        column = plans.get(new.name)
        definition = column_sql(column, not_null=False) if column else f"{pg_ident(new.name)} {new.type}"
        after = (_alter(table, f"ALTER COLUMN {pg_ident(new.name)} SET NOT NULL", new.name),) if new.not_null else ()
        changes.append(Change("add_column", new.name, new.type + (" NOT NULL" if new.not_null else ""), False,
                              (_alter(table, f"ADD COLUMN {definition}"),), after, new=new))
    return changes


def _type_or_default(table: TablePlan, old: ShapeColumn, new: ShapeColumn, column: ColumnPlan | None) -> list[Change]:
    name = pg_ident(new.name)
    if old.type != new.type:
        # The default is dropped first and set again: an old default may not cast to the new type.
        identity = column is not None and column.identity
        steps = [] if identity or old.default is None else [_alter(table, f"ALTER COLUMN {name} DROP DEFAULT")]
        steps.append(_alter(table, f"ALTER COLUMN {name} TYPE {new.type} USING {name}::{new.type}"))
        if not identity and column is not None and column.default_sql is not None:
            steps.append(_alter(table, f"ALTER COLUMN {name} SET DEFAULT {column.default_sql}"))
        wider = widens(old.type, new.type)
        return [Change("widen_type" if wider else "change_type", new.name, f"{old.type} → {new.type}", not wider,
                       tuple(steps), old=old, new=new)]
    if old.default != new.default and column is not None and not column.identity:
        sql = f"SET DEFAULT {column.default_sql}" if column.default_sql is not None else "DROP DEFAULT"
        return [Change("set_default", new.name, f"{old.default} → {new.default}", False,
                       (_alter(table, f"ALTER COLUMN {name} {sql}"),), old=old, new=new)]
    return []


def _nullability(table: TablePlan, old: ShapeColumn, new: ShapeColumn) -> list[Change]:
    name = pg_ident(new.name)
    if old.not_null and not new.not_null:
        return [Change("drop_not_null", new.name, "now nullable", False,
                       (_alter(table, f"ALTER COLUMN {name} DROP NOT NULL"),), old=old, new=new)]
    if new.not_null and not old.not_null:
        # MySQL replaced its NULLs with values when the column became NOT NULL: the reload brings
        # them, and the constraint follows once no NULL is left (nothing PostgreSQL holds is lost).
        return [Change("set_not_null", new.name, "now NOT NULL", False,
                       after=(_alter(table, f"ALTER COLUMN {name} SET NOT NULL", new.name),), old=old, new=new)]
    return []


def _checked_values(table: TablePlan, old: ShapeColumn, new: ShapeColumn, column: ColumnPlan | None) -> list[Change]:
    """An ENUM's CHECK: members added is compatible, members removed is not."""
    old_check, new_check = old.check[1] if old.check else None, new.check[1] if new.check else None
    if old_check == new_check:
        return []
    gone = _members(old_check or "") - _members(new_check or "") if old_check and new_check else set()
    looser = new_check is None or (old_check is not None and not gone)
    steps = (_alter(table, f"DROP CONSTRAINT IF EXISTS {pg_ident(old.check[0])}"),) if old.check else ()
    after = (Step(f"ALTER TABLE {table.target} ADD {check_sql(column)}",
                  unless_present=check_present(table, new_check)),) if column and column.allowed_values else ()
    detail = ("values no longer checked" if new_check is None else
              f"values {sorted(gone)} removed" if gone else "values added")
    return [Change("widen_values" if looser else "narrow_values", new.name, detail, not looser, steps, after,
                   old=old, new=new)]


def _key_change(table: TablePlan, actual: Shape, expected: Shape) -> Change:
    # A dropped key column took the old key with it: hence IF EXISTS.
    steps = [_alter(table, f"DROP CONSTRAINT IF EXISTS {pg_ident(actual.primary_key_name)}")] \
        if actual.primary_key_name else []
    if expected.primary_key:
        steps.append(_alter(table, f"ADD PRIMARY KEY ({pg_idents(expected.primary_key)})"))
    return Change("change_primary_key", None, f"({', '.join(actual.primary_key)}) → "
                                              f"({', '.join(expected.primary_key)})", True, tuple(steps))


def plan_tables(connection: psycopg.Connection, tables: Iterable[TablePlan]) -> dict[str, Migration]:
    """Migrations of the tables that exist in PostgreSQL, by target label."""
    tables = list(tables)
    present = {row[0] for row in connection.execute(  # one query, whatever the number of tables
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
        ([t.target for t in tables],))}
    return {table.target_label: plan(connection, table) for table in tables if table.target in present}


def pending_migration(postgres_url: DatabaseUrl, table: TablePlan) -> Migration | None:
    """The migration the next load of the table will apply (None: the table is missing or conforms)."""
    with pg_connection(postgres_url) as connection:
        return plan_tables(connection, [table]).get(table.target_label) or None


def approved(connection: psycopg.Connection, migration: Migration) -> bool:
    meta = existing(connection, migration.table.target_schema)
    if meta is None:
        return False
    return connection.execute(
        f"SELECT EXISTS (SELECT 1 FROM {meta.schema_changes} WHERE target_table = %s AND fingerprint = %s"
        f" AND approved_at IS NOT NULL AND applied_at IS NULL)",
        (migration.table.target_label, migration.fingerprint),
    ).fetchone()[0]


def applied_count(connection: psycopg.Connection, table: TablePlan) -> int:
    """How many migrations of the table have been applied: part of a run key, so that a change made,
    undone and made again gets a new run."""
    meta = existing(connection, table.target_schema)
    if meta is None:
        return 0
    return connection.execute(f"SELECT count(*) FROM {meta.schema_changes} WHERE target_table = %s AND applied_at"
                              f" IS NOT NULL", (table.target_label,)).fetchone()[0]


def approve(connection: psycopg.Connection, migration: Migration, run_id: str | None) -> None:
    """Record the approval of exactly these changes; the next load of the table applies them."""
    meta = ensure(connection, migration.table.target_schema)
    if not approved(connection, migration):
        connection.execute(
            f"INSERT INTO {meta.schema_changes} (target_table, fingerprint, changes, destructive, approved_run_id,"
            f" approved_at) VALUES (%s, %s, %s::jsonb, %s, %s, now())",
            (migration.table.target_label, migration.fingerprint, json.dumps(migration.summary()),
             bool(migration.destructive), run_id),
        )


def require_approval(connection: psycopg.Connection, migration: Migration) -> None:
    """Raises SchemaChangeHeld for a destructive change not approved."""
    if migration.destructive and not approved(connection, migration):
        raise SchemaChangeHeld(migration)


def apply_before(connection: psycopg.Connection, migration: Migration, script: Script | None = None) -> None:
    """The DDL a load runs before its merge, in its transaction: the committed ``script`` of a versioned project
    (``versioned``), else the built-in steps. Refuses a destructive change not approved."""
    require_approval(connection, migration)
    if script is not None:
        script.run(connection)
        return
    for change in migration.changes:
        for step in change.before:
            connection.execute(step.sql)


def apply_after(connection: psycopg.Connection, migration: Migration, run_id: str | None,
                script: str | None = None) -> list[str]:
    """The constraints that need the loaded rows (those a versioned script made already are skipped), then the
    record of the migration, with the ``script`` that applied it; returns what is left for a later load (a
    NOT NULL on a column that still holds NULLs outside this load's scope)."""
    target = migration.table.target
    pending = []
    for change in migration.changes:
        for step in change.after:
            if step.unless_nulls_in is not None and connection.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {target} WHERE {pg_ident(step.unless_nulls_in)} IS NULL)"
            ).fetchone()[0]:
                pending.append(f"{step.unless_nulls_in}: NOT NULL once every row is loaded again")
                continue
            if step.unless_present is not None and connection.execute(f"SELECT {step.unless_present}").fetchone()[0]:
                continue
            connection.execute(step.sql)
    record_applied(connection, migration, run_id, script)
    return pending


def record_applied(connection: psycopg.Connection, migration: Migration, run_id: str | None,
                   script: str | None) -> None:
    """The migration's row in ``schema_changes`` (its approval's, if it had one), marked applied by ``script``
    (a versioned script's name, ``blue/green``, or None for the built-in steps)."""
    meta = ensure(connection, migration.table.target_schema)
    updated = connection.execute(
        f"UPDATE {meta.schema_changes} SET applied_run_id = %s, applied_at = now(), script = %s WHERE target_table"
        f" = %s AND fingerprint = %s AND approved_at IS NOT NULL AND applied_at IS NULL",
        (run_id, script, migration.table.target_label, migration.fingerprint),
    ).rowcount
    if not updated:
        connection.execute(
            f"INSERT INTO {meta.schema_changes} (target_table, fingerprint, changes, destructive, applied_run_id,"
            f" applied_at, script) VALUES (%s, %s, %s::jsonb, %s, %s, now(), %s)",
            (migration.table.target_label, migration.fingerprint, json.dumps(migration.summary()),
             bool(migration.destructive), run_id, script),
        )
