"""Blue/green schema changes: the new shape built in a shadow table while readers read the old one, swapped
in at commit, and swapped back; a reader runs throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import psycopg
import pytest
from dagster import DagsterInstance

from mysql_pg_assets import cli
from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.extract import Window
from mysql_pg_assets.sync.load.migrate import approve, plan
from mysql_pg_assets.sync.load.swap import SwapRefused
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import materializations, materialize_everything, write_spec

ROWS = 200_000
EVENTS = """CREATE TABLE events (
  id INT PRIMARY KEY, kind VARCHAR(20) NOT NULL, amount INT NOT NULL, created_at DATETIME NOT NULL, KEY (kind))"""


@pytest.fixture()
def settings(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
             tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> Settings:
    name = f"bg_{request.node.name[5:20].strip('_')}"
    source, target = make_mysql_database(name), make_pg_database(name)
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(EVENTS)
        cur.execute(f"INSERT INTO events SELECT seq, concat('kind ', seq % 7), seq * 3, '2026-01-01' + INTERVAL seq "
                    f"MINUTE FROM seq_1_to_{ROWS}")
    tables = {"events": request.param} if hasattr(request, "param") else {}
    config = write_spec(tmp_path_factory.mktemp("spec") / "sync.yaml", {
        "target": {"schema": "bg"}, "options": {"schema_change": "blue_green", "indexes": True}, "tables": tables})
    for key, value in (("MYSQL_URL", source.secret), ("POSTGRES_URL", target.secret), ("SYNC_CONFIG", str(config))):
        monkeypatch.setenv(key, value)
    return Settings(mysql_url=source, postgres_url=target, sync_config=config)


def _table(settings: Settings) -> TablePlan:
    return discover(load_spec(settings.sync_config), settings.mysql_url).tables[0]


def _materialize(settings: Settings) -> list:
    with DagsterInstance.ephemeral() as instance:
        results = materialize_everything(build_definitions(settings), instance)
    assert all(r.success for r in results)
    return results


def _columns(settings: Settings, relation: str) -> list[str]:
    with pg_connection(settings.postgres_url) as connection:
        return [r[0] for r in connection.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", (relation,))]


def _names(settings: Settings, relation: str) -> set[str]:
    """The table's indexes and constraints."""
    with pg_connection(settings.postgres_url) as connection:
        return {r[0] for r in connection.execute(
            "SELECT relname FROM pg_class WHERE oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = "
            "%s::regclass) UNION SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass",
            (relation, relation))}


class Reader(threading.Thread):
    """Reads the table over and over, each read its own transaction, as a dashboard would."""

    def __init__(self, url: DatabaseUrl) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.errors = url, threading.Event(), []
        self.reads: list[tuple[float, int, int]] = []  # (seconds it took, rows, columns)

    def run(self) -> None:
        # Not prepared: a prepared SELECT * fails once after any change of the table's shape, in place or not
        # ("cached plan must not change result type"), as PostgreSQL does for every client.
        with psycopg.connect(self.url.secret, autocommit=True, prepare_threshold=None) as connection:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    cursor = connection.execute('SELECT count(*) FROM "bg"."events"')
                    rows = cursor.fetchone()[0]
                    columns = len(connection.execute('SELECT * FROM "bg"."events" LIMIT 1').description)
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                    continue
                self.reads.append((time.perf_counter() - started, rows, columns))
                time.sleep(0.005)


@pytest.fixture()
def reader(settings: Settings) -> Iterator[Callable[[], Reader]]:
    started: list[Reader] = []

    def start() -> Reader:
        started.append(Reader(settings.postgres_url))
        started[-1].start()
        return started[-1]

    yield start
    for thread in started:
        thread.stop.set()
        thread.join(10)


def test_a_schema_change_is_built_aside_and_swapped_in_while_a_reader_reads(
    settings: Settings, reader: Callable[[], Reader],
) -> None:
    _materialize(settings)
    live = reader()
    time.sleep(0.3)
    with mysql_connection(settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("ALTER TABLE events ADD COLUMN flag TINYINT NOT NULL DEFAULT 1, MODIFY kind VARCHAR(10) NOT NULL")
    table = _table(settings)
    with pg_connection(settings.postgres_url) as connection:
        migration = plan(connection, table)
        assert migration.destructive  # varchar(20) → varchar(10): approved first, as any destructive change
        approve(connection, migration, "test")
    started = time.perf_counter()
    results = _materialize(settings)
    took = time.perf_counter() - started
    time.sleep(0.3)
    live.stop.set()
    live.join(10)

    changes = materializations(results, "bg", "events")[-1].metadata["schema_changes"].value
    assert any("swapped in; the previous table is bg.events__previous" in c for c in changes), changes
    assert compare_rows(settings.mysql_url, settings.postgres_url, table).equal
    assert _columns(settings, "bg.events") == ["id", "kind", "amount", "created_at", "flag"]
    assert _columns(settings, "bg.events__previous") == ["id", "kind", "amount", "created_at"]
    assert _names(settings, "bg.events") == {"events_pkey", "events_kind"}
    assert _names(settings, "bg.events__previous") == {"events__previous_pkey", "events__previous_kind"}
    # The reader never failed, always saw every row, saw the old shape and then the new one, and never
    # waited long: only the renames blocked it, not the build.
    assert live.errors == []
    assert {rows for _, rows, _ in live.reads} == {ROWS}
    shapes = [columns for _, _, columns in live.reads]
    assert shapes[0] == 4 and shapes[-1] == 5 and shapes == sorted(shapes)
    slowest = max(seconds for seconds, _, _ in live.reads)
    assert slowest < min(2.0, took / 2), (slowest, took)
    assert len(live.reads) > 20

    assert cli.main(["swap-back", "bg.events"]) == 0
    assert _columns(settings, "bg.events") == ["id", "kind", "amount", "created_at"]
    assert _names(settings, "bg.events") == {"events_pkey", "events_kind"}
    assert cli.main(["swap-back", "bg.events"]) == 0  # and forward again
    assert _columns(settings, "bg.events") == ["id", "kind", "amount", "created_at", "flag"]
    _materialize(settings)  # nothing left to change
    with pg_connection(settings.postgres_url) as connection:
        assert not plan(connection, table)
        connection.execute('CREATE VIEW "bg"."big_events" AS SELECT id FROM "bg"."events" WHERE amount > 10')
    with mysql_connection(settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("ALTER TABLE events ADD COLUMN note TEXT")
    with pytest.raises(SwapRefused, match='view bg.big_events'):
        sync_table(_table(settings), settings.mysql_url, settings.postgres_url)
    assert "note" not in _columns(settings, "bg.events")


@pytest.mark.parametrize("settings", [
    {"partition": {"column": "created_at", "granularity": "monthly", "start": "2026-01-01"}}], indirect=True)
def test_a_partitioned_table_is_rebuilt_whole(settings: Settings) -> None:
    _materialize(settings)
    with mysql_connection(settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("ALTER TABLE events ADD COLUMN flag TINYINT NOT NULL DEFAULT 1")
    table = _table(settings)
    with pytest.raises(SwapRefused, match="cli rebuild bg.events"):  # a partition cannot build the whole table
        sync_table(table, settings.mysql_url, settings.postgres_url,
                   window=Window(datetime(2026, 2, 1), datetime(2026, 3, 1)))
    # From the Launchpad: the rebuild_table job (cli rebuild does the same).
    with DagsterInstance.ephemeral() as instance:
        job = build_definitions(settings).get_job_def("rebuild_table")
        result = job.execute_in_process(run_config={"ops": {"rebuild": {"config": {"table": "bg.events"}}}},
                                        instance=instance)
    assert result.success
    observed = [e.event_specific_data.asset_observation.metadata["rebuild"].value
                for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert any("swapped in" in line for line in observed[0]), observed
    assert compare_rows(settings.mysql_url, settings.postgres_url, table).equal
    assert _columns(settings, "bg.events") == ["id", "kind", "amount", "created_at", "flag"]
    _materialize(settings)
