"""Many tables in one process: a few at once, parents before their children, each on its own.

A database of hundreds of small tables costs its rows and a small constant per table only when the
tables share a process: a process per table (Dagster's step per asset) costs seconds where the load
costs a tenth of one. :func:`in_parallel` is how one step loads them: ``parallel`` tables at once in
threads (the load waits on the two servers most of the time, and connectorx, polars and the drivers
release the GIL), connections reused between tables (``core.connections.reusing_connections``), and
a table started only once its lineage parents among them have finished, as Dagster would order their
steps, so that a foreign key created in PostgreSQL finds its parent's rows.

Each table commits on its own (``sync_table`` is one transaction), and one table's error is that
table's outcome: the others go on, and the caller reports which failed. A child still loads when its
parent failed: its rows are MySQL's either way, and a foreign key that refuses them says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from mysql_pg_assets.core.connections import reusing_connections
from mysql_pg_assets.sync.catalog.plans import TablePlan, dagster_safe_name

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What ``work`` made of one table: its value, or the exception it raised."""

    table: TablePlan
    value: T | None
    error: BaseException | None
    seconds: float


def waits_for(tables: Sequence[TablePlan]) -> dict[str, set[str]]:
    """Each table's lineage parents among ``tables`` (by target name; lineage is acyclic, see ``lineage``)."""
    names = {t.asset_name for t in tables}
    return {t.asset_name: {dagster_safe_name(k.referenced_target) for k in t.foreign_keys if k.lineage}
            & (names - {t.asset_name}) for t in tables}


def in_parallel(tables: Sequence[TablePlan], work: Callable[[TablePlan], T], parallel: int) -> Iterator[Outcome[T]]:
    """``work(table)`` for every table, at most ``parallel`` at once, each once its parents are done;
    outcomes are yielded as they finish (in the caller's thread). Closing the iterator early (the
    caller was interrupted) starts nothing more and waits for the tables already loading."""
    parents = waits_for(tables)
    waiting = list(tables)
    done: set[str] = set()

    def timed(table: TablePlan) -> Outcome[T]:
        started = time.perf_counter()
        try:
            return Outcome(table, work(table), None, time.perf_counter() - started)
        except Exception as exc:  # the table's outcome; the others go on
            return Outcome(table, None, exc, time.perf_counter() - started)

    with reusing_connections(), ThreadPoolExecutor(max_workers=max(1, parallel),
                                                   thread_name_prefix="mpa-table") as pool:
        running: set[Future[Outcome[T]]] = set()
        try:
            while waiting or running:
                ready = [t for t in waiting if parents[t.asset_name] <= done]
                assert ready or running, f"lineage is not acyclic: {[t.asset_name for t in waiting]}"
                for table in ready[:max(0, parallel - len(running))]:
                    waiting.remove(table)
                    running.add(pool.submit(timed, table))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcome = future.result()
                    done.add(outcome.table.asset_name)
                    yield outcome
        finally:
            for future in running:
                future.cancel()
