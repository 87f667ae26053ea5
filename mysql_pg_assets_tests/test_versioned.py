"""Versioned migrations: schema changes as a Sqitch project, round-tripped with Debian's sqitch (PostgreSQL
engine), and applied by the loads from the committed scripts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from dagster import DagsterInstance

from mysql_pg_assets import cli
from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.meta import SCHEMA_CHANGES
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.ddl import table_shape
from mysql_pg_assets.sync.load.migrate import plan
from mysql_pg_assets.sync.load.versioned import ScriptRefused
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import materialize_everything, write_spec
from mysql_pg_assets_tests.test_migrate import _mysql, items  # noqa: F401 (the fixture)

TABLE = '"inv"."items"'


@pytest.fixture(scope="module")
def sqitch() -> str:
    found = subprocess.run([str(PROJECT_ROOT / "scripts" / "sqitch.sh")], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"scripts/sqitch.sh could not provide sqitch: {found.stderr[-2000:]}")
    return found.stdout.strip()


def _settings(items: tuple[DatabaseUrl, DatabaseUrl], folder: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
              **migrations: object) -> Settings:
    source, target = items
    config = write_spec(folder / "sync.yaml", {"target": {"schema": "inv"}, "migrations": migrations})
    for name, value in (("MYSQL_URL", source.secret), ("POSTGRES_URL", target.secret), ("SYNC_CONFIG", str(config))):
        monkeypatch.setenv(name, value)
    return Settings(mysql_url=source, postgres_url=target, sync_config=config)


def _materialize(settings: Settings) -> TablePlan:
    """Materialize every asset through Dagster, then compare the table row by row."""
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in materialize_everything(build_definitions(settings), instance))
    table = discover(load_spec(settings.sync_config), settings.mysql_url).tables[0]
    parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
    assert parity.equal, parity.differences
    return table


def _sqitch(sqitch: str, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    url = settings.postgres_url
    target = f"db:pg://{quote(url.user)}:{quote(url.password)}@{url.host}:{url.port}/{url.database}"
    return subprocess.run([sqitch, *args, target], cwd=settings.sync_config.parent / "migrations", text=True,
                          capture_output=True, check=False, env={**os.environ, "SQITCH_FULLNAME": "test",
                                                                  "SQITCH_EMAIL": "test@example.com"})


def _pending(settings: Settings, table: TablePlan) -> list[str]:
    with pg_connection(settings.postgres_url) as connection:
        return plan(connection, table).summary()


def _shape(settings: Settings) -> object:
    with pg_connection(settings.postgres_url) as connection:
        return table_shape(connection, TABLE)


def test_generated_changes_deploy_verify_revert_and_deploy_again_with_sqitch(
    items: tuple[DatabaseUrl, DatabaseUrl], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqitch: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings(items, tmp_path, monkeypatch)
    _materialize(settings)
    before = _shape(settings)
    _mysql(settings.mysql_url, "ALTER TABLE items ADD COLUMN note VARCHAR(40) DEFAULT 'none', MODIFY qty INT, "
           "MODIFY name VARCHAR(50) NOT NULL, MODIFY state ENUM('new','sold','returned') NOT NULL DEFAULT 'new', "
           "MODIFY price DECIMAL(8,2) NOT NULL DEFAULT 0")
    table = discover(load_spec(settings.sync_config), settings.mysql_url).tables[0]
    pending = _pending(settings, table)
    assert len(pending) >= 5, pending

    assert cli.main(["migrations", "generate"]) == 0
    assert "inv.items: wrote inv_items_001" in capsys.readouterr().out
    project = tmp_path / "migrations"
    plan_text = (project / "sqitch.plan").read_text()
    assert "%project=mysql_pg_assets" in plan_text and "\ninv_items_001 " in plan_text
    assert all((project / folder / "inv_items_001.sql").is_file() for folder in ("deploy", "revert", "verify"))
    assert cli.main(["migrations", "generate"]) == 0  # once only
    assert "already versioned as inv_items_001" in capsys.readouterr().out

    deployed = _sqitch(sqitch, settings, "deploy")
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    assert _pending(settings, table) == []  # PostgreSQL has MySQL's new shape
    verified = _sqitch(sqitch, settings, "verify")
    assert verified.returncode == 0, verified.stderr + verified.stdout

    reverted = _sqitch(sqitch, settings, "revert", "-y")
    assert reverted.returncode == 0, reverted.stderr + reverted.stdout
    assert _shape(settings) == before  # every column, type, default, CHECK and key as it was
    url = settings.postgres_url
    old_verify = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", url.host, "-p", str(url.port), "-U", url.user, "-d",
         url.database, "-f", str(project / "verify" / "inv_items_001.sql")],
        capture_output=True, text=True, check=False, env={**os.environ, "PGPASSWORD": url.password})
    assert old_verify.returncode != 0 and "not there" in old_verify.stderr, old_verify.stderr

    again = _sqitch(sqitch, settings, "deploy")
    assert again.returncode == 0, again.stderr + again.stdout
    assert _pending(settings, table) == []
    assert _sqitch(sqitch, settings, "verify").returncode == 0
    _materialize(settings)  # nothing left to migrate; the rows follow the new shape
    assert _pending(settings, table) == []


def test_a_load_applies_the_committed_script_and_sqitch_then_only_records_it(
    items: tuple[DatabaseUrl, DatabaseUrl], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqitch: str,  # noqa: F811
) -> None:
    settings = _settings(items, tmp_path, monkeypatch)
    _materialize(settings)
    _mysql(settings.mysql_url, "ALTER TABLE items ADD COLUMN note VARCHAR(40)")
    assert cli.main(["migrations", "generate"]) == 0
    deploy = tmp_path / "migrations" / "deploy" / "inv_items_001.sql"
    # A reviewer's addition: the load runs the file as committed, not its own steps.
    deploy.write_text(deploy.read_text() + f"COMMENT ON COLUMN {TABLE}.\"note\" IS 'reviewed in PR 42';\n")

    table = _materialize(settings)
    with pg_connection(settings.postgres_url) as connection:
        note = connection.execute(f"SELECT col_description('{TABLE}'::regclass, 7)").fetchone()[0]
        applied = connection.execute(f"SELECT script FROM {SCHEMA_CHANGES} WHERE applied_at IS NOT NULL").fetchall()
    assert note == "reviewed in PR 42"
    assert applied == [("inv_items_001",)]
    assert _pending(settings, table) == []
    for command in ("deploy", "verify", "status"):
        done = _sqitch(sqitch, settings, command)
        assert done.returncode == 0, (command, done.stderr + done.stdout)
    assert "Nothing to deploy (up-to-date)" in _sqitch(sqitch, settings, "deploy").stdout


def test_with_require_a_load_waits_for_a_committed_script_and_refuses_transaction_control(
    items: tuple[DatabaseUrl, DatabaseUrl], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings(items, tmp_path, monkeypatch, require=True)
    _materialize(settings)
    _mysql(settings.mysql_url, "ALTER TABLE items ADD COLUMN note VARCHAR(40)", "UPDATE items SET note = 'x'")
    table = discover(load_spec(settings.sync_config), settings.mysql_url).tables[0]
    with pytest.raises(ScriptRefused, match="migrations generate"):
        sync_table(table, settings.mysql_url, settings.postgres_url)
    assert "note" not in {c.name for c in _shape(settings).columns}  # nothing changed

    _mysql(settings.mysql_url, "ALTER TABLE items DROP COLUMN qty")  # destructive, not approved: not written
    assert cli.main(["migrations", "generate"]) == 0
    assert "held, not written" in capsys.readouterr().out
    assert not (tmp_path / "migrations" / "deploy").exists() or not list((tmp_path / "migrations" / "deploy").iterdir())

    _mysql(settings.mysql_url, "ALTER TABLE items ADD COLUMN qty SMALLINT AFTER name")
    assert cli.main(["migrations", "generate"]) == 0
    deploy = tmp_path / "migrations" / "deploy" / "inv_items_001.sql"
    text = deploy.read_text()
    deploy.write_text(text + "COMMIT;\n")
    with pytest.raises(ScriptRefused, match="no transaction control"):
        sync_table(table, settings.mysql_url, settings.postgres_url)
    deploy.write_text(text)
    _materialize(settings)
