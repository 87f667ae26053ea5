"""A user's own servers: their URLs, their databases, their roles, their machine's folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from dagster import DagsterInstance, materialize

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl
from mysql_pg_assets.core.sql import pg_ident
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import parse_spec
from mysql_pg_assets_tests.conftest import SESSION_ID, free_port

PASSWORD = "p@ss:w/rd%1 ok"  # what a URL must carry percent-encoded


def _with_user(url: DatabaseUrl, user: str, database: str) -> DatabaseUrl:
    return DatabaseUrl(url.scheme, user, PASSWORD, url.host, url.port, database)


def test_make_demo_on_your_own_servers(
    servers: tuple[DatabaseUrl, DatabaseUrl], make_mysql_database: Callable[[str], DatabaseUrl], tmp_path: Path
) -> None:
    """Only the URLs (a database not called shop, a user and a role of the user's, passwords that need
    encoding) and the two commands: nothing local is started, the URL's database is seeded and synced,
    Dagster's storage database is created, and both sides are equal."""
    mysql_server, pg_server = servers
    source = make_mysql_database("mine")
    user = f"mpa_{SESSION_ID}_own"
    with mysql_connection(mysql_server, database="") as connection, connection.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY %s", (PASSWORD,))
        cur.execute(f"GRANT ALL ON `{source.database}`.* TO '{user}'@'%'")
    warehouse, storage = f"mpa_test_{SESSION_ID}_ownwh", f"mpa_test_{SESSION_ID}_owndagster"
    admin = psycopg.connect(host=pg_server.host, port=pg_server.port, user=pg_server.user,
                            password=pg_server.password, dbname=pg_server.database, autocommit=True)
    admin.execute(f"CREATE ROLE {pg_ident(user)} LOGIN CREATEDB PASSWORD {psycopg.sql.Literal(PASSWORD).as_string()}")
    admin.execute(f"CREATE DATABASE {pg_ident(warehouse)} OWNER {pg_ident(user)}")
    try:
        mysql_url = _with_user(source, user, source.database)
        pg_url = _with_user(pg_server, user, warehouse)
        assert quote(PASSWORD, safe="") in mysql_url.secret
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "POSTGRES_", "DAGSTER_", "SYNC_"))}
        env.update(MYSQL_URL=mysql_url.secret, POSTGRES_URL=pg_url.secret,
                   DAGSTER_POSTGRES_URL=_with_user(pg_server, user, storage).secret,
                   DAGSTER_HOME=str(tmp_path / "dagster_home"), MPA_MYSQL_PORT="1", MPA_PG_PORT="1")
        run = subprocess.run(["make", "--no-print-directory", "demo", "UI=0", "ORDERS=300"], cwd=PROJECT_ROOT,
                             env=env, capture_output=True, text=True, timeout=900)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-4000:]
        assert "scripts/db.sh" not in output  # your own servers: nothing local started (its ports are bogus)
        assert f"ok   Dagster storage: postgresql://{user}:***@" in output and ": created" in output
        assert "8 tables, 0 different (every value compared)" in output, output[-3000:]
        assert PASSWORD not in output and quote(PASSWORD, safe="") not in output
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {pg_ident(warehouse)} WITH (FORCE)")
        admin.execute(f"DROP DATABASE IF EXISTS {pg_ident(storage)} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {pg_ident(user)}")
        admin.close()
        with mysql_connection(mysql_server, database="") as connection, connection.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_the_demo_never_replaces_tables_that_are_not_its_own(
    make_mysql_database: Callable[[str], DatabaseUrl]
) -> None:
    url = make_mysql_database("theirs")
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE customers (id INT PRIMARY KEY, name TEXT)")  # someone's real table
        cur.execute("INSERT INTO customers VALUES (1, 'kept')")
    run = subprocess.run([sys.executable, "-m", "mysql_pg_assets_demo", "seed", "--orders", "100"],
                         env={**os.environ, "MYSQL_URL": url.secret}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "customers already exist and are not demo tables" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SELECT name FROM customers")
        assert cur.fetchall() == (("kept",),)


def test_a_role_that_owns_only_its_schema_loads(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    """A DBA's setup: the role owns a pre-created schema and may create nothing else. It loads, its
    rejects and ledger go beside its tables, and a reset drops only the synced tables."""
    mysql, pg = make_mysql_database("narrow"), make_pg_database("narrow")
    with mysql_connection(mysql) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE visits (id INT PRIMARY KEY, seen_on DATE NOT NULL, note TEXT)")
        cur.execute("INSERT INTO visits VALUES (1, '2026-01-02', 'fine'), (2, '0000-00-00', 'a zero date')")
    role = f"mpa_{SESSION_ID}_narrow"
    with pg_connection(pg) as connection:
        connection.execute(f"CREATE ROLE {pg_ident(role)} LOGIN PASSWORD 'pw' NOCREATEDB")
        connection.execute(f"CREATE SCHEMA analytics AUTHORIZATION {pg_ident(role)}")
        connection.execute(f"REVOKE CREATE ON DATABASE {pg_ident(pg.database)} FROM PUBLIC")
    narrow = DatabaseUrl(pg.scheme, role, "pw", pg.host, pg.port, pg.database)
    try:
        catalog = discover(parse_spec({"target": {"schema": "analytics"}}), mysql)
        resources = {"mysql": MySQLSource(url=mysql.secret), "postgres": PostgresTarget(url=narrow.secret)}
        with DagsterInstance.ephemeral() as instance:
            result = materialize(build_table_assets(catalog), instance=instance, resources=resources,
                                 raise_on_error=False)
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        # The zero date is a reject: one row fewer in PostgreSQL; the sampled rows (from PostgreSQL) match.
        assert checks == {"rows_valid": False, "parity": False, "schema_conforms": True}
        (materialization,) = result.get_asset_materialization_events()
        assert materialization.materialization.metadata["rejects_table"].value == "analytics.mpa_rejects"
        with pg_connection(narrow) as connection:
            assert connection.execute("SELECT to_regnamespace('mysql_pg_assets')").fetchone() == (None,)
            assert connection.execute("SELECT primary_key, value FROM analytics.mpa_rejects").fetchall() == [
                ({"id": 2}, "zero date")]
            assert connection.execute("SELECT rows_read, rows_rejected FROM analytics.mpa_loads").fetchall() == [
                (2, 1)]
        assert compare_rows(mysql, narrow, catalog.tables[0]).postgres_rows == 1
        run = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "reset-target", "--yes"],
                             env={**os.environ, "MYSQL_URL": mysql.secret, "POSTGRES_URL": narrow.secret,
                                  "SYNC_CONFIG": str(_spec_file(mysql, "analytics"))},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        with pg_connection(narrow) as connection:
            assert connection.execute("SELECT to_regclass('analytics.visits')").fetchone() == (None,)
            assert connection.execute("SELECT to_regnamespace('analytics') IS NOT NULL").fetchone() == (True,)
    finally:
        with pg_connection(pg) as connection:
            connection.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
            connection.execute(f"DROP ROLE IF EXISTS {pg_ident(role)}")


def _spec_file(mysql: DatabaseUrl, schema: str) -> Path:
    path = Path(f"/tmp/mpa_{SESSION_ID}_{schema}.yaml")
    path.write_text(f"source: {{database: {mysql.database}}}\ntarget: {{schema: {schema}}}\n")
    return path



@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the servers run as that user: no folder to reach")
def test_the_local_servers_start_from_a_clone_in_a_private_folder(tmp_path: Path) -> None:
    """A clone under /root or a 0700 home: the servers' own users cannot reach it, so the data goes to
    /var/tmp/mpa-<hash> instead of the script refusing to start."""
    private = tmp_path / "home"
    clone = private / "clone"
    shutil.copytree(PROJECT_ROOT / "scripts", clone / "scripts")
    private.chmod(0o700)
    env = {**os.environ, "MPA_MYSQL_PORT": str(free_port()), "MPA_PG_PORT": str(free_port())}
    env.pop("MPA_DATA_DIR", None)
    script = str(clone / "scripts" / "db.sh")
    try:
        start = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=300)
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        assert "is not reachable by the mysql and postgres users" in start.stdout
        status = subprocess.run([script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "/var/tmp/mpa-" in status.stdout, status.stdout
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
        for line in subprocess.run([script, "status"], env=env, capture_output=True, text=True).stdout.split():
            if line.startswith("/var/tmp/mpa-"):
                shutil.rmtree(Path(line).parent, ignore_errors=True)
