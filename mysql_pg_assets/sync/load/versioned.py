"""Versioned PostgreSQL migrations: the schema changes as a Sqitch project, reviewed and committed.

``python -m mysql_pg_assets.cli migrations generate`` writes, for every table whose schema change is ready
(compatible, or destructive and approved), one Sqitch change in the spec's ``migrations.directory``:

- ``deploy/<name>.sql``: the change's DDL, each step guarded by a test of what it makes;
- ``revert/<name>.sql``: back to the shape PostgreSQL has now, each step guarded the same way;
- ``verify/<name>.sql``: raises unless the change is there;
- its line in ``sqitch.plan``, requiring the table's previous change.

The user reviews them and commits them. Then two things apply a change, and both run the same file:

- the next load of the table, inside its own transaction, as it applies any migration (``migrate``): the
  deploy script whose fingerprint is the pending migration's runs instead of the built-in steps;
- ``sqitch deploy`` (PostgreSQL engine), say to prepare staging or prod ahead of the loads.

Whichever comes second skips what the first made, so ``sqitch deploy`` after a load only records the change
in Sqitch's registry. Each script is one ``DO`` block: atomic under psql, and one statement in a load.
Constraints that need the reloaded rows (a NOT NULL on a column that still holds NULLs, a CHECK that old
rows break) are left by a deploy for the load that reads every row, as the built-in steps leave them; the
verify scripts accept that.

A revert restores the shape, not values: a dropped column comes back empty. It is for a MySQL change that
is being reverted too; while MySQL keeps the new shape, the next load migrates the table again.

With ``migrations.require: true`` a load applies no schema change that has no script in the project.
"""

from __future__ import annotations

import getpass
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.sql import pg_ident, pg_idents, pg_literal
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.ddl import check_present, comment_sql, table_note
from mysql_pg_assets.sync.load.migrate import Change, Migration, Step

PROJECT = "mysql_pg_assets"
FINGERPRINT = "-- mysql-pg-assets fingerprint: "
_CONF = "[core]\n\tengine = pg\n\tplan_file = sqitch.plan\n\ttop_dir = .\n"
_HEADER = f"%syntax-version=1.0.0\n%project={PROJECT}\n\n"
_LINE = re.compile(r"^(?P<name>[^\s\[%@#]\S*)\s+(?:\[(?P<requires>[^\]]*)\]\s+)?\S+\s+.*?<[^>]*>"
                   r"(?:\s+#\s?(?P<note>.*))?$")
# Statements a script must not hold: the load runs it inside its own transaction.
_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|END|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE|PREPARE\s+"
                          r"TRANSACTION)\b", re.I)


class ScriptRefused(ActionableError, RuntimeError):
    """A committed script a load cannot run, or a change with no script where the spec requires one."""


@dataclass(frozen=True)
class Entry:
    name: str
    requires: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Script:
    """A committed deploy script, as a load runs it."""

    name: str
    path: Path
    text: str

    def run(self, connection: psycopg.Connection) -> None:
        outside = re.sub(r"\$(\w*)\$.*?\$\1\$", "", re.sub(r"--[^\n]*", "", self.text), flags=re.S)
        for statement in outside.split(";"):
            if _TRANSACTION.match(statement) or statement.lstrip().startswith("\\"):
                raise ScriptRefused(
                    f"{self.path}: {statement.strip().splitlines()[0]!r}: a deploy script runs inside the load's "
                    f"transaction, so it may hold no transaction control and no psql command; remove it")
        connection.execute(self.text)  # no parameters: run as written, several statements allowed


class Project:
    """The Sqitch project in a directory: its plan and scripts."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.plan_file = self.directory / "sqitch.plan"

    def exists(self) -> bool:
        return self.plan_file.is_file()

    def entries(self) -> list[Entry]:
        if not self.exists():
            return []
        entries = []
        for line in self.plan_file.read_text(encoding="utf-8").splitlines():
            match = _LINE.match(line)
            if match:
                entries.append(Entry(match["name"], tuple((match["requires"] or "").split()), match["note"] or ""))
        return entries

    def script_for(self, migration: Migration) -> Script | None:
        """The newest committed deploy script of exactly this migration (by its fingerprint)."""
        for entry in reversed(self.entries()):
            path = self.directory / "deploy" / f"{entry.name}.sql"
            if entry.note.startswith(f"{migration.table.target_label}:") and path.is_file():
                text = path.read_text(encoding="utf-8")
                if f"{FINGERPRINT}{migration.fingerprint}\n" in text:
                    return Script(entry.name, path, text)
        return None

    def add(self, migration: Migration, now: datetime | None = None) -> Entry:
        """Write the migration's three scripts and its line in the plan (the project is created if missing)."""
        for folder in ("deploy", "revert", "verify"):
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
        if not (self.directory / "sqitch.conf").exists():
            (self.directory / "sqitch.conf").write_text(_CONF, encoding="utf-8")
        if not self.exists():
            self.plan_file.write_text(_HEADER, encoding="utf-8")
        entries = self.entries()
        table = migration.table
        previous = [e.name for e in entries if e.note.startswith(f"{table.target_label}:")]
        names = {e.name for e in entries}
        number, stem = len(previous) + 1, _change_name(table)
        while f"{stem}_{number:03d}" in names:
            number += 1
        entry = Entry(f"{stem}_{number:03d}", tuple(previous[-1:]),
                      f"{table.target_label}: {'; '.join(migration.summary())}".replace("\n", " "))
        for folder, text in (("deploy", deploy_sql(entry, migration)), ("revert", revert_sql(entry, migration)),
                             ("verify", verify_sql(entry, migration))):
            (self.directory / folder / f"{entry.name}.sql").write_text(text, encoding="utf-8")
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        requires = f"[{' '.join(entry.requires)}] " if entry.requires else ""
        user = getpass.getuser()
        line = f"{entry.name} {requires}{stamp} {user} <{user}@{socket.gethostname()}> # {entry.note}\n"
        text = self.plan_file.read_text(encoding="utf-8")
        self.plan_file.write_text(text + ("" if text.endswith("\n") else "\n") + line, encoding="utf-8")
        return entry


def script_for_load(table: TablePlan, migration: Migration) -> Script | None:
    """The committed script a load applies for ``migration``; None: the built-in steps. Raises when the spec
    requires a script and there is none."""
    project = Project(table.migrations) if table.migrations else None
    script = project.script_for(migration) if project is not None else None
    if script is None and table.migrations_required:
        raise ScriptRefused(
            f"{table.target_label}: MySQL's schema changed ({'; '.join(migration.summary())}), and the spec's "
            f"migrations.require asks for a committed script (fingerprint {migration.fingerprint}); nothing was "
            f"changed. Run python -m mysql_pg_assets.cli migrations generate, review and commit "
            f"{table.migrations}, then load again")
    return script


def _change_name(table: TablePlan) -> str:
    """A Sqitch change name: letters, digits and underscores, starting with a letter."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", f"{table.target_schema}_{table.target_table}").strip("_")
    return name if name[:1].isalpha() else f"t_{name}"


# --- the scripts ------------------------------------------------------------------------------

def _do(body: list[str], declare: str = "") -> str:
    text = "\n".join(body)
    tag = "$mpa$"
    while tag in text:  # a literal holding the tag: another tag
        tag = f"$mpa{len(tag)}$"
    return f"DO {tag}\n{declare}BEGIN\n{text}\nEND\n{tag};\n"


def _header(kind: str, entry: Entry, migration: Migration) -> str:
    changes = "".join(f"--   {line}\n" for line in migration.summary())
    return (f"-- {kind} {PROJECT}:{entry.name} {'to' if kind != 'Verify' else 'on'} pg\n"
            f"{FINGERPRINT}{migration.fingerprint}\n-- {migration.table.target_label}:\n{changes}"
            f"-- Written by python -m mysql_pg_assets.cli migrations generate (sync/load/versioned.py).\n")


def deploy_sql(entry: Entry, migration: Migration) -> str:
    table, body = migration.table, []
    for change in migration.changes:
        if change.before:
            body.append(f"  -- {change.describe()}\n  IF NOT ({present(table, change, migration)}) THEN\n"
                        + "".join(f"    {step.sql};\n" for step in change.before) + "  END IF;")
    for change in migration.changes:
        body += [_after_step(table, step) for step in change.after]
    note = ("-- A load of the table runs this file in its own transaction instead of its built-in steps, and so does\n"
            "-- sqitch deploy: every step is skipped where what it makes is there. Keep it so if you edit it (no\n"
            "-- BEGIN or COMMIT: the load's transaction holds it).\n\n")
    return _header("Deploy", entry, migration) + note + _do(body or ["  NULL;"])


def _after_step(table: TablePlan, step: Step) -> str:
    if step.unless_nulls_in is not None:
        return (f"  IF NOT EXISTS (SELECT 1 FROM {table.target} WHERE {pg_ident(step.unless_nulls_in)} IS NULL) THEN\n"
                f"    {step.sql};\n  END IF;")
    if step.unless_present is not None:
        return (f"  IF NOT ({step.unless_present}) THEN\n    BEGIN\n      {step.sql};\n"
                f"    EXCEPTION WHEN check_violation THEN\n      RAISE NOTICE '%', "
                f"{pg_literal('rows still break it; the next load that reads every row adds it: ' + step.sql)};\n"
                f"    END;\n  END IF;")
    return f"  {step.sql};"


def verify_sql(entry: Entry, migration: Migration) -> str:
    table = migration.table
    body = [f"  IF NOT ({present(table, change, migration)}) THEN\n    RAISE EXCEPTION '%', "
            f"{pg_literal(f'{table.target_label}: not there: {change.describe()}')};\n  END IF;"
            for change in migration.changes]
    return _header("Verify", entry, migration) + "\n" + _do(body or ["  NULL;"])


def revert_sql(entry: Entry, migration: Migration) -> str:
    table, body = migration.table, []
    for change in reversed(migration.changes):
        steps = _revert_steps(table, change, migration)
        body.append(f"  -- undo {change.describe()}\n  IF ({present(table, change, migration)}) THEN\n"
                    + "".join(f"    {step}\n" for step in steps) + "  END IF;")
    note = "-- Restores the shape PostgreSQL had, not values: a dropped column comes back empty.\n\n"
    return _header("Revert", entry, migration) + note + _do(body or ["  NULL;"], "DECLARE r record;\n")


# --- what a change makes, and its undoing --------------------------------------------------------

def _regclass(table: TablePlan) -> str:
    return f"to_regclass({pg_literal(table.target)})"


def _attribute(table: TablePlan, column: str, what: str) -> str:
    return (f"(SELECT {what} FROM pg_attribute WHERE attrelid = {_regclass(table)} AND attname = {pg_literal(column)}"
            f" AND attnum > 0 AND NOT attisdropped)")


def _has(table: TablePlan, column: str) -> str:
    return f"EXISTS {_attribute(table, column, '1')}"


def _text(value: str | None) -> str:
    return "NULL" if value is None else pg_literal(value)


def _primary_key(table: TablePlan) -> str:
    return (f"(SELECT array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a"
            f" ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) FROM pg_constraint c WHERE c.conrelid = "
            f"{_regclass(table)} AND c.contype = 'p')")


def present(table: TablePlan, change: Change, migration: Migration) -> str:
    """SQL, true when what ``change`` makes is in the table (what waits for the reloaded rows aside)."""
    old, new, kind, name = change.old, change.new, change.kind, change.column or ""
    if kind == "add_column":
        return _has(table, name)
    if kind == "drop_column":
        return f"NOT {_has(table, name)}"
    if kind == "rename_column":
        return f"{_has(table, new.name)} AND NOT {_has(table, old.name)}"
    if kind in ("widen_type", "change_type"):
        return f"{_attribute(table, name, 'format_type(atttypid, atttypmod)')} IS NOT DISTINCT FROM {_text(new.type)}"
    if kind == "set_default":
        return (f"(SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d WHERE d.adrelid = {_regclass(table)} AND "
                f"d.adnum = {_attribute(table, name, 'attnum')}) IS NOT DISTINCT FROM {_text(new.default)}")
    if kind == "drop_not_null":
        return f"NOT {_attribute(table, name, 'attnotnull')}"
    if kind == "set_not_null":  # or left for the load that reads every row
        return (f"{_attribute(table, name, 'attnotnull')} OR EXISTS (SELECT 1 FROM {table.target} WHERE "
                f"{pg_ident(name)} IS NULL)")
    if kind in ("widen_values", "narrow_values"):
        if old.check:
            return f"NOT {check_present(table, old.check[1])}"
        return check_present(table, new.check[1] if new.check else None)
    if kind == "change_primary_key":
        key = migration.expected.primary_key
        return f"{_primary_key(table)} IS NOT DISTINCT FROM " + (
            f"ARRAY[{', '.join(pg_literal(c) for c in key)}]::text[]" if key else "NULL")
    if kind == "transform":
        return (f"col_description({_regclass(table)}, {_attribute(table, name, 'attnum')}) IS NOT DISTINCT FROM "
                f"{_text(new.note)}")
    if kind == "row_filter":
        return f"obj_description({_regclass(table)}, 'pg_class') IS NOT DISTINCT FROM {_text(table_note(table))}"
    raise ValueError(f"no versioned script for a change of kind {kind!r}")


def _drop_constraints(table: TablePlan, where: str) -> str:
    return (f"FOR r IN SELECT conname FROM pg_constraint WHERE conrelid = {_regclass(table)} AND {where} LOOP "
            f"EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', {_regclass(table)}, r.conname); END LOOP;")


def _revert_steps(table: TablePlan, change: Change, migration: Migration) -> list[str]:
    old, new, kind, target = change.old, change.new, change.kind, table.target
    alter = f"ALTER TABLE {target}"
    if kind == "add_column":
        return [f"{alter} DROP COLUMN IF EXISTS {pg_ident(new.name)};"]
    if kind == "rename_column":
        return [f"{alter} RENAME COLUMN {pg_ident(new.name)} TO {pg_ident(old.name)};"]
    if kind == "drop_column":
        column = pg_ident(old.name)
        steps = [f"{alter} ADD COLUMN {column} {old.type}" + (f" DEFAULT {old.default};" if old.default else ";")]
        if old.not_null:
            steps.append(f"IF NOT EXISTS (SELECT 1 FROM {target} WHERE {column} IS NULL) THEN {alter} ALTER COLUMN "
                         f"{column} SET NOT NULL; END IF;")
        if old.check:
            steps.append(f"{alter} ADD CONSTRAINT {pg_ident(old.check[0])} {old.check[1]};")
        return steps + ([f"{comment_sql(table, old.name, old.note)};"] if old.note else [])
    column = pg_ident(change.column or "")
    if kind in ("widen_type", "change_type"):
        steps = [f"{alter} ALTER COLUMN {column} DROP DEFAULT;"] if new.default else []
        steps.append(f"{alter} ALTER COLUMN {column} TYPE {old.type} USING {column}::{old.type};")
        return steps + ([f"{alter} ALTER COLUMN {column} SET DEFAULT {old.default};"] if old.default else [])
    if kind == "set_default":
        return [f"{alter} ALTER COLUMN {column} " + (f"SET DEFAULT {old.default};" if old.default else "DROP DEFAULT;")]
    if kind == "drop_not_null":
        return [f"{alter} ALTER COLUMN {column} SET NOT NULL;"]
    if kind == "set_not_null":
        return [f"{alter} ALTER COLUMN {column} DROP NOT NULL;"]
    if kind in ("widen_values", "narrow_values"):
        steps = [_drop_constraints(table, f"contype = 'c' AND pg_get_constraintdef(oid) = {pg_literal(new.check[1])}")
                 ] if new.check else []
        return steps + ([f"{alter} ADD CONSTRAINT {pg_ident(old.check[0])} {old.check[1]};"] if old.check else [])
    if kind == "change_primary_key":
        actual = migration.actual
        steps = [_drop_constraints(table, "contype = 'p'")]
        if actual.primary_key:
            steps.append(f"{alter} ADD CONSTRAINT {pg_ident(actual.primary_key_name)} PRIMARY KEY "
                         f"({pg_idents(actual.primary_key)});")
        return steps
    if kind == "transform":
        return [f"{comment_sql(table, change.column, old.note if old else None)};"]
    if kind == "row_filter":
        return [f"{comment_sql(table, None, migration.actual.note)};"]
    raise ValueError(f"no versioned script for a change of kind {kind!r}")
