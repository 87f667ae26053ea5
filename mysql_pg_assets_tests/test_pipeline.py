"""Partitioned and incremental loads: windows, watermarks, deletes, reruns and killed runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.meta import LEDGER, REJECTS
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import pg_qualified
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import Catalog, TablePlan
from mysql_pg_assets.sync.load import build
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.conftest import materializations, write_spec

EVENTS = """CREATE TABLE events (
  id INT PRIMARY KEY, happened_at DATETIME(3) NOT NULL, kind VARCHAR(10), updated_at TIMESTAMP(6) NOT NULL
  DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"""


def _spec(**tables: dict) -> dict:
    return {"target": {"schema": "flow"}, "tables": tables}


@pytest.fixture()
def events_source(make_mysql_database: Callable[[str], DatabaseUrl], request: pytest.FixtureRequest) -> DatabaseUrl:
    url = make_mysql_database(f"events_{request.node.name[-20:].strip('_[]')}")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute(EVENTS)
        rows = [(i, datetime(2026, 3, 1 + i % 3, i % 24), f"k{i % 5}", datetime(2026, 3, 4, 0, 0, i % 60, i))
                for i in range(1, 301)]
        cur.executemany("INSERT INTO events (id, happened_at, kind, updated_at) VALUES (%s, %s, %s, %s)", rows)
    return url


def _catalog(url: DatabaseUrl, **table: dict) -> tuple[Catalog, TablePlan]:
    catalog = discover(parse_spec(_spec(events=table)), url)
    return catalog, catalog.tables[0]


def _mysql(url: DatabaseUrl, *statements: tuple[str, tuple]) -> None:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for sql, params in statements:
            cur.execute(sql, params)


def _ledger(pg: DatabaseUrl) -> list[tuple]:
    with pg_connection(pg) as connection:
        return connection.execute(
            f"SELECT partition, scope, rows_read, rows_inserted, rows_updated, rows_deleted, watermark_to FROM {LEDGER}"
            " ORDER BY id").fetchall()


DAILY = {"partition": {"column": "happened_at", "granularity": "daily", "start": "2026-03-01", "end_offset": 0}}


def test_a_backfill_is_one_run_and_reruns_converge(
    events_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = make_pg_database("backfill")
    catalog, table = _catalog(events_source, **DAILY)
    (asset,) = build_table_assets(catalog)
    resources = {"mysql": MySQLSource(url=events_source.secret), "postgres": PostgresTarget(url=pg.secret)}
    with DagsterInstance.ephemeral() as instance:
        # A backfill of three days through Dagster: a single run over the whole range.
        result = materialize([asset], instance=instance, resources=resources, tags={
            "dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-03"})
        assert result.success
        days = sorted(m.partition for m in materializations(result, "flow", "events"))
        assert days == ["2026-03-01", "2026-03-02", "2026-03-03"]
        assert compare_rows(events_source, pg, table).equal
        assert _ledger(pg)[-1][:4] == ("2026-03-01...2026-03-03", "partition", 300, 300)

        # Insert, update, move a row to another day, delete: then rerun the days.
        # Row i is on day 1 + i % 3: row 3 is day 1's, rows 4 and 7 day 2's, row 8 day 3's.
        new_row = (1000, datetime(2026, 3, 2, 5), "new")
        _mysql(events_source,
               ("INSERT INTO events (id, happened_at, kind) VALUES (%s, %s, %s)", new_row),
               ("UPDATE events SET kind = %s WHERE id = %s", ("edited", 4)),
               ("UPDATE events SET happened_at = %s WHERE id = %s", (datetime(2026, 3, 3, 1), 3)),  # day 1 → day 3
               ("DELETE FROM events WHERE id IN (%s, %s)", (7, 8)))
        day1 = materialize([asset], instance=instance, resources=resources, partition_key="2026-03-01")
        assert day1.success
        # Day 1 lost row 3 to day 3: it leaves PostgreSQL until day 3 loads it, never twice.
        assert _ledger(pg)[-1][:6] == ("2026-03-01", "partition", 99, 0, 0, 1)
        for day in ("2026-03-02", "2026-03-03"):
            assert materialize([asset], instance=instance, resources=resources, partition_key=day).success
        assert compare_rows(events_source, pg, table).equal

        # The same partition twice: nothing changes the second time.
        materialize([asset], instance=instance, resources=resources, partition_key="2026-03-02")
        assert _ledger(pg)[-1][3:6] == (0, 0, 0)
        assert compare_rows(events_source, pg, table).equal


def test_incremental_loads_follow_the_watermark_and_see_deletes(
    events_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    pg = make_pg_database("incremental")
    _, table = _catalog(events_source, cursor_column="updated_at")
    first = sync_table(table, events_source, pg)
    assert first.rows_read == 300 and first.watermark is not None
    time.sleep(0.01)
    _mysql(events_source,
           ("UPDATE events SET kind = %s WHERE id <= %s", ("late", 5)),
           ("INSERT INTO events (id, happened_at, kind) VALUES (%s, %s, %s)", (2000, datetime(2026, 3, 9), "new")),
           ("DELETE FROM events WHERE id = %s", (200,)))
    second = sync_table(table, events_source, pg)
    # Only what changed since the watermark is read (plus the row holding the watermark's instant).
    assert second.rows_read == 7
    assert (second.inserted, second.updated, second.deleted) == (1, 5, 1)
    assert _ledger(pg)[-1][1] == "incremental"
    assert compare_rows(events_source, pg, table).equal


def test_tombstones_keep_deleted_rows(
    events_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    pg = make_pg_database("tombstones")
    _, table = _catalog(events_source, **DAILY, deletes="tombstone")
    window = (datetime(2026, 3, 1), datetime(2026, 3, 4))
    sync_table(table, events_source, pg, window=window)
    _mysql(events_source, ("DELETE FROM events WHERE id = %s", (9,)))
    assert sync_table(table, events_source, pg, window=window).deleted == 1
    with pg_connection(pg) as connection:
        (deleted_at,) = connection.execute(
            f"SELECT _deleted_at FROM {pg_qualified('flow', 'events')} WHERE id = 9").fetchone()
    assert deleted_at is not None
    assert compare_rows(events_source, pg, table).equal  # parity counts live rows only
    _mysql(events_source, ("INSERT INTO events (id, happened_at, kind) VALUES (%s, %s, %s)",
                           (9, datetime(2026, 3, 1, 9), "back")))
    sync_table(table, events_source, pg, window=window)
    with pg_connection(pg) as connection:
        assert connection.execute(f"SELECT _deleted_at FROM {pg_qualified('flow', 'events')} WHERE id = 9"
                                  ).fetchone() == (None,)


KILLABLE = """
import json
import sys
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.spec import parse_spec
mysql, pg = DatabaseUrl.parse(sys.argv[1]), DatabaseUrl.parse(sys.argv[2])
spec = {"target": {"schema": "flow"}, "include": ["big"], "options": json.loads(sys.argv[3])}
(table,) = discover(parse_spec(spec), mysql).tables
sync_table(table, mysql, pg, batch_rows=5000)
"""


def _kill_load_when(mysql: DatabaseUrl, pg: DatabaseUrl, marker: str, **options: str) -> None:
    """Run ``KILLABLE``'s load (with the spec's ``options``) in a process of its own and SIGKILL it as soon as
    ``marker`` (SQL) is true."""
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, mysql.secret, pg.secret, json.dumps(options)],
                               env=os.environ)
    with pg_connection(pg) as connection:
        deadline = time.monotonic() + 120
        while not connection.execute(marker).fetchone()[0]:
            assert process.poll() is None, "the load finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


# Where a reload is killed: merging into the table (full_reload: merge) while batches are staged, or while one
# is merged; replacing it (full_reload: replace) while rows are COPYed into big__next, or while the two tables
# are compared, just before the swap. The rerun merges (auto: the table is under a million rows).
KILL_MARKERS = {
    "staging": "SELECT count(*) FROM pg_tables WHERE schemaname = 'mysql_pg_assets' AND tablename LIKE 'stage%%'",
    "merge": "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'WITH written AS%%' AND state = 'active'",
    # big__next is created in the load's transaction: no other session can name it, but it sees the COPY.
    "replace copy": "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_copy JOIN pg_stat_activity USING (pid)"
                    " WHERE query LIKE 'COPY \"flow\".\"big__next\"%%' AND tuples_processed > 0)",
    "replace swap": "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT count(*) FILTER%%'"
                    " AND state = 'active'",
}


@pytest.mark.parametrize("moment", list(KILL_MARKERS))
def test_a_killed_load_leaves_the_previous_state(
    moment: str, make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    name = moment.replace(" ", "_")
    mysql, pg = make_mysql_database(f"kill_{name}"), make_pg_database(f"kill_{name}")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, note VARCHAR(40), amount DECIMAL(12,2))")
        cur.execute("INSERT INTO big SELECT seq, CONCAT('row ', seq), seq / 7 FROM seq_1_to_300000")
    (table,) = discover(parse_spec({"target": {"schema": "flow"}, "include": ["big"]}), mysql).tables
    sync_table(table, mysql, pg)
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("UPDATE big SET note = 'changed' WHERE id % 2 = 0")
        cur.execute("DELETE FROM big WHERE id > 290000")
    with pg_connection(pg) as connection:
        before = connection.execute("SELECT md5(string_agg(id || note || amount, ',' ORDER BY id)) FROM flow.big"
                                    ).fetchone()

    way = "replace" if moment.startswith("replace") else "merge"
    _kill_load_when(mysql, pg, KILL_MARKERS[moment], full_reload=way)

    with pg_connection(pg) as connection:
        after = connection.execute("SELECT md5(string_agg(id || note || amount, ',' ORDER BY id)) FROM flow.big"
                                   ).fetchone()
    assert after == before
    rerun = sync_table(table, mysql, pg)
    assert (rerun.updated, rerun.deleted) == (145000, 10000)
    assert compare_rows(mysql, pg, table).equal
    with pg_connection(pg) as connection:  # the killed run's staging tables and new table are gone too
        assert connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'mysql_pg_assets'"
                                  " AND tablename LIKE 'stage%%'").fetchone() == (0,)
        assert connection.execute("SELECT to_regclass('flow.big__next')").fetchone() == (None,)


def test_a_killed_first_load_leaves_no_table_and_the_next_load_builds_it_whole(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """The first load writes straight into ``big__next`` (``build``), created in its transaction: killed there,
    neither ``big`` nor ``big__next`` exists, and the next load loads every row."""
    mysql, pg = make_mysql_database("kill_first"), make_pg_database("kill_first")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, note VARCHAR(40), amount DECIMAL(12,2))")
        cur.execute("INSERT INTO big SELECT seq, CONCAT('row ', seq), seq / 7 FROM seq_1_to_300000")
    _kill_load_when(mysql, pg, KILL_MARKERS["replace copy"])
    with pg_connection(pg) as connection:
        assert connection.execute("SELECT to_regclass('flow.big'), to_regclass('flow.big__next')").fetchone() \
            == (None, None)
    (table,) = discover(parse_spec({"target": {"schema": "flow"}, "include": ["big"]}), mysql).tables
    result = sync_table(table, mysql, pg)
    assert (result.rows_read, result.inserted) == (300000, 300000)
    assert compare_rows(mysql, pg, table).equal
    with pg_connection(pg) as connection:
        assert connection.execute("SELECT to_regclass('flow.big__next')").fetchone() == (None,)
        assert connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'flow.big'::regclass"
                                  ).fetchall() == [("big_pkey",)]


def test_a_value_postgresql_refuses_in_a_first_load_is_rejected_by_the_merge_path(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL refuses a value in the first load's COPY (here one made unreadable on purpose, as a value
    validation let through would be): the table is loaded again by the merge path (which rejects such a value,
    see test_rejects), and nothing of the first attempt is left."""
    mysql, pg = make_mysql_database("refused_first"), make_pg_database("refused_first")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE docs (id INT PRIMARY KEY, doc JSON)")
        cur.execute(r"""INSERT INTO docs VALUES (1, '{"a": 1}'), (2, '{"a": "x"}'), (3, NULL)""")
    (table,) = discover(parse_spec({"target": {"schema": "flow"}, "include": ["docs"]}), mysql).tables
    real = build.target_frame

    def refused(table: TablePlan, rows: pl.DataFrame) -> pl.DataFrame:  # as if validation had missed a value
        frame = real(table, rows)
        return frame.with_columns(pl.when(pl.col("id") == 2).then(pl.lit("{oops")).otherwise(pl.col("doc"))
                                  .alias("doc"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "target_frame", refused)
        result = sync_table(table, mysql, pg, run_id="refused")
    assert "loading it again by the merge path" in caplog.text
    assert (result.rows_read, result.inserted, result.rejected_rows) == (3, 3, 0)
    assert compare_rows(mysql, pg, table).equal
    with pg_connection(pg) as connection:
        assert connection.execute("SELECT to_regclass('flow.docs__next')").fetchone() == (None,)


def test_a_value_too_big_for_a_narrower_type_in_a_first_load_is_rejected(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
) -> None:
    """A spec narrows a DECIMAL(10,2) to numeric(5,2): the first load's conversion to the target's types fails
    on a value too big; the merge path loads the table, and rejects that row with its value."""
    mysql, pg = make_mysql_database("narrow_first"), make_pg_database("narrow_first")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE amounts (id INT PRIMARY KEY, amount DECIMAL(10,2))")
        cur.execute("INSERT INTO amounts VALUES (1, 10.50), (2, 123456.78), (3, NULL), (4, -999.99)")
    spec = {"target": {"schema": "flow"}, "tables": {"amounts": {"columns": {"amount": {"pg_type": "numeric(5,2)"}}}}}
    (table,) = discover(parse_spec(spec), mysql).tables
    result = sync_table(table, mysql, pg, run_id="narrow")
    assert (result.rows_read, result.inserted, result.rejected_rows) == (4, 3, 1)
    with pg_connection(pg) as connection:
        assert connection.execute("SELECT id, amount FROM flow.amounts ORDER BY id").fetchall() == [
            (1, Decimal("10.50")), (3, None), (4, Decimal("-999.99"))]
        assert connection.execute("SELECT column_name, value FROM mysql_pg_assets.rejects").fetchall() == [
            ("amount", "123456.78")]


def test_a_synced_table_named_like_a_build_table_is_left_alone(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """MySQL has ``t`` and ``t__next``: the name a first load or a replacement of ``t`` builds in is taken by a
    synced table, so ``t`` loads by the merge path and ``t__next`` keeps its rows."""
    mysql, pg = make_mysql_database("build_name"), make_pg_database("build_name")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        for name, rows in (("t", 30), ("t__next", 7)):
            cur.execute(f"CREATE TABLE `{name}` (id INT PRIMARY KEY, note VARCHAR(20))")
            cur.execute(f"INSERT INTO `{name}` SELECT seq, CONCAT('row ', seq) FROM seq_1_to_{rows}")
    spec = {"target": {"schema": "flow"}, "options": {"full_reload": "replace"}}
    tables = {t.source_table: t for t in discover(parse_spec(spec), mysql).tables}
    sync_table(tables["t__next"], mysql, pg)
    sync_table(tables["t"], mysql, pg)
    assert sync_table(tables["t"], mysql, pg).written == "merged"  # a reload cannot be built aside either
    assert all(compare_rows(mysql, pg, table).equal for table in tables.values())
    with pg_connection(pg) as connection:
        assert connection.execute('SELECT count(*) FROM flow."t__next"').fetchone() == (7,)


def test_partitioned_assets_declare_single_run_backfills(events_source: DatabaseUrl) -> None:
    catalog, _ = _catalog(events_source, **DAILY)
    (asset,) = build_table_assets(catalog)
    assert asset.backfill_policy is not None and asset.backfill_policy.max_partitions_per_run is None
    assert asset.partitions_def.get_partition_keys()[:3] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert asset.keys == {AssetKey(["flow", "events"])}


def test_a_backfill_from_the_cli_is_one_run(
    events_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl], tmp_path: Path
) -> None:
    pg = make_pg_database("cli_backfill")
    spec = write_spec(tmp_path / "events.yaml", {"source": {"database": events_source.database},
                                                 **_spec(events=DAILY), "include": ["events"]})
    env = {**os.environ, "MYSQL_URL": events_source.secret, "POSTGRES_URL": pg.secret, "SYNC_CONFIG": str(spec),
           "DAGSTER_HOME": str(tmp_path)}
    command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
               "mysql_pg_assets.definitions", "--select", "flow/events", "--partition-range", "2026-03-01...2026-03-03"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [row[:3] for row in _ledger(pg)] == [("2026-03-01...2026-03-03", "partition", 300)]
    _, table = _catalog(events_source, **DAILY)
    assert compare_rows(events_source, pg, table).equal


def _checks(result: object) -> dict[str, object]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}  # type: ignore[attr-defined]


def test_rows_outside_every_partition_are_loaded_or_rejected_and_the_table_check_sees_them(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """NULL, zero dates and rows before the first partition belong to the first partition, rows after the last
    to the last: none is left out, and the whole-table check counts what the partition checks cannot see."""
    mysql, pg = make_mysql_database("outside"), make_pg_database("outside")
    _mysql(mysql, ("SET SESSION sql_mode = ''", ()),
           ("CREATE TABLE visits (id INT PRIMARY KEY, seen_at DATETIME NULL, note VARCHAR(10))", ()),
           ("CREATE TABLE strict_visits (id INT PRIMARY KEY, seen_at DATETIME NOT NULL)", ()),
           ("INSERT INTO visits VALUES (1, NULL, 'null'), (2, '0000-00-00', 'zero'), (3, '2026-00-10', 'zero day'),"
            " (4, '2025-12-31 23:59:59', 'before'), (5, '2026-03-02 10:00', 'inside'), (6, '2099-01-01', 'after'),"
            " (7, '2026-03-01', 'first')", ()),
           ("INSERT INTO strict_visits VALUES (1, '0000-00-00'), (2, '2026-03-02 10:00')", ()))
    partition = {"column": "seen_at", "granularity": "daily", "start": "2026-03-01", "end_offset": 0}
    catalog = discover(parse_spec({"target": {"schema": "flow"},
                                   "tables": {"visits": {"partition": partition},
                                              "strict_visits": {"partition": partition}}}), mysql)
    (step,) = build_table_assets(catalog)  # one step for both: their partitions are the same
    tables = {t.source_table: t for t in catalog.tables}
    resources = {"mysql": MySQLSource(url=mysql.secret), "postgres": PostgresTarget(url=pg.secret)}
    last = step.partitions_def.get_last_partition_key()

    with DagsterInstance.ephemeral() as instance:
        def load(name: str, key: str) -> dict[str, object]:  # that table alone: the step is subset
            result = materialize([step], selection=[AssetKey(["flow", name])], instance=instance,
                                 resources=resources, partition_key=key, raise_on_error=False)
            return _checks(result)

        middle = load("visits", "2026-03-02")
        assert middle["parity"].passed
        table_check = middle["table_row_count_parity"]  # 6 of 7 rows missing, but most partitions never loaded
        assert not table_check.passed and table_check.severity.value == "WARN"
        metadata = {k: v.value for k, v in table_check.metadata.items()}
        assert (metadata["mysql_rows"], metadata["postgres_rows"]) == (7, 1)
        assert (metadata["rows_before_first_partition"], metadata["rows_after_last_partition"]) == (4, 1)

        first = load("visits", "2026-03-01")  # takes NULL, both zero dates and the row before the start
        assert first["parity"].passed
        assert {k: v.value for k, v in first["parity"].metadata.items()}["mysql_rows"] == 5
        assert load("visits", last)["table_row_count_parity"].passed  # the row of 2099, with the last
        assert compare_rows(mysql, pg, tables["visits"]).equal

        # A zero date in a NOT NULL column cannot be NULL in PostgreSQL: a reject with its key, in the
        # first partition, and the checks say so.
        strict = load("strict_visits", "2026-03-01")
        assert not strict["rows_valid"].passed
        with pg_connection(pg) as connection:
            rejects = connection.execute(f"SELECT primary_key, column_name, value, reason FROM {REJECTS}"
                                         " WHERE target_table = 'flow.strict_visits'").fetchall()
        assert rejects == [({"id": 1}, "seen_at", "zero date", "NULL in a NOT NULL column")]


def test_a_range_run_reports_each_partitions_own_figures(
    events_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """One run over three days: each day's materialization has its own rows, inserts, updates and deletes;
    the figures only the whole run has are named range_…"""
    pg = make_pg_database("per_partition")
    catalog, table = _catalog(events_source, **DAILY)
    (asset,) = build_table_assets(catalog)
    resources = {"mysql": MySQLSource(url=events_source.secret), "postgres": PostgresTarget(url=pg.secret)}
    tags = {"dagster/asset_partition_range_start": "2026-03-01", "dagster/asset_partition_range_end": "2026-03-03"}

    def figures(result: object) -> dict[str, dict[str, object]]:
        return {m.partition: {k: v.value for k, v in m.metadata.items()}
                for m in materializations(result, "flow", "events")}  # type: ignore[attr-defined]

    with DagsterInstance.ephemeral() as instance:
        _mysql(events_source, ("INSERT INTO events (id, happened_at, kind) VALUES (%s, %s, %s)",
                               (400, datetime(2026, 3, 3, 9), "extra")))
        first = figures(materialize([asset], instance=instance, resources=resources, tags=tags))
        assert {p: (f["rows_read"], f["rows_inserted"], f["dagster/row_count"]) for p, f in first.items()} == {
            "2026-03-01": (100, 100, 100), "2026-03-02": (100, 100, 100), "2026-03-03": (101, 101, 101)}
        # Day 1 gets a row, day 2 two updates, day 3 loses three rows.
        _mysql(events_source,
               ("INSERT INTO events (id, happened_at, kind) VALUES (%s, %s, %s)",
                (401, datetime(2026, 3, 1, 5), "new")),
               ("UPDATE events SET kind = 'edited' WHERE id IN (%s, %s)", (1, 4)),
               ("DELETE FROM events WHERE id IN (%s, %s, %s)", (2, 5, 8)))
        second = figures(materialize([asset], instance=instance, resources=resources, tags=tags))
        assert {p: (f["rows_inserted"], f["rows_updated"], f["rows_deleted"], f["dagster/row_count"])
                for p, f in second.items()} == {
            "2026-03-01": (1, 0, 0, 101), "2026-03-02": (0, 2, 0, 100), "2026-03-03": (0, 0, 3, 98)}
        run_figures = second["2026-03-02"]
        assert run_figures["range"] == "2026-03-01...2026-03-03 (3 partitions, one run)"
        assert "range_duration_s" in run_figures and "duration_s" not in run_figures
        assert compare_rows(events_source, pg, table).equal
