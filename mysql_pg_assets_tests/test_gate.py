"""The compatibility gate on real servers: a corpus of ALTER statements of the kind teams run, judged against
the demo shop as loaded into PostgreSQL (with a view on it), each with the verdict the loads would reach."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import mysql_pg_assets_demo as demo
from mysql_pg_assets.checks.gate import GateError, check_migration, render, split_statements
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import write_spec

# (the migration, what it does to each table it changes: status and words its changes or dependents name)
CORPUS: list[tuple[str, dict[str, tuple[str, tuple[str, ...]]]]] = [
    ("ALTER TABLE orders ADD COLUMN gift_message VARCHAR(200) NULL AFTER coupon_code, ALGORITHM=INPLACE, LOCK=NONE",
     {"orders": ("compatible", ("gift_message",))}),
    ("ALTER TABLE orders MODIFY coupon_code VARCHAR(64) NULL", {"orders": ("compatible", ("coupon_code",))}),
    ("ALTER TABLE orders MODIFY coupon_code VARCHAR(8) NULL",
     {"orders": ("destructive", ("coupon_code", "view shop_gate.open_coupons"))}),
    ("ALTER TABLE orders DROP COLUMN coupon_code",
     {"orders": ("destructive", ("coupon_code", "view shop_gate.open_coupons"))}),
    ("ALTER TABLE customers CHANGE full_name display_name VARCHAR(200) NULL",
     {"customers": ("destructive", ("full_name", "display_name"))}),
    ("ALTER TABLE order_items MODIFY quantity INT UNSIGNED NOT NULL", {"order_items": ("compatible", ("quantity",))}),
    ("ALTER TABLE payments MODIFY fee_micros INT UNSIGNED NOT NULL",
     {"payments": ("destructive", ("fee_micros",))}),
    ("ALTER TABLE orders MODIFY status ENUM('pending','paid','shipped','delivered','cancelled','refunded','returned')"
     " NOT NULL", {"orders": ("compatible", ("status",))}),
    ("ALTER TABLE orders MODIFY status ENUM('pending','paid','shipped','delivered','cancelled') NOT NULL",
     {"orders": ("destructive", ("status",))}),
    ("ALTER TABLE customers MODIFY loyalty_points MEDIUMINT UNSIGNED NULL",
     {"customers": ("compatible", ("loyalty_points",))}),
    ("CREATE INDEX ix_orders_currency ON orders (currency);\nALTER TABLE orders DROP FOREIGN KEY fk_orders_customer",
     {}),
    ("DROP TABLE orders",
     {"orders": ("dropped", ("Dagster asset shop_gate.order_items", "Dagster asset shop_gate.payments",
                             "view shop_gate.open_coupons"))}),
    ("CREATE TABLE gift_cards (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL)",
     {"gift_cards": ("new", ("gift_cards",))}),
    ("RENAME TABLE reviews TO product_reviews",
     {"reviews": ("dropped", ()), "product_reviews": ("new", ())}),
    ("-- a release's two steps, the database named as in production\n"
     "ALTER TABLE `{db}`.products ADD COLUMN barcode VARCHAR(14) NULL COMMENT 'EAN; or UPC';\n"
     "ALTER TABLE {db}.products MODIFY sku VARCHAR(64) NOT NULL;",
     {"products": ("compatible", ("barcode", "sku"))}),
]


@pytest.fixture(scope="module")
def shop(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
         tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The demo shop, loaded into PostgreSQL, with a view on orders.coupon_code there."""
    source = make_mysql_database("gate")
    demo.create_schema(source.secret)
    demo.seed(source.secret, orders=200, log=lambda _line: None)
    path = write_spec(tmp_path_factory.mktemp("gate") / "sync.yaml",
                      {"source": {"database": source.database}, "target": {"schema": "shop_gate"}})
    settings = Settings(mysql_url=source, postgres_url=make_pg_database("gate"), sync_config=path)
    for table in discover(load_spec(path), source).tables:
        sync_table(table, source, settings.postgres_url)
    with pg_connection(settings.postgres_url) as connection:
        connection.execute("CREATE VIEW shop_gate.open_coupons AS SELECT id, coupon_code FROM shop_gate.orders "
                           "WHERE coupon_code IS NOT NULL")
    return settings


@pytest.mark.parametrize(("sql", "expected"), CORPUS, ids=[f"{n}" for n in range(len(CORPUS))])
def test_a_migration_is_judged_as_the_loads_would(shop: Settings, sql: str,
                                                  expected: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    sql = sql.replace("{db}", shop.mysql_url.database)
    result = check_migration(load_spec(shop.sync_config), shop.mysql_url, shop.postgres_url, sql)
    changed = {v.table.split(".", 1)[1]: v for v in result.verdicts if v.status != "unchanged"}
    assert {name: v.status for name, v in changed.items()} == {name: e[0] for name, e in expected.items()}, \
        render(result)
    for name, (_, words) in expected.items():
        said = " ".join(changed[name].changes + changed[name].dependents)
        assert all(word in said for word in words), (words, said)
    destructive = any(status in ("destructive", "dropped") for status, _ in expected.values())
    assert result.exit_code == (2 if destructive else 0)
    with mysql_connection(shop.mysql_url) as connection, connection.cursor() as cur:  # MySQL itself untouched
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = %s AND column_name IN "
                    "('gift_message', 'barcode', 'display_name')", (shop.mysql_url.database,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'mpa\\_gate\\_%'")
        assert cur.fetchone()[0] == 0  # the scratch database is gone


def test_what_cannot_be_judged_is_refused(shop: Settings) -> None:
    spec = load_spec(shop.sync_config)
    with pytest.raises(GateError, match="statement 1 fails on the current schema.*nope"):
        check_migration(spec, shop.mysql_url, shop.postgres_url, "ALTER TABLE orders DROP COLUMN nope")
    with pytest.raises(GateError, match="fails on the current schema") as refused:
        check_migration(spec, shop.mysql_url, shop.postgres_url, "ALTER TABLE orderz ADD x INT")
    assert f"{shop.mysql_url.database}.orderz" in str(refused.value) and "mpa_gate_" not in str(refused.value)
    with pytest.raises(GateError, match="not a schema change: UPDATE"):
        check_migration(spec, shop.mysql_url, shop.postgres_url, "ALTER TABLE orders ADD x INT; UPDATE orders SET x=1")
    assert split_statements("ALTER TABLE t COMMENT 'a;b'; -- done;\n") == ["ALTER TABLE t COMMENT 'a;b'"]


def test_a_table_the_spec_names_and_the_migration_drops(shop: Settings, tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path / "sync.yaml", {"source": {"database": shop.mysql_url.database},
                                                          "target": {"schema": "shop_gate"},
                                                          "tables": {"reviews": {"deletes": "tombstone"}}}))
    result = check_migration(spec, shop.mysql_url, shop.postgres_url, "DROP TABLE reviews")
    (dropped,) = result.destructive
    assert dropped.table == "shop_gate.reviews" and "code location would fail to load" in " ".join(dropped.changes)
    assert shop.mysql_url.database in " ".join(dropped.changes) and "mpa_gate_" not in " ".join(dropped.changes)


def test_the_cli_exit_codes_are_for_ci(shop: Settings, tmp_path: Path) -> None:
    env = {**os.environ, "MYSQL_URL": shop.mysql_url.secret, "POSTGRES_URL": shop.postgres_url.secret,
           "SYNC_CONFIG": str(shop.sync_config)}
    codes = {}
    for name, sql in (("widen", "ALTER TABLE orders MODIFY coupon_code VARCHAR(64) NULL"),
                      ("drop", "ALTER TABLE orders DROP COLUMN coupon_code"), ("broken", "ALTER TABLE nope ADD x INT")):
        (tmp_path / f"{name}.sql").write_text(sql)
        done = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "check-migration",
                               str(tmp_path / f"{name}.sql")], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True)
        codes[name] = done.returncode
        if name == "drop":
            assert "DESTRUCTIVE" in done.stdout and "open_coupons" in done.stdout, done.stdout
        if name == "broken":
            assert "error: statement 1 fails" in done.stderr, done.stderr
    assert codes == {"widen": 0, "drop": 2, "broken": 1}
