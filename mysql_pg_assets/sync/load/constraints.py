"""What a load adds once its rows are in: MySQL's foreign keys (by option), identities that follow the data."""

from __future__ import annotations

import psycopg

from mysql_pg_assets.core.sql import pg_ident, pg_idents, pg_qualified
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.ddl import object_name

# RESTRICT cannot be deferred in PostgreSQL; NO ACTION is RESTRICT checked at commit.
_REFERENTIAL_ACTIONS = {"CASCADE": "CASCADE", "SET NULL": "SET NULL", "SET DEFAULT": "SET DEFAULT",
                        "RESTRICT": "NO ACTION", "NO ACTION": "NO ACTION"}
# ON DELETE: a parent loads before its children (lineage), so its load deletes rows MySQL no longer has
# while PostgreSQL still holds their children; MySQL's RESTRICT guarantees MySQL holds none of them, so
# PostgreSQL cascades: nothing MySQL holds is lost, and the parent's load is not refused for good.
_ON_DELETE = {**_REFERENTIAL_ACTIONS, "RESTRICT": "CASCADE", "NO ACTION": "CASCADE"}


def add_foreign_keys(connection: psycopg.Connection, table: TablePlan) -> None:
    """MySQL's foreign keys between synced tables, once both tables exist (option foreign_keys).

    Only keys that are lineage: a self-reference or a key closing a cycle joins rows that separate
    loads bring in either order, which no constraint checked at a load's commit can accept. A table
    keeping tombstones gets none: a cascading delete would remove the rows it keeps.
    DEFERRABLE INITIALLY DEFERRED: checked at the end of the load, so its order of rows does not matter.
    NOT VALID: rows already there are not re-checked when the constraint is added.
    """
    if not table.create_foreign_keys or table.tombstones:
        return
    target = table.target
    for key in table.foreign_keys:
        if not key.lineage or not key.same_types:  # lineage still; a constraint PostgreSQL would refuse, not
            continue
        name = object_name(table, key.name)
        parent = pg_qualified(table.target_schema, key.referenced_target)
        present, parent_exists = connection.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s),"
            " to_regclass(%s) IS NOT NULL", (target, name, parent),
        ).fetchone()
        if present or not parent_exists or not key.references_unique_key:
            continue
        connection.execute(
            f"ALTER TABLE {target} ADD CONSTRAINT {pg_ident(name)} FOREIGN KEY ({pg_idents(key.columns)}) "
            f"REFERENCES {parent} ({pg_idents(key.referenced_columns)}) "
            f"ON DELETE {_ON_DELETE[key.on_delete]} ON UPDATE {_REFERENTIAL_ACTIONS[key.on_update]} "
            f"DEFERRABLE INITIALLY DEFERRED NOT VALID"
        )


def follow_identities(connection: psycopg.Connection, table: TablePlan) -> None:
    """Set each identity's next value past the largest loaded one, as AUTO_INCREMENT would."""
    target = table.target
    for column in table.columns:
        if column.identity:
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({pg_ident(column.target_name)}), 0) + 1,"
                f" false) FROM {target}",
                (target, column.target_name),
            )
