"""Dagster's event log in PostgreSQL, with its connections kept (``dagster.yaml`` names this class).

``dagster_postgres.PostgresEventLogStorage`` opens a new PostgreSQL connection for every statement
(SQLAlchemy's ``NullPool``, so that idle instances hold nothing), and asks PostgreSQL whether the
asset-check table exists before storing every check event. A connection costs about 7 ms here (most of
it password hashing), and a run that loads 500 tables stores over 6,000 events (each table's
materialization, its checks planned and evaluated, the step's outputs): measured, the run spent more
time opening connections than loading tables. This class is the same storage with a small pool, and
the existence of its tables and columns asked once instead of with every event (three catalog
queries each time).

Connections are not pinged before use (that would double the statements again): after PostgreSQL
restarts, the first statement on a kept connection fails, SQLAlchemy then drops the whole pool, and
the next one connects anew; a PostgreSQL that went away fails what was running either way.
Everything else, schema and migrations included, is dagster-postgres's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

_PLANNED = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED}
POOL_SIZE = 2  # connections kept; a burst (the daemon's threads) opens up to MAX_OVERFLOW more


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    MAX_OVERFLOW = 8

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None, token_provider: Any = None) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._engine.dispose()
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, isolation_level="AUTOCOMMIT",
                                        pool_size=POOL_SIZE, max_overflow=self.MAX_OVERFLOW, pool_recycle=3600)
        self._tables: dict[str, bool] = {}
        self._columns: dict[str, bool] = {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any],
    ) -> PooledPostgresEventLogStorage:
        return cls(pg_url_from_config(config_value), config_value.get("should_autocreate_tables", True), inst_data,
                   get_token_provider_from_config(config_value))

    # Tables and columns appear (``dagster instance migrate``) but are never dropped under a running
    # instance: what exists is remembered, what does not is asked again.
    def has_table(self, table_name: str) -> bool:
        if not self._tables.get(table_name):
            self._tables[table_name] = super().has_table(table_name)
        return self._tables[table_name]

    def has_asset_key_col(self, column_name: str) -> bool:
        if not self._columns.get(column_name):
            self._columns[column_name] = super().has_asset_key_col(column_name)
        return self._columns[column_name]

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A new run's planned events (one per asset and per check: 2,000 for 500 tables) in one insert.

        dagster-postgres batches only materializations and observations, and stores a run's planned
        events one by one (an insert, a NOTIFY that dagster-postgres no longer listens for, the index rows),
        about 4.5 ms each here: 9 s before a run of 500 tables could start. The index rows are written as
        ``store_event`` writes them, by dagster's own methods."""
        if not events or any(e.get_dagster_event().event_type not in _PLANNED for e in events):
            super().store_event_batch(events)
            return
        with self._connect() as connection:
            inserted = connection.execute(
                self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id))
            ids = [int(row[0]) for row in inserted.fetchall()]
        with self.index_transaction() as connection:
            for event, event_id in zip(events, ids, strict=True):
                if event.get_dagster_event().event_type in ASSET_EVENTS and event.get_dagster_event().asset_key:
                    self._store_asset_event_tags(connection, [event], [event_id])
                    self._store_asset_event(connection, event, event_id)
        for event, event_id in zip(events, ids, strict=True):
            if event.get_dagster_event().event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(event, event_id)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()
