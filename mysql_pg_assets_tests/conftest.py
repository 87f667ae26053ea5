"""Fixtures: real MariaDB and PostgreSQL, with databases of their own for each test session.

The servers are the ones ``MYSQL_URL`` and ``POSTGRES_URL`` point at (by default the local
databases of ``scripts/db.sh``; ``make test`` starts them). Each session creates uniquely named
databases on both and drops them at the end, so tests never touch the demo's data and two
sessions never see each other's.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from dagster import AssetKey, AssetMaterialization, DagsterInstance, Definitions, ExecuteInProcessResult, materialize

import mysql_pg_assets_demo as demo
from mysql_pg_assets.core.connections import mysql_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_ident, pg_ident

SESSION_ID = uuid.uuid4().hex[:8]
# The tests write specs of their own: an environment chosen in the shell (MPA_ENV) is not theirs. Nor is a
# log format: tests that want LOG_FORMAT set it themselves.
for _variable in ("MPA_ENV", "LOG_FORMAT"):
    os.environ.pop(_variable, None)
DEMO_ORDERS = 2_000


@pytest.fixture(scope="session")
def servers() -> tuple[DatabaseUrl, DatabaseUrl]:
    settings = Settings.from_env()
    return settings.mysql_url, settings.postgres_url


@pytest.fixture(scope="session")
def make_mysql_database(servers: tuple[DatabaseUrl, DatabaseUrl]) -> Iterator[Callable[[str], DatabaseUrl]]:
    """Create a MySQL database named after this session; returns its URL."""
    server = servers[0]
    created: list[str] = []

    def make(suffix: str) -> DatabaseUrl:
        name = f"mpa_test_{SESSION_ID}_{suffix}"
        with mysql_connection(server, database="") as connection, connection.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {mysql_ident(name)}")
            cur.execute(f"CREATE DATABASE {mysql_ident(name)} CHARACTER SET utf8mb4")
        created.append(name)
        return server.with_database(name)

    yield make
    with mysql_connection(server, database="") as connection, connection.cursor() as cur:
        for name in created:
            cur.execute(f"DROP DATABASE IF EXISTS {mysql_ident(name)}")


def _pg_admin(server: DatabaseUrl) -> psycopg.Connection:
    return psycopg.connect(
        host=server.host, port=server.port, user=server.user, password=server.password,
        dbname=server.database, autocommit=True,
    )


@pytest.fixture(scope="session")
def make_pg_database(servers: tuple[DatabaseUrl, DatabaseUrl]) -> Iterator[Callable[[str], DatabaseUrl]]:
    """Create a PostgreSQL database named after this session; returns its URL."""
    server = servers[1]
    created: list[str] = []

    def make(suffix: str) -> DatabaseUrl:
        name = f"mpa_test_{SESSION_ID}_{suffix}"
        with _pg_admin(server) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {pg_ident(name)}")
            connection.execute(f"CREATE DATABASE {pg_ident(name)}")
        created.append(name)
        return server.with_database(name)

    yield make
    with _pg_admin(server) as connection:
        for name in created:
            connection.execute(f"DROP DATABASE IF EXISTS {pg_ident(name)} WITH (FORCE)")


@pytest.fixture(scope="session")
def demo_source(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    """The demo shop, seeded small, in a MySQL database of this session."""
    url = make_mysql_database("shop")
    demo.create_schema(url.secret)
    demo.seed(url.secret, orders=DEMO_ORDERS, log=lambda _line: None)
    return url


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_settings(
    demo_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Settings]:
    """Settings for the demo spec, and the environment the Dagster resources read them from."""
    spec = yaml.safe_load((PROJECT_ROOT / "sync.yaml").read_text(encoding="utf-8"))
    spec["source"] = {"database": demo_source.database}
    spec["target"] = {"schema": "shop"}
    config = write_spec(tmp_path_factory.mktemp("spec") / "sync.yaml", spec)
    settings = Settings(mysql_url=demo_source, postgres_url=make_pg_database("warehouse"), sync_config=config)
    saved = {k: os.environ.get(k) for k in ("MYSQL_URL", "POSTGRES_URL", "SYNC_CONFIG")}
    os.environ.update(MYSQL_URL=settings.mysql_url.secret, POSTGRES_URL=settings.postgres_url.secret,
                      SYNC_CONFIG=str(config))
    yield settings
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def materialize_everything(defs: Definitions, instance: DagsterInstance) -> list[ExecuteInProcessResult]:
    """What `python -m mysql_pg_assets.cli materialize` does, in process: unpartitioned assets in one
    run, partitioned ones over their whole range in one single-run backfill each."""
    assets = list(defs.assets or [])
    plain = [a for a in assets if a.partitions_def is None]
    by_range: dict[tuple[str, str], list] = {}
    for asset in assets:
        if asset.partitions_def is not None:
            keys = asset.partitions_def.get_partition_keys()
            by_range.setdefault((keys[0], keys[-1]), []).append(asset)
    results = [materialize(plain, instance=instance, resources=defs.resources)] if plain else []
    for (first, last), group in by_range.items():
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        results.append(materialize(group, instance=instance, resources=defs.resources, tags=tags))
    return results


def materializations(
    results: ExecuteInProcessResult | list[ExecuteInProcessResult], *path: str,
) -> list[AssetMaterialization]:
    """The materializations of the asset ``path`` (``"shop", "orders"``) in one run or several."""
    key = AssetKey(list(path))
    return [event.step_materialization_data.materialization
            for result in (results if isinstance(results, list) else [results])
            for event in result.get_asset_materialization_events() if event.asset_key == key]
