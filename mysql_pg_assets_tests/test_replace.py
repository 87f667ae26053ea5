"""A full reload of an existing table: built aside and swapped in (``sync.load.replace``), or merged into the
table where replacing it would lose something of the user's."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from dagster import DagsterInstance, materialize

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.conftest import materializations

ROWS = 20_000


def _source(make_mysql_database: Callable[[str], DatabaseUrl], name: str) -> DatabaseUrl:
    url = make_mysql_database(name)
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE big (id INT PRIMARY KEY, note VARCHAR(40) NOT NULL, amount DECIMAL(12,2),"
                    " doc JSON, seen DATETIME(6))")
        cur.execute(f"INSERT INTO big SELECT seq, CONCAT('row ', seq), seq / 7, JSON_OBJECT('n', seq),"
                    f" '2026-01-02 03:04:05.123456' + INTERVAL seq SECOND FROM seq_1_to_{ROWS}")
    return url


def _plan(mysql: DatabaseUrl, **options: object) -> TablePlan:
    (table,) = discover(parse_spec({"target": {"schema": "flow"}, "include": ["big"], "options": options}),
                        mysql).tables
    return table


def _mysql(url: DatabaseUrl, *statements: str) -> None:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _oid(pg: DatabaseUrl) -> int:
    with pg_connection(pg) as connection:
        return connection.execute("SELECT 'flow.big'::regclass::oid").fetchone()[0]


# 2,000 rows changed (100 of them then deleted), 1,000 deleted, 500 new; row 5 gets a value PostgreSQL cannot
# hold (a \u0000 escape in JSON, which jsonb refuses): it is rejected, and keeps its previous version.
CHANGES = (
    "UPDATE big SET note = CONCAT('changed ', id) WHERE id % 10 = 0",
    f"DELETE FROM big WHERE id > {ROWS - 1000}",
    f"INSERT INTO big SELECT seq, CONCAT('new ', seq), 1.5, NULL, NULL FROM seq_{ROWS + 1}_to_{ROWS + 500}",
    """UPDATE big SET note = 'edited', doc = '{"a": "x\\\\u0000y"}' WHERE id = 5""",
)


def test_a_full_reload_replaces_the_table_counts_what_changed_and_keeps_grants_and_rejected_rows(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """Materialized through Dagster twice: the second run builds the rows aside and swaps them in (a new table),
    with the merge path's figures, the live table's grants, and the previous version of a rejected row."""
    mysql, pg = _source(make_mysql_database, "replace"), make_pg_database("replace")
    table = _plan(mysql, full_reload="replace")
    catalog = discover(parse_spec({"target": {"schema": "flow"}, "include": ["big"],
                                   "options": {"full_reload": "replace"}}), mysql)
    (asset,) = build_table_assets(catalog)
    resources = {"mysql": MySQLSource(url=mysql.secret), "postgres": PostgresTarget(url=pg.secret)}
    with DagsterInstance.ephemeral() as instance:
        first = materialize([asset], instance=instance, resources=resources)
        assert materializations(first, "flow", "big")[0].metadata["written"].value == "built"
        with pg_connection(pg) as connection:
            connection.execute("DROP ROLE IF EXISTS replace_reader")
            connection.execute("CREATE ROLE replace_reader")
            connection.execute("GRANT SELECT ON flow.big TO replace_reader")
        before = _oid(pg)
        _mysql(mysql, "SET SESSION sql_mode = ''", *CHANGES)

        # The rejected row fails the blocking check rows_valid (max_reject_rate 0): the run fails, the load is in.
        second = materialize([asset], instance=instance, resources=resources, raise_on_error=False)
        assert not second.success
        (done,) = materializations(second, "flow", "big")
        figures = {k: done.metadata[k].value for k in ("rows_read", "rows_inserted", "rows_updated", "rows_deleted",
                                                       "rows_rejected", "written")}
        assert figures == {"rows_read": ROWS - 500, "rows_inserted": 500, "rows_updated": 1900,
                           "rows_deleted": 1000, "rows_rejected": 1, "written": "replaced"}
        assert _oid(pg) != before
        with pg_connection(pg) as connection:
            assert connection.execute("SELECT has_table_privilege('replace_reader', 'flow.big', 'SELECT'),"
                                      " to_regclass('flow.big__next'), to_regclass('flow.big__previous')"
                                      ).fetchone() == (True, None, None)
            assert connection.execute("SELECT note FROM flow.big WHERE id = 5").fetchone() == ("row 5",)
            assert connection.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'flow.big'::regclass"
                                      ).fetchall() == [("big_pkey",)]
            assert connection.execute("SELECT reltuples > 0 FROM pg_class WHERE oid = 'flow.big'::regclass"
                                      ).fetchone() == (True,)  # analyzed
            connection.execute("DROP OWNED BY replace_reader")
            connection.execute("DROP ROLE replace_reader")

        _mysql(mysql, "UPDATE big SET doc = '{}' WHERE id = 5")
        third = materialize([asset], instance=instance, resources=resources)
        (done,) = materializations(third, "flow", "big")
        assert (done.metadata["rows_updated"].value, done.metadata["rows_rejected"].value) == (1, 0)
    assert compare_rows(mysql, pg, table).equal


@pytest.mark.parametrize("what", ["view", "index", "trigger", "merge option", "auto, small"])
def test_a_table_that_replacing_would_lose_something_of_is_merged_into(
    what: str, make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A view on the table, an index or a trigger of the user's: the reload merges into the same table, which keeps
    them, and says why in the log and the metadata. ``full_reload: merge`` merges, and so does ``auto`` (the
    default) for a table under a million rows."""
    name = what.split()[0].strip(",")
    mysql, pg = _source(make_mysql_database, f"keep_{name}"), make_pg_database(f"keep_{name}")
    table = _plan(mysql, full_reload={"merge option": "merge", "auto, small": "auto"}.get(what, "replace"))
    sync_table(table, mysql, pg)
    user_sql = {
        "view": ["CREATE VIEW flow.big_notes AS SELECT id, note FROM flow.big"],
        "index": ["CREATE INDEX big_by_note ON flow.big (note)"],
        "trigger": ["CREATE FUNCTION flow.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
                    "CREATE TRIGGER big_touch BEFORE UPDATE ON flow.big FOR EACH ROW EXECUTE FUNCTION flow.touch()"],
    }.get(what, [])
    with pg_connection(pg) as connection:
        for statement in user_sql:
            connection.execute(statement)
    before = _oid(pg)
    _mysql(mysql, "SET SESSION sql_mode = ''", *CHANGES[:3])
    with caplog.at_level(logging.INFO, logger="mysql_pg_assets.sync.load.loader"):
        result = sync_table(table, mysql, pg)
    assert (result.inserted, result.updated, result.deleted) == (500, 1900, 1000)
    assert _oid(pg) == before
    assert compare_rows(mysql, pg, table).equal
    if what in ("merge option", "auto, small"):
        assert result.written == "merged"
    else:
        lost = {"view": "view flow.big_notes", "index": "big_by_note", "trigger": "triggers"}[what]
        assert lost in result.written and lost in caplog.text
        assert result.written.startswith("merged (replacing would lose: ")
