"""Alerts reach a webhook: failed checks from the asset, failed runs from the run-failure sensor,
missed freshness from the freshness sensor."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)

from mysql_pg_assets.core.connections import mysql_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.sensors import alert_on_run_failure, build_freshness_alert_sensor
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import parse_spec


@pytest.fixture()
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A webhook receiver on 127.0.0.1 that keeps every JSON body it is sent."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/alerts")
    yield received
    server.shutdown()


@pytest.fixture()
def notes(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("alerts")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, made DATE NOT NULL)")
        cur.execute("INSERT INTO notes VALUES (1, '2024-01-01'), (2, '0000-00-00')")  # row 2 is rejected
    return url


def test_failed_checks_and_failed_runs_are_posted(
    webhook: list[dict], notes: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    target = make_pg_database("alerts")
    (asset,) = build_table_assets(discover(parse_spec({"target": {"schema": "alerts"}}), notes))
    with DagsterInstance.ephemeral() as instance:
        resources = {"mysql": MySQLSource(url=notes.secret), "postgres": PostgresTarget(url=target.secret)}
        # rows_valid is blocking: the data is committed, but the run fails so nothing downstream trusts it.
        assert not materialize([asset], instance=instance, resources=resources, raise_on_error=False).success
        failed_checks = {alert["check"] for alert in webhook if alert["kind"] == "check_failed"}
        assert failed_checks == {"rows_valid", "parity"}
        parity = next(a for a in webhook if a.get("check") == "parity")
        assert "row counts differ: MySQL 2, PostgreSQL 1" in parity["reason"]
        assert all(a["asset"] == "alerts/notes" and a["run_id"] for a in webhook)

        broken = {"mysql": MySQLSource(url=notes.secret), "postgres": PostgresTarget(
            url=f"postgresql://{target.user}:not-the-password@{target.host}:{target.port}/{target.database}")}
        failed = materialize([asset], instance=instance, resources=broken, raise_on_error=False)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
        context = build_run_status_sensor_context(
            sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance,
            dagster_run=failed.dagster_run).for_run_failure()
        alert_on_run_failure(context)
    (run_alert,) = [a for a in webhook if a["kind"] == "run_failed"]
    assert run_alert["asset"] == "alerts/notes" and run_alert["run_id"] == failed.run_id
    # The passwords as a URL would carry them (this one, "mpa", is also a substring of ordinary words).
    assert "not-the-password" not in json.dumps(webhook) and f":{notes.password}@" not in json.dumps(webhook)


def test_missed_freshness_is_posted_once_per_change(
    webhook: list[dict], make_mysql_database: Callable[[str], DatabaseUrl],
    make_pg_database: Callable[[str], DatabaseUrl],
) -> None:
    source, target = make_mysql_database("fresh"), make_pg_database("fresh")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)")
        cur.execute("INSERT INTO notes VALUES (1, 'a')")
    spec = parse_spec({"target": {"schema": "fresh"},
                       "options": {"freshness": {"warn_after": "PT1H", "fail_after": "PT2H"}}})
    catalog = discover(spec, source)
    now = [time.time()]
    sensor = build_freshness_alert_sensor(catalog, clock=lambda: now[0])
    resources = {"mysql": MySQLSource(url=source.secret), "postgres": PostgresTarget(url=target.secret)}
    with DagsterInstance.ephemeral() as instance:
        def tick(cursor: str | None) -> str | None:
            return sensor(build_sensor_context(instance=instance, cursor=cursor)).cursor

        cursor = tick(None)  # never materialized: UNKNOWN, nothing to say
        assert materialize(build_table_assets(catalog), instance=instance, resources=resources).success
        cursor = tick(cursor)
        now[0] += 3700  # an hour and a bit later
        cursor = tick(tick(cursor))  # twice: one alert
        now[0] += 3700
        cursor = tick(cursor)
        assert materialize(build_table_assets(catalog), instance=instance, resources=resources).success
        now[0] = time.time()
        tick(cursor)
    freshness = [(a["kind"], a["severity"]) for a in webhook if a["kind"].startswith("freshness")]
    assert freshness == [("freshness_warn", "warn"), ("freshness_fail", "error"), ("freshness_pass", "info")]
    assert "warn_after is 1:00:00" in next(a["reason"] for a in webhook if a["kind"] == "freshness_warn")
    assert all(a["asset"] == "fresh/notes" for a in webhook if a["kind"].startswith("freshness"))
