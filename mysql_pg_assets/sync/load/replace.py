"""A full reload of an existing table: its rows built aside as a first load builds them, swapped in at the commit.

On the merge path (``loader``) a full reload COPYs every row into staging, upserts it into the table and
deletes what MySQL no longer has: every row is written twice and compared once, and each changed one
leaves a dead version for VACUUM. When the live table carries nothing a new table would lack, the load
instead writes the rows into ``<table>__next`` exactly as a first load does (``build``: created and written by
one binary ``COPY … FREEZE`` in the load's transaction, key and indexes after), and in that transaction:

1. a row rejected this time keeps its previous version, copied from the live table, as on the merge path;
2. the live table and the new one are compared by key: rows inserted, updated (a value differs) and
   deleted are counted as the merge path counts them, for the asset's metadata and the ledger;
3. the new table gets the live one's grants, and its planner statistics (``ANALYZE``);
4. the live table is locked (in short tries, ``swap.lock_for_swap``) and dropped, and the new one takes
   its name, its indexes, constraints and sequences theirs.

Readers read the previous rows until the commit, then the new ones; a killed load leaves the live table
as it was, and no ``__next``.

What a new table would lack sends the load down the merge path instead (:func:`kept_by_live`, logged):
views or other tables' foreign keys that point at the table; triggers, rules, row-level security, extended
statistics, a publication naming it; an owner other than the loading role; column grants, storage options,
a tablespace, inheritance; an index or constraint the load does not make (a user's own). So does a table
whose schema changed (its migration runs on the merge path, or blue/green), one keeping tombstones (its
deleted rows stay) and one without a primary key (nothing to compare by).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import psycopg

from mysql_pg_assets.core.sql import pg_fit_name, pg_ident, pg_idents
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.constraints import add_foreign_keys
from mysql_pg_assets.sync.load.ddl import create_indexes_sql, create_table_sql
from mysql_pg_assets.sync.load.merge import rows_differ, staged_key_matches
from mysql_pg_assets.sync.load.staging import Staging
from mysql_pg_assets.sync.load.swap import BUILD_MARK, SwapRefused, dependents, drop_own, lock_for_swap, shadow_plan

# Each: what the live table has that a table the load creates would not, as a condition on pg_class ``c``.
_KEPT = {
    "triggers": "EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal)",
    "rules": "EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = c.oid AND rulename <> '_RETURN')",
    "row-level security": "c.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = c.oid)",
    "a publication": "EXISTS (SELECT 1 FROM pg_publication_rel WHERE prrelid = c.oid)",
    "extended statistics": "EXISTS (SELECT 1 FROM pg_statistic_ext WHERE stxrelid = c.oid)",
    "an owner other than the loading role": "c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)",
    "column grants": "EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = c.oid AND attacl IS NOT NULL)",
    "storage options or a tablespace": "c.reloptions IS NOT NULL OR c.reltablespace <> 0",
    "inheritance or partitions": "c.relkind <> 'r' OR c.relispartition"
                                 " OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid)",
}
_KEPT_SQL = f"SELECT {', '.join(f'({condition})' for condition in _KEPT.values())} FROM pg_class c " \
            "WHERE c.oid = %s::regclass"
_NAMES = """
SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass
UNION SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass
"""
_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}
_GRANTS = """
SELECT a.privilege_type, a.is_grantable, r.rolname
FROM pg_class c CROSS JOIN aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
WHERE c.oid = %s::regclass AND a.grantee <> c.relowner
"""


# full_reload: auto replaces a table of at least this many rows (PostgreSQL's estimate). Measured on the 5M
# demo orders with 1 % changed (make bench-reload): replaced in 38.4 s, merged in 46.3 s (medians of 3, two
# COPY sessions then); with one COPY ... FREEZE and a cheaper read, replaced in 35.1 s (the first reload after
# the first loads) and 22.7 s, merged in 27.7 and 28.0 s, with 1,083 MiB of WAL against 144-509 and 303-393 MiB
# at the peak against 693-732 (513 once a whole table was read in pages: 40.6 s replaced, 38.7 s merged, on a
# slower day). The replacement's extra statements (a probe, the comparison, the swap) cost a
# small table more than merging its few changes, and many small tables pay them each.
REPLACE_FROM_ROWS = 1_000_000


def big_enough(connection: psycopg.Connection, table: TablePlan) -> bool:
    """Whether ``full_reload: auto`` replaces the table: at least ``REPLACE_FROM_ROWS`` rows, as PostgreSQL
    estimates them (a table never analyzed counts as small)."""
    return connection.execute("SELECT reltuples >= %s FROM pg_class WHERE oid = %s::regclass",
                              (REPLACE_FROM_ROWS, table.target)).fetchone()[0]


class _Probe(Exception):
    pass


def _made_names(connection: psycopg.Connection, table: TablePlan) -> set[str]:
    """The names of the constraints and indexes a load gives ``table``: made on an empty probe of its new table,
    in a savepoint rolled back, and named as they are once it takes the table's name."""
    build = shadow_plan(table)
    names: list[str] = []
    with contextlib.suppress(_Probe), connection.transaction():
        drop_own(connection, build.target, BUILD_MARK)
        connection.execute(create_table_sql(build, with_key=True))
        for statement in create_indexes_sql(build):
            connection.execute(statement)
        add_foreign_keys(connection, build)
        names = [row[0] for row in connection.execute(_NAMES, (build.target,) * 2)]
        raise _Probe
    prefix = f"{build.relation_name}_"
    return {pg_fit_name(f"{table.target_table}_{n[len(prefix):]}") if n.startswith(prefix) else n for n in names}


def kept_by_live(connection: psycopg.Connection, table: TablePlan) -> list[str]:
    """What the live table has that replacing it would lose (see the module docstring); empty: it can be
    replaced."""
    if not table.primary_key:
        return ["the counts by key (it has no primary key)"]
    if table.tombstones:
        return ["its tombstoned rows"]
    found = dependents(connection, table.target)
    flags = connection.execute(_KEPT_SQL, (table.target,)).fetchone()
    found += [what for what, present in zip(_KEPT, flags, strict=True) if present]
    live = {row[0] for row in connection.execute(_NAMES, (table.target,) * 2)}
    others = live - _made_names(connection, table)
    if others:
        found.append(f"indexes or constraints the load does not make ({', '.join(sorted(others))})")
    return found


def keep_rejected(connection: psycopg.Connection, table: TablePlan, build: TablePlan, staging: Staging) -> int:
    """The live versions of the rows rejected this time, copied into the new table; returns how many."""
    names = pg_idents(c.target_name for c in table.columns)
    return connection.execute(
        f"INSERT INTO {build.target} ({names}) SELECT {names} FROM {table.target} o WHERE EXISTS "
        f"(SELECT 1 FROM {staging.rejected_keys} s WHERE {staged_key_matches(table, 'o')}) ON CONFLICT DO NOTHING"
    ).rowcount


def compare(connection: psycopg.Connection, table: TablePlan, build: TablePlan) -> Counter[str]:
    """Rows of the new table not in the live one (inserted), in both with a value changed (updated), in the live
    one only (deleted): by primary key, as the merge path counts them."""
    key = pg_ident(table.primary_key[0])
    on = " AND ".join(f"o.{pg_ident(k)} = n.{pg_ident(k)}" for k in table.primary_key)
    others = [pg_ident(c.target_name) for c in table.columns if c.target_name not in table.primary_key]
    changed = rows_differ([f"o.{c}" for c in others], [f"n.{c}" for c in others]) if others else "false"
    inserted, updated, deleted = connection.execute(
        f"SELECT count(*) FILTER (WHERE o.{key} IS NULL), count(*) FILTER (WHERE o.{key} IS NOT NULL AND n.{key} "
        f"IS NOT NULL AND {changed}), count(*) FILTER (WHERE n.{key} IS NULL) "
        f"FROM {table.target} o FULL JOIN {build.target} n ON {on}").fetchone()
    return Counter(inserted=inserted, updated=updated, deleted=deleted)


def take_place(connection: psycopg.Connection, table: TablePlan, build: TablePlan) -> None:
    """The new table gets the live one's grants and statistics; the live one is locked and dropped. The caller
    then renames the new one into place, in the same transaction."""
    for privilege, grantable, role in connection.execute(_GRANTS, (table.target,)).fetchall():
        if privilege in _PRIVILEGES:
            connection.execute(f"GRANT {privilege} ON {build.target} TO {pg_ident(role) if role else 'PUBLIC'}"
                               f"{' WITH GRANT OPTION' if grantable else ''}")
    connection.execute(f"ANALYZE {build.target}")
    lock_for_swap(connection, table.target)
    found = dependents(connection, table.target)  # made while the rows were loaded
    if found:
        raise SwapRefused(f"{table.target_label}: {', '.join(found)} came to depend on the table while it was "
                          f"reloaded; nothing was changed; run the load again (it then merges into the table)")
    connection.execute(f"DROP TABLE {table.target}")
