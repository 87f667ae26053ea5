"""The demo shop's tables: their DDL, the connection to the shop, rebuilding it, and the schema changes
the demo can make for the schema-drift sensor.

Every demo table carries a comment marker, and the demo replaces only tables that carry it: pointed at
another database, it never drops a table of the user's. Seeding and the simulator take turns through a
named lock (``exclusive``): the seed takes its ids from MAX(id), the simulator from AUTO_INCREMENT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pymysql
import pymysql.cursors

from mysql_pg_assets.core.connections import mysql_connect
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import mysql_ident

#: Seeded data ends here (not at now()) so that it is identical whenever it is generated.
ANCHOR = "2026-11-01 00:00:00"
#: Seeded timestamps are spread over this many seconds before ANCHOR (365 days).
SPAN_SECONDS = 365 * 86_400
#: Rows per INSERT ... SELECT; bounds the undo log / binlog transaction of one statement.
DEFAULT_CHUNK_ROWS = 500_000
#: Largest BIGINT UNSIGNED; a few payments carry it to exercise the unsigned range.
UINT64_MAX = 18_446_744_073_709_551_615
#: 2**63; values at or above it do not fit a signed BIGINT on the PostgreSQL side.
INT64_OVERFLOW = 9_223_372_036_854_775_808
#: Tables in dependency order (parents first).
TABLES: tuple[str, ...] = (
    "categories",
    "customers",
    "products",
    "orders",
    "order_items",
    "payments",
    "reviews",
    "inventory_events",
)

# The session is pinned so that TIMESTAMP values and data checks never depend on server
# defaults: a UTC session makes TIMESTAMP read back exactly as written, and an explicit strict
# sql_mode makes a generated value that does not fit its column an error, not a silent clamp.
_SESSION_INIT = (
    "SET time_zone = '+00:00', sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
)
#: Every demo table carries this comment: seeding replaces only tables that have it, never a user's own.
DEMO_MARK = "mysql-pg-assets demo table"
_TABLE_OPTIONS = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='{DEMO_MARK}'"
_AUDIT_COLUMNS = """
  created_at DATETIME NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),"""

# The foreign keys a shop has, so the synced assets show their lineage. The seed inserts with
# foreign_key_checks off (its two lanes write parents and children in parallel, as mysqldump's
# output would); the generator keeps every reference valid, and the tests check that it does.
_DDL: dict[str, str] = {
    "categories": f"""
CREATE TABLE IF NOT EXISTS categories (
  id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(80) NOT NULL,
  parent_id SMALLINT UNSIGNED NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  KEY ix_categories_parent_id (parent_id),
  CONSTRAINT fk_categories_parent FOREIGN KEY (parent_id) REFERENCES categories (id)
) {_TABLE_OPTIONS}""",
    "customers": f"""
CREATE TABLE IF NOT EXISTS customers (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  email VARCHAR(255) NOT NULL,
  full_name VARCHAR(200) NULL,
  country CHAR(2) NULL,
  birth_date DATE NULL,
  is_active TINYINT(1) NOT NULL,
  marketing_opt_in SET('email','sms','push') NOT NULL DEFAULT '',
  loyalty_points MEDIUMINT UNSIGNED NOT NULL,
  notes TEXT NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  UNIQUE KEY ux_customers_email (email)
) {_TABLE_OPTIONS}""",
    "products": f"""
CREATE TABLE IF NOT EXISTS products (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  sku VARCHAR(32) NOT NULL,
  name VARCHAR(200) NOT NULL,
  category_id SMALLINT UNSIGNED NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  weight_kg FLOAT NULL,
  rating DOUBLE NULL,
  attributes JSON NULL,
  thumbnail BLOB NULL,
  release_year YEAR NULL,
  stock SMALLINT NOT NULL,
  is_digital TINYINT(1) NOT NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  UNIQUE KEY ux_products_sku (sku),
  CONSTRAINT fk_products_category FOREIGN KEY (category_id) REFERENCES categories (id)
) {_TABLE_OPTIONS}""",
    "orders": f"""
CREATE TABLE IF NOT EXISTS orders (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  customer_id INT UNSIGNED NOT NULL,
  status ENUM('pending','paid','shipped','delivered','cancelled','refunded') NOT NULL,
  currency CHAR(3) NOT NULL,
  subtotal DECIMAL(12,2) NOT NULL,
  tax DECIMAL(12,2) NOT NULL,
  total DECIMAL(12,2) NOT NULL,
  shipping_address JSON NULL,
  coupon_code VARCHAR(20) NULL,
  ordered_at DATETIME NOT NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  KEY ix_orders_ordered_at (ordered_at),
  KEY ix_orders_updated_at (updated_at),
  CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) {_TABLE_OPTIONS}""",
    "order_items": f"""
CREATE TABLE IF NOT EXISTS order_items (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  order_id BIGINT UNSIGNED NOT NULL,
  product_id INT UNSIGNED NOT NULL,
  quantity SMALLINT UNSIGNED NOT NULL,
  unit_price DECIMAL(10,2) NOT NULL,
  discount_pct DECIMAL(5,2) NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  KEY ix_order_items_order_id (order_id),
  CONSTRAINT fk_order_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE,
  CONSTRAINT fk_order_items_product FOREIGN KEY (product_id) REFERENCES products (id)
) {_TABLE_OPTIONS}""",
    "payments": f"""
CREATE TABLE IF NOT EXISTS payments (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  order_id BIGINT UNSIGNED NOT NULL,
  method ENUM('card','paypal','bank_transfer','gift_card') NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  fee_micros BIGINT UNSIGNED NOT NULL,
  authorized_at TIMESTAMP(6) NULL DEFAULT NULL,
  processing_time TIME NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  CONSTRAINT fk_payments_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) {_TABLE_OPTIONS}""",
    "reviews": f"""
CREATE TABLE IF NOT EXISTS reviews (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  product_id INT UNSIGNED NOT NULL,
  customer_id INT UNSIGNED NOT NULL,
  stars TINYINT UNSIGNED NOT NULL,
  title VARCHAR(120) NULL,
  body TEXT NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  CONSTRAINT fk_reviews_product FOREIGN KEY (product_id) REFERENCES products (id),
  CONSTRAINT fk_reviews_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) {_TABLE_OPTIONS}""",
    "inventory_events": f"""
CREATE TABLE IF NOT EXISTS inventory_events (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  product_id INT UNSIGNED NOT NULL,
  delta INT NOT NULL,
  reason VARCHAR(40) NOT NULL,
  flags BIT(8) NULL,{_AUDIT_COLUMNS}
  PRIMARY KEY (id),
  CONSTRAINT fk_inventory_events_product FOREIGN KEY (product_id) REFERENCES products (id)
) {_TABLE_OPTIONS}""",
}

# --------------------------------------------------------------------------------------------
# Connection handling
# --------------------------------------------------------------------------------------------


def _database_url(conn_url: str) -> DatabaseUrl:
    """Parse a ``mysql://user:password@host:port/database`` URL that names a database.

    The demo refuses to guess a database because it drops tables. ``mariadb://`` and
    ``mysql+driver://`` schemes are accepted too, since the same URL is often shared with
    SQLAlchemy-style tools; the port defaults to 3306 for all of them.
    """
    url = DatabaseUrl.parse(conn_url)
    family = url.scheme.split("+", 1)[0].lower()
    if family not in ("mysql", "mariadb"):
        raise ValueError(f"not a mysql:// URL (scheme {url.scheme!r})")
    if not url.database:
        raise ValueError(f"MySQL URL names no database: {url}")
    return url


def connect(url: DatabaseUrl, *, with_database: bool = True, autocommit: bool = True) -> pymysql.Connection:
    """Open a PyMySQL connection with a pinned session (UTC time zone, utf8mb4, strict mode).

    ``with_database=False`` connects to the server only, which ``create_schema`` needs to create
    a database that does not exist yet. A URL without a user connects as ``root``.
    """
    return mysql_connect(replace(url, user=url.user or "root"), None if with_database else "", autocommit=autocommit,
                         session=[_SESSION_INIT])


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


class DemoError(RuntimeError):
    """The demo cannot do what it was asked; the message says why."""


class DemoRefused(DemoError):
    """The demo would replace tables that are not its own."""


class SeedFailed(DemoError):
    """A seeding statement failed; the message names the table and MySQL's error."""


def _lock_name(url: DatabaseUrl) -> str:
    return "mpa-demo-" + hashlib.sha1(url.database.encode()).hexdigest()[:16]


@contextmanager
def exclusive(url: DatabaseUrl) -> Iterator[None]:
    """Seeding and the change simulator never run on one database at once: the seed takes its ids from
    MAX(id) when it starts, the simulator from AUTO_INCREMENT, and together they collide (duplicate keys,
    deadlocks). A named lock is held for a whole seed (and schema rebuild) and for each simulator tick."""
    name = _lock_name(url)
    with connect(url, with_database=False) as conn, conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 3600)", (name,))
        if cur.fetchone()[0] != 1:
            raise DemoRefused(f"{url}: another seed or simulator kept the demo's lock for an hour")
        try:
            yield
        finally:
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))


def create_schema(conn_url: str, drop_existing: bool = True) -> None:
    """Create the database (utf8mb4) if missing and the eight shop tables in it.

    With ``drop_existing`` the tables are dropped first, so a following ``seed`` produces exactly
    the canonical data; without it, existing tables and rows are kept.
    """
    url = _database_url(conn_url)
    with connect(url, with_database=False) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE DATABASE IF NOT EXISTS {mysql_ident(url.database)}"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
    with exclusive(url), connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                    " AND TABLE_NAME IN %s AND TABLE_COMMENT <> %s", (TABLES, DEMO_MARK))
        foreign = sorted(row[0] for row in cur.fetchall())
        if foreign:
            raise DemoRefused(f"{url}: {', '.join(foreign)} already exist and are not demo tables; the demo never "
                              f"replaces them: point MYSQL_URL at another (or a new) database")
        if drop_existing:
            cur.execute("SET SESSION foreign_key_checks = 0")  # children and parents dropped in one statement
            cur.execute("DROP TABLE IF EXISTS " + ", ".join(map(mysql_ident, reversed(TABLES))))
            cur.execute("SET SESSION foreign_key_checks = 1")
        for table in TABLES:
            cur.execute(_DDL[table])


def _max_id(cur: pymysql.cursors.Cursor, table: str) -> int:
    cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {mysql_ident(table)}")
    return int(cur.fetchone()[0])


def table_counts(conn_url: str) -> dict[str, int]:
    """Exact ``COUNT(*)`` per demo table (information_schema row counts are only estimates)."""
    with connect(_database_url(conn_url)) as conn, conn.cursor() as cur:
        counts: dict[str, int] = {}
        for table in TABLES:
            cur.execute(f"SELECT COUNT(*) FROM {mysql_ident(table)}")
            counts[table] = int(cur.fetchone()[0])
        return counts


#: Schema changes the demo can make, for the schema-drift sensor to find: a compatible one (a new
#: nullable column, filled for some rows) and a destructive one (that column dropped again).
SCHEMA_CHANGES: dict[str, tuple[str, ...]] = {
    "add-column": (
        "ALTER TABLE products ADD COLUMN colour VARCHAR(20) NULL",
        "UPDATE products SET colour = ELT(1 + id % 4, 'red', 'green', 'blue', NULL)",
    ),
    "drop-column": ("ALTER TABLE products DROP COLUMN colour",),
}


def alter(conn_url: str, change: str) -> None:
    """Make one of :data:`SCHEMA_CHANGES` in the demo shop."""
    with connect(_database_url(conn_url), autocommit=True) as conn, conn.cursor() as cur:
        for statement in SCHEMA_CHANGES[change]:
            cur.execute(statement)
