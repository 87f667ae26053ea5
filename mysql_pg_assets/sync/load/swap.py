"""Blue/green for a big schema change: the new shape built in a shadow table, swapped in at commit.

With ``schema_change: blue_green`` (for a table, or in ``options`` for all), a load that finds a schema
change needing the rows read again does not migrate the table where it is. In its one transaction it:

1. builds the new shape as ``<table>__next`` (the mapping's DDL, keys and indexes after the rows) and loads
   every row into it, through the usual path (casts, transforms, validation, rejects, checks' counts);
   readers go on reading the old table, unblocked;
2. swaps last, just before the commit: the table kept from the swap before is dropped, the live table
   becomes ``<table>__previous`` and the shadow takes its name; indexes, constraints and identity sequences
   are renamed with their tables. Readers wait only for these renames: a query that arrives meanwhile
   waits and then reads the new table (PostgreSQL looks the name up again once it has its lock).

A killed load leaves the old table as it was, and no shadow (it was created in the transaction).
``cli swap-back TABLE`` swaps the live table and the previous one again, in one short transaction.

The load must read every row: an unpartitioned table's materialization does, an incremental table's
does when its shape changes, and a partitioned table's partitions do not, so their loads refuse and
``cli rebuild TABLE`` reads it whole. A table that PostgreSQL views or other tables' foreign keys depend
on is refused too: they would follow the old table through the rename (they point at it, not at its
name); such a table migrates in place.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import psycopg

from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import ensure
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_fit_name, pg_ident, pg_literal, pg_qualified
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.extract import Scope
from mysql_pg_assets.sync.load.ddl import comment_sql, table_note

SWAP_LOCK_TIMEOUT = "2s"  # each try for the table's lock: readers queue behind a waiting swap no longer
SWAP_TRIES = 30


class SwapRefused(ActionableError, RuntimeError):
    """A blue/green build or swap that cannot be made; the message says why and what to do."""


# The tables this module makes beside a synced table carry one of these comments: a table of that name that
# does not (a MySQL table named orders__next, synced too) is never dropped or swapped; the load stops instead.
BUILD_MARK = "mysql-pg-assets: being built for "
PREVIOUS_MARK = "mysql-pg-assets: kept for swap-back of "


def mark(connection: psycopg.Connection, relation: str, mark_: str, label: str) -> None:
    connection.execute(f"COMMENT ON TABLE {relation} IS {pg_literal(mark_ + label)}")


def own(connection: psycopg.Connection, relation: str, mark_: str) -> bool:
    """Whether ``relation`` exists; raises when it does and is not one this project made (``mark_``)."""
    note = connection.execute("SELECT to_regclass(%s) IS NOT NULL, obj_description(to_regclass(%s), 'pg_class')",
                              (relation, relation)).fetchone()
    if note[0] and not (note[1] or "").startswith(mark_):
        raise SwapRefused(f"{relation} exists and is not a table this project made ({mark_.strip()}…): it is left "
                          f"alone and nothing was changed; rename it, or rename the synced table (tables.<t>.rename)")
    return bool(note[0])


def drop_own(connection: psycopg.Connection, relation: str, mark_: str) -> None:
    if own(connection, relation, mark_):
        connection.execute(f"DROP TABLE {relation}")


def restore_note(connection: psycopg.Connection, table: TablePlan) -> None:
    """The live table's own comment (the spec's row filter, or none) in place of a mark."""
    connection.execute(comment_sql(replace(table, build_as=None), None, table_note(table)))


def shadow_name(table: TablePlan) -> str:
    return pg_fit_name(f"{table.target_table}__next")


def shadow_plan(table: TablePlan) -> TablePlan:
    """``table`` as written while it is built aside, under ``shadow_name``."""
    return replace(table, build_as=shadow_name(table))


def previous_name(table: TablePlan) -> str:
    return pg_fit_name(f"{table.target_table}__previous")


_DEPENDENTS = """
SELECT DISTINCT 'view ' || r.ev_class::regclass::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = %s::regclass AND r.ev_class <> d.refobjid
UNION ALL
SELECT 'foreign key ' || conname || ' of ' || conrelid::regclass::text FROM pg_constraint
WHERE contype = 'f' AND confrelid = %s::regclass AND conrelid <> confrelid
"""


def dependents(connection: psycopg.Connection, relation: str) -> list[str]:
    """The views and other tables' foreign keys that point at ``relation`` (and would follow it through a rename)."""
    return sorted(row[0] for row in connection.execute(_DEPENDENTS, (relation,) * 2))


def _refuse_dependents(connection: psycopg.Connection, table: TablePlan) -> None:
    found = dependents(connection, table.target)
    if found:
        raise SwapRefused(
            f"{table.target_label}: blue/green would leave {', '.join(found)} on the previous table (they "
            f"follow a table, not its name); nothing was changed. Drop them and create them again after the swap, or "
            f"migrate this table in place (schema_change: in_place)")


def shadow_for(connection: psycopg.Connection, table: TablePlan, scope: Scope) -> TablePlan:
    """The plan the load writes instead of ``table``: its shadow, created by the load (in its transaction)."""
    if scope is not None:
        raise SwapRefused(
            f"{table.target_label}: its schema change is made blue/green, which needs every row, and this load "
            f"reads only a part of the table; nothing was changed. Run python -m mysql_pg_assets.cli rebuild "
            f"{table.target_label}, which reads the whole table into the new shape and swaps it in")
    _refuse_dependents(connection, table)
    shadow = shadow_plan(table)
    drop_own(connection, shadow.target, BUILD_MARK)
    return shadow


def lock_for_swap(connection: psycopg.Connection, relation: str) -> None:
    """ACCESS EXCLUSIVE on ``relation``, in short tries: while a swap waits, readers queue behind it."""
    setting = connection.execute("SHOW lock_timeout").fetchone()[0]
    try:
        for attempt in range(SWAP_TRIES):
            try:
                with connection.transaction():
                    connection.execute("SELECT set_config('lock_timeout', %s, true)", (SWAP_LOCK_TIMEOUT,))
                    connection.execute(f"LOCK TABLE {relation} IN ACCESS EXCLUSIVE MODE")
                return
            except psycopg.errors.LockNotAvailable:
                time.sleep(min(0.1 * 2 ** attempt, 2.0))
        raise SwapRefused(f"{relation}: readers held the table through {SWAP_TRIES} tries of {SWAP_LOCK_TIMEOUT} "
                          f"for the swap's lock; nothing was changed; run the load again when they are done")
    finally:
        connection.execute("SELECT set_config('lock_timeout', %s, true)", (setting,))


# A table's indexes that back no constraint (those are renamed with it), and its identity sequences.
_INDEXES_AND_SEQUENCES = """
SELECT c.relname, c.relkind FROM pg_class c
WHERE c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass
                AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass))
   OR c.relkind = 'S' AND c.oid IN (SELECT objid FROM pg_depend WHERE refobjid = %s::regclass
                                    AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i'))
"""


def rename(connection: psycopg.Connection, schema: str, old: str, new: str) -> None:
    """Rename a table, and its constraints, indexes and identity sequences named after it."""
    connection.execute(f"ALTER TABLE {pg_qualified(schema, old)} RENAME TO {pg_ident(new)}")
    relation = pg_qualified(schema, new)
    prefix = f"{old}_"

    def renamed(name: str) -> str | None:
        return pg_fit_name(f"{new}_{name[len(prefix):]}") if name.startswith(prefix) else None

    for (name,) in connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass",
                                      (relation,)).fetchall():
        if renamed(name):
            connection.execute(f"ALTER TABLE {relation} RENAME CONSTRAINT {pg_ident(name)} TO "
                               f"{pg_ident(renamed(name))}")
    objects = connection.execute(_INDEXES_AND_SEQUENCES, (relation,) * 3).fetchall()
    for name, kind in objects:
        if renamed(name):
            what = "SEQUENCE" if kind == "S" else "INDEX"
            connection.execute(f"ALTER {what} {pg_qualified(schema, name)} RENAME TO {pg_ident(renamed(name))}")


def swap_in(connection: psycopg.Connection, shadow: TablePlan) -> str:
    """The load's last statements before its commit: the shadow becomes the table, the table its previous
    (the one before dropped, its own foreign keys too: stale rows must not hold other tables). Returns the
    previous table's label."""
    schema, live, previous = shadow.target_schema, shadow.target_table, previous_name(shadow)
    connection.execute(f"ANALYZE {shadow.target}")  # the planner knows the new table from its first query
    drop_own(connection, pg_qualified(schema, previous), PREVIOUS_MARK)
    lock_for_swap(connection, pg_qualified(schema, live))
    _refuse_dependents(connection, replace(shadow, build_as=None))  # created while the shadow was built
    rename(connection, schema, live, previous)
    rename(connection, schema, shadow.relation_name, live)
    mark(connection, pg_qualified(schema, previous), PREVIOUS_MARK, shadow.target_label)
    restore_note(connection, shadow)
    for (name,) in connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype"
                                      " = 'f'", (pg_qualified(schema, previous),)).fetchall():
        connection.execute(f"ALTER TABLE {pg_qualified(schema, previous)} DROP CONSTRAINT {pg_ident(name)}")
    return f"{schema}.{previous}"


def swap_back(postgres_url: DatabaseUrl, table: TablePlan, run_id: str | None = None) -> str:
    """The previous table back in place, the live one kept as previous (so a second swap-back undoes it)."""
    from mysql_pg_assets.sync.load.loader import lock_table

    if table.cdc:
        raise SwapRefused(f"{table.target_label}: change capture's position belongs to the live table; swapping "
                          f"back would show data older than it. Take a new snapshot instead (materialize the asset)")
    schema, live, previous = table.target_schema, table.target_table, previous_name(table)
    with pg_connection(postgres_url) as connection, connection.transaction():
        lock_table(connection, table.target_label, until_commit=True)
        if not own(connection, pg_qualified(schema, previous), PREVIOUS_MARK):
            raise SwapRefused(f"{table.target_label}: no previous table {schema}.{previous} to swap back to")
        _refuse_dependents(connection, table)
        lock_for_swap(connection, table.target)
        parked = pg_fit_name(f"{live}__swapping")
        rename(connection, schema, live, parked)
        rename(connection, schema, previous, live)
        rename(connection, schema, parked, previous)
        mark(connection, pg_qualified(schema, previous), PREVIOUS_MARK, table.target_label)
        restore_note(connection, table)
        meta = ensure(connection, schema)
        connection.execute(
            f"INSERT INTO {meta.schema_changes} (target_table, fingerprint, changes, destructive, applied_run_id,"
            f" applied_at, script) VALUES (%s, 'swap-back', %s::jsonb, false, %s, now(), 'swap-back')",
            (table.target_label, json.dumps([f"swapped back: {schema}.{previous} is live again"]), run_id))
    return f"{schema}.{previous}"
