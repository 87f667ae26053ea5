"""The rows of each demo table, as one ``INSERT … SELECT … FROM seq_lo_to_hi`` per chunk (MariaDB's SEQUENCE
engine makes millions of rows in seconds). Orders and their items compute the same per-item expressions,
so an order's subtotal always equals the sum of its lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from mysql_pg_assets_demo.expressions import (
    _ADJECTIVES,
    _ANCHOR_SQL,
    _CATEGORIES,
    _CITIES,
    _COLORS,
    _COUNTRIES,
    _COUPONS,
    _CURRENCIES,
    _CURRENCY_WEIGHTS,
    _CUSTOMER_NOTES,
    _EMAIL_DOMAINS,
    _EMOJI,
    _FIRST_NAMES,
    _INVENTORY_REASONS,
    _LAST_NAMES,
    _LEAF_CATEGORY_IDS,
    _NOUNS,
    _PAYMENT_METHODS,
    _PNG_HEADER_HEX,
    _REVIEW_CLOSERS,
    _REVIEW_MIDDLES,
    _REVIEW_OPENERS,
    _REVIEW_TITLES,
    _SIZES,
    _STREETS,
    _TAGS,
    _TAX_RATES,
    _before_anchor,
    _const_sql,
    _elt,
    _Rand,
    _seq,
    _Statement,
    _status_sql,
    _updated_at,
)
from mysql_pg_assets_demo.schema import INT64_OVERFLOW, SPAN_SECONDS, UINT64_MAX


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
