"""Extract: read a table from MySQL with connectorx, as a stream of Arrow record batches.

Columns are read through their casting rule's expression and aliased ``c0 … cN`` so that no
MySQL identifier, however odd, reaches connectorx or the staging table. The session runs with
``time_zone = '+00:00'`` so TIMESTAMP values arrive in UTC whatever the server's zone.
"""

from __future__ import annotations

from collections.abc import Iterator

import connectorx as cx
import pyarrow as pa

from mysql_pg_assets.casting import converted_expression, read_expression
from mysql_pg_assets.catalog import SourceUnavailable, TablePlan
from mysql_pg_assets.settings import DatabaseUrl, redact
from mysql_pg_assets.sql import mysql_ident, mysql_qualified

DEFAULT_BATCH_ROWS = 100_000
SESSION_SETUP = ["SET time_zone = '+00:00'"]


def staging_name(index: int) -> str:
    return f"c{index}"


def converted_flag_name(index: int) -> str:
    """The column that is true where MySQL converted column ``index``'s value (a zero date)."""
    return f"converted{index}"


def select_sql(table: TablePlan) -> str:
    expressions = []
    for i, column in enumerate(table.columns):
        quoted = mysql_ident(column.source.name)
        expressions.append(f"{read_expression(column.rule, quoted, column.source)} AS {staging_name(i)}")
        flag = converted_expression(column.rule, quoted)
        if flag:
            expressions.append(f"{flag} AS {converted_flag_name(i)}")
    return f"SELECT {', '.join(expressions)} FROM {mysql_qualified(table.source_database, table.source_table)}"


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def read_batches(
    mysql_url: DatabaseUrl, table: TablePlan, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Yield the table's rows in batches of at most ``batch_rows``.

    connectorx raises Rust panics as ``BaseException`` subclasses; they are turned into
    :class:`SourceUnavailable` with the table named and any password masked.
    """
    url = mysql_url.with_database(table.source_database)
    try:
        reader = cx.read_sql(
            url.secret, select_sql(table), return_type="arrow_stream", batch_size=batch_rows,
            pre_execution_queries=SESSION_SETUP,
        )
        yield from reader
    except BaseException as exc:
        if _is_fatal(exc):
            raise
        raise SourceUnavailable(f"reading {table.source_label} from {url}: {redact(str(exc))}") from None
