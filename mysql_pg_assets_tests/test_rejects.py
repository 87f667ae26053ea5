"""Bad values: converted and counted, or rejected with key, column, value and reason; never lost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from dagster import DagsterInstance, materialize

from mysql_pg_assets.checks.parity import fingerprints
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.meta import REJECTS
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_qualified
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.extract import select_sql
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec

BAD_ROWS = """
CREATE TABLE bad (
  id INT PRIMARY KEY,
  d DATE NULL,
  dt DATETIME NOT NULL,
  ts TIMESTAMP NULL,
  note VARCHAR(40),
  size ENUM('s','m','l'),
  doc JSON,
  ref VARCHAR(36)
)"""
# sql_mode '' lets MySQL store what strict mode refuses: zero dates and invalid ENUM values ('').
INSERTS = [
    "INSERT INTO bad VALUES (1, '2024-01-02', '2024-01-02 03:04:05', '2024-01-02 03:04:05', 'fine', 's',"
    " '{}', '0b4e5b36-33c1-4b43-9cc1-7e0a3f8f1d11')",
    "INSERT INTO bad VALUES (2, '0000-00-00', '2024-01-02 00:00:00', '0000-00-00 00:00:00', 'zero dates', 'm',"
    " NULL, NULL)",
    "INSERT INTO bad VALUES (3, '2024-00-10', '0000-00-00 00:00:00', NULL, 'not null zero', 'l', NULL, NULL)",
    "INSERT INTO bad VALUES (4, NULL, '2024-01-02 00:00:00', NULL, CONCAT('nul', CHAR(0), 'byte'), 's', NULL, NULL)",
    "INSERT INTO bad VALUES (5, NULL, '2024-01-02 00:00:00', NULL, 'bad enum', 'xl', NULL, NULL)",
    "INSERT INTO bad VALUES (6, NULL, '2024-01-02 00:00:00', NULL, 'json nul', 's', '{\"a\": \"x\\\\u0000y\"}', NULL)",
    "INSERT INTO bad VALUES (7, NULL, '2024-01-02 00:00:00', NULL, 'not a uuid', 's', NULL, 'nope')",
]


@pytest.fixture(scope="module")
def bad_source(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("bad")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute(BAD_ROWS)
        for statement in INSERTS:
            cur.execute(statement)
    return url


def _plan(url: DatabaseUrl) -> TablePlan:
    spec = {"include": ["bad"], "target": {"schema": "dirty"},
            "tables": {"bad": {"columns": {"ref": {"pg_type": "uuid"}}}}}
    (table,) = discover(parse_spec(spec), url).tables
    return table


def test_every_row_arrives_or_is_rejected_with_a_reason(
    bad_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database("rejects")
    table = _plan(bad_source)
    result = sync_table(table, bad_source, target, run_id="run-1")

    assert result.rows_read == 7
    assert result.rejected_rows == 4  # 3: zero date in NOT NULL, 5: bad ENUM, 6: \u0000 in JSON, 7: not a uuid
    assert result.rows_loaded == result.inserted == 3
    assert result.conversions.as_metadata() == {
        "d: zero date → NULL": 2, "dt: zero date → NULL": 1, "note: NUL bytes removed": 1, "ts: zero date → NULL": 1}

    with pg_connection(target) as connection:
        loaded = connection.execute(
            f"SELECT id, d, ts, note FROM {pg_qualified('dirty', 'bad')} ORDER BY id").fetchall()
        rejects = connection.execute(
            f"SELECT primary_key, column_name, value, reason, run_id, source_table FROM {REJECTS} ORDER BY id"
        ).fetchall()
    assert [row[0] for row in loaded] == [1, 2, 4]
    assert loaded[1][1:3] == (None, None)  # zero dates became NULL
    assert loaded[2][3] == "nulbyte"
    by_key = {r[0]["id"]: r[1:4] for r in rejects}
    assert by_key[3] == ("dt", "zero date", "NULL in a NOT NULL column")
    assert by_key[5] == ("size", "", "not one of the ENUM's values (MySQL's invalid-ENUM marker '')")
    assert by_key[6][:2] == ("doc", '{"a": "x\\u0000y"}') and "\\u0000" in by_key[6][2]
    assert by_key[7][:2] == ("ref", "nope") and by_key[7][2].startswith("PostgreSQL refused the value: invalid input")
    assert {r[4] for r in rejects} == {"run-1"} and {r[5] for r in rejects} == {f"{bad_source.database}.bad"}


def test_a_rejected_row_keeps_its_previous_version(
    bad_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database("rejects_keep")
    table = _plan(bad_source)
    sync_table(table, bad_source, target)
    with mysql_connection(bad_source) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("UPDATE bad SET ref = 'still not a uuid', note = 'edited' WHERE id = 1")
    try:
        result = sync_table(table, bad_source, target)
        assert result.rejected_rows == 5 and result.deleted == 0
        with pg_connection(target) as connection:
            note, ref = connection.execute(
                f"SELECT note, ref::text FROM {pg_qualified('dirty', 'bad')} WHERE id = 1").fetchone()
        assert (note, ref) == ("fine", "0b4e5b36-33c1-4b43-9cc1-7e0a3f8f1d11")
    finally:
        with mysql_connection(bad_source) as connection, connection.cursor() as cur:
            cur.execute("UPDATE bad SET ref = '0b4e5b36-33c1-4b43-9cc1-7e0a3f8f1d11', note = 'fine' WHERE id = 1")


def test_a_tinyint1_beyond_0_and_1_becomes_true_and_is_counted(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("flags"), make_pg_database("flags")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE flags (id INT PRIMARY KEY, on_off TINYINT(1))")
        cur.execute("INSERT INTO flags VALUES (1, 0), (2, 1), (3, 2), (4, -1), (5, NULL)")
    (table,) = discover(parse_spec({"target": {"schema": "flags"}}), source).tables
    result = sync_table(table, source, target)
    assert result.conversions.as_metadata() == {"on_off: non-0/1 value → true": 2}
    with pg_connection(target) as connection:
        values = connection.execute("SELECT on_off FROM flags.flags ORDER BY id").fetchall()
    assert [v for (v,) in values] == [False, True, True, True, None]


def test_an_invalid_enum_is_told_from_a_member_that_is_empty(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """MySQL reads its invalid-ENUM marker as '': without a '' member that alone tells (the read asks MySQL for
    nothing more), with one only the member's index does."""
    source, target = make_mysql_database("enums"), make_pg_database("enums")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE enums (id INT PRIMARY KEY, plain ENUM('a','b') NOT NULL, blank ENUM('','a'))")
        cur.execute("INSERT INTO enums VALUES (1, 'a', ''), (2, 'b', 'a'), (3, 'zz', NULL), (4, 'a', 'zz'),"
                    " (5, 'b', '')")
    (table,) = discover(parse_spec({"target": {"schema": "enums"}}), source).tables
    assert [c.invalid_is_empty for c in table.columns] == [False, True, False]
    result = sync_table(table, source, target)
    assert (result.rows_read, result.rejected_rows, result.inserted) == (5, 2, 3)
    with pg_connection(target) as connection:
        loaded = connection.execute("SELECT id, plain, blank FROM enums.enums ORDER BY id").fetchall()
        rejects = connection.execute(f"SELECT primary_key, column_name, value FROM {REJECTS} ORDER BY id").fetchall()
    assert loaded == [(1, "a", ""), (2, "b", "a"), (5, "b", "")]
    assert sorted((r[0]["id"], r[1], r[2]) for r in rejects) == [(3, "plain", ""), (4, "blank", "")]


def test_the_checks_show_rejects_and_the_missing_rows_in_dagster(
    bad_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database("rejects_checks")
    spec = parse_spec({"include": ["bad"], "target": {"schema": "dirty"},
                       "tables": {"bad": {"columns": {"ref": {"pg_type": "uuid"}}}}})
    (asset,) = build_table_assets(discover(spec, bad_source))
    resources = {"mysql": MySQLSource(url=bad_source.secret), "postgres": PostgresTarget(url=target.secret)}
    with DagsterInstance.ephemeral() as instance:
        result = materialize([asset], instance=instance, resources=resources, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["rows_valid"].passed is False
    assert checks["rows_valid"].metadata["rows_rejected"].value == 4
    cases = checks["rows_valid"].metadata["failure_cases"].value
    assert {c["column"] for c in cases} == {"dt", "size", "doc", "ref"} and all(c["reason"] for c in cases)
    parity = checks["parity"]
    assert parity.passed is False
    assert (parity.metadata["mysql_rows"].value, parity.metadata["postgres_rows"].value) == (7, 3)
    assert parity.description.startswith("row counts differ: MySQL 7, PostgreSQL 3; checksums differ")


def test_severity_and_reject_threshold_come_from_the_spec(
    bad_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """7 rows read, 4 rejected (57 %): up to max_reject_rate the check only warns and the run succeeds; over
    it, the check fails with its severity (error: the run fails, warn: it goes through)."""
    target = make_pg_database("rejects_severity")
    resources = {"mysql": MySQLSource(url=bad_source.secret), "postgres": PostgresTarget(url=target.secret)}

    def checks(table_checks: dict) -> tuple[bool, dict]:
        spec = parse_spec({"include": ["bad"], "target": {"schema": "dirty"},
                           "options": {"checks": {"rows_valid": {"max_reject_rate": 0.5}}},
                           "tables": {"bad": {"columns": {"ref": {"pg_type": "uuid"}}, "checks": table_checks}}})
        (asset,) = build_table_assets(discover(spec, bad_source))
        with DagsterInstance.ephemeral() as instance:
            result = materialize([asset], instance=instance, resources=resources, raise_on_error=False)
        evaluations = result.get_asset_check_evaluations()
        return result.success, {c.check_name: (c.passed, c.severity.value) for c in evaluations}

    success, evaluations = checks({"rows_valid": {"max_reject_rate": 0.6}})
    assert success  # 4/7 is under 60 %: a failing rows_valid only warns and the run goes through
    assert evaluations["rows_valid"] == (False, "WARN")
    success, evaluations = checks({})  # options.checks alone: 4/7 is over 50 %
    assert not success and evaluations["rows_valid"] == (False, "ERROR")  # blocking: the run fails
    success, evaluations = checks({"rows_valid": {"severity": "warn"}})  # over the rate, but only a warning
    assert success and evaluations["rows_valid"] == (False, "WARN")


def test_a_date_no_calendar_has_is_null_and_counted_where_it_used_to_fail_the_read(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """ALLOW_INVALID_DATES lets MySQL keep '2024-02-31', which DAYOFYEAR passes (it counts on into March) and
    connectorx failed the whole read on. Dates read as the integers MySQL makes of them (``catalog.dates``) are NULL
    there and counted as zero dates; a year-0 day arrives; the partition column and a DATETIME(3) keep the server's
    form. The parity check agrees, for a first load (built) and a partition's (merged)."""
    source, target = make_mysql_database("calendar"), make_pg_database("calendar")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES', time_zone = '+00:00'")
        cur.execute("CREATE TABLE calendar (id INT PRIMARY KEY, d DATE NULL, dt DATETIME NULL, ts TIMESTAMP NULL,"
                    " at DATETIME NOT NULL, fine DATETIME(3) NULL)")
        cur.execute("INSERT INTO calendar VALUES"
                    " (1, '2024-02-29', '2024-02-29 23:59:59', '2024-02-29 12:00:00', '2024-03-01',"
                    "  '2024-03-01 10:00:00.125'),"
                    " (2, '2023-02-29', '2024-02-31 10:00:00', '0000-00-00 00:00:00', '2024-03-02 08:00', NULL),"
                    " (3, '0000-01-01', '2024-04-31 00:00:00', NULL, '2024-03-02 09:00', NULL),"
                    " (4, '2024-00-10', '0000-00-00 00:00:00', NULL, '2024-03-03', NULL)")
    spec = {"target": {"schema": "calendar"},
            "tables": {"calendar": {"partition": {"column": "at", "granularity": "daily", "start": "2024-03-01"}}}}
    (table,) = discover(parse_spec(spec), source).tables
    sql = select_sql(table)
    assert all(f"CAST(`{c}` AS SIGNED)" in sql for c in ("d", "dt", "ts")), sql
    assert "CAST(`at`" not in sql and "CAST(`fine`" not in sql, sql

    result = sync_table(table, source, target)
    assert (result.rows_read, result.rejected_rows, result.written) == (4, 0, "built")
    assert result.conversions.as_metadata() == {
        "d: zero date → NULL": 2, "dt: zero date → NULL": 3, "ts: zero date → NULL": 1}
    with pg_connection(target) as connection:
        rows = connection.execute("SELECT id, d::text, dt::text, (ts AT TIME ZONE 'UTC')::text, fine::text"
                                  " FROM calendar.calendar ORDER BY id").fetchall()
    assert rows == [(1, "2024-02-29", "2024-02-29 23:59:59", "2024-02-29 12:00:00", "2024-03-01 10:00:00.125"),
                    (2, None, None, None, None), (3, "0001-01-01 BC", None, None, None), (4, None, None, None, None)]
    mysql_side, pg_side = fingerprints(source, target, table, None)
    assert mysql_side == pg_side and mysql_side.rows == 4

    window = (datetime(2024, 3, 2), datetime(2024, 3, 3))
    again = sync_table(table, source, target, window=window)
    assert (again.rows_read, again.inserted, again.updated, again.deleted) == (2, 0, 0, 0)
    assert again.conversions.as_metadata() == {
        "d: zero date → NULL": 1, "dt: zero date → NULL": 2, "ts: zero date → NULL": 1}
    assert fingerprints(source, target, table, None)[1] == pg_side
