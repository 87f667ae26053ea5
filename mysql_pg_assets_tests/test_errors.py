"""Errors a person can act on: one or two lines naming the file, key, table or server, never a traceback;
and a server that goes away or hangs fails the load promptly, leaving the previous data as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import SourceUnavailable, TargetError, mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.conftest import write_spec

DAGSTER = str(Path(sys.executable).with_name("dagster"))


@pytest.fixture(scope="module")
def shelf(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
          ) -> tuple[DatabaseUrl, DatabaseUrl]:
    mysql, pg = make_mysql_database("errors"), make_pg_database("errors")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE books (id INT PRIMARY KEY, title VARCHAR(40))")
        cur.execute("INSERT INTO books SELECT seq, CONCAT('book ', seq) FROM seq_1_to_200000")
    return mysql, pg


def _table(mysql: DatabaseUrl) -> TablePlan:
    (table,) = discover(parse_spec({"target": {"schema": "errs"}, "include": ["books"]}), mysql).tables
    return table


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_the_command_line_prints_what_to_do_and_no_traceback(
    shelf: tuple[DatabaseUrl, DatabaseUrl], tmp_path: Path
) -> None:
    mysql, pg = shelf
    env = {"MYSQL_URL": mysql.secret, "POSTGRES_URL": pg.secret}
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text("include: ['*']\ntables:\n  books: {deletes: delete}\n  books: {deletes: tombstone}\n")
    cases = {
        "duplicated key": ({"SYNC_CONFIG": str(duplicated)},
                           f"{duplicated}: line 4: not valid YAML: duplicate key 'books' (first on line 3)"),
        "misspelled database": ({"SYNC_CONFIG": str(write_spec(tmp_path / "db.yaml", {"source": {
            "database": "shpo"}}))}, "source.database: MySQL at mysql://mpa:***@"),
        "include matching nothing": ({"SYNC_CONFIG": str(write_spec(tmp_path / "inc.yaml", {"include": ["bok*"]}))},
                                     "include: ['bok*'] (exclude: []) selects no base table of database"),
        "wrong password": ({"MYSQL_URL": mysql.with_query("").secret.replace(":mpa@", ":nope@"),
                            "SYNC_CONFIG": str(write_spec(tmp_path / "ok.yaml", {}))},
                           "check the user and password in MYSQL_URL"),
        "a URL that is not one": ({"POSTGRES_URL": "localhost:5432", "SYNC_CONFIG": str(tmp_path / "ok.yaml")},
                                  "not a database URL: 'localhost:5432'"),
    }
    for name, (overrides, expected) in cases.items():
        run = _cli({**env, **overrides}, "summary")
        assert run.returncode == 1, (name, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr and expected in run.stderr, (name, run.stderr)
        assert len(run.stderr.strip().splitlines()) <= 2, (name, run.stderr)
        assert "nope" not in run.stderr and mysql.password + "@" not in run.stderr

    # materialize asks PostgreSQL before it starts a run: a wrong POSTGRES_URL is said once, not once per table.
    closed = pg.with_query("").secret.replace(f":{pg.port}/", ":1/")
    run = _cli({**env, "POSTGRES_URL": closed, "SYNC_CONFIG": str(tmp_path / "ok.yaml"),
                "DAGSTER_HOME": str(tmp_path)}, "materialize")
    assert run.returncode == 1 and "Traceback" not in run.stderr and "$ dagster" not in run.stdout, run.stderr
    assert run.stderr.startswith("error: cannot connect to PostgreSQL at postgresql://"), run.stderr
    # So is a MYSQL_URL naming a database the load cannot use (the spec's source.database found the tables).
    elsewhere = mysql.with_query("").secret.replace(f"/{mysql.database}", "/no_such_db")
    run = _cli({**env, "MYSQL_URL": elsewhere, "SYNC_CONFIG": str(write_spec(tmp_path / "src.yaml", {"source": {
        "database": mysql.database}})), "DAGSTER_HOME": str(tmp_path)}, "materialize")
    assert run.returncode == 1 and "Traceback" not in run.stderr and "$ dagster" not in run.stdout, run.stderr
    assert run.stderr.startswith("error: cannot connect to MySQL at mysql://") and \
        "no such database: check the database named in MYSQL_URL" in run.stderr, run.stderr

    # The same errors through Dagster's own command line: one line, Dagster's "Error: ".
    run = subprocess.run([DAGSTER, "asset", "materialize", "-m", "mysql_pg_assets.definitions", "--select", "*"],
                         env={**os.environ, **env, "SYNC_CONFIG": str(tmp_path / "db.yaml"),
                              "DAGSTER_HOME": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "Error: source.database: MySQL at mysql://mpa:***@" in run.stderr, \
        run.stderr[-2000:]


def test_a_postgresql_server_that_goes_away_fails_the_load_at_once(shelf: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    mysql, pg = shelf
    table = _table(mysql)
    sync_table(table, mysql, pg)
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("UPDATE books SET title = CONCAT(title, '!')")

    def cut_the_load_off() -> None:  # what a server restart or a crash looks like from the client
        with pg_connection(pg) as connection:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                cut = connection.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND query LIKE '%%written%%'").fetchone()[0]
                if cut:
                    return
                time.sleep(0.01)

    cutter = threading.Thread(target=cut_the_load_off)
    cutter.start()
    started = time.monotonic()
    with pytest.raises(TargetError) as failed:
        sync_table(table, mysql, pg, batch_rows=10_000)
    cutter.join()
    assert time.monotonic() - started < 30
    message = str(failed.value)
    assert message.startswith("loading errs.books into PostgreSQL at postgresql://mpa:***@"), message
    assert "nothing of the load was committed: run it again once the server is back" in message
    parity = compare_rows(mysql, pg, table)  # the previous data is all there, unchanged
    assert parity.postgres_rows == 200_000 and not parity.equal
    assert sync_table(table, mysql, pg).updated == 200_000


def test_a_lock_held_elsewhere_fails_the_load_after_the_lock_timeout(shelf: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    mysql, pg = shelf
    table = _table(mysql)
    sync_table(table, mysql, pg)
    # MySQL: a session holds the table (LOCK TABLES ... WRITE); MYSQL_URL's lock_wait_timeout bounds the wait.
    with mysql_connection(mysql) as holder, holder.cursor() as cur:
        cur.execute("LOCK TABLES books WRITE")
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="another MySQL session holds a lock on the table"):
            sync_table(table, mysql.with_query("lock_wait_timeout=2"), pg)
        assert time.monotonic() - started < 30
        cur.execute("UNLOCK TABLES")
    # PostgreSQL: a session holds the target table; POSTGRES_URL's lock_timeout bounds the wait.
    with pg_connection(pg) as holder, holder.transaction():
        holder.execute("LOCK TABLE errs.books IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(TargetError, match="another PostgreSQL session holds a lock on the table"):
            sync_table(table, mysql, pg.with_query("options=-c%20lock_timeout%3D2s"))
        assert time.monotonic() - started < 30
    assert compare_rows(mysql, pg, table).equal
