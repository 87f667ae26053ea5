"""Seeding the demo shop: deterministic, in chunks, on two connections at once (see ``seed``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pymysql.cursors

from mysql_pg_assets.core.settings import DatabaseUrl, redact
from mysql_pg_assets_demo.expressions import _chunks, _Rand, _Statement
from mysql_pg_assets_demo.rows import (
    _categories_sql,
    _customers_sql,
    _inventory_sql,
    _order_items_sql,
    _orders_sql,
    _payments_sql,
    _Plan,
    _products_sql,
    _reviews_sql,
)
from mysql_pg_assets_demo.schema import (
    DEFAULT_CHUNK_ROWS,
    TABLES,
    DemoError,
    SeedFailed,
    _database_url,
    _max_id,
    connect,
    exclusive,
)

# --------------------------------------------------------------------------------------------
# Seed
# --------------------------------------------------------------------------------------------


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
