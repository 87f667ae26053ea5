"""Real-world sample schemas that nobody here wrote, synced whole with ``include: ["*"]``.

The demo shop was designed alongside the sync, so it only exercises what we thought of. These
samples come from other projects, as Debian packages them:

* ``world`` and TPC-H at scale 0.01 (``dbt3_s001``) from ``mariadb-test-data``, MariaDB's own
  test suite (GPL-2): three world tables with UTF-8 names and FLOAT(M,D) columns, nine TPC-H
  tables with DOUBLE, DATE and composite keys, and an empty key-less table of TIMESTAMPs;
* ZoneMinder's database from ``zoneminder`` (GPL-2+): 34 tables with ENUM, SET, DECIMAL, unsigned
  integers, TINYTEXT, TIMESTAMP, foreign keys and triggers.

We may not commit third-party data, so ``scripts/sample_schemas.sh`` fetches the packages with
``apt-get download`` at test time (once; later runs reuse ``.local/samples``). Each sample is
loaded with the ``mariadb`` client, exactly as its project ships it, into a database of its own.
Then the test does what a user does: write a spec, materialize every asset through Dagster, and
check that every table arrived whole (row counts and every value) and that every value the sync
changed on the way is counted in the materialization's metadata.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, AssetMaterialization, DagsterInstance, materialize

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.meta import REJECTS
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_ident, mysql_qualified, pg_ident, pg_qualified
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.defs.translator import asset_key
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import write_spec

SCRIPT = PROJECT_ROOT / "scripts" / "sample_schemas.sh"


@dataclass(frozen=True)
class Sample:
    name: str
    files: tuple[str, ...]  # file names printed by the script, loaded in this order
    tables: int  # base tables the sample creates
    known_rows: dict[str, int]  # a few row counts published with the data: proof the load happened


SAMPLES = {
    sample.name: sample
    for sample in (
        Sample("world_dbt3", ("world_schema.inc", "world.inc", "dbt3_s001.inc"), 12,
               {"City": 4079, "Country": 239, "CountryLanguage": 984, "lineitem": 6005, "orders": 1500}),
        Sample("zoneminder", ("zm_create.sql", "triggers.sql"), 34,
               {"Config": 227, "Controls": 41, "MonitorPresets": 75, "Users": 1}),
    )
}


def _sample_files() -> dict[str, Path]:
    run = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        pytest.fail(f"{SCRIPT.name} failed (exit {run.returncode}):\n{run.stderr[-3000:]}", pytrace=False)
    paths = [Path(line) for line in run.stdout.splitlines() if line.strip()]
    return {path.name: path for path in paths}


def _sql(sample: Sample, files: dict[str, Path], database: str) -> bytes:
    """The sample's SQL as its project ships it, aimed at ``database``."""
    parts = [files[name].read_bytes() for name in sample.files]
    if sample.name != "zoneminder":
        return b"\n".join(parts)
    # zm_create.sql creates and uses a database named `zm`, then `source`s triggers.sql by its
    # installed path: point it at ours and feed the triggers after it instead.
    quoted = mysql_ident(database).encode()
    create, triggers = parts
    create = b"\n".join(line for line in create.replace(b"`zm`", quoted).splitlines()
                        if not line.startswith(b"source "))
    return b"\n".join([create, b"USE " + quoted + b";", triggers])


def _mariadb_client() -> str:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.fail("neither the mariadb nor the mysql client is on PATH (apt-get install mariadb-client)",
                    pytrace=False)
    return client


def _load(url: DatabaseUrl, sql: bytes) -> None:
    command = [_mariadb_client(), "--no-defaults", "--protocol=TCP", f"--host={url.host}", f"--port={url.port}",
               f"--user={url.user}", "--default-character-set=utf8mb4", "--batch", url.database]
    # The password goes through the environment: a command line is visible to every user.
    env = {**os.environ, "MYSQL_PWD": url.password}
    run = subprocess.run(command, input=sql, env=env, capture_output=True, timeout=300)
    assert run.returncode == 0, f"loading into {url.database} failed: {run.stderr.decode(errors='replace')[-3000:]}"


@pytest.fixture(scope="module")
def sample_sources(make_mysql_database: Callable[[str], DatabaseUrl]) -> dict[str, DatabaseUrl]:
    """Each sample, loaded into a MySQL database of its own."""
    files = _sample_files()
    sources: dict[str, DatabaseUrl] = {}
    for sample in SAMPLES.values():
        url = make_mysql_database(f"sample_{sample.name}")
        _load(url, _sql(sample, files, url.database))
        sources[sample.name] = url
    return sources


def _base_tables(url: DatabaseUrl) -> set[str]:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                    " AND table_type = 'BASE TABLE'", (url.database,))
        return {row[0] for row in cur.fetchall()}


def _rejects_logged(postgres_url: DatabaseUrl, run_id: str, table: TablePlan) -> int:
    with pg_connection(postgres_url) as connection:
        if not connection.execute("SELECT to_regclass(%s) IS NOT NULL", (REJECTS,)).fetchone()[0]:
            return 0
        return int(connection.execute(
            f"SELECT count(*) FROM {REJECTS} WHERE run_id = %s AND source_table = %s AND target_table = %s",
            (run_id, table.source_label, table.target_label),
        ).fetchone()[0])


def _made_null(mysql_url: DatabaseUrl, postgres_url: DatabaseUrl, table: TablePlan) -> dict[str, int]:
    """Per column, how many values are NULL in PostgreSQL but not in MySQL."""
    def nulls(quote: Callable[[str], str], names: list[str]) -> str:
        return ", ".join(f"COUNT(*) - COUNT({quote(name)})" for name in names)

    with mysql_connection(mysql_url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT {nulls(mysql_ident, [c.source.name for c in table.columns])} "
                    f"FROM {mysql_qualified(table.source_database, table.source_table)}")
        mysql_nulls = cur.fetchone()
    with pg_connection(postgres_url) as connection:
        pg_nulls = connection.execute(
            f"SELECT {nulls(pg_ident, [c.target_name for c in table.columns])} "
            f"FROM {pg_qualified(table.target_schema, table.target_table)}"
        ).fetchone()
    return {c.target_name: int(p) - int(m) for c, m, p in zip(table.columns, mysql_nulls, pg_nulls, strict=True)}


def _value(metadata: dict[str, Any], key: str) -> Any:
    return metadata[key].value


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_schema_syncs_completely(
    name: str, sample_sources: dict[str, DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sample, source = SAMPLES[name], sample_sources[name]
    spec = write_spec(tmp_path / "sync.yaml", {"source": {"database": source.database},
                                               "target": {"schema": name}, "include": ["*"]})
    settings = Settings(mysql_url=source, postgres_url=make_pg_database(f"sample_{name}"), sync_config=spec)
    monkeypatch.setenv("MYSQL_URL", settings.mysql_url.secret)
    monkeypatch.setenv("POSTGRES_URL", settings.postgres_url.secret)
    monkeypatch.setenv("SYNC_CONFIG", str(spec))

    catalog = discover(load_spec(spec), settings.mysql_url)
    assert {t.source_table for t in catalog.tables} == _base_tables(source)
    assert len(catalog.tables) == sample.tables

    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        result = materialize(list(defs.assets or []), instance=instance, resources=defs.resources)  # no partitions
    assert result.success
    materializations: dict[AssetKey, AssetMaterialization] = {}
    for event in result.get_asset_materialization_events():
        assert event.asset_key not in materializations, event.asset_key
        materializations[event.asset_key] = event.materialization
    assert set(materializations) == {asset_key(t) for t in catalog.tables}

    counts: dict[str, int] = {}
    for table in catalog.tables:
        label = table.source_label
        parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
        counts[table.source_table] = parity.mysql_rows
        assert parity.postgres_rows == parity.mysql_rows, (label, parity.mysql_rows, parity.postgres_rows)
        assert parity.equal, (label, parity.differences)

        metadata = materializations[asset_key(table)].metadata
        assert _value(metadata, "rows_read") == parity.mysql_rows, label
        # A reject would be a row missing from PostgreSQL; every rejected value is logged with the run.
        assert _value(metadata, "values_rejected") == _rejects_logged(settings.postgres_url, result.run_id, table), \
            label
        assert _value(metadata, "rows_rejected") == 0, (label, _value(metadata, "values_rejected"))

        # Every converted value is counted, and each count names its column and conversion.
        conversions: dict[str, int] = metadata["conversions"].value
        assert _value(metadata, "values_converted") == sum(conversions.values()), (label, conversions)
        columns = [c.target_name for c in table.columns]
        assert all(key.split(": ", 1)[0] in columns for key in conversions), (label, conversions)
        # Independently of those counts: a value that became NULL on the way was counted as such.
        made_null = {column: count for column, count in _made_null(settings.mysql_url, settings.postgres_url,
                                                                   table).items() if count}
        counted_null = {column: sum(n for key, n in conversions.items()
                                    if key.startswith(f"{column}: ") and key.endswith("→ NULL"))
                        for column in columns}
        assert made_null == {column: n for column, n in counted_null.items() if n}, (label, conversions)

    assert {table: counts[table] for table in sample.known_rows} == sample.known_rows


# ---------------------------------------------------------------------------------------------
# Sakila: MySQL's own sample, with what real schemas have: a foreign-key cycle (store.manager_staff_id
# → staff, staff.store_id → store), ENUM, SET, YEAR, BLOB, TIMESTAMP ON UPDATE, FULLTEXT, triggers and
# views. It ships beside the project (../shared/samples/sakila), as CI has it.
# ---------------------------------------------------------------------------------------------

SAKILA = PROJECT_ROOT.parent / "shared" / "samples" / "sakila"
SAKILA_ROWS = {"actor": 200, "film": 1000, "film_actor": 5462, "payment": 16049, "rental": 16044, "staff": 2,
               "store": 2}


@pytest.fixture(scope="module")
def sakila(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    files = [SAKILA / "sakila-mv-schema.sql", SAKILA / "sakila-mv-data.sql"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.fail(f"the Sakila sample is missing: {', '.join(missing)}", pytrace=False)
    url = make_mysql_database("sakila")
    # It creates and uses `sakila` (and its views name it): aim every mention at this session's database.
    sql = re.sub(rb"\bsakila(?=[;.])", mysql_ident(url.database).encode(), b"\n".join(f.read_bytes() for f in files))
    _load(url, sql)
    return url


def _mysql(url: DatabaseUrl, *statements: str) -> None:
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def test_sakila_syncs_at_parity_with_its_foreign_key_cycle(
    sakila: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every table of a schema whose foreign keys form a cycle loads, with constraints and indexes on, and
    keeps loading as rows are added on both sides of the cycle, and parents deleted with their children."""
    spec = write_spec(tmp_path / "sync.yaml", {
        "source": {"database": sakila.database}, "target": {"schema": "sakila"}, "include": ["*"],
        "options": {"indexes": True, "foreign_keys": True}})
    settings = Settings(mysql_url=sakila, postgres_url=make_pg_database("sakila"), sync_config=spec)
    for name, url in (("MYSQL_URL", settings.mysql_url), ("POSTGRES_URL", settings.postgres_url)):
        monkeypatch.setenv(name, url.secret)
    monkeypatch.setenv("SYNC_CONFIG", str(spec))

    catalog = discover(load_spec(spec), settings.mysql_url)
    assert {t.source_table for t in catalog.tables} == _base_tables(sakila) and len(catalog.tables) == 16
    defs = build_definitions(settings)
    defs.resolve_asset_graph()  # a cycle among the assets' dependencies would fail here
    store = next(a for a in defs.assets or [] if AssetKey(["sakila", "store"]) in a.keys)
    description = store.specs_by_key[AssetKey(["sakila", "store"])].description or ""
    assert "closes the cycle store → staff → store" in description, description

    def materialize_and_compare() -> None:
        with DagsterInstance.ephemeral() as instance:
            result = materialize(list(defs.assets or []), instance=instance, resources=defs.resources)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3 * 16 and all(c.passed for c in checks), [c for c in checks if not c.passed]
        for table in catalog.tables:
            parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
            assert parity.equal, (table.source_label, parity.mysql_rows, parity.postgres_rows, parity.differences)

    materialize_and_compare()
    counts = {t: compare_rows(settings.mysql_url, settings.postgres_url, next(
        p for p in catalog.tables if p.source_table == t)).postgres_rows for t in SAKILA_ROWS}
    assert counts == SAKILA_ROWS

    # Rows on both sides of the cycle, a rental and its payment, and a parent deleted with its children
    # (Sakila's keys are ON DELETE RESTRICT: MySQL deletes the children first).
    _mysql(sakila,
           "SET FOREIGN_KEY_CHECKS = 0",
           "INSERT INTO store (store_id, manager_staff_id, address_id) VALUES (3, 3, 1)",
           "INSERT INTO staff (staff_id, first_name, last_name, address_id, store_id, username)"
           " VALUES (3, 'Ada', 'Byron', 1, 3, 'ada')",
           "SET FOREIGN_KEY_CHECKS = 1",
           "INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, staff_id)"
           " VALUES (20000, '2026-01-02 03:04:05', 1, 1, 3)",
           "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)"
           " VALUES (1, 3, 20000, 4.99, '2026-01-02 03:05:00')",
           "DELETE FROM film_actor WHERE actor_id = 200",
           "DELETE FROM actor WHERE actor_id = 200",
           "UPDATE film SET title = 'ACADEMY DINOSAUR II' WHERE film_id = 1")
    materialize_and_compare()
    with pg_connection(settings.postgres_url) as connection:
        constraints = {row[0] for row in connection.execute(
            "SELECT conname FROM pg_constraint WHERE contype = 'f' AND connamespace = 'sakila'::regnamespace")}
    assert "staff_fk_staff_store" in constraints and "store_fk_store_staff" not in constraints, constraints
