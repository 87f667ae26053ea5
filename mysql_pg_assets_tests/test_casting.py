"""Casting rules, round trip: one table per MySQL type family, edge values, MariaDB → PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl
from mysql_pg_assets.core.sql import pg_qualified
from mysql_pg_assets.sync.catalog.casting import MySQLColumn, rule_for, rules_markdown
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec


@pytest.mark.parametrize(
    ("data_type", "column_type", "precision", "expected"),
    [
        ("tinyint", "tinyint(1)", 3, "boolean"),
        ("tinyint", "tinyint(4)", 3, "smallint"),
        ("tinyint", "tinyint(3) unsigned", 3, "smallint"),
        ("smallint", "smallint(5) unsigned", 5, "integer"),
        ("mediumint", "mediumint(8) unsigned", 7, "integer"),
        ("int", "int(11)", 10, "integer"),
        ("int", "int(10) unsigned", 10, "bigint"),
        ("bigint", "bigint(20)", 19, "bigint"),
        ("bigint", "bigint(20) unsigned", 20, "numeric(20)"),
        ("bit", "bit(1)", 1, "boolean"),
        ("bit", "bit(12)", 12, "bit varying(12)"),
        ("geometry", "geometry", None, "bytea"),
        ("inet6", "inet6", None, "text"),
    ],
)
def test_rule_table_picks_the_smallest_type_that_holds_the_range(
    data_type: str, column_type: str, precision: int | None, expected: str
) -> None:
    column = MySQLColumn("c", 1, data_type, column_type, True, numeric_precision=precision)
    assert rule_for(column).pg_type(column) == expected


def test_the_readme_shows_the_rules_as_they_are() -> None:
    assert rules_markdown() in (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


FAMILIES: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "integers": (
        "id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT,"
        " mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, flag TINYINT(1)",
        ["(1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 0)",
         "(2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,"
         " 18446744073709551615, 1)",
         "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"],
        {"ti": "smallint", "tu": "smallint", "su": "integer", "mu": "integer", "iu": "bigint", "bu": "numeric(20,0)",
         "flag": "boolean"},
    ),
    "decimals_and_floats": (
        "id INT PRIMARY KEY, d DECIMAL(65,30), m DECIMAL(10,2) UNSIGNED, f FLOAT, d2 DOUBLE",
        ["(1, 99999999999999999999999999999999999.999999999999999999999999999999, 0.00, -3.40282e38,"
         " -1.7976931348623157e308)",
         "(2, -99999999999999999999999999999999999.999999999999999999999999999999, 99999999.99, 1.17549e-38,"
         " 2.2250738585072014e-308)",
         "(3, 0.000000000000000000000000000001, NULL, 0.1, 0.1)",
         "(4, NULL, NULL, NULL, NULL)",
         "(5, 1, 1, 1.2345678, 1.2345678901234567)"],  # more digits than the text protocol prints
        {"d": "numeric(65,30)", "m": "numeric(10,2)", "f": "real", "d2": "double precision"},
    ),
    "strings": (
        "id INT PRIMARY KEY, c CHAR(4), v VARCHAR(300), t TEXT, lt LONGTEXT, l1 VARCHAR(20) CHARACTER SET latin1,"
        " e ENUM('small','it''s big','') , s SET('a','b','c d')",
        ["(1, 'ab', 'emoji 😀 and 汉字', '', 'x', 'café ÿ', 'small', '')",
         "(2, '', REPEAT('é', 300), REPEAT('long ', 10000), NULL, NULL, 'it''s big', 'a,c d')",
         "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"],
        {"c": "character varying(4)", "v": "character varying(300)", "t": "text", "e": "text", "s": "text[]"},
    ),
    "binary_and_bits": (
        "id INT PRIMARY KEY, b BINARY(4), vb VARBINARY(10), bl BLOB, lb LONGBLOB, b1 BIT(1), b8 BIT(8), b64 BIT(64)",
        ["(1, x'00010203', x'', x'00ff00', x'', b'0', b'00000000', b'0')",
         "(2, x'ffffffff', x'deadbeef', REPEAT(x'ff', 65535), REPEAT(x'ab', 70000), b'1', b'11111111',"
         " b'1111111111111111111111111111111111111111111111111111111111111111')",
         "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"],
        {"b": "bytea", "bl": "bytea", "b1": "boolean", "b8": "bit varying(8)", "b64": "bit varying(64)"},
    ),
    "temporal": (
        "id INT PRIMARY KEY, d DATE, dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,"
        " tm TIME, tm3 TIME(3), y YEAR",
        ["(1, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01',"
         " '1970-01-01 00:00:01.000001', '-838:59:59', '-838:59:58.999', 1901)",
         "(2, '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07',"
         " '2038-01-19 03:14:07.999999', '838:59:59', '00:00:00.001', 2155)",
         "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
         "(4, '2024-02-29', '2024-02-29 12:00:00', '2024-02-29 12:00:00.5', '2024-02-29 12:00:00',"
         " '2024-02-29 12:00:00.5', '25:00:00', '-00:00:01.5', 0)"],
        {"d": "date", "dt": "timestamp without time zone", "ts6": "timestamp with time zone", "tm": "interval",
         "y": "smallint"},
    ),
    "json_and_spatial": (
        "id INT PRIMARY KEY, j JSON, g GEOMETRY NULL, p POINT NULL",
        ["(1, '{\"a\": [1, 2.5, null, true], \"b\": {\"c\": \"😀\"}}', ST_GeomFromText('LINESTRING(0 0, 1 1)'),"
         " POINT(1.5, -2))",
         "(2, '[]', NULL, NULL)", "(3, '\"just a string\"', NULL, NULL)", "(4, NULL, NULL, NULL)"],
        {"j": "jsonb", "g": "bytea", "p": "bytea"},
    ),
}


@pytest.fixture(scope="module")
def casting_source(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("casting")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        for family, (columns, rows, _) in FAMILIES.items():
            cur.execute(f"CREATE TABLE {family} ({columns}) CHARACTER SET utf8mb4")
            cur.execute(f"INSERT INTO {family} VALUES {', '.join(rows)}")
    return url


def _plan(url: DatabaseUrl, name: str, **spec: object) -> TablePlan:
    (table,) = discover(parse_spec({"include": [name], "target": {"schema": "casting"}, **spec}), url).tables
    return table


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_value_of_a_type_family_arrives(
    family: str, casting_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database(f"cast_{family}")
    table = _plan(casting_source, family)
    result = sync_table(table, casting_source, target)
    assert result.rows_read == result.inserted == len(FAMILIES[family][1])
    assert result.rejected_rows == 0 and result.conversions.total == 0
    parity = compare_rows(casting_source, target, table)
    assert parity.equal, parity.differences
    with pg_connection(target) as connection:
        types = dict(connection.execute(
            "SELECT column_name, format_type(a.atttypid, a.atttypmod) FROM information_schema.columns c "
            "JOIN pg_attribute a ON a.attrelid = to_regclass(%s) AND a.attname = c.column_name "
            "WHERE table_schema = 'casting' AND table_name = %s", (pg_qualified("casting", family), family),
        ).fetchall())
    for column, pg_type in FAMILIES[family][2].items():
        assert types[column] == pg_type, column


def _pg_row(url: DatabaseUrl, table: str, key: int) -> dict:
    with pg_connection(url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT * FROM {pg_qualified('casting', table)} WHERE id = %s", (key,))
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def test_edge_values_as_postgresql_sees_them(
    casting_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database("cast_edges")
    for family in FAMILIES:
        sync_table(_plan(casting_source, family), casting_source, target)
    ints = _pg_row(target, "integers", 2)
    assert ints["bu"] == Decimal("18446744073709551615") and ints["bi"] == 2**63 - 1 and ints["flag"] is True
    assert _pg_row(target, "decimals_and_floats", 1)["d"] == Decimal(
        "99999999999999999999999999999999999.999999999999999999999999999999")
    strings = _pg_row(target, "strings", 1)
    assert (strings["v"], strings["l1"], strings["s"]) == ("emoji 😀 and 汉字", "café ÿ", [])
    assert _pg_row(target, "strings", 2)["s"] == ["a", "c d"]
    bits = _pg_row(target, "binary_and_bits", 2)
    assert bits["b64"] == "1" * 64 and bits["b8"] == "11111111" and bytes(bits["b"]) == b"\xff" * 4
    temporal = _pg_row(target, "temporal", 1)
    assert temporal["tm"] == -timedelta(hours=838, minutes=59, seconds=59)
    assert temporal["ts6"] == datetime(1970, 1, 1, 0, 0, 1, 1, tzinfo=UTC)
    assert temporal["d"] == date(1000, 1, 1)
    assert _pg_row(target, "temporal", 2)["tm"] == timedelta(hours=838, minutes=59, seconds=59)
    spatial = _pg_row(target, "json_and_spatial", 1)
    assert spatial["j"] == json.loads('{"a": [1, 2.5, null, true], "b": {"c": "😀"}}')
    assert bytes(spatial["p"])[:5] == b"\x01\x01\x00\x00\x00"  # WKB, little endian, point


def test_a_timestamp_is_the_same_instant_whatever_the_server_time_zone(
    casting_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    with mysql_connection(casting_source) as connection, connection.cursor() as cur:
        cur.execute("SET time_zone = '+05:30'")
        cur.execute("CREATE TABLE zoned (id INT PRIMARY KEY, ts TIMESTAMP NULL)")
        cur.execute("INSERT INTO zoned VALUES (1, '2024-06-01 12:00:00')")  # 06:30 UTC
        # The server's own default zone, which every new session starts in, is not UTC either.
        cur.execute("SELECT @@GLOBAL.time_zone")
        (default_zone,) = cur.fetchone()
        cur.execute("SET GLOBAL time_zone = '-07:00'")
    target = make_pg_database("cast_zone")
    try:
        sync_table(_plan(casting_source, "zoned"), casting_source, target)
    finally:
        with mysql_connection(casting_source) as connection, connection.cursor() as cur:
            cur.execute("SET GLOBAL time_zone = %s", (default_zone,))
    with pg_connection(target) as connection:
        (value,) = connection.execute('SELECT ts FROM casting.zoned').fetchone()
    assert value == datetime(2024, 6, 1, 6, 30, tzinfo=UTC)
