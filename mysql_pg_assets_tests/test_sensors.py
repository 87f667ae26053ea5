"""The sensors: data drift requests exactly the partitions that differ, once; schema drift migrates
compatible changes and holds destructive ones until approved."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    RunRequest,
    SensorDefinition,
    SensorResult,
    build_sensor_context,
    materialize,
)

from mysql_pg_assets.checks.parity import compare_rows, schema_differences
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.jobs import build_schema_approval_job
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.sensors import build_data_drift_sensor, build_schema_drift_sensor
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import parse_spec

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
    spec = parse_spec({"target": {"schema": "web"}, "tables": {"visits": DAILY}})
    catalog = discover(spec, source)
    assets = build_table_assets(catalog)
    visits = next(a for a in assets if a.partitions_def is not None)
    pages = next(a for a in assets if a.partitions_def is None)
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    sensor = build_data_drift_sensor(spec, catalog, budget=10)

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
    catalog = discover(parse_spec({"target": {"schema": "web"}}), source)
    (asset,) = build_table_assets(catalog)
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    with DagsterInstance.ephemeral() as instance:
        first = materialize([asset], instance=instance, resources=resources)
        assert {c.check_name: c.passed for c in first.get_asset_check_evaluations()}["schema_conforms"]
        with pg_connection(target) as connection:  # somebody widens the copy by hand
            connection.execute("ALTER TABLE web.notes ALTER COLUMN title TYPE varchar(50)")
        assert schema_differences(target, catalog.tables[0]) == [
            "title: character varying(50) NOT NULL in PostgreSQL, character varying(20) NOT NULL expected"]
        # Going back to varchar(20) could truncate what PostgreSQL holds: the load waits for approval.
        second = materialize([asset], instance=instance, resources=resources, raise_on_error=False)
    assert not second.success
    assert "change_type title: character varying(50) → character varying(20)" in str(
        second.get_step_failure_events()[0].event_specific_data.error)


def test_schema_changes_migrate_or_wait_for_approval(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("schema"), make_pg_database("schema")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE visits (id INT PRIMARY KEY, day DATETIME NOT NULL, page VARCHAR(20))")
        cur.executemany("INSERT INTO visits VALUES (%s, %s, %s)",
                        [(i, datetime(2026, 3, 1 + i % 3, 12), f"/p{i}") for i in range(1, 61)])
        cur.execute("CREATE TABLE pages (id INT PRIMARY KEY, title VARCHAR(20), body TEXT)")
        cur.execute("INSERT INTO pages VALUES (1, 'home', 'welcome'), (2, 'about', 'us')")
    spec = parse_spec({"target": {"schema": "web"}, "tables": {"visits": DAILY}})
    catalog = discover(spec, source)  # the code location's catalog, read once when it loads
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    schema_sensor = build_schema_drift_sensor(spec, catalog)
    data_sensor = build_data_drift_sensor(spec, catalog)
    approval_job = build_schema_approval_job(spec, catalog)

    def run(request: RunRequest | None, instance: DagsterInstance, name: str) -> ExecuteInProcessResult:
        """A run as Dagster's run worker does it: the catalog read anew, then the requested assets."""
        assets = {a.key.path[-1]: a for a in build_table_assets(discover(spec, source))}
        return materialize([assets[name]], instance=instance, resources=resources,
                           tags=dict(request.tags) if request else None, raise_on_error=False)

    with DagsterInstance.ephemeral() as instance:
        def tick(sensor: SensorDefinition, cursor: str | None) -> SensorResult:
            return sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))

        assert run(None, instance, "pages").success
        assert run(RunRequest(tags={"dagster/asset_partition_range_start": "2026-03-01",
                                    "dagster/asset_partition_range_end": "2026-03-03"}), instance, "visits").success
        first = tick(schema_sensor, None)
        assert first.run_requests == [] and first.asset_events == []

        # Compatible: a new nullable column, filled for some rows of every partition.
        with mysql_connection(source) as connection, connection.cursor() as cur:
            cur.execute("ALTER TABLE visits ADD COLUMN referrer VARCHAR(40) NULL")
            cur.execute("UPDATE visits SET referrer = CONCAT('https://example.org/', id) WHERE id % 4 = 0")
        result = tick(schema_sensor, first.cursor)
        (request,) = result.run_requests
        assert request.asset_selection == [AssetKey(["web", "visits"])]
        assert (request.tags["dagster/asset_partition_range_start"],
                request.tags["dagster/asset_partition_range_end"]) == ("2026-03-01", "2026-03-03")
        assert request.run_key == tick(schema_sensor, result.cursor).run_requests[0].run_key  # launched once
        migrated = run(request, instance, "visits")
        assert migrated.success
        assert all(c.passed for c in migrated.get_asset_check_evaluations())
        assert {str(e.materialization.metadata["schema_changes"].value)  # one event per partition of the range
                for e in migrated.get_asset_materialization_events()} == {
            "['add_column referrer: character varying(40)']"}
        visits = discover(spec, source).tables[1]
        assert compare_rows(source, target, visits).equal
        cursor = tick(schema_sensor, result.cursor).cursor
        assert tick(schema_sensor, cursor).run_requests == []

        # Destructive: a dropped column fails the check once, changes nothing, and waits.
        with mysql_connection(source) as connection, connection.cursor() as cur:
            cur.execute("ALTER TABLE pages DROP COLUMN body")
        held = tick(schema_sensor, cursor)
        assert held.run_requests == []
        (evaluation,) = held.asset_events
        assert (evaluation.asset_key, evaluation.check_name, evaluation.passed) == (
            AssetKey(["web", "pages"]), "schema_conforms", False)
        assert evaluation.metadata["differences"].value == ["DESTRUCTIVE drop_column body: text gone from MySQL"]
        again = tick(schema_sensor, held.cursor)
        assert again.run_requests == [] and again.asset_events == []  # reported once
        assert tick(data_sensor, None).run_requests == []  # the data-drift sensor leaves it to this one
        refused = run(None, instance, "pages")
        assert not refused.success and "approve_schema_change" in str(refused.get_step_failure_events()[0])
        with pg_connection(target) as connection:
            assert connection.execute("SELECT body FROM web.pages ORDER BY id").fetchall() == [("welcome",), ("us",)]

        def review(approve: bool) -> None:
            assert approval_job.execute_in_process(instance=instance, resources=resources, run_config={
                "ops": {"review_schema_change": {"config": {"table": "web.pages", "approve": approve}}}}).success

        review(approve=False)  # shows the change, approves nothing
        assert tick(schema_sensor, again.cursor).run_requests == []
        review(approve=True)
        (request,) = tick(schema_sensor, again.cursor).run_requests
        assert request.asset_selection == [AssetKey(["web", "pages"])]
        applied = run(request, instance, "pages")
        assert applied.success and all(c.passed for c in applied.get_asset_check_evaluations())
        assert compare_rows(source, target, discover(spec, source).tables[0]).equal
        assert tick(schema_sensor, again.cursor).run_requests == []
