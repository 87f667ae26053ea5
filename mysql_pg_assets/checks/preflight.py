"""Before a run: everything it needs, checked in order, and what can be prepared, prepared.

``python -m mysql_pg_assets.cli check`` (which ``make demo``, ``make materialize`` and ``make ui``
run first) prints one line per check and stops at the first that fails, with what to do:

1. the sync spec parses and validates;
2. MySQL answers, has the database, and the user may read every selected table and column;
   the spec's transforms have what they need (the salt of every hash mask, every Python function);
   with a table in mode cdc, the binlog is readable and logs rows whole;
3. PostgreSQL answers, and the target schema exists or may be created (and where the project's own
   tables will live: see ``meta``);
4. Dagster's storage database (``DAGSTER_POSTGRES_URL``) exists; a missing one is created when the
   role may create databases, otherwise the message gives the statement to run. Without this the
   webserver and every run retry for half a minute and then fail with a traceback.

Nothing here knows Dagster: the storage database is plain PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from mysql_pg_assets.core.connections import TargetError, pg_connect, pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import locate, schema_ready
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.core.sql import pg_ident
from mysql_pg_assets.sync import environments
from mysql_pg_assets.sync.capture.binlog import capture_ready
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets.sync.transform import transforms_ready


@dataclass(frozen=True)
class Finding:
    ok: bool
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.subject}: {self.detail}"


def _target(settings: Settings, schema: str) -> str:
    with pg_connection(settings.postgres_url) as connection:
        exists = schema_ready(connection, schema)
        meta = locate(connection, schema)
    where = "exists" if exists else "will be created"
    return f"{settings.postgres_url}: schema {schema!r} {where}; rejects and load ledger in {meta.label('rejects')}, " \
           f"{meta.label('loads')}"


def ensure_database(url: DatabaseUrl) -> str:
    """Connect to ``url``'s database, creating it first if it is missing and the role may."""
    try:
        pg_connect(url).close()
        return f"{url}: exists"
    except TargetError as exc:  # at connect time even a missing database is only the server's words
        if f'database "{url.database}" does not exist' not in str(exc):
            raise
    admin = None
    for maintenance in ("postgres", "template1"):
        with contextlib.suppress(TargetError):
            admin = pg_connect(url.with_database(maintenance), autocommit=True)
            break
    if admin is None:
        raise TargetError(f"PostgreSQL database {url.database!r} does not exist at {url}, and no maintenance "
                          f"database (postgres, template1) lets {url.user!r} in to create it: run CREATE DATABASE "
                          f"{pg_ident(url.database)} OWNER {pg_ident(url.user)}")
    with admin:
        may = admin.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not may:
            raise TargetError(f"PostgreSQL database {url.database!r} does not exist at {url} and role {url.user!r} "
                              f"may not create databases: run CREATE DATABASE {pg_ident(url.database)} OWNER "
                              f"{pg_ident(url.user)}, or point DAGSTER_POSTGRES_URL at a database that exists")
        admin.execute(f"CREATE DATABASE {pg_ident(url.database)}")
    return f"{url}: created"


def checks(settings: Settings, dagster_url: DatabaseUrl | None) -> Iterator[Finding]:
    """Each check in turn; the first failure ends the list."""
    try:
        spec = load_spec(settings.sync_config)
        chosen = environments.current()
        yield Finding(True, "sync spec", f"{settings.sync_config}" + (f" (environment {chosen})" if chosen else ""))
        catalog = discover(spec, settings.mysql_url)
        names = ", ".join(t.source_table for t in catalog.tables[:8]) + (" …" if len(catalog.tables) > 8 else "")
        yield Finding(True, "MySQL", f"{settings.mysql_url}: {len(catalog.tables)} tables of "
                                     f"{catalog.source_database} to sync ({names})")
        yield Finding(True, "transforms", transforms_ready(catalog.tables))
        captured = {t.source_table for t in catalog.tables if t.cdc}
        if captured:
            yield Finding(True, "change capture", capture_ready(settings.mysql_url, catalog.source_database, captured))
        yield Finding(True, "PostgreSQL", _target(settings, catalog.target_schema))
        if dagster_url is not None:
            yield Finding(True, "Dagster storage", ensure_database(dagster_url))
    except ActionableError as exc:
        yield Finding(False, type(exc).__name__, str(exc))
