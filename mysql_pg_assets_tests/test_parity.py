"""The integrity checks cannot cry wolf and cannot be fooled: converted values pass, any changed value of any
type fails, and the sampled rows name the column and both values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mysql_pg_assets.checks.parity import checksum_columns, fingerprints, sample_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec

EVERY_TYPE = """CREATE TABLE every_type (
  id INT PRIMARY KEY, d DATE NULL, dt DATETIME(6) NULL, ts TIMESTAMP(3) NULL, zf INT(6) UNSIGNED ZEROFILL,
  flag TINYINT(1), bit1 BIT(1), txt VARCHAR(20), f FLOAT, dbl DOUBLE, j JSON, bin VARBINARY(8), bits BIT(5),
  tags SET('a','b','c'), t TIME(3), y YEAR, amount DECIMAL(12,4), big BIGINT UNSIGNED, e ENUM('x','y'), g POINT NULL)"""
ROWS = [
    # Zero dates (made NULL), ZEROFILL, a TINYINT(1) of 5 (made true), NUL in text (removed): all as documented.
    "(1, '0000-00-00', '2024-00-10 01:02:03', '0000-00-00 00:00:00', 42, 5, b'1', CONCAT('a', CHAR(0), 'b'),"
    " 0.1, 1e300, '{\"b\": [1, 2.50], \"a\": {\"x\": null}}', X'00FF10', b'10101', 'a,c', '-838:59:59.000', 1901,"
    " -12.5, 18446744073709551615, 'x', ST_GeomFromText('POINT(1 2)'))",
    "(2, '2024-02-29', '1000-01-01 00:00:00.000001', '2038-01-19 03:14:07.999', 0, 0, b'0', '', -3.4028235e38,"
    " -2.2250738585072014e-308, '[]', X'', b'00000', '', '00:00:00.001', 2155, 0, 0, 'y', NULL)",
    "(3, NULL, NULL, NULL, 7, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]
# One change per PostgreSQL column, each one a value that differs from MySQL's.
CORRUPTIONS = {
    "d": "d = DATE '2024-03-01'", "dt": "dt = TIMESTAMP '2000-01-01 00:00:00'",
    "ts": "ts = now()", "zf": "zf = zf + 1", "flag": "flag = NOT flag",
    "bit1": "bit1 = NOT bit1", "txt": "txt = txt || 'x'", "f": "f = f * 2", "dbl": "dbl = -dbl",
    "j": "j = j || '{\"c\": 1}'", "bin": "bin = bin || '\\x00'::bytea", "bits": "bits = ~bits",
    "tags": "tags = array_append(tags, 'b')", "t": "t = t + interval '1 millisecond'", "y": "y = y - 1",
    "amount": "amount = amount + 0.0001", "big": "big = big - 1", "e": "e = 'y'", "g": "g = '\\x00'::bytea",
}


@pytest.fixture()
def synced(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
           request: pytest.FixtureRequest) -> tuple[DatabaseUrl, DatabaseUrl, TablePlan]:
    suffix = request.node.name[-12:].strip("_[]")
    mysql, pg = make_mysql_database(f"parity_{suffix}"), make_pg_database(f"parity_{suffix}")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # zero dates are what MySQL servers hold
        cur.execute(EVERY_TYPE)
        cur.execute(f"INSERT INTO every_type VALUES {', '.join(ROWS)}")
    (table,) = discover(parse_spec({"target": {"schema": "par"}}), mysql).tables
    result = sync_table(table, mysql, pg)
    assert result.rejected_rows == 0 and result.conversions.total == 5, result.conversions.as_metadata()
    return mysql, pg, table


def test_values_converted_as_documented_pass_every_check(synced: tuple[DatabaseUrl, DatabaseUrl, TablePlan]) -> None:
    mysql, pg, table = synced
    assert {c.target_name for c in checksum_columns(table)} == {c.target_name for c in table.columns}
    source, target = fingerprints(mysql, pg, table, None)
    assert source == target and source.rows == 3
    sample = sample_rows(mysql, pg, table, None, rows=100)
    assert sample.compared == 3 and sample.equal, sample.differences


@pytest.mark.parametrize("column", sorted(CORRUPTIONS))
def test_a_changed_value_of_any_type_is_found(synced: tuple[DatabaseUrl, DatabaseUrl, TablePlan], column: str) -> None:
    mysql, pg, table = synced
    with pg_connection(pg) as connection:
        changed = connection.execute(f"UPDATE par.every_type SET {CORRUPTIONS[column]} WHERE id = 1").rowcount
    assert changed == 1
    source, target = fingerprints(mysql, pg, table, None)
    assert source.rows == target.rows and source.checksum != target.checksum, column
    (difference,) = sample_rows(mysql, pg, table, None, rows=100).differences
    assert difference["key"] == {"id": "1"} and difference["column"] == column, difference
    assert difference["mysql"] != difference["postgres"]
    # The next load repairs exactly that row.
    assert sync_table(table, mysql, pg).updated == 1
    assert fingerprints(mysql, pg, table, None)[1] == source


def test_a_json_value_changed_in_place_is_found_by_the_sample(
    synced: tuple[DatabaseUrl, DatabaseUrl, TablePlan]
) -> None:
    """The checksum sees JSON's kind and size only; the sampled rows compare its values."""
    mysql, pg, table = synced
    with pg_connection(pg) as connection:
        connection.execute("UPDATE par.every_type SET j = jsonb_set(j, '{b,1}', '2.51') WHERE id = 1")
    (difference,) = sample_rows(mysql, pg, table, None, rows=100).differences
    assert difference["column"] == "j" and "2.50" in difference["mysql"] and "2.51" in difference["postgres"]


def test_a_set_member_holding_nul_compares_as_it_arrives(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
) -> None:
    """The mapping removes NUL from a SET's members as from any text; the checksum and the sampled rows must
    remove it on MySQL's side too (a case the property test drew)."""
    mysql, pg = make_mysql_database("parity_set_nul"), make_pg_database("parity_set_nul")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE s (id INT PRIMARY KEY, tags SET('a\\0', 'b'))")
        cur.execute("INSERT INTO s VALUES (1, 'a\\0,b'), (2, 'b'), (3, ''), (4, NULL)")
    (table,) = discover(parse_spec({"target": {"schema": "set_nul"}}), mysql).tables
    sync_table(table, mysql, pg)
    source, target = fingerprints(mysql, pg, table, None)
    assert source == target and source.rows == 4
    sample = sample_rows(mysql, pg, table, None, rows=10)
    assert sample.compared == 4 and sample.equal, sample.differences
