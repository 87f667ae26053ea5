"""Demo shop database: schema, deterministic seed data and a live change simulator.

Why this module exists: the sync needs a source database that looks like a real OLTP system
(many MySQL types, NULLs, non-ASCII text, unsigned 64-bit values, rows that keep changing) and
that can be rebuilt bit-for-bit, so that tests and benchmarks are reproducible.

Why it generates data in SQL: seeding millions of rows through Python row loops is far too
slow, so the bulk data is produced server-side with ``INSERT ... SELECT ... FROM seq_1_to_N``
(MariaDB's SEQUENCE engine). Every "random" value is a pure function of the row key, the seed
and a per-column salt, so the same arguments always give the same rows (and the same
``CHECKSUM TABLE``). The anchor date is fixed for the same reason: nothing depends on now().

This is stage code: it knows nothing about Dagster.

Usage::

    export MYSQL_URL=mysql://mpa:mpa@127.0.0.1:33061/shop
    python -m mysql_pg_assets_demo seed --orders 200000
    python -m mysql_pg_assets_demo simulate --interval 0.5
    python -m mysql_pg_assets_demo alter add-column     # or drop-column
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import pymysql
import pymysql.cursors

from mysql_pg_assets.core.settings import DatabaseUrl, redact
from mysql_pg_assets.core.sql import mysql_ident

__all__ = [
    "ANCHOR",
    "SCHEMA_CHANGES",
    "TABLES",
    "SimulationStats",
    "alter",
    "connect",
    "create_schema",
    "main",
    "seed",
    "simulate",
    "table_counts",
]

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
    return pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.user or "root",
        password=url.password,
        database=(url.database or None) if with_database else None,
        charset="utf8mb4",
        autocommit=autocommit,
        init_command=_SESSION_INIT,
        connect_timeout=10,
    )


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


def table_counts(conn_url: str) -> dict[str, int]:
    """Exact ``COUNT(*)`` per demo table (information_schema row counts are only estimates)."""
    with connect(_database_url(conn_url)) as conn, conn.cursor() as cur:
        counts: dict[str, int] = {}
        for table in TABLES:
            cur.execute(f"SELECT COUNT(*) FROM {mysql_ident(table)}")
            counts[table] = int(cur.fetchone()[0])
        return counts


# --------------------------------------------------------------------------------------------
# Deterministic pseudo-random SQL expressions
# --------------------------------------------------------------------------------------------

#: A generated statement: SQL with ``%(name)s`` placeholders, and the values that fill them.
_Statement = tuple[str, dict[str, object]]


def _const_sql(value: int | datetime) -> str:
    """Render a number or timestamp that the generator itself computed as SQL text.

    Why this is safe: only ``int`` and ``datetime`` get through (anything else, strings included,
    raises ``TypeError``), and their text holds nothing but digits, '-', ':' and spaces, so it
    cannot end a literal or add a clause. It serves the shape of the generated expressions (hash
    coefficients, moduli, weights, thresholds, the anchor) and SEQUENCE table names, which are
    identifiers and cannot be bind parameters. Strings always travel as bind parameters
    (:meth:`_Rand.bind`), and so do the numbers that come from the caller's arguments or the
    database (row counts, id offsets) wherever SQL takes a parameter.
    """
    if type(value) is int:
        return str(value)
    if type(value) is datetime:
        return f"TIMESTAMP'{value:%Y-%m-%d %H:%M:%S}'"
    raise TypeError(f"only int and datetime constants are rendered into SQL, not {value!r}")


class _Rand:
    """Builds the expressions of one statement that are pseudo-random functions of a row key.

    Why ``CRC32(key * a + b)`` with per-column (a, b): CRC32 is fast enough for tens of millions
    of rows, but it is linear over GF(2), so ``CRC32(CONCAT(key, salt))`` for two salts of equal
    length differ by a constant XOR and would make columns correlated. Multiplying the key by a
    large per-column odd constant first scrambles the decimal digits non-linearly (carries), which
    makes columns independent in practice. ``key * a + b`` stays below 2**63 for keys < 2**32.

    The coefficients depend only on (seed, table, salt), so two instances for the same table
    build the same expressions. Each instance also collects its statement's bind parameters.
    """

    def __init__(self, seed: int, table: str) -> None:
        self._seed = seed
        self._table = table
        self.params: dict[str, object] = {}

    def bind(self, name: str, value: object) -> str:
        """The ``%(name)s`` placeholder for ``value``; PyMySQL escapes the value when executing."""
        if self.params.setdefault(name, value) != value:
            raise ValueError(f"bind parameter {name!r} is already bound to another value")
        return f"%({name})s"

    def bind_each(self, name: str, values: Iterable[object]) -> list[str]:
        """Placeholders ``%(name_0)s``, ``%(name_1)s``, ... for ``values``."""
        return [self.bind(f"{name}_{i}", value) for i, value in enumerate(values)]

    def statement(self, sql: str) -> _Statement:
        return sql, self.params

    def _coeffs(self, salt: str) -> tuple[int, int]:
        digest = hashlib.blake2b(f"{self._seed}/{self._table}/{salt}".encode(), digest_size=8)
        n = int.from_bytes(digest.digest(), "big")
        return 1_000_000_001 + 2 * ((n >> 1) % 500_000_000), (n >> 32) % 1_000_000_000

    def u32(self, salt: str, key: str) -> str:
        """Uniform integer in [0, 2**32)."""
        a, b = self._coeffs(salt)
        return f"CRC32(({key})*{_const_sql(a)}+{_const_sql(b)})"

    def below(self, salt: str, key: str, n: int) -> str:
        """Uniform integer in [0, n)."""
        return f"MOD({self.u32(salt, key)},{_const_sql(n)})"

    def between(self, salt: str, key: str, lo: int, hi: int) -> str:
        """Uniform integer in [lo, hi]."""
        return f"({_const_sql(lo)}+MOD({self.u32(salt, key)},{_const_sql(hi - lo + 1)}))"

    def frac(self, salt: str, key: str) -> str:
        """Uniform DOUBLE in [0, 1) (the ``e0`` literal forces floating point division)."""
        return f"({self.u32(salt, key)}/4294967296e0)"

    def chance(self, salt: str, key: str, percent: float) -> str:
        """Boolean expression that is true for ``percent`` % of keys."""
        return f"(MOD({self.u32(salt, key)},10000)<{_const_sql(round(percent * 100))})"

    def index(self, salt: str, key: str, weights: Sequence[int]) -> str:
        """1-based index into ``weights``, chosen with the given relative weights."""
        if len(weights) == 1:
            return "1"
        bounds, total = [], 0
        for w in weights[:-1]:
            total += w
            bounds.append(_const_sql(total))
        total += weights[-1]
        return f"(INTERVAL(MOD({self.u32(salt, key)},{_const_sql(total)}),{','.join(bounds)})+1)"

    def pick(self, salt: str, key: str, options: Sequence[str]) -> str:
        """One of the string ``options``, uniformly (the options are bound as ``%(salt_i)s``)."""
        return _elt(f"1+{self.below(salt, key, len(options))}", self.bind_each(salt, options))

    def weighted(self, salt: str, key: str, options: Sequence[tuple[str, int]]) -> str:
        """One of the string options, with relative weights."""
        idx = self.index(salt, key, [w for _, w in options])
        return _elt(idx, self.bind_each(salt, [o for o, _ in options]))


def _elt(index_sql: str, values: Sequence[str]) -> str:
    """``ELT`` over already-rendered SQL values (lets two columns share one random choice)."""
    return f"ELT({index_sql},{','.join(values)})"


_ANCHOR_AT = datetime.fromisoformat(ANCHOR)
_ANCHOR_SQL = _const_sql(_ANCHOR_AT)


def _before_anchor(seconds_sql: str) -> str:
    """DATETIME that lies ``seconds_sql`` seconds before the anchor."""
    return f"({_ANCHOR_SQL} - INTERVAL ({seconds_sql}) SECOND)"


def _updated_at(created_sql: str, delay_seconds_sql: str, micros_sql: str) -> str:
    """A TIMESTAMP(6) value >= created_at, never after the anchor.

    The microsecond part makes updated_at realistic (it is TIMESTAMP(6), created_at is not).
    """
    return f"LEAST({created_sql} + INTERVAL (({delay_seconds_sql})*1000000+({micros_sql})) MICROSECOND, {_ANCHOR_SQL})"


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """1-based inclusive (lo, hi) ranges covering 1..total in steps of ``size``."""
    for lo in range(1, total + 1, size):
        yield lo, min(total, lo + size - 1)


def _seq(lo: int, hi: int) -> str:
    """A SEQUENCE-engine virtual table yielding lo..hi (a table name: no bind parameter here)."""
    return f"seq_{_const_sql(lo)}_to_{_const_sql(hi)}"


# --------------------------------------------------------------------------------------------
# Seed data vocabularies (kept small: they are bound into the SQL's ELT lists)
# --------------------------------------------------------------------------------------------

# (name, parent index into this list or None); ids are list position + 1.
_CATEGORIES: tuple[tuple[str, int | None], ...] = (
    ("Electronics", None),  # 1
    ("Home & Kitchen", None),  # 2
    ("Books", None),  # 3
    ("Fashion", None),  # 4
    ("Sports & Outdoors", None),  # 5
    ("Toys & Games", None),  # 6
    ("Beauty", None),  # 7
    ("Groceries", None),  # 8
    ("Phones", 0),
    ("Laptops", 0),
    ("Audio", 0),  # 11
    ("Cameras", 0),
    ("Accessories", 0),
    ("Headphones", 10),
    ("Speakers", 10),
    ("Furniture", 1),
    ("Cookware", 1),
    ("Décor", 1),
    ("Garden", 1),
    ("Fiction", 2),
    ("Non-fiction", 2),
    ("Comics & Manga", 2),
    ("Women", 3),
    ("Men", 3),
    ("Shoes", 3),
    ("Bags", 3),
    ("Cycling", 4),
    ("Running", 4),
    ("Camping", 4),
    ("Board Games", 5),
    ("Building Sets", 5),
    ("Skincare", 6),
    ("Fragrance", 6),
    ("Coffee & Tea", 7),
    ("Snacks", 7),
)
_LEAF_CATEGORY_IDS: tuple[int, ...] = tuple(
    i + 1 for i in range(len(_CATEGORIES)) if all(parent != i for _, parent in _CATEGORIES)
)

# (display, ascii-for-email) pairs: display names exercise accents, non-Latin scripts and quotes.
_FIRST_NAMES: tuple[tuple[str, str], ...] = (
    ("Anna", "anna"), ("José", "jose"), ("Zoë", "zoe"), ("Łukasz", "lukasz"),
    ("Søren", "soren"), ("Chloé", "chloe"), ("Mia", "mia"), ("Noah", "noah"),
    ("Björn", "bjorn"), ("François", "francois"), ("Jürgen", "jurgen"),
    ("Siobhán", "siobhan"), ("Ngozi", "ngozi"), ("Hiroshi", "hiroshi"), ("Priya", "priya"),
    ("Ömer", "omer"), ("Mateo", "mateo"), ("Elif", "elif"), ("Liam", "liam"),
    ("Olivia", "olivia"), ("Małgorzata", "malgorzata"), ("Ana-Lucía", "ana.lucia"),
    ("Дмитрий", "dmitry"), ("美咲", "misaki"),
)  # fmt: skip
_LAST_NAMES: tuple[tuple[str, str], ...] = (
    ("Müller", "mueller"), ("García", "garcia"), ("Smith", "smith"), ("Nowak", "nowak"),
    ("Østergaard", "ostergaard"), ("Dubois", "dubois"), ("Rossi", "rossi"),
    ("Kowalski", "kowalski"), ("Núñez", "nunez"), ("Yılmaz", "yilmaz"), ("Tanaka", "tanaka"),
    ("O'Brien", "obrien"), ("van der Berg", "vanderberg"), ("Papadopoulos", "papadopoulos"),
    ("Ivanova", "ivanova"), ("Nguyễn", "nguyen"), ("Johansson", "johansson"),
    ("Schäfer", "schaefer"), ("Lefèvre", "lefevre"), ("王", "wang"),
)  # fmt: skip
_EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.net", "shop.example")
_COUNTRIES = (
    ("DE", 20), ("US", 20), ("FR", 10), ("GB", 10), ("PL", 8), ("ES", 8), ("IT", 6),
    ("NL", 5), ("SE", 4), ("JP", 3), ("BR", 3), ("TR", 3),
)  # fmt: skip
_CUSTOMER_NOTES = (
    "VIP – call before delivery",
    "Prefers pick-up 📦",
    'Asked for "gift wrap" twice',
    "Line one\nLine two",
    "Back\\slash and 'quotes'",
    "Allergic to peanuts 🥜",
    "Très bon client ✨",
    "☎ only after 18:00",
)
_EMOJI = ("🙂", "🎉", "🚀", "🌻")
_ADJECTIVES = (
    "Ergonomic", "Compact", "Wireless", "Vintage", "Smart", "Organic", "Ultra", "Classic",
    "Portable", "Deluxe", "Café", "Über", "Eco", "Heavy-Duty",
)  # fmt: skip
_NOUNS = (
    "Chair", "Lamp", "Headphones", "Backpack", "Kettle", "Novel", "Jacket", "Drone",
    "Grinder", "Tent", "Puzzle", "Serum", "Speaker", "Notebook", "Sneakers", "Tea Set",
)  # fmt: skip
_COLORS = ("black", "white", "red", "navy", "olive", "bordeaux", "crème", "灰色")
_SIZES = ("XS", "S", "M", "L", "XL", "one-size")
_TAGS = ("bestseller", "new", "eco", "limited", "gift", "clearance", "premium")
_CURRENCIES = ("EUR", "USD", "GBP", "PLN", "SEK", "CHF")
_CURRENCY_WEIGHTS = (45, 30, 10, 6, 5, 4)
_TAX_RATES = ("0.190", "0.080", "0.200", "0.230", "0.250", "0.077")  # aligned with currencies
_CITIES = ("Berlin", "Paris", "London", "Kraków", "Malmö", "Zürich", "New York", "São Paulo")
_STREETS = ("Hauptstraße", "Rue de Rivoli", "Baker Street", "Ulica Długa", "Main St", "Bahnhofweg")
_COUPONS = ("WELCOME10", "SPRING15", "VIP20", "FREESHIP", "BLACKFRIDAY", "ÉTÉ-5")
_REVIEW_TITLES = (
    "Great value", "Not as described", "Love it! 😍", "Works fine", "Über-good",
    "Broke after a week", "Perfect gift 🎁", "Meh", "Five stars, would buy again",
    "Qualité médiocre",
)  # fmt: skip
_REVIEW_OPENERS = (
    "Bought this for my kid.",
    "Second purchase.",
    "Arrived quickly.",
    "Packaging was damaged.",
    "Exactly what I needed.",
    "Hmm.",
)
_REVIEW_MIDDLES = (
    "Build quality is solid.",
    "Colour is a bit off.",
    "Battery lasts days.",
    "Instructions only in Deutsch.",
    'Smells like "new car".',
    "Fits perfectly 👌.",
)
_REVIEW_CLOSERS = ("Recommended.", "Would not buy again.", "4/5 overall.", "Thanks!", "")
_INVENTORY_REASONS = (
    ("sale", 55),
    ("restock", 20),
    ("return", 10),
    ("damage", 5),
    ("audit", 8),
    ("transfer", 2),
)
_PAYMENT_METHODS = (("card", 60), ("paypal", 25), ("bank_transfer", 10), ("gift_card", 5))
# PNG signature + IHDR chunk header: realistic "thumbnail" bytes that contain 0x00 bytes.
_PNG_HEADER_HEX = "89504E470D0A1A0A0000000D49484452"

_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")


def _status_sql(r: _Rand, key: str, age_seconds_sql: str) -> str:
    """Order status: recent orders are still in flight, old ones mostly delivered."""
    roll = r.below("status", key, 100)
    flip = r.below("status_flip", key, 2)
    return (
        f"CASE WHEN {roll}<4 THEN 'cancelled' WHEN {roll}<6 THEN 'refunded' "
        f"WHEN ({age_seconds_sql})<{_const_sql(5 * 86_400)} THEN ELT(1+{flip},'pending','paid') "
        f"WHEN ({age_seconds_sql})<{_const_sql(20 * 86_400)} THEN ELT(1+{flip},'paid','shipped') "
        "ELSE 'delivered' END"
    )


# --------------------------------------------------------------------------------------------
# Seed
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Row counts and id offsets of one seed run (offsets > 0 only when appending)."""

    orders: int
    customers: int
    products: int
    reviews: int
    inventory_events: int
    base: dict[str, int]

    @property
    def max_customer_id(self) -> int:
        return self.base["customers"] + self.customers

    @property
    def max_product_id(self) -> int:
        return self.base["products"] + self.products


def _require_sequence_engine(cur: pymysql.cursors.Cursor) -> None:
    """Fail early and clearly on servers without MariaDB's SEQUENCE engine (e.g. Oracle MySQL)."""
    cur.execute("SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'SEQUENCE'")
    row = cur.fetchone()
    if not row or row[0] not in ("YES", "DEFAULT"):
        raise DemoError("the SEQUENCE storage engine (MariaDB >= 10.0) is required to seed the demo data")


class _LaneStopped(Exception):
    """A seeding lane stopped because the other one failed."""


# Two lanes write parents and children at once (order items may land before their orders), and the
# generator keeps every reference valid by construction, as a dump being restored does.
_BULK_SESSION = "SET SESSION foreign_key_checks = 0"


def seed(
    conn_url: str,
    orders: int = 10_000,
    seed: int = 42,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    parallel: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Fill the demo tables deterministically; returns the rows inserted per table.

    Same arguments on the same starting state give byte-identical tables. Rows are appended
    after the current maximum ids, so on freshly created tables ids start at 1 (call
    ``create_schema`` first for canonical data). Everything runs as ``INSERT ... SELECT`` over
    SEQUENCE tables in autocommitted chunks of about ``chunk_rows`` rows, which keeps one
    statement's undo log and binlog event bounded without touching any global setting.

    The generation is CPU-bound on the server and one connection uses one server core, so by
    default the work is split into two lanes on two connections (orders + payments, and
    everything else). Ids are explicit and each table is written by one lane only, so the
    result does not depend on how the lanes interleave.
    """
    if orders < 1:
        raise ValueError("orders must be >= 1")
    if chunk_rows < 1000:
        raise ValueError("chunk_rows must be >= 1000")
    say = log or (lambda _msg: None)
    url = _database_url(conn_url)
    with exclusive(url):
        return _seed(url, orders, seed, chunk_rows, parallel, say)


def _seed(url: DatabaseUrl, orders: int, seed: int, chunk_rows: int, parallel: bool,
          say: Callable[[str], None]) -> dict[str, int]:
    inserted: Counter[str] = Counter()
    lock = threading.Lock()
    failed = threading.Event()

    first_error: list[BaseException] = []

    def run(cur: pymysql.cursors.Cursor, table: str, statement: _Statement) -> None:
        if failed.is_set():  # the other lane failed: stop between statements; its error is the one raised
            raise _LaneStopped
        started = time.perf_counter()
        try:
            cur.execute(*statement)
        except pymysql.MySQLError as exc:
            raise SeedFailed(f"seeding {table}: {redact(str(exc))}") from exc
        with lock:
            inserted[table] += cur.rowcount
        say(f"  {table}: +{cur.rowcount} rows in {time.perf_counter() - started:.1f}s")

    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(_BULK_SESSION)
        _require_sequence_engine(cur)
        base = {table: _max_id(cur, table) for table in TABLES}
        plan = _Plan(
            orders=orders,
            customers=max(100, orders // 10),
            products=max(50, min(orders // 20, 20_000)),
            reviews=orders // 5,
            inventory_events=orders // 2,
            base=base,
        )
        # Both lanes read products (unit prices), so they come first.
        if base["categories"] == 0:
            run(cur, "categories", _categories_sql())
        for lo, hi in _chunks(plan.products, chunk_rows):
            run(cur, "products", _products_sql(_Rand(seed, "products"), plan, lo, hi))

    # ~2.5 items per order, hence the smaller order chunk, so that no statement writes much
    # more than chunk_rows rows. Orders and items compute the same per-item expressions, so
    # the order subtotal always equals the sum of its lines.
    order_chunks = list(_chunks(plan.orders, max(1, chunk_rows * 2 // 5)))

    def orders_lane(cur: pymysql.cursors.Cursor) -> None:
        # Payments read the orders chunk just written, while it is hot in the buffer pool.
        for lo, hi in order_chunks:
            run(cur, "orders", _orders_sql(_Rand(seed, "orders"), plan, lo, hi))
            payment_id = base["payments"] + inserted["payments"]
            run(cur, "payments", _payments_sql(_Rand(seed, "payments"), plan, lo, hi, payment_id))

    def other_lane(cur: pymysql.cursors.Cursor) -> None:
        for lo, hi in _chunks(plan.customers, chunk_rows):
            run(cur, "customers", _customers_sql(_Rand(seed, "customers"), plan, lo, hi))
        for lo, hi in order_chunks:
            item_id = base["order_items"] + inserted["order_items"]
            run(cur, "order_items", _order_items_sql(_Rand(seed, "orders"), plan, lo, hi, item_id))
        for lo, hi in _chunks(plan.reviews, chunk_rows):
            run(cur, "reviews", _reviews_sql(_Rand(seed, "reviews"), plan, lo, hi))
        for lo, hi in _chunks(plan.inventory_events, chunk_rows):
            run(cur, "inventory_events", _inventory_sql(_Rand(seed, "inventory"), plan, lo, hi))

    def in_connection(lane: Callable[[pymysql.cursors.Cursor], None]) -> None:
        try:
            with connect(url) as conn, conn.cursor() as cur:
                cur.execute(_BULK_SESSION)
                lane(cur)
        except _LaneStopped:
            raise
        except BaseException as exc:
            with lock:  # the first real error, whichever lane it came from, is the one raised
                first_error.append(exc)
            failed.set()
            raise

    lanes = (orders_lane, other_lane)
    if parallel:
        with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="seed") as pool:
            for future in [pool.submit(in_connection, lane) for lane in lanes]:
                future.exception()  # wait for both lanes
        if first_error:
            raise first_error[0]
    else:
        for lane in lanes:
            in_connection(lane)
    return {table: inserted[table] for table in TABLES}


def _categories_sql() -> _Statement:
    """The fixed category tree (three levels), created a year before the anchor, an hour apart."""
    params: dict[str, object] = {}
    rows = []
    for i, (name, parent) in enumerate(_CATEGORIES):
        params[f"name_{i}"], params[f"parent_{i}"] = name, None if parent is None else parent + 1
        created = _before_anchor(_const_sql(SPAN_SECONDS - i * 3600))
        rows.append(f"({_const_sql(i + 1)},%(name_{i})s,%(parent_{i})s,{created},{created})")
    return "INSERT INTO categories (id, name, parent_id, created_at, updated_at) VALUES " + ",".join(rows), params


def _products_sql(r: _Rand, plan: _Plan, lo: int, hi: int) -> _Statement:
    k = "s.id"
    digital = r.chance("digital", k, 12)
    created = _before_anchor(r.below("created", k, SPAN_SECONDS))
    category = _elt(f"1+{r.below('category', k, len(_LEAF_CATEGORY_IDS))}", list(map(_const_sql, _LEAF_CATEGORY_IDS)))
    attributes = (
        f"IF({r.chance('attrs_null', k, 20)}, NULL, JSON_OBJECT("
        f"'color', {r.pick('color', k, _COLORS)}, "
        f"'size', {r.pick('size', k, _SIZES)}, "
        f"'tags', JSON_ARRAY({r.pick('tag1', k, _TAGS)}, {r.pick('tag2', k, _TAGS)}), "
        f"'dimensions_cm', JSON_OBJECT('w', {r.between('w', k, 1, 120)}, "
        f"'h', {r.between('h', k, 1, 200)}), "
        f"'eco', JSON_EXTRACT(IF({r.chance('eco', k, 30)}, 'true', 'false'), '$')))"
    )
    thumbnail = (
        f"IF({r.chance('thumb_null', k, 30)}, NULL, CONCAT(UNHEX({r.bind('png_header', _PNG_HEADER_HEX)}), "
        f"LEFT(UNHEX(SHA2(CONCAT({k}, ':', {r.u32('thumb', k)}), 256)), "
        f"{r.between('thumb_len', k, 4, 32)})))"
    )
    stock = f"IF({r.chance('negative_stock', k, 1)}, -{r.between('stock_neg', k, 1, 20)}, {r.below('stock', k, 1000)})"
    return r.statement(f"""
INSERT INTO products (id, sku, name, category_id, price, weight_kg, rating, attributes,
                      thumbnail, release_year, stock, is_digital, created_at, updated_at)
SELECT s.id,
  CONCAT('SKU-', LPAD(HEX({r.below("sku", k, 4096)}), 3, '0'), '-', LPAD(s.id, GREATEST(7, LENGTH(s.id)), '0')),
  CONCAT({r.pick("adj", k, _ADJECTIVES)}, ' ', {r.pick("noun", k, _NOUNS)}, ' ',
         CHAR(65 + {r.below("model", k, 26)} USING ascii), '-', {r.between("model_no", k, 1, 999)}),
  {category},
  ROUND(0.99 + EXP({r.frac("price", k)} * 7), 2),
  IF({digital}, NULL, ROUND(0.05 + {r.frac("weight", k)} * 30, 3)),
  IF({r.chance("rating_null", k, 25)}, NULL, 1 + {r.frac("rating", k)} * 4),
  {attributes},
  {thumbnail},
  IF({r.chance("year_null", k, 15)}, NULL, {r.between("year", k, 1995, 2026)}),
  {stock},
  {digital},
  {created},
  {
        _updated_at(
            created,
            f"IF({r.chance('edited', k, 40)}, {r.below('delay', k, 2_592_000)}, 0)",
            r.below("micros", k, 1_000_000),
        )
    }
FROM (SELECT {r.bind("id_base", plan.base["products"])} + seq AS id FROM {_seq(lo, hi)}) s""")


def _customers_sql(r: _Rand, plan: _Plan, lo: int, hi: int) -> _Statement:
    k = "s.id"
    first = f"1+{r.below('first', k, len(_FIRST_NAMES))}"
    last = f"1+{r.below('last', k, len(_LAST_NAMES))}"
    full_name = (
        f"CONCAT({_elt(first, r.bind_each('first_name', [d for d, _ in _FIRST_NAMES]))}, ' ', "
        f"{_elt(last, r.bind_each('last_name', [d for d, _ in _LAST_NAMES]))}, "
        f"IF({r.chance('emoji', k, 2)}, CONCAT(' ', {r.pick('emoji_pick', k, _EMOJI)}), ''))"
    )
    email = (
        f"CONCAT({_elt(first, r.bind_each('first_ascii', [a for _, a in _FIRST_NAMES]))}, '.', "
        f"{_elt(last, r.bind_each('last_ascii', [a for _, a in _LAST_NAMES]))}, s.id, '@', "
        f"{r.pick('domain', k, _EMAIL_DOMAINS)})"
    )
    created = _before_anchor(r.below("created", k, SPAN_SECONDS))
    loyalty = (
        f"IF({r.chance('loyalty_max', k, 0.5)}, 16777215, {r.below('loyalty', k, 100)} * {r.below('loyalty2', k, 100)})"
    )
    return r.statement(f"""
INSERT INTO customers (id, email, full_name, country, birth_date, is_active, marketing_opt_in,
                       loyalty_points, notes, created_at, updated_at)
SELECT s.id,
  {email},
  IF({r.chance("name_null", k, 1)}, NULL, {full_name}),
  IF({r.chance("country_null", k, 1)}, NULL, {r.weighted("country", k, _COUNTRIES)}),
  IF({r.chance("birth_null", k, 20)}, NULL,
     DATE'1945-01-01' + INTERVAL {r.below("birth", k, 60 * 365)} DAY),
  {r.chance("active", k, 92)},
  {r.below("optin", k, 8)},
  {loyalty},
  IF({r.chance("notes", k, 12)}, {r.pick("notes_pick", k, _CUSTOMER_NOTES)}, NULL),
  {created},
  {
        _updated_at(
            created,
            f"IF({r.chance('edited', k, 30)}, {r.below('delay', k, 8_000_000)}, 0)",
            r.below("micros", k, 1_000_000),
        )
    }
FROM (SELECT {r.bind("id_base", plan.base["customers"])} + seq AS id FROM {_seq(lo, hi)}) s""")


def _order_age_sql(r: _Rand, plan: _Plan, idx: str) -> str:
    """Seconds before the anchor; grows with the order's position so ids follow time."""
    jitter = r.below("age_jitter", f"{r.bind('order_base', plan.base['orders'])}+{idx}", 1800)
    orders = r.bind("orders", plan.orders)
    return f"(({orders}-{idx})*{_const_sql(SPAN_SECONDS)} DIV {orders} + {jitter})"


def _item_parts(r: _Rand, order_id: str, kseq: str, max_product_id: int) -> tuple[str, str, str, str]:
    """(join condition, product id, quantity, discount pct) of item ``kseq`` of an order.

    Shared by the orders statement (which sums the lines into the subtotal) and the
    order_items statement, so both always agree.
    """
    item_key = f"({order_id})*4+{kseq}"
    n_items = f"(1+{r.below('n_items', order_id, 4)})"  # 1..4 items, 2.5 on average
    product = f"(1+MOD({r.u32('item_product', item_key)}, {r.bind('max_product_id', max_product_id)}))"
    quantity = (
        f"IF({r.chance('bulk', item_key, 0.2)}, {r.between('bulk_qty', item_key, 100, 999)}, "
        f"CAST(ELT({r.index('qty', item_key, (55, 25, 10, 6, 4))}, 1, 2, 3, 4, 5) AS UNSIGNED))"
    )
    discount = (
        f"IF({r.chance('discount', item_key, 20)}, "
        # ELT returns a string: cast, or the subtotal would be computed in floating point.
        f"CAST(ELT(1+{r.below('discount_pick', item_key, 5)}, 5, 10, 15, 25.5, 50) "
        "AS DECIMAL(5,2)), "
        "NULL)"
    )
    return f"{kseq} <= {n_items}", product, quantity, discount


def _orders_sql(r: _Rand, plan: _Plan, lo: int, hi: int) -> _Statement:
    order_id = f"({r.bind('order_base', plan.base['orders'])}+s.seq)"
    cond, product, quantity, discount = _item_parts(r, order_id, "k.seq", plan.max_product_id)
    line = f"ROUND({quantity} * p.price * (100 - COALESCE({discount}, 0)) / 100, 2)"
    k = "t.id"
    age = _order_age_sql(r, plan, "t.idx")
    ordered = _before_anchor(age)
    cur_idx = r.index("currency", k, _CURRENCY_WEIGHTS)
    rate = f"CAST({_elt(cur_idx, r.bind_each('tax_rate', _TAX_RATES))} AS DECIMAL(4,3))"
    tax = f"ROUND(t.subtotal * {rate}, 2)"
    address = (
        f"IF({r.chance('addr_null', k, 5)}, NULL, JSON_OBJECT("
        f"'name', CONCAT('Recipient ', t.id), "
        f"'street', CONCAT({r.pick('street', k, _STREETS)}, ' ', {r.between('house', k, 1, 250)}), "
        f"'zip', LPAD({r.below('zip', k, 100000)}, 5, '0'), "
        f"'city', {r.pick('city', k, _CITIES)}, "
        f"'country', {r.weighted('addr_country', k, _COUNTRIES)}))"
    )
    delay = f"MOD({r.u32('updated', k)}, LEAST({age}, {_const_sql(14 * 86_400)}) + 1)"
    return r.statement(f"""
INSERT INTO orders (id, customer_id, status, currency, subtotal, tax, total, shipping_address,
                    coupon_code, ordered_at, created_at, updated_at)
SELECT t.id,
  1 + MOD({r.u32("customer", k)}, {r.bind("max_customer_id", plan.max_customer_id)}),
  {_status_sql(r, k, age)},
  {_elt(cur_idx, r.bind_each("currency", _CURRENCIES))},
  t.subtotal,
  {tax},
  t.subtotal + {tax},
  {address},
  IF({r.chance("coupon", k, 15)}, {r.pick("coupon_pick", k, _COUPONS)}, NULL),
  {ordered},
  {ordered},
  {_updated_at(ordered, delay, r.below("micros", k, 1_000_000))}
FROM (
  SELECT {order_id} AS id, s.seq AS idx, SUM({line}) AS subtotal
  FROM {_seq(lo, hi)} s
  JOIN seq_1_to_4 k ON {cond}
  JOIN products p ON p.id = {product}
  GROUP BY s.seq
) t""")


def _order_items_sql(r: _Rand, plan: _Plan, lo: int, hi: int, id_base: int) -> _Statement:
    order_id = f"({r.bind('order_base', plan.base['orders'])}+s.seq)"
    cond, product, quantity, discount = _item_parts(r, order_id, "k.seq", plan.max_product_id)
    created = _before_anchor(_order_age_sql(r, plan, "s.seq"))
    micros = r.below("item_micros", f"{order_id}*4+k.seq", 1_000_000)
    return r.statement(f"""
INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, discount_pct,
                         created_at, updated_at)
SELECT {r.bind("id_base", id_base)} + ROW_NUMBER() OVER (ORDER BY s.seq, k.seq),
  {order_id}, p.id, {quantity}, p.price, {discount}, {created},
  {_updated_at(created, "0", micros)}
FROM {_seq(lo, hi)} s
JOIN seq_1_to_4 k ON {cond}
JOIN products p ON p.id = {product}""")


def _payments_sql(r: _Rand, plan: _Plan, lo: int, hi: int, id_base: int) -> _Statement:
    """One payment per order; ~5% are split into a gift card part plus a second payment."""
    first_id, last_id = r.bind("first_id", plan.base["orders"] + lo), r.bind("last_id", plan.base["orders"] + hi)
    gift = f"CAST(ELT(1+{r.below('gift', 'o.id', 3)}, 25, 50, 100) AS DECIMAL(12,2))"
    split = f"({r.chance('split', 'o.id', 5)} AND o.status <> 'pending' AND o.total > {gift})"
    pk = "o.id*2+k.seq"
    method = (
        f"CASE WHEN {split} AND k.seq = 1 THEN 'gift_card' "
        f"WHEN {split} THEN {r.weighted('method2', pk, (('card', 70), ('paypal', 30)))} "
        f"ELSE {r.weighted('method', pk, _PAYMENT_METHODS)} END"
    )
    amount = f"CASE WHEN NOT {split} THEN o.total WHEN k.seq = 1 THEN {gift} ELSE o.total - {gift} END"
    key = "t.id"
    seconds = (
        f"CASE t.method WHEN 'card' THEN {r.between('p_card', key, 1, 8)} "
        f"WHEN 'paypal' THEN {r.between('p_paypal', key, 2, 40)} "
        f"WHEN 'gift_card' THEN {r.between('p_gift', key, 0, 3)} "
        f"ELSE {r.between('p_bank', key, 3600, 288_000)} END"  # bank transfers: up to 80 hours
    )
    authorized = f"t.ordered_at + INTERVAL (({seconds})*1000000 + {r.below('auth_micros', key, 1_000_000)}) MICROSECOND"
    # Not authorized (yet) when still pending or when authorization would lie after the anchor.
    unauthorized = f"(t.status = 'pending' OR {authorized} > {_ANCHOR_SQL})"
    fee = (
        f"CASE WHEN MOD(t.id, 1000) = 7 THEN {_const_sql(UINT64_MAX)} "
        f"WHEN {r.below('fee_big', key, 1000)} = 0 "
        f"THEN {_const_sql(INT64_OVERFLOW)} + {r.below('fee_big_v', key, 1_000_000_000)} "
        "WHEN t.method = 'gift_card' THEN 0 "
        "ELSE CAST(ROUND(t.amount * 29000) + 300000 AS UNSIGNED) END"
    )
    return r.statement(f"""
INSERT INTO payments (id, order_id, method, amount, fee_micros, authorized_at, processing_time,
                      created_at, updated_at)
SELECT t.id, t.order_id, t.method, t.amount, {fee},
  IF({unauthorized}, NULL, {authorized}),
  IF({unauthorized}, NULL, SEC_TO_TIME({seconds})),
  t.ordered_at,
  IF({unauthorized}, t.ordered_at + INTERVAL {r.below("micros", key, 1_000_000)} MICROSECOND,
     {authorized})
FROM (
  SELECT {r.bind("id_base", id_base)} + ROW_NUMBER() OVER (ORDER BY o.id, k.seq) AS id, o.id AS order_id,
    {method} AS method, {amount} AS amount, o.status, o.ordered_at
  FROM orders o
  JOIN seq_1_to_2 k ON (k.seq = 1 OR {split})
  WHERE o.id BETWEEN {first_id} AND {last_id}
) t""")


def _reviews_sql(r: _Rand, plan: _Plan, lo: int, hi: int) -> _Statement:
    k = "s.id"
    created = _before_anchor(r.below("created", k, SPAN_SECONDS))
    body = (
        f"IF({r.chance('body_null', k, 10)}, NULL, CONCAT_WS(' ', "
        f"{r.pick('open', k, _REVIEW_OPENERS)}, {r.pick('mid', k, _REVIEW_MIDDLES)}, "
        f"{r.pick('close', k, _REVIEW_CLOSERS)}))"
    )
    return r.statement(f"""
INSERT INTO reviews (id, product_id, customer_id, stars, title, body, created_at, updated_at)
SELECT s.id,
  1 + MOD({r.u32("product", k)}, {r.bind("max_product_id", plan.max_product_id)}),
  1 + MOD({r.u32("customer", k)}, {r.bind("max_customer_id", plan.max_customer_id)}),
  ELT({r.index("stars", k, (5, 7, 13, 30, 45))}, 1, 2, 3, 4, 5),
  IF({r.chance("title_null", k, 30)}, NULL, {r.pick("title", k, _REVIEW_TITLES)}),
  {body},
  {created},
  {
        _updated_at(
            created,
            f"IF({r.chance('edited', k, 10)}, {r.below('delay', k, 2_592_000)}, 0)",
            r.below("micros", k, 1_000_000),
        )
    }
FROM (SELECT {r.bind("id_base", plan.base["reviews"])} + seq AS id FROM {_seq(lo, hi)}) s""")


def _inventory_sql(r: _Rand, plan: _Plan, lo: int, hi: int) -> _Statement:
    k = "s.id"
    reason_idx = r.index("reason", k, [w for _, w in _INVENTORY_REASONS])
    # Deltas per reason, aligned with _INVENTORY_REASONS.
    deltas = (
        f"-{r.between('d_sale', k, 1, 5)}",
        f"{r.between('d_restock', k, 10, 500)}",
        f"{r.between('d_return', k, 1, 3)}",
        f"-{r.between('d_damage', k, 1, 10)}",
        f"CAST({r.between('d_audit', k, 0, 40)} AS SIGNED) - 20",
        f"-{r.between('d_transfer', k, 50, 100000)}",
    )
    created = _before_anchor(r.below("created", k, SPAN_SECONDS))
    return r.statement(f"""
INSERT INTO inventory_events (id, product_id, delta, reason, flags, created_at, updated_at)
SELECT s.id,
  1 + MOD({r.u32("product", k)}, {r.bind("max_product_id", plan.max_product_id)}),
  {_elt(reason_idx, [f"({d})" for d in deltas])},
  {_elt(reason_idx, r.bind_each("reason", [n for n, _ in _INVENTORY_REASONS]))},
  IF({r.chance("flags_null", k, 30)}, NULL, {r.below("flags", k, 256)}),
  {created},
  {_updated_at(created, "0", r.below("micros", k, 1_000_000))}
FROM (SELECT {r.bind("id_base", plan.base["inventory_events"])} + seq AS id FROM {_seq(lo, hi)}) s""")


# --------------------------------------------------------------------------------------------
# Change simulator
# --------------------------------------------------------------------------------------------


@dataclass
class SimulationStats:
    """Rows inserted / updated / deleted per table, for one tick or accumulated over many."""

    inserted: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    deleted: Counter[str] = field(default_factory=Counter)
    ticks: int = 0

    def add(self, other: SimulationStats) -> None:
        """Accumulate another tick's counts."""
        self.inserted.update(other.inserted)
        self.updated.update(other.updated)
        self.deleted.update(other.deleted)
        self.ticks += other.ticks

    def summary(self) -> str:
        """Compact one-line rendering, e.g. ``+3 orders +7 order_items ~2 customers -1 reviews``."""
        parts = [f"+{n} {t}" for t, n in sorted(self.inserted.items()) if n]
        parts += [f"~{n} {t}" for t, n in sorted(self.updated.items()) if n]
        parts += [f"-{n} {t}" for t, n in sorted(self.deleted.items()) if n]
        return " ".join(parts) or "no changes"


_NEXT_STATUS: dict[str, tuple[tuple[str, int], ...]] = {
    "pending": (("paid", 85), ("cancelled", 15)),
    "paid": (("shipped", 90), ("refunded", 10)),
    "shipped": (("delivered", 97), ("refunded", 3)),
}
_CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _utc_now() -> datetime:
    """Naive UTC 'now' at second precision, matching DATETIME columns in a UTC session."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _weighted_choice(rng: random.Random, options: Sequence[tuple[str, int]]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _sample_from(cur: pymysql.cursors.Cursor, sql: str, start: int, limit: int) -> list[tuple[object, ...]]:
    """Rows of ``sql`` (with ``%(start)s``/``%(limit)s``) from a random start id, wrapping."""
    cur.execute(sql, {"start": start, "limit": limit})
    rows = list(cur.fetchall())
    if len(rows) < limit and start > 1:
        cur.execute(sql, {"start": 1, "limit": limit - len(rows)})
        seen = {row[0] for row in rows}
        rows += [row for row in cur.fetchall() if row[0] not in seen]
    return rows


def _max_id(cur: pymysql.cursors.Cursor, table: str) -> int:
    cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {mysql_ident(table)}")
    return int(cur.fetchone()[0])


def _tick(cur: pymysql.cursors.Cursor, rng: random.Random) -> SimulationStats:
    """One transaction's worth of realistic OLTP changes; the caller commits."""
    stats = SimulationStats(ticks=1)
    now = _utc_now()
    max_customer, max_product = _max_id(cur, "customers"), _max_id(cur, "products")
    if not max_customer or not max_product:
        raise RuntimeError("no customers/products to simulate with: run `seed` first")

    # 1. New orders, each with items, a payment intent and stock movements.
    for _ in range(rng.randint(1, 5)):
        customer_id = rng.randint(1, max_customer)
        wanted = [rng.randint(1, max_product) for _ in range(rng.randint(1, 4))]
        cur.execute("SELECT id, price FROM products WHERE id IN %s", (tuple(set(wanted)),))
        prices = {int(pid): Decimal(price) for pid, price in cur.fetchall()}
        lines = []
        for pid in wanted:
            if pid in prices:
                qty = rng.choices((1, 2, 3, 4, 5), weights=(55, 25, 10, 6, 4))[0]
                disc = rng.choice((None, None, None, None, Decimal("10.00")))
                lines.append((pid, qty, prices[pid], disc))
        if not lines:
            continue
        subtotal = sum((_money(q * p * (100 - (d or 0)) / 100) for _, q, p, d in lines), Decimal(0))
        currency_idx = rng.choices(range(len(_CURRENCIES)), weights=_CURRENCY_WEIGHTS)[0]
        tax = _money(subtotal * Decimal(_TAX_RATES[currency_idx]))
        address = json.dumps(
            {
                "name": "Recipient",
                "street": f"{rng.choice(_STREETS)} {rng.randint(1, 250)}",
                "zip": f"{rng.randrange(100_000):05d}",
                "city": rng.choice(_CITIES),
                "country": _weighted_choice(rng, _COUNTRIES),
            },
            ensure_ascii=False,
        )
        cur.execute(
            "INSERT INTO orders (customer_id, status, currency, subtotal, tax, total,"
            " shipping_address, coupon_code, ordered_at, created_at)"
            " VALUES (%s, 'pending', %s, %s, %s, %s, %s, NULL, %s, %s)",
            (customer_id, _CURRENCIES[currency_idx], subtotal, tax, subtotal + tax, address,
             now, now),
        )  # fmt: skip
        order_id = cur.lastrowid
        cur.executemany(
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price, discount_pct,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            [(order_id, pid, q, p, d, now) for pid, q, p, d in lines],
        )
        method = _weighted_choice(rng, _PAYMENT_METHODS)
        fee = 0 if method == "gift_card" else int((subtotal + tax) * 29000) + 300_000
        cur.execute(
            "INSERT INTO payments (order_id, method, amount, fee_micros, created_at) VALUES (%s, %s, %s, %s, %s)",
            (order_id, method, subtotal + tax, fee, now),
        )
        cur.executemany(
            "INSERT INTO inventory_events (product_id, delta, reason, flags, created_at)"
            " VALUES (%s, %s, 'sale', NULL, %s)",
            [(pid, -q, now) for pid, q, _, _ in lines],
        )
        cur.executemany(
            "UPDATE products SET stock = GREATEST(stock - %s, -100) WHERE id = %s",
            [(q, pid) for pid, q, _, _ in lines],
        )
        cur.execute(
            "UPDATE customers SET loyalty_points = LEAST(loyalty_points + %s, 16777215) WHERE id = %s",
            (int(subtotal), customer_id),
        )
        stats.inserted.update({"orders": 1, "order_items": len(lines), "payments": 1, "inventory_events": len(lines)})
        stats.updated.update({"products": len({pid for pid, *_ in lines}), "customers": 1})

    # 2. Move some in-flight orders along; paying may apply a coupon, which changes totals.
    max_order = _max_id(cur, "orders")
    in_flight = _sample_from(
        cur,
        "SELECT id, status, subtotal, tax FROM orders WHERE id >= %(start)s"
        " AND status IN ('pending','paid','shipped') ORDER BY id LIMIT %(limit)s",
        rng.randint(1, max(1, max_order)),
        rng.randint(2, 6),
    )
    for order_id, status, subtotal, tax in in_flight:
        new_status = _weighted_choice(rng, _NEXT_STATUS[str(status)])
        if new_status == "paid" and rng.random() < 0.2:
            factor = Decimal("0.90")
            new_sub, new_tax = _money(subtotal * factor), _money(tax * factor)
            cur.execute(
                "UPDATE orders SET status = %s, coupon_code = 'WELCOME10', subtotal = %s,"
                " tax = %s, total = %s WHERE id = %s",
                (new_status, new_sub, new_tax, new_sub + new_tax, order_id),
            )
            cur.execute(
                "UPDATE payments SET amount = %s WHERE order_id = %s AND method <> 'gift_card'",
                (new_sub + new_tax, order_id),
            )
            stats.updated["payments"] += cur.rowcount
        else:
            cur.execute("UPDATE orders SET status = %s WHERE id = %s", (new_status, order_id))
        stats.updated["orders"] += 1
        if new_status == "paid":
            cur.execute(
                "UPDATE payments SET authorized_at = CURRENT_TIMESTAMP(6),"
                " processing_time = SEC_TO_TIME(%s) WHERE order_id = %s"
                " AND authorized_at IS NULL",
                (rng.randint(1, 40), order_id),
            )
            stats.updated["payments"] += cur.rowcount

    # 3. Customers edit their profiles.
    for _ in range(rng.randint(1, 3)):
        cur.execute(
            "UPDATE customers SET marketing_opt_in = %s, is_active = %s,"
            " notes = COALESCE(%s, notes) WHERE id = %s",
            (rng.randrange(8), int(rng.random() < 0.95),
             rng.choice((None, None, None, *_CUSTOMER_NOTES)), rng.randint(1, max_customer)),
        )  # fmt: skip
        stats.updated["customers"] += cur.rowcount

    # 4. Deletes: a cancelled order loses its items, a few reviews are withdrawn.
    if rng.random() < 0.5:
        cancelled = _sample_from(
            cur,
            "SELECT o.id FROM orders o WHERE o.id >= %(start)s AND o.status = 'cancelled'"
            " AND EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id)"
            " ORDER BY o.id LIMIT %(limit)s",
            rng.randint(1, max(1, max_order)),
            1,
        )
        for (order_id,) in cancelled:
            cur.execute("DELETE FROM order_items WHERE order_id = %s", (order_id,))
            stats.deleted["order_items"] += cur.rowcount
    n_reviews = rng.randint(0, 2)
    if n_reviews:
        doomed = _sample_from(
            cur,
            "SELECT id FROM reviews WHERE id >= %(start)s ORDER BY id LIMIT %(limit)s",
            rng.randint(1, max(1, _max_id(cur, "reviews"))),
            n_reviews,
        )
        if doomed:
            cur.execute("DELETE FROM reviews WHERE id IN %s", ([row[0] for row in doomed],))
            stats.deleted["reviews"] += cur.rowcount

    # 5. A fresh review now and then.
    if rng.random() < 0.5:
        cur.execute(
            "INSERT INTO reviews (product_id, customer_id, stars, title, body, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (rng.randint(1, max_product), rng.randint(1, max_customer), rng.randint(1, 5),
             rng.choice((None, *_REVIEW_TITLES)), rng.choice(_REVIEW_MIDDLES), now),
        )  # fmt: skip
        stats.inserted["reviews"] += 1
    return stats


def simulate(
    conn_url: str,
    interval: float = 1.0,
    iterations: int | None = None,
    seed: int | None = None,
    *,
    out: Callable[[str], None] | None = print,
) -> SimulationStats:
    """Apply a few inserts/updates/deletes per tick, like a live shop, and report each tick.

    Each tick is one transaction, so an interruption (Ctrl-C) never leaves half a tick behind:
    the open transaction is rolled back and the totals so far are returned. ``iterations=None``
    runs until interrupted; ``seed`` makes the choice of changes reproducible (timestamps are
    still the real current time, since that is what a CDC consumer sees).
    """
    rng = random.Random(seed)
    url = _database_url(conn_url)
    total = SimulationStats()
    emit = out or (lambda _line: None)
    with connect(url, autocommit=False) as conn:
        try:
            tick = 0
            while iterations is None or tick < iterations:
                if tick:
                    time.sleep(interval)
                tick += 1
                with conn.cursor() as cur:
                    cur.execute("SELECT GET_LOCK(%s, 3600)", (_lock_name(url),))  # never during a seed
                    try:
                        stats = _tick(cur, rng)
                        conn.commit()
                    finally:
                        cur.execute("SELECT RELEASE_LOCK(%s)", (_lock_name(url),))
                total.add(stats)
                emit(f"{_utc_now():%Y-%m-%d %H:%M:%S} tick {tick}: {stats.summary()}")
        except KeyboardInterrupt:
            conn.rollback()
            emit(f"interrupted; {total.ticks} ticks committed: {total.summary()}")
    return total


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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--mysql-url",
        default=argparse.SUPPRESS,  # so a value given before the subcommand is not reset
        help="mysql://user:password@host:port/database (default: $MYSQL_URL)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m mysql_pg_assets_demo",
        description="Demo shop database: deterministic seed data and a live change simulator.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed", parents=[common], help="create the tables and fill them")
    p_seed.add_argument("--orders", type=int, default=10_000, help="number of orders (10000)")
    p_seed.add_argument("--seed", type=int, default=42, help="random seed (42)")
    p_seed.add_argument(
        "--keep",
        action="store_true",
        help="keep existing tables and rows and append to them (default: drop and recreate)",
    )
    p_seed.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows/INSERT")
    p_seed.add_argument("--serial", action="store_true", help="use one connection instead of two (same data)")
    p_sim = sub.add_parser("simulate", parents=[common], help="apply live changes")
    p_sim.add_argument("--interval", type=float, default=1.0, help="seconds between ticks (1)")
    p_sim.add_argument("--iterations", type=int, default=None, help="ticks (default: forever)")
    p_sim.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p_alter = sub.add_parser("alter", parents=[common], help="change the schema, for the schema-drift sensor")
    p_alter.add_argument("change", choices=sorted(SCHEMA_CHANGES), help="add-column: compatible; drop-column: not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    url = getattr(args, "mysql_url", None) or os.environ.get("MYSQL_URL")
    if not url:
        parser.error("no database: set MYSQL_URL or pass --mysql-url")
    try:
        target = _database_url(url)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.command == "seed":
            print(f"seeding {target} with {args.orders} orders (seed {args.seed})")
            started = time.perf_counter()
            create_schema(url, drop_existing=not args.keep)
            seed(
                url,
                args.orders,
                args.seed,
                chunk_rows=args.chunk_rows,
                parallel=not args.serial,
                log=lambda msg: print(msg, flush=True),
            )
            print(f"seeded in {time.perf_counter() - started:.1f}s; rows per table:")
            for table, count in table_counts(url).items():
                print(f"  {table:<17} {count:>12,}")
        elif args.command == "alter":
            alter(url, args.change)
            print(f"{target}: {'; '.join(SCHEMA_CHANGES[args.change])}")
        else:
            print(f"simulating changes on {target} (Ctrl-C to stop)", flush=True)
            simulate(
                url,
                args.interval,
                args.iterations,
                args.seed,
                out=lambda line: print(line, flush=True),
            )
    except pymysql.MySQLError as exc:
        print(f"error ({target}): {redact(str(exc))}", file=sys.stderr)
        return 1
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
