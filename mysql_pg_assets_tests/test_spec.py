"""The sync spec: validation errors name the key, discovery fills in the rest from MySQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mysql_pg_assets.core.connections import mysql_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import SpecError, load_spec, parse_spec


def test_the_shipped_spec_is_valid() -> None:
    spec = load_spec(PROJECT_ROOT / "sync.yaml")
    assert spec.include == ["*"]


def test_defaults_sync_every_table() -> None:
    spec = parse_spec(None)
    assert spec.include == ["*"] and spec.exclude == [] and spec.tables == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inclde": ["*"]}, "inclde: Extra inputs are not permitted"),
        ({"include": "orders"}, "include: Input should be a valid list"),
        ({"include": []}, "include: List should have at least 1 item"),
        ({"tables": {"orders": {"primary_key": []}}}, "tables.orders.primary_key"),
        ({"tables": {"orders": {"columns": {"id": {"pg_type": "int; DROP TABLE x"}}}}},
         "tables.orders.columns.id.pg_type"),
        ({"target": {"schema": ""}}, "target.schema"),
        ({"options": {"checks": {"rows_valid": {"max_reject_rate": 2}}}}, "options.checks.rows_valid.max_reject_rate"),
        ({"source": {"parallel_tables": 0}}, "source.parallel_tables: Input should be greater than or equal to 1"),
        ({"options": {"checks": {"reject_rate": {"max": 0.1}}}},
         "options.checks: Value error, reject_rate is now part of rows_valid (max_reject_rate"),
        ({"tables": {"t": {"checks": {"sampled_rows_match": {"rows": 5}}}}},
         "tables.t.checks: Value error, sampled_rows_match is now part of parity (sampled_rows"),
        ({"tables": {"orders": {"checks": {"rows_valid": {"severity": "fatal"}}}}},
         "tables.orders.checks.rows_valid.severity"),
        ({"options": {"checks": {"row_count": {}}}}, "options.checks.row_count: Extra inputs"),
    ],
)
def test_wrong_keys_and_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(SpecError, match="my.yaml") as error:
        parse_spec(data, "my.yaml")
    assert message in str(error.value)


def test_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="SYNC_CONFIG"):
        load_spec(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("include: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


@pytest.fixture(scope="module")
def small_source(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("spec")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT UNSIGNED PRIMARY KEY, code VARCHAR(8), amount DECIMAL(8,2))")
        cur.execute("CREATE TABLE order_lines (order_id INT, line SMALLINT, sku CHAR(4), PRIMARY KEY (order_id, line))")
        cur.execute("CREATE TABLE tmp_scratch (x INT)")
        cur.execute("CREATE VIEW orders_view AS SELECT id FROM orders")
    return url


def test_discovery_fills_keys_types_and_globs(small_source: DatabaseUrl) -> None:
    spec = parse_spec({"exclude": ["tmp_*"], "target": {"schema": "sales"}})
    catalog = discover(spec, small_source)
    assert [t.source_table for t in catalog.tables] == ["order_lines", "orders"]  # no view, no tmp_*
    lines, orders = catalog.tables
    assert lines.primary_key == ("order_id", "line")
    assert orders.primary_key == ("id",)
    assert orders.target_schema == "sales"
    assert [(c.target_name, c.pg_type) for c in orders.columns] == [
        ("id", "bigint"), ("code", "varchar(8)"), ("amount", "numeric(8,2)")]


def test_overrides_rename_retype_and_rekey(small_source: DatabaseUrl) -> None:
    spec = parse_spec({"include": ["orders"], "tables": {"orders": {
        "rename": "sales_orders", "primary_key": ["code"], "cursor_column": "id",
        "columns": {"code": {"rename": "order_code", "pg_type": "text"}}}}})
    (orders,) = discover(spec, small_source).tables
    assert orders.target_table == "sales_orders"
    assert orders.primary_key == ("order_code",)
    assert orders.cursor_column == "id"
    assert [(c.target_name, c.pg_type) for c in orders.columns][1] == ("order_code", "text")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tables": {"missing": {}}}, "tables: missing configured but not among the synced base tables"),
        ({"tables": {"orders": {"columns": {"nope": {"rename": "x"}}}}}, "tables.orders.columns.nope"),
        ({"tables": {"orders": {"primary_key": ["nope"]}}}, "tables.orders.primary_key"),
        ({"tables": {"orders": {"columns": {"code": {"rename": "amount"}}}}},
         "columns 'code' and 'amount' would both be named 'amount'"),
        ({"tables": {"orders": {"rename": "order_lines"}}},
         "tables 'order_lines' and 'orders' would both be named 'order_lines'"),
    ],
)
def test_spec_errors_found_against_mysql(small_source: DatabaseUrl, spec: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        discover(parse_spec({"exclude": ["tmp_*"], **spec}), small_source)
    assert message in str(error.value)


def test_source_database_defaults_to_the_url(small_source: DatabaseUrl) -> None:
    catalog = discover(parse_spec({"include": ["orders"]}), small_source)
    assert catalog.source_database == small_source.database == catalog.target_schema


def test_snake_case_naming_and_its_collisions(make_mysql_database: Callable[[str], DatabaseUrl]) -> None:
    url = make_mysql_database("naming")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE `OrderDetails` (`OrderID` INT PRIMARY KEY, `Unit Price` DECIMAL(6,2),"
                    " `HTTPCode` INT)")
    (table,) = discover(parse_spec({"options": {"naming": "snake_case"}}), url).tables
    assert table.target_table == "order_details"
    assert [c.target_name for c in table.columns] == ["order_id", "unit_price", "http_code"]
    assert table.primary_key == ("order_id",)
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE clash (`userName` INT, `user_name` INT)")
    with pytest.raises(SpecError, match="columns 'userName' and 'user_name' would both be named 'user_name'"):
        discover(parse_spec({"options": {"naming": "snake_case"}}), url)


def test_type_overrides_pick_a_rule_that_can_carry_the_value(small_source: DatabaseUrl) -> None:
    spec = parse_spec({"include": ["orders"], "options": {"casts": [
        {"match": "varchar(*)", "pg_type": "text"}, {"match": "decimal", "pg_type": "double precision"}]}})
    (orders,) = discover(spec, small_source).tables
    assert [(c.target_name, c.pg_type) for c in orders.columns] == [
        ("id", "bigint"), ("code", "text"), ("amount", "double precision")]


def test_table_checks_replace_the_defaults_check_by_check() -> None:
    spec = parse_spec({"options": {"checks": {"rows_valid": {"severity": "warn"}, "parity": {"sampled_rows": 50}}},
                       "tables": {"orders": {"checks": {"rows_valid": {"max_reject_rate": 0.05}}}}})
    checks = spec.tables["orders"].checks.over(spec.options.checks)
    # A check named under the table replaces the default's whole: its severity is the default, error.
    assert (checks.rows_valid.severity, checks.rows_valid.max_reject_rate) == ("error", 0.05)
    assert (checks.parity.severity, checks.parity.sampled_rows) == ("error", 50)
