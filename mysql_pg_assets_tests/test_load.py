"""The load is atomic and idempotent: a failure keeps the previous data, a rerun changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mysql_pg_assets.catalog import SourceUnavailable, TablePlan, discover, mysql_connection
from mysql_pg_assets.extract import read_batches
from mysql_pg_assets.load import TargetError, load_table
from mysql_pg_assets.parity import compare_rows, pg_connection
from mysql_pg_assets.pipeline import sync_table, validated_batches
from mysql_pg_assets.settings import Settings
from mysql_pg_assets.spec import load_spec
from mysql_pg_assets.sql import pg_qualified
from mysql_pg_assets.validate import ValidatedBatch


def _plan(settings: Settings, name: str) -> TablePlan:
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    return next(t for t in catalog.tables if t.source_table == name)


def _snapshot(settings: Settings, table: TablePlan) -> list[tuple]:
    with pg_connection(settings.postgres_url) as connection:
        return connection.execute(
            f"SELECT * FROM {pg_qualified(table.target_schema, table.target_table)} ORDER BY 1"
        ).fetchall()


def test_rerunning_a_load_changes_nothing(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "payments")
    first = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url, batch_rows=500)
    before = _snapshot(demo_settings, table)
    second = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url, batch_rows=500)
    assert first.rows_read == second.rows_read == len(before) > 1000
    assert (second.inserted, second.updated, second.deleted) == (0, 0, 0)
    assert _snapshot(demo_settings, table) == before
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal


def test_a_source_failing_mid_load_leaves_the_previous_data(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "customers")
    sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    before = _snapshot(demo_settings, table)
    with mysql_connection(demo_settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("UPDATE customers SET notes = CONCAT('edited ', id)")
        cur.execute("DELETE FROM customers ORDER BY id DESC LIMIT 3")

    def server_goes_away(batches: Iterator[ValidatedBatch]) -> Iterator[ValidatedBatch]:
        yield next(batches)  # the first batch reaches the staging table …
        raise SourceUnavailable("Lost connection to MySQL server during query")  # … then MySQL is gone

    batches = validated_batches(read_batches(demo_settings.mysql_url, table, batch_rows=50), table)
    with pytest.raises(SourceUnavailable, match="Lost connection"):
        load_table(table, server_goes_away(batches), demo_settings.postgres_url)
    assert _snapshot(demo_settings, table) == before

    result = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    assert (result.updated, result.deleted) == (len(before) - 3, 3)
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal


def test_a_merge_postgresql_refuses_rolls_the_whole_load_back(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "categories")
    sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    before = _snapshot(demo_settings, table)
    target = pg_qualified(table.target_schema, table.target_table)
    with pg_connection(demo_settings.postgres_url) as connection:
        # A constraint the target has and MySQL's data breaks: not a bad value, a failed load.
        connection.execute(f"ALTER TABLE {target} ADD CONSTRAINT short_names CHECK (length(name) < 5) NOT VALID")
    with mysql_connection(demo_settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("UPDATE categories SET name = CONCAT(name, ' (edited)') WHERE id <= 3")
        cur.execute("DELETE FROM categories ORDER BY id DESC LIMIT 1")
    try:
        with pytest.raises(TargetError, match="short_names"):
            sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
        assert _snapshot(demo_settings, table) == before
    finally:
        with pg_connection(demo_settings.postgres_url) as connection:
            connection.execute(f"ALTER TABLE {target} DROP CONSTRAINT short_names")
    result = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    assert (result.updated, result.deleted) == (3, 1)
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal
