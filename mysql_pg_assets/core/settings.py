"""Where the project's configuration comes from: four environment variables, nothing else.

``MYSQL_URL``, ``POSTGRES_URL``, ``SYNC_CONFIG`` and ``DAGSTER_HOME`` point the project at any
servers without touching code. When unset they default to the local databases that
``scripts/db.sh start`` runs, so a fresh clone works with no setup.

URLs carry passwords: they are held in :class:`DatabaseUrl`, whose ``str``/``repr`` mask the
password, and error text from drivers goes through :func:`redact` before it reaches a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from mysql_pg_assets.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

LOCAL_MYSQL_URL = "mysql://mpa:mpa@127.0.0.1:33061/shop"
LOCAL_POSTGRES_URL = "postgresql://mpa:mpa@127.0.0.1:54329/warehouse"

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)", re.I)


def redact(text: str) -> str:
    """Mask every password that appears inside a URL in ``text``."""
    return _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***", text)


@dataclass(frozen=True)
class DatabaseUrl:
    """A database URL split into parts; printing it never shows the password."""

    scheme: str
    user: str
    password: str
    host: str
    port: int
    database: str
    query: str = ""

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        parts = urlsplit(url)
        if not parts.scheme or not parts.hostname:
            raise ConfigError(f"not a database URL: {redact(url)!r} (expected scheme://user:password@host:port/database)")
        default_port = 3306 if parts.scheme.startswith(("mysql", "mariadb")) else 5432
        try:
            port = parts.port or default_port
        except ValueError:
            raise ConfigError(f"not a port number in the database URL {redact(url)!r}") from None
        return cls(
            scheme=parts.scheme,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            host=parts.hostname,
            port=port,
            database=unquote(parts.path.lstrip("/")),
            query=parts.query,
        )

    def with_database(self, database: str) -> DatabaseUrl:
        return DatabaseUrl(self.scheme, self.user, self.password, self.host, self.port, database, self.query)

    def with_query(self, query: str) -> DatabaseUrl:
        return DatabaseUrl(self.scheme, self.user, self.password, self.host, self.port, self.database, query)

    def render(self, *, hide_password: bool = True) -> str:
        password = "***" if hide_password and self.password else quote(self.password, safe="")
        auth = quote(self.user, safe="") + (f":{password}" if self.password else "")
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit((self.scheme, netloc, "/" + quote(self.database, safe=""), self.query, ""))

    @property
    def secret(self) -> str:
        """The full URL, password included: for drivers only, never for logs or metadata."""
        return self.render(hide_password=False)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.render()!r})"


@dataclass(frozen=True)
class Settings:
    mysql_url: DatabaseUrl
    postgres_url: DatabaseUrl
    sync_config: Path

    @classmethod
    def from_env(cls) -> Settings:
        config = Path(os.environ.get("SYNC_CONFIG") or PROJECT_ROOT / "sync.yaml")
        return cls(
            mysql_url=DatabaseUrl.parse(os.environ.get("MYSQL_URL") or LOCAL_MYSQL_URL),
            postgres_url=DatabaseUrl.parse(os.environ.get("POSTGRES_URL") or LOCAL_POSTGRES_URL),
            sync_config=config,
        )


def export_local_defaults() -> None:
    """Set the database URLs to the local defaults where the environment leaves them unset.

    Resources read their URLs through ``dagster.EnvVar`` so the UI shows the variable's name,
    never its value; this makes those variables resolve on a machine where nobody set them.
    """
    os.environ.setdefault("MYSQL_URL", LOCAL_MYSQL_URL)
    os.environ.setdefault("POSTGRES_URL", LOCAL_POSTGRES_URL)
