"""Many tables to a step: the scheduler (a few at once, parents first, one failure stays that table's),
how tables are laid out in steps, and a step through Dagster against the real databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection, reusing_connections
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.translator import step_size, steps
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import ForeignKeyPlan, TablePlan
from mysql_pg_assets.sync.many import in_parallel, related, waits_for
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.plans import table_plan


def _child_of(table: TablePlan, *parents: str) -> TablePlan:
    keys = tuple(ForeignKeyPlan(f"fk_{p}", (f"{p}_id",), p, p, ("id",), "RESTRICT", "RESTRICT", True)
                 for p in parents)
    return replace(table, foreign_keys=keys)


def test_parents_load_before_their_children_and_no_more_than_parallel_at_once() -> None:
    tables = [_child_of(table_plan("items"), "orders", "products"), table_plan("orders"), table_plan("products"),
              *(table_plan(f"t{n}") for n in range(8))]
    finished: list[str] = []
    running, most = 0, 0
    lock = threading.Lock()

    def work(table: TablePlan) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
            finished.append(table.asset_name)
        return table.asset_name.upper()

    outcomes = list(in_parallel(tables, work, parallel=3))
    assert sorted(o.value for o in outcomes) == sorted(t.asset_name.upper() for t in tables)
    assert most == 3
    assert finished.index("items") > max(finished.index("orders"), finished.index("products"))


def test_a_failing_table_is_its_own_outcome_and_the_others_load() -> None:
    tables = [table_plan("good"), table_plan("bad"), _child_of(table_plan("child"), "bad")]

    def work(table: TablePlan) -> int:
        if table.asset_name == "bad":
            raise RuntimeError("server gone")
        return 1

    outcomes = {o.table.asset_name: o for o in in_parallel(tables, work, parallel=2)}
    assert str(outcomes["bad"].error) == "server gone" and outcomes["bad"].value is None
    # The child of a failed parent still loads: its rows are MySQL's either way.
    assert outcomes["good"].value == 1 and outcomes["child"].value == 1 and outcomes["child"].error is None


def test_the_next_table_starts_while_the_caller_is_busy_with_an_outcome() -> None:
    """Dagster stores a dozen events per finished table: workers must not wait for that."""
    tables = [table_plan(f"t{n}") for n in range(4)]
    started: dict[str, float] = {}

    def work(table: TablePlan) -> None:
        started[table.asset_name] = time.perf_counter()
        time.sleep(0.05)

    outcomes = in_parallel(tables, work, parallel=1)
    first = next(outcomes)
    time.sleep(0.3)  # the caller is slow with the first outcome
    rest = list(outcomes)
    assert len(rest) == 3
    second = next(name for name in started if name != first.table.asset_name)
    assert started[second] - started[first.table.asset_name] < 0.2


def test_tables_joined_by_lineage_share_a_step_and_steps_are_even() -> None:
    assert [step_size(n, 2) for n in (10, 300, 500, 2000)] == [50, 150, 125, 143]
    tables = [table_plan(f"t{n:03d}") for n in range(300)]
    tables[7] = _child_of(tables[7], "t250")  # t007 and t250 must share a step
    tables[250] = _child_of(tables[250], "t251")
    layout = steps(tables, slots=2)
    assert sorted(layout) == ["sync_db_1", "sync_db_2"]
    home = {t.asset_name: name for name, chunk in layout.items() for t in chunk}
    assert home["t007"] == home["t250"] == home["t251"]
    assert sorted(len(chunk) for chunk in layout.values()) == [150, 150]
    assert sum(len(chunk) for chunk in layout.values()) == 300
    assert len(related(tables)) == 298


def test_partitioned_tables_have_steps_of_their_own() -> None:
    daily = {"partition": {"column": "at", "granularity": "daily", "start": "2026-03-01"}}
    tables = [table_plan("plain"), table_plan("events", columns="id int NO, at datetime NO", **daily),
              table_plan("visits", columns="id int NO, at datetime NO", **daily)]
    layout = steps(tables, slots=2)
    assert {name: [t.asset_name for t in chunk] for name, chunk in layout.items()} == {
        "sync_db": ["plain"], "sync_db_daily_from_2026_03_01": ["events", "visits"]}


@pytest.mark.parametrize("parallel", [1, 4])
def test_waits_for_ignores_parents_outside_the_step_and_self_references(parallel: int) -> None:
    tables = [_child_of(table_plan("a"), "a", "elsewhere")]
    assert waits_for(tables) == {"a": set()}
    assert [o.value for o in in_parallel(tables, lambda t: t.asset_name, parallel)] == ["a"]


def test_one_run_loads_every_table_and_a_failing_table_fails_only_itself(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
) -> None:
    """Three tables in one step; PostgreSQL holds a view where the second should go, so its load fails.
    The other two are loaded, materialized and checked; the run fails naming the one that did not load.
    Then a run that selects one table loads that table alone."""
    mysql, pg = make_mysql_database("many"), make_pg_database("many")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        for name in ("a", "b", "c"):
            cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(10))")
            cur.execute(f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two')")
    with pg_connection(pg) as connection:
        connection.execute("CREATE SCHEMA many")
        connection.execute("CREATE VIEW many.b AS SELECT 1 AS id")
    catalog = discover(parse_spec({"target": {"schema": "many"}}), mysql)
    (step,) = build_table_assets(catalog)  # one step loads all three
    resources = {"mysql": MySQLSource(url=mysql.secret), "postgres": PostgresTarget(url=pg.secret)}
    tables = {t.source_table: t for t in catalog.tables}
    with DagsterInstance.ephemeral() as instance:
        result = materialize([step], instance=instance, resources=resources, raise_on_error=False)
        assert not result.success
        assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == {"a", "c"}
        checked = {(c.asset_key.path[-1], c.check_name) for c in result.get_asset_check_evaluations() if c.passed}
        assert checked == {(t, check) for t in ("a", "c") for check in ("rows_valid", "parity", "schema_conforms")}
        (failure,) = result.get_step_failure_events()
        message = failure.event_specific_data.error.message
        assert "1 of 3 tables failed to load" in message and "many.b:" in message, message
        assert compare_rows(mysql, pg, tables["a"]).equal and compare_rows(mysql, pg, tables["c"]).equal

        with mysql_connection(mysql) as connection, connection.cursor() as cur:
            cur.execute("UPDATE a SET v = 'changed'")
            cur.execute("UPDATE c SET v = 'changed'")
        only_c = materialize([step], selection=[AssetKey(["many", "c"])], instance=instance, resources=resources)
        assert [e.asset_key.path[-1] for e in only_c.get_asset_materialization_events()] == ["c"]
        assert compare_rows(mysql, pg, tables["c"]).equal
        assert not compare_rows(mysql, pg, tables["a"]).equal  # not selected: not touched


def test_one_reason_that_stopped_many_tables_is_said_once() -> None:
    from mysql_pg_assets.defs.assets import _reasons

    labels = [f"s.t{n}" for n in range(7)]
    failed = {**dict.fromkeys(labels, "password authentication failed"), "s.x": "lock timeout"}
    assert _reasons(failed) == ("7 tables (s.t0, s.t1, s.t2, s.t3, s.t4 …): password authentication failed; "
                                "s.x: lock timeout")


def test_a_connection_reused_by_many_tables_keeps_its_prepared_statements_right(
    make_pg_database: Callable[[str], DatabaseUrl],
) -> None:
    """A step of many tables hands one PostgreSQL session from table to table, reset in between. psycopg
    prepares a statement run five times; a reset that dropped it behind psycopg's back made the next table's
    load fail with 'prepared statement "_pg3_0" does not exist' (seen on the 12 tables of a sample schema)."""
    url = make_pg_database("reuse_prepared")
    with reusing_connections():
        for uses in (2, 7, 7):  # a table that prepared nothing, then tables that did
            with pg_connection(url) as connection:
                for n in range(uses):
                    assert connection.execute("SELECT %s::int + 1", (n,)).fetchone() == (n + 1,)
                connection.execute("SET search_path = nowhere")  # reset by the next hand-out
        with pg_connection(url) as connection:
            assert connection.execute("SHOW search_path").fetchone()[0] != "nowhere"
