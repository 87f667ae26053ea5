"""What the metrics read from Dagster: the newest result of every asset check (``ops.metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dagster import AssetCheckKey, DagsterInstance

from mysql_pg_assets.defs.asset_checks import check_specs
from mysql_pg_assets.defs.translator import asset_key
from mysql_pg_assets.sync.catalog.plans import TablePlan

_DONE = {"SUCCEEDED": False, "FAILED": True}  # a record's status; PLANNED: still running


def check_states(tables: Sequence[TablePlan], instance: DagsterInstance | None = None) -> dict[tuple[str, str], bool]:
    """(table, check) → whether the check's newest completed result failed, from the Dagster instance
    (``DAGSTER_HOME``); a check that never ran is left out."""
    owner = {AssetCheckKey(asset_key(t), spec.name): t.target_label for t in tables for spec in check_specs(t)}
    if not owner:
        return {}
    instance = instance or DagsterInstance.get()
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(list(owner))
    return {(owner[key], key.name): _DONE[record.status.value] for key, record in latest.items()
            if record.status.value in _DONE}


def failed_loads(tables: Sequence[TablePlan], instance: DagsterInstance | None = None) -> dict[str, float]:
    """table → when its newest materialization attempt failed (Unix time), for the tables whose newest attempt
    failed (a load that failed writes nothing: its error is in the run)."""
    keys = {asset_key(t): t.target_label for t in tables}
    instance = instance or DagsterInstance.get()
    failed: dict[str, float] = {}
    for record in instance.get_asset_records(list(keys)):
        entry = record.asset_entry
        failure = entry.last_failed_to_materialize_record
        success = entry.last_materialization_record
        if failure is not None and (success is None or failure.storage_id > success.storage_id):
            failed[keys[entry.asset_key]] = failure.timestamp
    return failed


def readers() -> tuple[Callable[[Sequence[TablePlan]], dict[tuple[str, str], bool]],
                       Callable[[Sequence[TablePlan]], dict[str, float]]]:
    """``check_states`` and ``failed_loads`` on one instance (``DAGSTER_HOME``'s), opened at the first read and
    kept: the exporter reads them every few seconds for as long as it runs."""
    opened: list[DagsterInstance] = []

    def instance() -> DagsterInstance:
        if not opened:
            opened.append(DagsterInstance.get())
        return opened[0]

    return (lambda tables: check_states(tables, instance())), (lambda tables: failed_loads(tables, instance()))
