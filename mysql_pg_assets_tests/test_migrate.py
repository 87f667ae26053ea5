"""Schema changes in MySQL: compatible ones migrate by themselves, destructive ones wait for approval."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mysql_pg_assets.checks.parity import compare_rows, schema_differences
from mysql_pg_assets.cli import schema_changes
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.meta import SCHEMA_CHANGES
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.migrate import SchemaChangeHeld, approve, pending_migration, plan, widens
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.conftest import write_spec

ITEMS = """CREATE TABLE items (
  id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, qty SMALLINT, price DECIMAL(8,2),
  state ENUM('new','sold') NOT NULL DEFAULT 'new', updated_at DATETIME NOT NULL)"""


@pytest.mark.parametrize(("old", "new", "wider"), [
    ("integer", "bigint", True), ("bigint", "integer", False), ("smallint", "numeric(20,0)", True),
    ("bigint", "numeric(10,0)", False), ("numeric(8,2)", "numeric(12,4)", True),
    ("numeric(8,2)", "numeric(8,4)", False),
    ("numeric(8,2)", "numeric(7,1)", False), ("character varying(20)", "character varying(50)", True),
    ("character varying(50)", "character varying(20)", False), ("character varying(20)", "text", True),
    ("text", "character varying(20)", False), ("real", "double precision", True), ("double precision", "real", False),
    ("timestamp(0) without time zone", "timestamp without time zone", True),
    ("timestamp without time zone", "timestamp(3) without time zone", False),
    ("date", "timestamp(0) without time zone", True),
    ("timestamp without time zone", "timestamp with time zone", False),
    ("bit varying(8)", "bit varying(64)", True), ("integer", "text", False), ("text[]", "text", False),
])
def test_which_type_changes_lose_nothing(old: str, new: str, wider: bool) -> None:
    assert widens(old, new) is wider


@pytest.fixture()
def items(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
          request: pytest.FixtureRequest) -> Iterator[tuple[DatabaseUrl, DatabaseUrl]]:
    name = f"mig_{request.node.name[5:25].strip('_[]')}"
    source, target = make_mysql_database(name), make_pg_database(name)
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(ITEMS)
        cur.executemany("INSERT INTO items VALUES (%s, %s, %s, %s, %s, '2026-01-02 03:04:05')",
                        [(i, f"item {i}", i % 7, i * 1.25, "sold" if i % 3 else "new") for i in range(1, 41)])
    yield source, target


def _mysql(url: DatabaseUrl, *statements: str) -> None:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def _plan(source: DatabaseUrl, **table: object) -> TablePlan:
    return discover(parse_spec({"target": {"schema": "inv"}, "tables": {"items": table}}), source).tables[0]


def _synced(source: DatabaseUrl, target: DatabaseUrl, **table: object) -> TablePlan:
    """Load the table as a run would: the catalog read anew, then the whole path; then compare."""
    plan_ = _plan(source, **table)
    sync_table(plan_, source, target, run_id="test")
    parity = compare_rows(source, target, plan_)
    assert parity.equal, parity.differences
    assert schema_differences(target, plan_) == []
    return plan_


def _ledger(target: DatabaseUrl) -> list[tuple]:
    with pg_connection(target) as connection:
        return connection.execute(
            f"SELECT destructive, changes, approved_at IS NOT NULL, applied_run_id FROM {SCHEMA_CHANGES} ORDER BY id"
        ).fetchall()


def test_compatible_changes_migrate_in_the_next_load(items: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    source, target = items
    _synced(source, target)
    _mysql(source,
           "ALTER TABLE items ADD COLUMN note VARCHAR(30) NULL, ADD COLUMN stock INT NOT NULL DEFAULT 5,"
           " MODIFY qty INT, MODIFY price DECIMAL(12,4), MODIFY name VARCHAR(40) NOT NULL,"
           " MODIFY state ENUM('new','sold','returned') NOT NULL DEFAULT 'new'",
           "UPDATE items SET note = CONCAT('n', id), stock = id, qty = 70000 WHERE id <= 5",
           "UPDATE items SET state = 'returned' WHERE id = 6")
    table = _plan(source)
    migration = pending_migration(target, table)
    assert migration is not None and not migration.destructive
    assert sorted(c.kind + " " + (c.column or "") for c in migration.changes) == [
        "add_column note", "add_column stock", "widen_type name", "widen_type price", "widen_type qty",
        "widen_values state"]
    _synced(source, target)  # every row holds its new values, 70000 fits, 'returned' passes the new CHECK
    assert [(d, approved, run) for d, _, approved, run in _ledger(target)] == [(False, False, "test")]
    assert pending_migration(target, table) is None


def test_a_column_made_not_null_gets_its_constraint_once_no_null_is_left(
    items: tuple[DatabaseUrl, DatabaseUrl],
) -> None:
    source, target = items
    _mysql(source, "UPDATE items SET qty = NULL WHERE id <= 3")
    _synced(source, target)
    _mysql(source, "SET SESSION sql_mode = ''",  # not strict: MySQL turns the NULLs into 0
           "ALTER TABLE items MODIFY qty SMALLINT NOT NULL")
    migration = pending_migration(target, _plan(source))
    assert migration is not None and [(c.kind, c.destructive) for c in migration.changes] == [("set_not_null", False)]
    _synced(source, target)


def test_incremental_table_reads_every_row_again_after_a_new_column(items: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    source, target = items
    _synced(source, target, cursor_column="updated_at")
    _mysql(source, "ALTER TABLE items ADD COLUMN colour VARCHAR(10) DEFAULT 'red'",
           "UPDATE items SET colour = 'blue' WHERE id = 3")  # updated_at unchanged: below the watermark
    _synced(source, target, cursor_column="updated_at")


@pytest.mark.parametrize(("alter", "kind"), [
    ("ALTER TABLE items DROP COLUMN qty", "drop_column qty"),
    ("ALTER TABLE items CHANGE qty quantity SMALLINT", "rename_column qty"),
    ("ALTER TABLE items MODIFY price DECIMAL(6,1)", "change_type price"),
    ("UPDATE items SET state = 'new'; ALTER TABLE items MODIFY state ENUM('new') NOT NULL", "narrow_values state"),
    ("ALTER TABLE items DROP PRIMARY KEY, ADD PRIMARY KEY (id, name)", "change_primary_key"),
])
def test_destructive_changes_wait_for_approval(items: tuple[DatabaseUrl, DatabaseUrl], alter: str, kind: str) -> None:
    source, target = items
    _synced(source, target)
    with pg_connection(target) as connection:
        before = connection.execute("SELECT * FROM inv.items ORDER BY id").fetchall()
    _mysql(source, *alter.split("; "))
    table = _plan(source)
    with pytest.raises(SchemaChangeHeld, match="approve_schema_change") as held:
        sync_table(table, source, target, run_id="held")
    assert kind in [f"{c.kind} {c.column or ''}".strip() for c in held.value.migration.destructive]
    with pg_connection(target) as connection:  # nothing changed
        assert connection.execute("SELECT * FROM inv.items ORDER BY id").fetchall() == before
        migration = plan(connection, table)
        approve(connection, migration, run_id="approval")
    _synced(source, target)
    assert [(d, approved, run) for d, _, approved, run in _ledger(target)] == [(True, True, "test")]


def test_an_approval_is_for_the_changes_it_saw(items: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    source, target = items
    _synced(source, target)
    _mysql(source, "ALTER TABLE items DROP COLUMN qty")
    with pg_connection(target) as connection:
        approve(connection, plan(connection, _plan(source)), run_id="approval")
    _mysql(source, "ALTER TABLE items DROP COLUMN price")  # a second change after the approval
    with pytest.raises(SchemaChangeHeld, match="price"):
        sync_table(_plan(source), source, target, run_id="held")


def test_the_cli_names_pending_changes_and_fails_while_one_waits(
    items: tuple[DatabaseUrl, DatabaseUrl], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = items
    settings = Settings(mysql_url=source, postgres_url=target,
                        sync_config=write_spec(tmp_path / "sync.yaml", {"target": {"schema": "inv"}}))
    _synced(source, target)
    assert schema_changes(settings) == 0
    _mysql(source, "ALTER TABLE items ADD COLUMN note TEXT, DROP COLUMN qty")
    assert schema_changes(settings) == 1
    out = capsys.readouterr().out
    assert "inv.items (held: approve with the job approve_schema_change" in out
    assert "    DESTRUCTIVE drop_column qty: smallint gone from MySQL\n    add_column note: text\n" in out
    with pg_connection(target) as connection:
        approve(connection, plan(connection, _plan(source)), run_id="approval")
    assert schema_changes(settings) == 0
    assert "inv.items (approved: the next load applies it" in capsys.readouterr().out
