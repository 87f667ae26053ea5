"""Dagster resources: the two database connections, configured from the environment.

Their URLs come through ``dagster.EnvVar`` so the UI and run config show only the variable's
name. The resources hand the stages a :class:`DatabaseUrl`, which masks its password when printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pymysql
from dagster import ConfigurableResource
from pydantic import Field

from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl


class MySQLSource(ConfigurableResource):
    """The MySQL (or MariaDB) server tables are read from."""

    url: str = Field(description="mysql://user:password@host:port/database (from MYSQL_URL)")

    @property
    def database_url(self) -> DatabaseUrl:
        return DatabaseUrl.parse(self.url)

    @contextmanager
    def connection(self) -> Iterator[pymysql.Connection]:
        """A connection from ``core.connections`` (UTC, bounded lock waits, errors worded), closed on exit."""
        with mysql_connection(self.database_url) as connection:
            yield connection


class PostgresTarget(ConfigurableResource):
    """The PostgreSQL database tables are written to."""

    url: str = Field(description="postgresql://user:password@host:port/database (from POSTGRES_URL)")

    @property
    def database_url(self) -> DatabaseUrl:
        return DatabaseUrl.parse(self.url)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection from ``core.connections`` (safe binding, timeouts), closed on exit."""
        with pg_connection(self.database_url) as connection:
            yield connection
