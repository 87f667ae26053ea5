"""Drift decisions and migration plans, as plain functions: no Dagster, no database."""

from __future__ import annotations

from datetime import timedelta

from mysql_pg_assets.checks.drift import (
    data_repair,
    freshness_change,
    freshness_state,
    reload_range,
    schema_decisions,
    units_to_check,
)
from mysql_pg_assets.checks.parity import Fingerprint
from mysql_pg_assets.sync.load.ddl import Shape, ShapeColumn
from mysql_pg_assets.sync.load.migrate import Change, Migration, diff_shapes
from mysql_pg_assets.sync.spec import Freshness
from mysql_pg_assets_tests.plans import table_plan

ORDERS, ITEMS = table_plan("orders"), table_plan("items")


def test_each_unit_is_checked_in_turn_within_the_budget() -> None:
    units = [(ORDERS, "2026-01"), (ORDERS, "2026-02"), (ITEMS, None)]
    assert units_to_check(units, 0, 2) == ([units[0], units[1]], 2)
    assert units_to_check(units, 2, 2) == ([units[2], units[0]], 1)  # round again
    assert units_to_check(units, 7, 10) == (units[1:] + units[:1], 1)
    assert units_to_check([], 3, 5) == ([], 0)


def test_a_drift_is_repaired_once_and_a_new_one_again() -> None:
    same = Fingerprint(10, 42)
    assert data_repair(ORDERS, "2026-01", same, same) is None
    first = data_repair(ORDERS, "2026-01", same, Fingerprint(9, 40))
    again = data_repair(ORDERS, "2026-01", same, Fingerprint(9, 40))
    later = data_repair(ORDERS, "2026-01", Fingerprint(11, 50), Fingerprint(9, 40))
    assert first and again and later and first.run_key == again.run_key != later.run_key
    assert first.run_key == "drift:s.orders:2026-01:10:42:9:40"


def _migration(table: object, destructive: bool) -> Migration:
    return Migration(table, (Change("drop_column" if destructive else "add_column", "x", "…", destructive),))


def test_schema_changes_run_when_compatible_or_approved_and_are_held_once_otherwise() -> None:
    tables = [ORDERS, ITEMS]
    migrations = {"s.orders": _migration(ORDERS, False), "s.items": _migration(ITEMS, True)}
    runs, holds, reported = schema_decisions(tables, migrations, {"s.items": False}, {"s.orders": 2}, {})
    assert [(r.table, r.reason) for r in runs] == [(ORDERS, "schema drift")]
    assert runs[0].run_key == f"schema:s.orders:{migrations['s.orders'].fingerprint}:2"
    assert [h.table for h in holds] == [ITEMS] and "approve: true" in holds[0].how
    assert reported == {"s.items": migrations["s.items"].fingerprint}
    # The next tick: the hold is not reported twice; once approved, it runs; once applied, it is forgotten.
    assert schema_decisions(tables, migrations, {"s.items": False}, {}, reported)[1] == []
    runs, holds, _ = schema_decisions(tables, migrations, {"s.items": True}, {}, reported)
    assert {r.reason for r in runs} == {"schema drift", "schema drift (approved)"} and holds == []
    assert schema_decisions(tables, {}, {}, {}, reported)[2] == {}


def test_a_migrating_run_reloads_what_the_change_touches() -> None:
    every = ["2026-01", "2026-02", "2026-03"]
    assert reload_range(["2026-02", "2026-01"], every, reloads_rows=True) == ("2026-01", "2026-02")
    assert reload_range(["2026-02", "2026-01"], every, reloads_rows=False) == ("2026-02", "2026-02")
    assert reload_range([], every, reloads_rows=True) == ("2026-01", "2026-03")  # loaded elsewhere: all


def test_freshness_states_and_when_they_are_worth_an_alert() -> None:
    policy = Freshness(warn_after=timedelta(hours=1), fail_after=timedelta(hours=2))
    assert [freshness_state(t, 10_000, policy) for t in (None, 9_000, 6_000, 1_000)] == [
        "UNKNOWN", "PASS", "WARN", "FAIL"]
    assert freshness_change("PASS", "WARN") and freshness_change("FAIL", "PASS")
    assert not freshness_change("UNKNOWN", "PASS") and not freshness_change("WARN", "WARN")


def _shape(*columns: tuple[str, str, bool], key: tuple[str, ...] = ("id",)) -> Shape:
    return Shape(tuple(ShapeColumn(name, kind, not_null, None, None) for name, kind, not_null in columns), key,
                 "t_pkey" if key else None)


def test_a_migration_is_planned_from_the_two_shapes() -> None:
    table = table_plan(columns="id int NO, v varchar(20) YES, w int YES")
    before = _shape(("id", "integer", True), ("v", "character varying(10)", False), ("gone", "text", False))
    after = _shape(("id", "integer", True), ("v", "character varying(20)", False), ("w", "integer", False))
    migration = diff_shapes(table, before, after)
    assert [(c.kind, c.column, c.destructive) for c in migration.changes] == [
        ("drop_column", "gone", True), ("add_column", "w", False), ("widen_type", "v", False)]
    assert migration.changes[2].before[-1].sql == (
        'ALTER TABLE "s"."t" ALTER COLUMN "v" TYPE character varying(20) USING "v"::character varying(20)')
    narrowed = diff_shapes(table, after, _shape(("id", "bigint", True), ("v", "character varying(5)", True),
                                                ("w", "integer", False), key=()))
    assert {c.kind: c.destructive for c in narrowed.changes} == {
        "widen_type": False, "change_type": True, "set_not_null": False, "change_primary_key": True}
