"""Deterministic pseudo-random SQL: every "random" value is a pure function of the row key, the seed and a
per-column salt, computed by MariaDB, so the same arguments always give the same rows; and the small
vocabularies the generated text draws from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from mysql_pg_assets_demo.schema import ANCHOR

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
