"""The data-drift sensor requests exactly the partitions that differ, once, and the repair passes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dagster import DagsterInstance, build_sensor_context, materialize

from mysql_pg_assets.assets import build_table_assets
from mysql_pg_assets.catalog import discover, mysql_connection
from mysql_pg_assets.parity import pg_connection
from mysql_pg_assets.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sensors import build_data_drift_sensor
from mysql_pg_assets.settings import DatabaseUrl
from mysql_pg_assets.spec import parse_spec

DAILY = {"partition": {"column": "day", "granularity": "daily", "start": "2026-03-01", "end_offset": 0}}


def test_a_corrupted_partition_is_found_and_repaired_once(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("drift"), make_pg_database("drift")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE visits (id INT PRIMARY KEY, day DATETIME NOT NULL, page VARCHAR(20))")
        cur.executemany("INSERT INTO visits VALUES (%s, %s, %s)",
                        [(i, datetime(2026, 3, 1 + i % 3, 12), f"/p{i}") for i in range(1, 61)])
        cur.execute("CREATE TABLE pages (id INT PRIMARY KEY, title VARCHAR(20))")
        cur.execute("INSERT INTO pages VALUES (1, 'home'), (2, 'about')")
    catalog = discover(parse_spec({"target": {"schema": "web"}, "tables": {"visits": DAILY}}), source)
    assets = build_table_assets(catalog)
    visits = next(a for a in assets if a.partitions_def is not None)
    pages = next(a for a in assets if a.partitions_def is None)
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    sensor = build_data_drift_sensor(catalog, budget=10)

    def tick(instance: DagsterInstance, cursor: str | None) -> tuple[list, str | None]:
        result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        return result.run_requests or [], result.cursor

    with DagsterInstance.ephemeral() as instance:
        assert materialize([pages], instance=instance, resources=resources).success
        assert materialize([visits], instance=instance, resources=resources, tags={
            "dagster/asset_partition_range_start": "2026-03-01",
            "dagster/asset_partition_range_end": "2026-03-03"}).success
        requests, cursor = tick(instance, None)
        assert requests == []  # 4 units checked (3 partitions, 1 table): all equal

        with pg_connection(target) as connection:  # somebody edits the copy by hand
            connection.execute("UPDATE web.visits SET page = 'tampered' WHERE id = 2")  # day 3-03
        with mysql_connection(source) as connection, connection.cursor() as cur:
            cur.execute("UPDATE pages SET title = 'About us' WHERE id = 2")  # and MySQL changes
        requests, cursor = tick(instance, cursor)
        assert sorted((tuple(r.asset_selection[0].path), r.partition_key) for r in requests) == [
            (("web", "pages"), None), (("web", "visits"), "2026-03-03")]
        again, _ = tick(instance, cursor)  # same drift, same run keys: Dagster launches each once
        assert {r.run_key for r in again} == {r.run_key for r in requests}

        for request in requests:
            asset = visits if request.partition_key else pages
            repaired = materialize([asset], instance=instance, resources=resources,
                                   partition_key=request.partition_key)
            assert repaired.success
            assert all(c.passed for c in repaired.get_asset_check_evaluations())
        requests, _ = tick(instance, cursor)
        assert requests == []


def test_schema_conformity_names_what_differs(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("conform"), make_pg_database("conform")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, title VARCHAR(20) NOT NULL)")
        cur.execute("INSERT INTO notes VALUES (1, 'first')")
    (asset,) = build_table_assets(discover(parse_spec({"target": {"schema": "web"}}), source))
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    with DagsterInstance.ephemeral() as instance:
        first = materialize([asset], instance=instance, resources=resources)
        assert {c.check_name: c.passed for c in first.get_asset_check_evaluations()}["schema_conforms"]
        with pg_connection(target) as connection:
            connection.execute("ALTER TABLE web.notes ALTER COLUMN title TYPE varchar(50)")
        second = materialize([asset], instance=instance, resources=resources)
    check = next(c for c in second.get_asset_check_evaluations() if c.check_name == "schema_conforms")
    assert check.passed is False
    assert check.metadata["differences"].value == [
        "title: character varying(50) NOT NULL in PostgreSQL, character varying(20) NOT NULL expected"]
