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

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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


def related(tables: Sequence[TablePlan]) -> list[list[TablePlan]]:
    """``tables`` split into sets joined by lineage (a table, its parents and children among them, theirs,
    and so on), each in the tables' order, in the order of their first table."""
    parents = waits_for(tables)
    root = {t.asset_name: t.asset_name for t in tables}

    def find(name: str) -> str:
        while root[name] != name:
            root[name] = root[root[name]]
            name = root[name]
        return name

    for child, its_parents in parents.items():
        for parent in its_parents:
            root[find(parent)] = find(child)
    sets: dict[str, list[TablePlan]] = {}
    for table in tables:
        sets.setdefault(find(table.asset_name), []).append(table)
    return list(sets.values())


def in_parallel(tables: Sequence[TablePlan], work: Callable[[TablePlan], T], parallel: int) -> Iterator[Outcome[T]]:
    """``work(table)`` for every table, at most ``parallel`` at once, each once its parents are done;
    outcomes are yielded as they finish, in the caller's thread. The next tables start as soon as a
    worker is free, however long the caller takes over each outcome (Dagster stores a dozen events
    per table). Closing the iterator early (the caller was interrupted) starts nothing more and waits
    for the tables already loading."""
    parents = waits_for(tables)
    parallel = max(1, parallel)
    waiting = list(tables)
    done: set[str] = set()
    finished: queue.Queue[Outcome[T]] = queue.Queue()
    lock = threading.Lock()
    running = 0
    stopped = False

    def timed(table: TablePlan) -> None:
        started = time.perf_counter()
        try:
            outcome = Outcome(table, work(table), None, time.perf_counter() - started)
        except Exception as exc:  # the table's outcome; the others go on
            outcome = Outcome(table, None, exc, time.perf_counter() - started)
        with lock:
            nonlocal running
            running -= 1
            done.add(table.asset_name)
            start_ready()
        finished.put(outcome)

    def start_ready() -> None:  # with the lock held
        nonlocal running
        for table in [t for t in waiting if parents[t.asset_name] <= done]:
            if running >= parallel or stopped:
                return
            waiting.remove(table)
            running += 1
            pool.submit(timed, table)

    with reusing_connections(), ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="mpa-table") as pool:
        try:
            with lock:
                start_ready()
                assert running or not waiting, f"lineage is not acyclic: {[t.asset_name for t in waiting]}"
            for _ in range(len(tables)):
                yield finished.get()
        finally:
            with lock:
                stopped = True
