"""Tests of the demo shop generator against a real MariaDB.

They run on the server in ``MYSQL_URL``, in a database of their own that the session fixture
``make_mysql_database`` creates and drops, so the real demo database is never touched.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

import mysql_pg_assets_demo as demo
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets_demo import cli, expressions, rows, schema, seeding


@pytest.fixture(scope="module")
def demo_db(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    """A scratch database for this module's tests, on the MYSQL_URL server."""
    return make_mysql_database("demo1")


def _query(url: DatabaseUrl, sql: str, args: object = None) -> list[tuple[object, ...]]:
    with demo.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def _checksums(url: DatabaseUrl) -> dict[str, int]:
    rows = _query(url, "CHECKSUM TABLE " + ", ".join(demo.TABLES))
    return {str(name).rsplit(".", 1)[1]: int(value) for name, value in rows}  # type: ignore[arg-type]


def _fresh(url: DatabaseUrl, orders: int, seed: int = 42, **kwargs: object) -> dict[str, int]:
    demo.create_schema(url.secret, drop_existing=True)
    return demo.seed(url.secret, orders=orders, seed=seed, **kwargs)  # type: ignore[arg-type]


def test_urls_are_checked_without_showing_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing here reaches a server: every URL is rejected before connecting.
    with pytest.raises(ValueError, match="not a mysql:// URL"):
        demo.create_schema("postgresql://shop:s3cr%40t@db.example/shop")
    # The demo drops tables, so it refuses to guess a database; the error masks the password.
    with pytest.raises(ValueError, match="names no database") as no_database:
        demo.seed("mysql://shop:s3cr%40t@db.example:33061/")
    assert "s3cr" not in str(no_database.value) and ":***@db.example:33061" in str(no_database.value)
    with pytest.raises(SystemExit) as usage_error:
        cli.main(["simulate", "--mysql-url", "mysql://shop:s3cr%40t@db.example:33061"])
    assert usage_error.value.code == 2
    err = capsys.readouterr().err
    assert "names no database" in err and "s3cr" not in err
    # mariadb:// and mysql+driver:// are MySQL URLs too, with MySQL's default port.
    assert schema._database_url("mariadb://shop@db.example/shop").port == 3306
    assert schema._database_url("mysql+pymysql://shop@db.example/shop").port == 3306


def test_generated_sql_binds_strings_and_renders_only_numbers() -> None:
    plan = rows._Plan(
        orders=1_000, customers=100, products=50, reviews=200, inventory_events=500, base=dict.fromkeys(demo.TABLES, 0)
    )
    sql, params = rows._customers_sql(expressions._Rand(1, "customers"), plan, 1, 100)
    for tricky in ("O'Brien", "Back\\slash and 'quotes'", "Дмитрий"):  # quotes, backslash, non-ASCII
        assert tricky in params.values() and tricky not in sql, tricky
    with pytest.raises(TypeError):
        expressions._const_sql("1; DROP TABLE orders")  # type: ignore[arg-type]


def test_seed_is_deterministic(demo_db: DatabaseUrl) -> None:
    inserted = _fresh(demo_db, orders=2_000, seed=7)
    first = _checksums(demo_db)
    assert inserted == demo.table_counts(demo_db.secret)
    # Same seed again, this time on one connection: lanes must not influence the data.
    _fresh(demo_db, orders=2_000, seed=7, parallel=False)
    assert _checksums(demo_db) == first
    # A different seed gives different data (and not just different ids).
    _fresh(demo_db, orders=2_000, seed=8)
    other = _checksums(demo_db)
    assert other["categories"] == first["categories"]  # the category tree is fixed
    for table in set(demo.TABLES) - {"categories"}:
        assert other[table] != first[table], table


def test_row_counts_and_data_follow_the_spec(demo_db: DatabaseUrl) -> None:
    orders = 4_000
    _fresh(demo_db, orders=orders, chunk_rows=1_000)  # small chunks: many statements
    counts = demo.table_counts(demo_db.secret)
    assert counts["orders"] == orders
    assert counts["customers"] == max(100, orders // 10)
    assert counts["products"] == max(50, min(orders // 20, 20_000))
    assert 25 <= counts["categories"] <= 40
    assert 2.3 <= counts["order_items"] / orders <= 2.7
    assert 1.0 <= counts["payments"] / orders <= 1.1
    assert counts["reviews"] == orders // 5
    assert counts["inventory_events"] == orders // 2

    def one(sql: str) -> object:
        return _query(demo_db, sql)[0][0]

    # Ids are dense, so chunking did not leave gaps or overlaps.
    for table in demo.TABLES:
        assert one(f"SELECT MAX(id) FROM {table}") == counts[table], table
    # Timestamps: within the year before the anchor, updated_at never before created_at.
    for table in demo.TABLES:
        row = _query(
            demo_db,
            f"SELECT MIN(created_at), MAX(updated_at), SUM(updated_at < created_at) FROM {table}",
        )[0]
        assert str(row[0]) >= "2025-10-31", table
        assert str(row[1]) <= demo.ANCHOR, table
        assert row[2] == 0, table
    # Referential integrity without foreign keys.
    assert one("SELECT COUNT(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id"
               " WHERE c.id IS NULL") == 0  # fmt: skip
    assert one("SELECT COUNT(*) FROM order_items i LEFT JOIN products p ON p.id = i.product_id"
               " WHERE p.id IS NULL") == 0  # fmt: skip
    assert one("SELECT COUNT(*) FROM products p LEFT JOIN categories c ON c.id = p.category_id"
               " WHERE c.id IS NULL") == 0  # fmt: skip
    assert one("SELECT COUNT(*) FROM categories WHERE parent_id IS NOT NULL") > 0
    # Money adds up: subtotal = sum of lines, total = subtotal + tax, payments cover totals.
    assert (
        one(
            "SELECT COUNT(*) FROM orders o WHERE o.subtotal <> (SELECT SUM(ROUND(i.quantity"
            " * i.unit_price * (100 - COALESCE(i.discount_pct, 0)) / 100, 2)) FROM order_items i"
            " WHERE i.order_id = o.id)"
        )
        == 0
    )
    assert one("SELECT COUNT(*) FROM orders WHERE total <> subtotal + tax") == 0
    assert one("SELECT COUNT(*) FROM orders o WHERE o.total <> (SELECT SUM(amount)"
               " FROM payments p WHERE p.order_id = o.id)") == 0  # fmt: skip
    # The edge cases the sync has to survive are present.
    assert one(f"SELECT COUNT(*) FROM payments WHERE fee_micros = {schema.UINT64_MAX}") > 0
    assert (
        one(
            f"SELECT COUNT(*) FROM payments WHERE fee_micros >= {schema.INT64_OVERFLOW}"
            f" AND fee_micros < {schema.UINT64_MAX}"
        )
        > 0
    )
    assert one("SELECT COUNT(*) FROM payments WHERE processing_time > '24:00:00'") > 0
    assert one("SELECT COUNT(*) FROM products WHERE stock < 0") > 0
    assert one("SELECT COUNT(*) FROM products WHERE LOCATE(x'00', thumbnail) > 0") > 0
    assert one("SELECT COUNT(*) FROM customers WHERE LENGTH(full_name) > CHAR_LENGTH(full_name)")
    # 4-byte UTF-8 (emoji) is what breaks utf8mb3 pipelines.
    assert one("SELECT COUNT(*) FROM customers WHERE HEX(full_name) LIKE '%F09F%'") > 0
    assert one("SELECT COUNT(*) FROM inventory_events WHERE delta < 0") > 0
    for table, column in [
        ("customers", "birth_date"), ("customers", "notes"), ("products", "weight_kg"),
        ("products", "rating"), ("products", "attributes"), ("products", "thumbnail"),
        ("products", "release_year"), ("orders", "shipping_address"), ("orders", "coupon_code"),
        ("order_items", "discount_pct"), ("payments", "authorized_at"), ("reviews", "title"),
        ("reviews", "body"), ("inventory_events", "flags"),
    ]:  # fmt: skip
        nulls, non_nulls = _query(demo_db, f"SELECT SUM({column} IS NULL), SUM({column} IS NOT NULL) FROM {table}")[0]
        assert nulls and non_nulls, f"{table}.{column} should mix NULLs and values"


# Column types as the schema promises them. MariaDB specifics are normalised away by
# _column_type: integer display widths, and JSON being LONGTEXT plus a json_valid() check.
_EXPECTED_COLUMNS: dict[str, dict[str, str]] = {
    "categories": {
        "id": "smallint unsigned", "name": "varchar(80) not null",
        "parent_id": "smallint unsigned null",
    },
    "customers": {
        "id": "int unsigned", "email": "varchar(255) not null", "full_name": "varchar(200) null",
        "country": "char(2) null", "birth_date": "date null", "is_active": "tinyint(1) not null",
        "marketing_opt_in": "set('email','sms','push') not null",
        "loyalty_points": "mediumint unsigned not null", "notes": "text null",
    },
    "products": {
        "id": "int unsigned", "sku": "varchar(32) not null", "name": "varchar(200) not null",
        "category_id": "smallint unsigned not null", "price": "decimal(10,2) not null",
        "weight_kg": "float null", "rating": "double null", "attributes": "json null",
        "thumbnail": "blob null", "release_year": "year null", "stock": "smallint not null",
        "is_digital": "tinyint(1) not null",
    },
    "orders": {
        "id": "bigint unsigned", "customer_id": "int unsigned not null",
        "status": "enum('pending','paid','shipped','delivered','cancelled','refunded') not null",
        "currency": "char(3) not null", "subtotal": "decimal(12,2) not null",
        "tax": "decimal(12,2) not null", "total": "decimal(12,2) not null",
        "shipping_address": "json null", "coupon_code": "varchar(20) null",
        "ordered_at": "datetime not null",
    },
    "order_items": {
        "id": "bigint unsigned", "order_id": "bigint unsigned not null",
        "product_id": "int unsigned not null", "quantity": "smallint unsigned not null",
        "unit_price": "decimal(10,2) not null", "discount_pct": "decimal(5,2) null",
    },
    "payments": {
        "id": "bigint unsigned", "order_id": "bigint unsigned not null",
        "method": "enum('card','paypal','bank_transfer','gift_card') not null",
        "amount": "decimal(12,2) not null", "fee_micros": "bigint unsigned not null",
        "authorized_at": "timestamp(6) null", "processing_time": "time null",
    },
    "reviews": {
        "id": "int unsigned", "product_id": "int unsigned not null",
        "customer_id": "int unsigned not null", "stars": "tinyint unsigned not null",
        "title": "varchar(120) null", "body": "text null",
    },
    "inventory_events": {
        "id": "bigint unsigned", "product_id": "int unsigned not null", "delta": "int not null",
        "reason": "varchar(40) not null", "flags": "bit(8) null",
    },
}  # fmt: skip


def _column_type(column_type: str, nullable: str, json_columns: set[str], name: str) -> str:
    kind = column_type.lower()
    if kind != "tinyint(1)":
        kind = re.sub(r"^(tinyint|smallint|mediumint|int|bigint|year)\(\d+\)", r"\1", kind)
    if name in json_columns and kind == "longtext":
        kind = "json"
    return f"{kind} {'null' if nullable == 'YES' else 'not null'}"


def test_schema_has_the_promised_types(demo_db: DatabaseUrl) -> None:
    demo.create_schema(demo_db.secret, drop_existing=True)
    database = demo_db.database
    tables = _query(
        demo_db,
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
        (database,),
    )
    assert {t for t, *_ in tables} == set(demo.TABLES)
    for table, engine, collation in tables:
        assert engine == "InnoDB", table
        assert str(collation).startswith("utf8mb4_"), table
    json_checks = _query(
        demo_db,
        "SELECT TABLE_NAME, CONSTRAINT_NAME FROM information_schema.CHECK_CONSTRAINTS"
        " WHERE CONSTRAINT_SCHEMA = %s AND CHECK_CLAUSE LIKE '%%json_valid%%'",
        (database,),
    )
    json_columns = {f"{t}.{c}" for t, c in json_checks}
    columns = _query(
        demo_db,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, EXTRA,"
        " COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s"
        " ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (database,),
    )
    by_table: dict[str, dict[str, tuple[object, ...]]] = {}
    for table, column, *rest in columns:
        by_table.setdefault(str(table), {})[str(column)] = tuple(rest)
    data_types: set[str] = set()
    for table, expected in _EXPECTED_COLUMNS.items():
        actual = by_table[table]
        assert list(actual) == [*expected, "created_at", "updated_at"], table
        for column, want in expected.items():
            column_type, nullable, key, extra, _default = actual[column]
            got = _column_type(str(column_type), str(nullable), json_columns, f"{table}.{column}")
            data_types.add(got.split("(")[0].split(" ")[0])
            if column == "id":
                assert got == f"{want} not null", f"{table}.id"
                assert key == "PRI" and "auto_increment" in str(extra), f"{table}.id"
            else:
                assert got == want, f"{table}.{column}"
        created, updated = actual["created_at"], actual["updated_at"]
        assert (str(created[0]), created[1]) == ("datetime", "NO"), table
        assert (str(updated[0]), updated[1]) == ("timestamp(6)", "NO"), table
        assert "on update current_timestamp(6)" in str(updated[3]).lower(), table
        assert str(updated[4]).lower() == "current_timestamp(6)", table
    # The point of the demo: a wide spread of MySQL types.
    assert data_types >= {
        "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double",
        "varchar", "char", "text", "blob", "json", "enum", "set", "date", "time", "timestamp",
        "datetime", "year", "bit",
    }  # fmt: skip
    indexes = _query(
        demo_db,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = %s AND INDEX_NAME <> 'PRIMARY'",
        (database,),
    )
    assert {("orders", "ordered_at"), ("orders", "updated_at"), ("order_items", "order_id"),
            ("customers", "email")} <= {(str(t), str(c)) for t, c in indexes}  # fmt: skip


def _snapshot(url: DatabaseUrl, table: str, columns: str) -> dict[int, tuple[object, ...]]:
    return {int(row[0]): row[1:] for row in _query(url, f"SELECT id, {columns} FROM {table}")}  # type: ignore[arg-type]


def _orphans(url: DatabaseUrl) -> dict[str, int]:
    """Rows whose foreign key names no parent: the seed writes with the checks off, so it must keep them valid."""
    rows = _query(url, "SELECT k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME"
                       " FROM information_schema.KEY_COLUMN_USAGE k WHERE k.TABLE_SCHEMA = %s"
                       " AND k.REFERENCED_TABLE_NAME IS NOT NULL", (url.database,))
    assert len(rows) == 9, rows  # the shop's foreign keys
    return {f"{child}.{column}": _query(url, f"SELECT COUNT(*) FROM `{child}` c LEFT JOIN `{parent}` p ON"
                                             f" p.`{key}` = c.`{column}` WHERE c.`{column}` IS NOT NULL AND"
                                             f" p.`{key}` IS NULL")[0][0]
            for child, column, parent, key in rows}


def test_seeded_and_simulated_rows_keep_every_reference(demo_db: DatabaseUrl) -> None:
    _fresh(demo_db, orders=3_000)
    assert set(_orphans(demo_db).values()) == {0}
    demo.simulate(demo_db.secret, interval=0, iterations=5, seed=3, out=None)
    assert set(_orphans(demo_db).values()) == {0}


def test_simulate_changes_rows(demo_db: DatabaseUrl) -> None:
    _fresh(demo_db, orders=1_000)
    before_counts = demo.table_counts(demo_db.secret)
    before_orders = _snapshot(demo_db, "orders", "status, total, updated_at")
    before_customers = _snapshot(demo_db, "customers", "updated_at")
    lines: list[str] = []

    stats = demo.simulate(demo_db.secret, interval=0, iterations=3, seed=1, out=lines.append)

    assert stats.ticks == 3 and len(lines) == 3
    assert all(re.search(r"tick \d+: .*\+\d+ orders", line) for line in lines), lines
    after_counts = demo.table_counts(demo_db.secret)
    for table in demo.TABLES:
        expected = before_counts[table] + stats.inserted[table] - stats.deleted[table]
        assert after_counts[table] == expected, table
    assert stats.inserted["orders"] > 0 and stats.inserted["order_items"] > 0
    assert after_counts["payments"] > before_counts["payments"]
    assert stats.deleted["reviews"] + stats.deleted["order_items"] > 0

    after_orders = _snapshot(demo_db, "orders", "status, total, updated_at")
    changed = [i for i, row in before_orders.items() if after_orders[i] != row]
    assert 0 < len(changed) <= stats.updated["orders"]
    for order_id in changed:  # status moved on, and ON UPDATE bumped updated_at
        assert after_orders[order_id][0] != before_orders[order_id][0]
        assert after_orders[order_id][2] > before_orders[order_id][2]
    after_customers = _snapshot(demo_db, "customers", "updated_at")
    assert any(after_customers[i] != row for i, row in before_customers.items())
    assert len(set(after_orders) - set(before_orders)) == stats.inserted["orders"]


def test_cli_seed_prints_counts_without_password(demo_db: DatabaseUrl, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["seed", "--orders", "500", "--seed", "3", "--mysql-url", demo_db.secret]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for table in demo.TABLES:
        assert re.search(rf"^\s+{table}\s+[\d,]+$", out, re.MULTILINE), table
    # The URL is shown, masked; the password is not (not matched as a bare substring: a short
    # password such as the local "mpa" also occurs in the database name).
    assert f"seeding {demo_db} with 500 orders" in out
    for text in (out, captured.err):
        assert demo_db.secret not in text
        if demo_db.password:
            assert f":{demo_db.password}@" not in text
    if demo_db.password:
        assert ":***@" in out
    assert _query(demo_db, "SELECT COUNT(*) FROM orders") == [(500,)]


def test_a_failing_lane_shows_its_own_error(demo_db: DatabaseUrl, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not 'seeding aborted': the statement that failed, its table and MySQL's words."""
    demo.create_schema(demo_db.secret, drop_existing=True)
    monkeypatch.setattr(seeding, "_order_items_sql", lambda *_args: ("INSERT INTO order_items (nope) VALUES (1)", {}))
    with pytest.raises(demo.SeedFailed, match=r"seeding order_items: .*Unknown column 'nope'"):
        demo.seed(demo_db.secret, orders=2_000)


def test_the_simulator_waits_for_a_seed_instead_of_colliding_with_it(demo_db: DatabaseUrl) -> None:
    _fresh(demo_db, orders=2_000)
    errors: list[BaseException] = []

    def simulate() -> None:
        try:
            demo.simulate(demo_db.secret, interval=0, iterations=30, seed=5, out=None)
        except BaseException as exc:  # pragma: no cover - what the test looks for
            errors.append(exc)

    simulator = threading.Thread(target=simulate)
    simulator.start()
    for _ in range(3):  # appended seeds take ids from MAX(id), the simulator from AUTO_INCREMENT
        demo.seed(demo_db.secret, orders=2_000, seed=9)
    simulator.join()
    assert errors == []
    assert set(_orphans(demo_db).values()) == {0}
