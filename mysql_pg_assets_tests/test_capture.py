"""Change capture, end to end on the real servers: a snapshot through Dagster, the demo's simulator writing
multi-table transactions, the binlog followed into PostgreSQL, and both sides compared row by row."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context

import mysql_pg_assets_demo as demo
from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.meta import positions
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_qualified
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.sync import pipeline
from mysql_pg_assets.sync.capture import recover
from mysql_pg_assets.sync.capture.binlog import CaptureError, Position, Transaction, master_position, read
from mysql_pg_assets.sync.capture.stream import _server_id, follow
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import SpecError, load_spec, parse_spec
from mysql_pg_assets_tests.conftest import DEMO_ORDERS, materialize_everything, write_spec

SALT = "capture tests"
CAPTURED = ["customers", "products", "orders", "order_items", "payments", "reviews", "categories"]


def _spec(database: str) -> dict:
    tables = {name: {"mode": "cdc"} for name in CAPTURED}
    tables["customers"]["columns"] = {"email": {"mask": "hash"}}
    tables["orders"]["derived"] = {"net_total": "total - tax"}
    tables["reviews"]["deletes"] = "tombstone"
    return {"source": {"database": database}, "target": {"schema": "shop_cdc"}, "include": CAPTURED,
            "options": {"indexes": True, "foreign_keys": True}, "tables": tables}


@pytest.fixture
def captured(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, list[TablePlan]]:
    """A demo shop of its own, every table change-captured, snapshotted through Dagster."""
    name = "cdc"  # made anew for each test (and the session's databases stay few)
    source = make_mysql_database(name)
    demo.create_schema(source.secret)
    demo.seed(source.secret, orders=DEMO_ORDERS, log=lambda _line: None)
    spec = write_spec(tmp_path / "sync.yaml", _spec(source.database))
    settings = Settings(mysql_url=source, postgres_url=make_pg_database(name), sync_config=spec)
    for variable, value in (("MYSQL_URL", source.secret), ("POSTGRES_URL", settings.postgres_url.secret),
                            ("SYNC_CONFIG", str(spec)), ("MPA_MASK_SALT", SALT)):
        monkeypatch.setenv(variable, value)
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in materialize_everything(build_definitions(settings), instance))
    return settings, list(discover(load_spec(spec), source).tables)


def _stored(settings: Settings) -> dict[str, Position]:
    with pg_connection(settings.postgres_url) as connection:
        return {label: Position(f, p) for label, (f, p, _) in positions(connection, "shop_cdc").items()}


def _binlog_changes(settings: Settings, tables: list[TablePlan], since: dict[str, Position]) -> int:
    """The row changes the binlog holds for the tables after their snapshot positions: what must be applied."""
    by_source = {t.source_table: t.target_label for t in tables}
    count = 0
    for item in read(settings.mysql_url, settings.mysql_url.database, set(by_source), min(since.values()),
                     _server_id(tables) + 1, blocking=False):
        if isinstance(item, Transaction):
            count += sum(1 for c in item.changes if item.end > since[by_source[c.table]])
    return count


def _logged_count(settings: Settings) -> int:
    with pg_connection(settings.postgres_url) as connection:
        return connection.execute("SELECT count(*) FROM mysql_pg_assets.change_log").fetchone()[0]


def _change_log(settings: Settings) -> tuple[int, str]:
    with pg_connection(settings.postgres_url) as connection:
        count = connection.execute("SELECT count(*) FROM mysql_pg_assets.change_log").fetchone()[0]
        text = "".join(row[0] or "" for row in connection.execute(
            "SELECT before::text || coalesce(after::text, '') FROM mysql_pg_assets.change_log"))
    return count, text


def _assert_equal(settings: Settings, tables: list[TablePlan]) -> None:
    for table in tables:
        parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
        assert parity.equal, (table.target_label, parity.mysql_rows, parity.postgres_rows, parity.differences[:3])


def _emails(url: DatabaseUrl) -> list[str]:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT email FROM {mysql_qualified(url.database, 'customers')}")
        return [row[0] for row in cur.fetchall()]


def test_every_change_is_applied_once_with_its_transforms(captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    snapshot = _stored(settings)
    assert set(snapshot) == {t.target_label for t in tables}
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=25, seed=3, out=None)
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:  # a key that changes
        cur.execute(f"INSERT INTO {mysql_qualified(source.database, 'categories')} (id, name, created_at, updated_at)"
                    f" VALUES (800, 'Moved', NOW(), NOW())")
        cur.execute(f"UPDATE {mysql_qualified(source.database, 'categories')} SET id = 900 WHERE id = 800")
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    expected = _binlog_changes(settings, tables, snapshot)
    assert followed.changes == expected > 100 and not followed.held and not followed.not_snapshotted
    _assert_equal(settings, tables)
    logged, images = _change_log(settings)
    assert logged == expected
    assert not [e for e in _emails(source) if e in images]  # the change log holds the masked emails only

    again = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    assert again.changes == 0 and _change_log(settings)[0] == expected


def test_a_snapshot_read_while_mysql_writes_is_mysql_at_the_position_it_records(
        captured: tuple[Settings, list[TablePlan]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, tables = captured
    orders = next(t for t in tables if t.source_table == "orders")
    source, before = settings.mysql_url, master_position(settings.mysql_url)
    reading = pipeline.read_batches

    def written_meanwhile(*args: object, **kwargs: object) -> Iterator[object]:
        for number, batch in enumerate(reading(*args, **kwargs)):
            yield batch
            if number == 0:  # the read has begun: its statement no longer sees what is written now
                demo.simulate(source.secret, interval=0, iterations=20, seed=11, out=None)

    monkeypatch.setattr(pipeline, "read_batches", written_meanwhile)
    sync_table(orders, source, settings.postgres_url, batch_rows=200, run_id="resnapshot")
    meanwhile = _binlog_changes(settings, [orders], {orders.target_label: before})
    assert meanwhile > 10
    # No stream has run: the snapshot alone is MySQL's table, at the position it recorded, past every change.
    _assert_equal(settings, [orders])
    assert _binlog_changes(settings, [orders], {orders.target_label: _stored(settings)[orders.target_label]}) == 0
    assert _logged(settings, orders) == (meanwhile, meanwhile)  # each change of the window once, by its run
    followed = follow(source, settings.postgres_url, tables, None, once=True)  # the other tables' changes
    assert followed.changes > 0 and _logged(settings, orders) == (meanwhile, meanwhile)  # none a second time
    _assert_equal(settings, tables)


def test_a_snapshot_taken_while_the_stream_runs_hands_each_change_to_one_of_them(
        captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    orders, since = next(t for t in tables if t.source_table == "orders"), _stored(settings)
    writing = threading.Event()
    writing.set()

    def write() -> None:
        seed = 20
        while writing.is_set():
            seed += 1
            demo.simulate(settings.mysql_url.secret, interval=0, iterations=3, seed=seed, out=None)

    threads = [threading.Thread(target=write),
               threading.Thread(target=follow, args=(settings.mysql_url, settings.postgres_url, tables, 6.0))]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    for _ in range(2):  # re-snapshots while both write and stream go on
        sync_table(orders, settings.mysql_url, settings.postgres_url, batch_rows=300, run_id="resnapshot")
    writing.clear()
    for thread in threads:
        thread.join()
    follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    _assert_equal(settings, tables)
    logged, by_snapshots = _logged(settings, orders)
    assert logged == _binlog_changes(settings, [orders], since) and by_snapshots > 0  # once each, by one of them


def _logged(settings: Settings, table: TablePlan) -> tuple[int, int]:
    """A table's change-log entries: all of them, and those of the snapshot's run."""
    with pg_connection(settings.postgres_url) as connection:
        return connection.execute("SELECT count(*), count(*) FILTER (WHERE run_id = 'resnapshot') FROM "
                                  "mysql_pg_assets.change_log WHERE target_table = %s",
                                  (table.target_label,)).fetchone()


def test_kill_9_at_any_moment_loses_and_repeats_nothing(captured: tuple[Settings, list[TablePlan]]) -> None:
    """The capture process killed 20 times while the shop writes: every change applied exactly once. Half the
    kills come at any moment; the other half once a batch has committed, so that the capture makes progress
    under fire however fast this machine is (a backlog that only grows would never be applied before a kill)."""
    settings, tables = captured
    snapshot = _stored(settings)
    stop = threading.Event()

    def shop() -> None:
        while not stop.is_set():
            demo.simulate(settings.mysql_url.secret, interval=0, iterations=1, out=None)
            time.sleep(0.02)

    command = [sys.executable, "-m", "mysql_pg_assets.cli", "cdc"]
    started = time.monotonic()  # what starting it costs on this machine, nothing to apply yet
    once = subprocess.run([*command, "--once"], cwd=PROJECT_ROOT, env=os.environ.copy(), capture_output=True,
                          text=True, timeout=120)
    startup = time.monotonic() - started
    assert once.returncode == 0, once.stderr[-2000:]
    writer = threading.Thread(target=shop, daemon=True)
    writer.start()
    rng = random.Random(9)
    try:
        for kill in range(20):
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            if kill % 2:  # once it has committed a batch: the next one is cut short somewhere
                before, deadline = _logged_count(settings), time.monotonic() + startup * 8
                while _logged_count(settings) == before and time.monotonic() < deadline and process.poll() is None:
                    time.sleep(0.05)
                time.sleep(rng.uniform(0, 0.5))
            else:  # any moment: starting, reading the binlog, applying, committing
                time.sleep(startup * rng.uniform(0.5, 3.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    finally:
        stop.set()
        writer.join(timeout=60)
    applied_under_fire = _change_log(settings)[0]
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    assert not followed.held
    _assert_equal(settings, tables)
    expected = _binlog_changes(settings, tables, snapshot)
    assert _change_log(settings)[0] == expected and 0 < applied_under_fire < expected, (applied_under_fire, expected)


def test_a_table_whose_definition_changes_is_held_alone(captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(f"ALTER TABLE {mysql_qualified(source.database, 'categories')} ADD COLUMN note VARCHAR(10)")
        cur.execute(f"UPDATE {mysql_qualified(source.database, 'categories')} SET note = 'x'")
    demo.simulate(source.secret, interval=0, iterations=5, seed=4, out=None)
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    assert list(followed.held) == ["shop_cdc.categories"] and "ADD COLUMN note" in followed.held["shop_cdc.categories"]
    _assert_equal(settings, [t for t in tables if t.source_table != "categories"])
    # A snapshot (the asset materialized again) migrates the table and takes it up again.
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in materialize_everything(defs, instance))
    fresh = list(discover(load_spec(settings.sync_config), source).tables)
    followed = follow(settings.mysql_url, settings.postgres_url, fresh, None, once=True)
    assert not followed.held
    _assert_equal(settings, fresh)


def test_a_position_the_binlog_no_longer_has_is_a_clear_error(captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    with pg_connection(settings.postgres_url) as connection:
        connection.execute("UPDATE mysql_pg_assets.cdc_positions SET log_file = 'binlog.999999', log_pos = 4")
    with pytest.raises(CaptureError, match="no longer has the binlog at binlog.999999:4"):
        follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)


def test_the_capture_job_records_what_it_applied_on_the_assets(captured: tuple[Settings, list[TablePlan]]) -> None:
    """Launched as a Dagster job (what a user does from the Launchpad), with the lag and position shown."""
    settings, tables = captured
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=10, seed=5, out=None)
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("follow_binlog").execute_in_process(
            instance=instance, run_config={"ops": {"follow": {"config": {"once": True}}}}, resources=defs.resources)
        assert result.success
        recorded = {event.asset_key.path[-1]: event.step_materialization_data.materialization.metadata
                    for event in result.get_asset_materialization_events()}
    assert {"orders", "order_items", "payments"} <= set(recorded)
    orders = recorded["orders"]
    assert orders["changes_applied"].value > 0 and orders["lag_s"].value >= 0
    assert orders["binlog_position"].value.startswith("binlog.")
    # Caught up and MySQL quiet: every table's parity check evaluated at that point of the stream, and passing.
    parity = {c.asset_key.path[-1]: c for c in result.get_asset_check_evaluations() if c.check_name == "parity"}
    assert set(parity) == {t.target_table for t in tables} and all(c.passed for c in parity.values()), parity
    _assert_equal(settings, tables)
    assert "cdc_watch_shop_cdc" in {s.name for s in defs.sensors or []}


def test_the_watch_alerts_when_capture_stops_and_starts_it(
    captured: tuple[Settings, list[TablePlan]], caplog: pytest.LogCaptureFixture,
) -> None:
    settings, _ = captured
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=2, seed=6, out=None)  # MySQL moves on
    with pg_connection(settings.postgres_url) as connection:  # and the capture has not for an hour
        connection.execute("UPDATE mysql_pg_assets.cdc_positions SET updated_at = now() - interval '1 hour'")
    defs = build_definitions(settings)
    watch = next(s for s in defs.sensors or [] if s.name == "cdc_watch_shop_cdc")
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources=defs.resources)
        result = watch(context)
    assert [r.job_name or "follow_binlog" for r in result.run_requests] == ["follow_binlog"]
    lagging = [r for r in caplog.records if "cdc_lag" in r.getMessage()]
    assert {r.getMessage().split("asset='")[1].split("'")[0] for r in lagging} >= {"shop_cdc.orders"}
    assert set(json.loads(result.cursor)) >= {"shop_cdc.orders"}  # alerted once: the cursor remembers


def _rows(settings: Settings, relation: str) -> list[tuple]:
    with pg_connection(settings.postgres_url) as connection:
        return connection.execute(f"SELECT * FROM {relation} ORDER BY 1").fetchall()


def test_rollback_restore_and_replay_from_the_change_log(captured: tuple[Settings, list[TablePlan]]) -> None:
    """A run undone; the table rebuilt as of a point into a new table and in place; replayed to the present.
    Each compared row by row with the state it must equal."""
    settings, tables = captured
    orders = next(t for t in tables if t.source_table == "orders")
    follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    at_point = _rows(settings, orders.target)
    point = _stored(settings)[orders.target_label]
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=15, seed=11, out=None)
    bad_run = "a-bad-run"
    follow(settings.mysql_url, settings.postgres_url, tables, None, once=True, run_id=bad_run)
    now = _rows(settings, orders.target)
    assert now != at_point

    built = recover.restore(settings.postgres_url, orders, after=point, into="orders_as_of")
    assert built.keys > 0 and _rows(settings, "shop_cdc.orders_as_of") == at_point
    assert _rows(settings, orders.target) == now  # the live table untouched

    undone = recover.rollback(settings.postgres_url, orders, bad_run, by_run="undo-run")
    assert undone.keys == built.keys and _rows(settings, orders.target) == at_point
    with pg_connection(settings.postgres_url) as connection:
        assert connection.execute("SELECT count(*) FROM mysql_pg_assets.change_log WHERE operation = 'undo' AND "
                                  "run_id = 'undo-run'").fetchone()[0] == undone.keys

    recover.replay(settings.postgres_url, orders, point)
    assert _rows(settings, orders.target) == now
    _assert_equal(settings, [orders])

    recover.restore(settings.postgres_url, orders, after=point, in_place=True)
    assert _rows(settings, orders.target) == at_point
    recover.replay(settings.postgres_url, orders, point)
    _assert_equal(settings, [orders])


def test_a_user_undoes_a_capture_run_from_the_launchpad(captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    customers = next(t for t in tables if t.source_table == "customers")
    before = _rows(settings, customers.target)
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=5, seed=12, out=None)
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        run = defs.resolve_job_def("follow_binlog").execute_in_process(
            instance=instance, run_config={"ops": {"follow": {"config": {"once": True}}}}, resources=defs.resources)
        assert _rows(settings, customers.target) != before
        undo = defs.resolve_job_def("recover_table").execute_in_process(
            instance=instance, resources=defs.resources, run_config={"ops": {"recover": {"config": {
                "table": "customers", "rollback_run": run.run_id}}}})
        assert undo.success
    assert _rows(settings, customers.target) == before


def test_positions_move_past_what_is_not_followed(captured: tuple[Settings, list[TablePlan]]) -> None:
    """Writes to tables nobody follows still move the positions: the next poll does not read them again."""
    settings, tables = captured
    before = _stored(settings)
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {mysql_qualified(source.database, 'not_followed')} (id INT PRIMARY KEY)")
        cur.execute(f"INSERT INTO {mysql_qualified(source.database, 'not_followed')} VALUES (1), (2)")
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    after = _stored(settings)
    assert followed.changes == 0 and all(after[label] > before[label] for label in before)


def test_the_cdc_demo_spec_is_valid(demo_source: DatabaseUrl) -> None:
    """sync.cdc.yaml, the README's way to see change capture live, plans every table it names in mode cdc."""
    spec = load_spec(PROJECT_ROOT / "sync.cdc.yaml")
    tables = discover(spec.model_copy(update={"source": spec.source.model_copy(
        update={"database": demo_source.database})}), demo_source).tables
    assert len(tables) == 7 and all(t.cdc for t in tables)
    assert next(t for t in tables if t.source_table == "customers").columns[1].mask is not None


def test_the_change_log_keeps_its_retention(captured: tuple[Settings, list[TablePlan]]) -> None:
    settings, tables = captured
    demo.simulate(settings.mysql_url.secret, interval=0, iterations=2, seed=13, out=None)
    follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    with pg_connection(settings.postgres_url) as connection:
        old = connection.execute("UPDATE mysql_pg_assets.change_log SET applied_at = now() - interval '40 days'"
                                 " WHERE id IN (SELECT id FROM mysql_pg_assets.change_log LIMIT 5)").rowcount
        total = connection.execute("SELECT count(*) FROM mysql_pg_assets.change_log").fetchone()[0]
    follow(settings.mysql_url, settings.postgres_url, tables, None, once=True, retention_days=30)
    assert old == 5 and _change_log(settings)[0] == total - 5


def test_a_filter_is_refused_for_change_capture() -> None:
    with pytest.raises(SpecError, match="mode cdc takes none"):
        parse_spec({"tables": {"t": {"mode": "cdc", "filter": "tenant = 1"}}})


def test_a_value_postgresql_refuses_is_a_reject_and_the_stream_goes_on(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = make_mysql_database("cdc_refused")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE amounts (id INT PRIMARY KEY, amount DECIMAL(10,2))")
    spec = write_spec(tmp_path / "sync.yaml", {"source": {"database": source.database}, "tables": {"amounts": {
        "mode": "cdc", "columns": {"amount": {"pg_type": "numeric(5,2)"}}}}})  # narrower than MySQL's
    postgres = make_pg_database("cdc_refused")
    table = discover(load_spec(spec), source).tables[0]
    sync_table(table, source, postgres)
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("INSERT INTO amounts VALUES (1, 10.50), (2, 123456.78), (3, NULL)")
    followed = follow(source, postgres, [table], None, once=True)
    assert followed.changes == 3
    with pg_connection(postgres) as connection:
        kept = connection.execute(f"SELECT id FROM {table.target} ORDER BY id").fetchall()
        rejects = connection.execute("SELECT primary_key::text, column_name, value FROM mysql_pg_assets.rejects"
                                     ).fetchall()
    assert kept == [(1,), (3,)] and rejects == [('{"id": 2}', "amount", "123456.78")], rejects
    assert follow(source, postgres, [table], None, once=True).changes == 0


def test_a_truncate_holds_its_table(captured: tuple[Settings, list[TablePlan]]) -> None:
    """TRUNCATE reaches the binlog as a statement, not as deleted rows: the table is held, never left stale."""
    settings, tables = captured
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(f"TRUNCATE {mysql_qualified(source.database, 'reviews')}")
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True)
    assert list(followed.held) == ["shop_cdc.reviews"] and "TRUNCATE" in followed.held["shop_cdc.reviews"]


@pytest.mark.skipif(not (PROJECT_ROOT / "scripts" / "db.sh").is_file(), reason="needs the project's scripts")
def test_the_service_rides_out_a_restart_of_each_server(captured: tuple[Settings, list[TablePlan]],
                                                        tmp_path: Path) -> None:
    """`cli cdc` as a service: MariaDB restarted under it, then PostgreSQL; it pauses, resumes from its positions,
    and catches up with every change, exactly once."""
    settings, tables = captured
    if settings.mysql_url.port != int(os.environ.get("MPA_MYSQL_PORT", "33061")):
        pytest.skip("the servers are not the project's local ones: they are not this test's to restart")
    snapshot = _stored(settings)
    logged = tmp_path / "cdc.log"  # a file, not a pipe: a pipe nobody reads stops the service once full
    service = subprocess.Popen([sys.executable, "-m", "mysql_pg_assets.cli", "cdc"], cwd=PROJECT_ROOT,
                               env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=logged.open("w"))
    try:
        for server in ("mariadb", "postgres"):
            demo.simulate(settings.mysql_url.secret, interval=0, iterations=5, out=None)
            time.sleep(2.5)
            restart = subprocess.run([str(PROJECT_ROOT / "scripts" / "db.sh"), "restart", server],
                                     capture_output=True, text=True, timeout=180, env=os.environ.copy())
            assert restart.returncode == 0, restart.stderr[-2000:]
            demo.simulate(settings.mysql_url.secret, interval=0, iterations=5, out=None)
        expected = _binlog_changes(settings, tables, snapshot)
        deadline = time.monotonic() + 90
        while _change_log(settings)[0] < expected and time.monotonic() < deadline:
            assert service.poll() is None, logged.read_text()[-2000:]
            time.sleep(0.5)
        assert service.poll() is None  # still running: it rode both restarts out
    finally:
        service.kill()
        service.wait(timeout=30)
    assert _change_log(settings)[0] == expected
    _assert_equal(settings, tables)


def test_a_transaction_bigger_than_memory_allows_is_applied_whole(captured: tuple[Settings, list[TablePlan]]) -> None:
    """A transaction comes in parts (here of 500 changes) into one open PostgreSQL transaction: bounded memory,
    and still never half visible."""
    settings, tables = captured
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(f"UPDATE {mysql_qualified(source.database, 'orders')} SET tax = tax + 1")
        updated = cur.rowcount
    followed = follow(settings.mysql_url, settings.postgres_url, tables, None, once=True, batch_rows=500)
    # Four parts or more, one commit (a batch is a commit: the positions moved once, past the whole of it).
    assert followed.changes == updated >= 4 * 500 and followed.batches == 1
    _assert_equal(settings, tables)
