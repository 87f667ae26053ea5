"""The change simulator: a few inserts, updates and deletes per tick, like a live shop, each tick one
transaction (and never during a seed: see ``schema.exclusive``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import pymysql
import pymysql.cursors

from mysql_pg_assets_demo.expressions import (
    _CITIES,
    _COUNTRIES,
    _CURRENCIES,
    _CURRENCY_WEIGHTS,
    _CUSTOMER_NOTES,
    _PAYMENT_METHODS,
    _REVIEW_MIDDLES,
    _REVIEW_TITLES,
    _STREETS,
    _TAX_RATES,
)
from mysql_pg_assets_demo.schema import _database_url, _lock_name, _max_id, connect

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
