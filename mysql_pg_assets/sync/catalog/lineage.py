"""Foreign keys between synced tables, as Dagster lineage that never forms a cycle.

A child asset depends on its parents, so "materialize all" loads parents first. Real schemas have
cycles (Sakila's store ↔ staff) and self-references (a category's parent), and Dagster's lineage
must be a graph without cycles: :func:`cycle_breaks` leaves out the keys that would close one, and
says which cycle, for the asset's description.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from mysql_pg_assets.sync.catalog.plans import ForeignKeyPlan, TablePlan


def attach_foreign_keys(
    tables: tuple[TablePlan, ...], foreign_keys: Mapping[str, Iterable], create: bool
) -> tuple[TablePlan, ...]:
    """Attach the foreign keys whose two ends are both synced (and whose columns arrive unchanged), in target
    names, marked lineage or not.
    ``foreign_keys``: per source table, MySQL's keys (name, columns, referenced table and columns, actions)."""
    by_source = {t.source_table: t for t in tables}
    found: dict[str, list[ForeignKeyPlan]] = {}
    for table in tables:
        keys = found.setdefault(table.source_table, [])
        nullable = {c.source.name: c.source.nullable for c in table.columns}
        for key in foreign_keys.get(table.source_table, ()):
            parent = by_source.get(key.referenced_table)
            if parent is None:
                continue
            # A key over a column left out, masked or changed in Python holds values the parent does not have.
            child_names = {c.source.name: c.target_name for c in table.columns if c.comparable}
            parent_names = {c.source.name: c.target_name for c in parent.columns if c.comparable}
            if not set(key.columns) <= child_names.keys() or not set(key.referenced_columns) <= parent_names.keys():
                continue
            referenced = tuple(parent_names[c] for c in key.referenced_columns)
            child_types = {c.source.name: c.pg_type for c in table.columns}
            parent_types = {c.source.name: c.pg_type for c in parent.columns}
            unique_keys = [parent.primary_key] + [i.columns for i in parent.indexes if i.unique]
            keys.append(ForeignKeyPlan(
                key.name, tuple(child_names[c] for c in key.columns), parent.source_table, parent.target_table,
                referenced, key.on_delete, key.on_update, references_unique_key=referenced in unique_keys,
                required=not any(nullable[c] for c in key.columns),
                same_types=all(child_types[c] == parent_types[r] for c, r in zip(key.columns, key.referenced_columns,
                                                                                   strict=True)),
            ))
    cut = cycle_breaks([(child, key.referenced_table, key.name, key.required)
                        for child, keys in found.items() for key in keys])
    return tuple(
        replace(table, create_foreign_keys=create, foreign_keys=tuple(
            replace(key, not_lineage=cut.get((table.source_table, key.name))) for key in found[table.source_table]))
        for table in tables
    )


def cycle_breaks(edges: list[tuple[str, str, str, bool]]) -> dict[tuple[str, str], str]:
    """Which foreign keys to leave out of lineage so that it stays a DAG, and why.

    ``edges`` are (child table, parent table, key name, required). Edges are kept greedily, required
    references (NOT NULL columns) first, then by table and key name, so the choice is stable; an
    edge whose parent already reaches its child would close a cycle and is left out. Returns
    {(child, key name): reason}, the reason naming the cycle (``store → staff → store``).
    """
    parents: dict[str, list[str]] = {}

    def path(start: str, goal: str) -> list[str] | None:
        """A path start → … → goal through the kept edges (child → parent), if any."""
        stack, seen = [[start]], {start}
        while stack:
            trail = stack.pop()
            if trail[-1] == goal:
                return trail
            for parent in parents.get(trail[-1], []):
                if parent not in seen:
                    seen.add(parent)
                    stack.append([*trail, parent])
        return None

    cut: dict[tuple[str, str], str] = {}
    for child, parent, name, _required in sorted(edges, key=lambda e: (not e[3], e[0], e[1], e[2])):
        if child == parent:
            cut[(child, name)] = f"a self-reference ({child} → {child})"
            continue
        closing = path(parent, child)
        if closing is not None:
            cut[(child, name)] = f"it closes the cycle {' → '.join([child, *closing])}"
            continue
        parents.setdefault(child, []).append(parent)
    return cut


