"""End to end, as a user works: materialize through Dagster, then compare MySQL and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

import mysql_pg_assets_demo as demo
from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.defs.translator import human_duration
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import DEMO_ORDERS, materializations, materialize_everything, write_spec

DEMO_TABLES = {"categories", "customers", "products", "orders", "order_items", "payments", "reviews",
               "inventory_events"}


def _assert_every_table_equal(settings: Settings) -> None:
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    for table in catalog.tables:
        parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
        assert parity.mysql_rows > 0, table.source_label
        assert parity.equal, (table.source_label, parity.postgres_rows, parity.differences)


def test_every_demo_asset_materializes_equal_to_mysql(demo_settings: Settings) -> None:
    defs = build_definitions(demo_settings)
    assets = list(defs.assets or [])
    keys = {key for a in assets for key in a.keys}
    assert keys == {AssetKey(["shop", name]) for name in DEMO_TABLES}
    # Freshness from sync.yaml's options, on every asset.
    windows = {s.freshness_policy.fail_window.to_timedelta() for a in assets for s in a.specs}
    assert {s.name for s in defs.sensors or []} == {
        "schema_drift_shop", "data_drift_shop", "freshness_alerts_shop", "alert_on_run_failure"}
    assert [j.name for j in defs.jobs or []] == ["approve_schema_change", "trace_record", "rebuild_table"]
    assert windows == {timedelta(hours=6)}
    # The shop's foreign keys are its lineage; categories' reference to itself is not (a self-reference).
    deps = {key.path[-1]: {d.path[-1] for d in a.asset_deps[key]} for a in assets for key in a.keys}
    assert deps == {"categories": set(), "customers": set(), "products": {"categories"}, "orders": {"customers"},
                    "order_items": {"orders", "products"}, "payments": {"orders"},
                    "reviews": {"products", "customers"}, "inventory_events": {"products"}}

    with DagsterInstance.ephemeral() as instance:
        results = materialize_everything(defs, instance)
        assert all(r.success for r in results)
        _assert_every_table_equal(demo_settings)
        checks = [c for r in results for c in r.get_asset_check_evaluations()]
        partitioned = {"orders", "order_items", "payments", "inventory_events"}  # + the whole-table count
        # Three checks each (rows_valid, parity, schema_conforms), the whole-table count on partitioned ones, and
        # sync.yaml's own checks of orders.
        own = {"currency_str_matches", "total_not_negative"}
        assert {c.check_name for c in checks if c.asset_key == AssetKey(["shop", "orders"])} >= own
        assert len(checks) == 3 * len(DEMO_TABLES) + len(partitioned) + len(own), checks
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        # parity compared sampled rows too: every demo table has a key.
        assert all(c.metadata["rows_compared"].value > 0 for c in checks if c.check_name == "parity")

        # One run over every month: each month's materialization has its own figures, which add up.
        months = [m.metadata for m in materializations(results, "shop", "orders")]
        read = [m["rows_read"].value for m in months]
        assert read == [m["rows_inserted"].value for m in months] == [m["dagster/row_count"].value for m in months]
        assert sum(read) == DEMO_ORDERS and len(set(read)) > 1 and {m["range"].value for m in months} == {
            f"{months[0]['range'].value.split(' ')[0]} ({len(months)} partitions, one run)"}
        orders = months[-1]
        schema = {c.name: c for c in orders["dagster/column_schema"].schema.columns}
        assert schema["id"].type == "bigint"  # BIGINT UNSIGNED AUTO_INCREMENT: an identity
        assert schema["status"].description.startswith("MySQL enum('pending'")
        assert schema["ordered_at"].constraints.nullable is False

        # The shop keeps changing: inserts, updates and deletes all reach PostgreSQL.
        demo.simulate(demo_settings.mysql_url.secret, interval=0, iterations=5, seed=7, out=None)
        again = materialize_everything(defs, instance)
        assert all(r.success for r in again)
        _assert_every_table_equal(demo_settings)
        changed = [m.metadata for n in ("orders", "order_items", "reviews")
                   for m in materializations(again, "shop", n)]
        assert sum(m["rows_inserted"].value + m["rows_updated"].value for m in changed) > 0
        assert sum(m["rows_deleted"].value for m in changed) > 0


ODD_TABLES = [
    # A reserved word, upper case, spaces, quotes, backticks and non-ASCII letters, plus a table
    # with no primary key and a view, which is not a base table and is not synced.
    "CREATE TABLE `select` (`from` INT PRIMARY KEY, `Group` VARCHAR(10), `user name` TEXT)",
    "CREATE TABLE `Order Details` (`Id` BIGINT PRIMARY KEY, `say \"hi\"` VARCHAR(20), `back`` tick` INT)",
    "CREATE TABLE `naïve_café` (`clé` INT PRIMARY KEY, `prix€` DECIMAL(6,2))",
    "CREATE TABLE event_log (happened_at DATETIME(3), message VARCHAR(100))",
    "CREATE VIEW active AS SELECT `from` FROM `select`",
    # Driver placeholders and format braces in every kind of name: an AUTO_INCREMENT key (its identity
    # is set after the first load), a key (every later load), columns (parity).
    "CREATE TABLE `100% {off} $1` (`id%s` INT AUTO_INCREMENT PRIMARY KEY, `rate %` DECIMAL(5,2),"
    " `{0}%(x)s` VARCHAR(10), `$1 ?` DATE)",
]
ODD_ROWS = [
    "INSERT INTO `select` VALUES (1, 'a', 'ünïcödé 😀'), (2, NULL, NULL)",
    "INSERT INTO `Order Details` VALUES (9223372036854775807, 'x''y\"z', -1)",
    "INSERT INTO `naïve_café` VALUES (1, 9999.99), (2, -0.01)",
    "INSERT INTO event_log VALUES ('2024-05-06 07:08:09.123', 'started'), ('2024-05-06 07:08:09.123', 'started')",
    "INSERT INTO `100% {off} $1` (`rate %`, `{0}%(x)s`, `$1 ?`) VALUES (12.5, '%s', '2024-01-02'), (NULL, NULL, NULL)",
]


@pytest.fixture(scope="module")
def odd_database(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("odd")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for statement in ODD_TABLES + ODD_ROWS:
            cur.execute(statement)
    return url


def _dagster_env(settings: Settings, dagster_home: Path, dagster_db: DatabaseUrl) -> dict[str, str]:
    (dagster_home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    return {**os.environ, "MYSQL_URL": settings.mysql_url.secret, "POSTGRES_URL": settings.postgres_url.secret,
            "SYNC_CONFIG": str(settings.sync_config), "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_POSTGRES_URL": dagster_db.secret}


def test_include_star_on_another_database_through_the_cli(
    odd_database: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SYNC_CONFIG alone points the project at any database; runs are stored in PostgreSQL."""
    # The server's URL names another database: the spec's source.database is what is read.
    spec = write_spec(tmp_path / "odd.yaml", {"source": {"database": odd_database.database},
                                              "target": {"schema": "Odd Schema"}, "include": ["*"]})
    settings = Settings(mysql_url=odd_database.with_database("mysql"), postgres_url=make_pg_database("odd"),
                        sync_config=spec)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = _dagster_env(settings, dagster_home, make_pg_database("dagster"))
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "mysql_pg_assets.definitions", "--select", "*"]
    # The second load merges into what the first created (every table once, then the one with % again).
    for selection in ("*", "Odd_Schema/100___off___1"):
        run = subprocess.run([*command[:-1], selection], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        for url in (settings.mysql_url, settings.postgres_url):
            assert url.secret not in run.stdout + run.stderr
        assert "ASSET_CHECK_EVALUATION" in run.stderr and "failed" not in run.stderr.lower(), run.stderr[-3000:]

    catalog = discover(load_spec(spec), settings.mysql_url)
    assert {t.source_table for t in catalog.tables} == {"select", "Order Details", "naïve_café", "event_log",
                                                        "100% {off} $1"}
    assert {t.asset_name for t in catalog.tables} == {"select", "Order_Details", "na_ve_caf_", "event_log",
                                                      "100___off___1"}
    _assert_every_table_equal(settings)

    # The run and its events were stored in the PostgreSQL instance named by dagster.yaml.
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", env["DAGSTER_POSTGRES_URL"])
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert len(instance.get_runs()) == 2
        percent = AssetKey(["Odd_Schema", "100___off___1"])
        checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(percent, name) for name in ("parity", "rows_valid", "schema_conforms")])
        assert {key.name: execution.status.value for key, execution in checks.items()} == {
            "parity": "SUCCEEDED", "rows_valid": "SUCCEEDED", "schema_conforms": "SUCCEEDED"}
        materialized = instance.get_latest_materialization_event(AssetKey(["Odd_Schema", "event_log"]))
        assert materialized is not None


def test_definitions_validate(demo_settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    run = subprocess.run([str(dagster), "definitions", "validate", "-m", "mysql_pg_assets.definitions"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]



@pytest.mark.parametrize(("seconds", "text"), [(12.46, "12.5 s"), (245, "4 min 5 s"), (11_520, "3 h 12 min"),
                                               (183_600, "2 d 3 h"), (-90, "-1 min 30 s")])
def test_lag_reads_as_a_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
