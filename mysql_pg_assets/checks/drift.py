"""Drift decisions: which partitions to check, what to repair, which schema changes to apply or hold,
and when freshness changed state. Plain functions of plain inputs (plans, migrations, fingerprints,
a cursor), so each decision is tested without Dagster; the sensors (``defs.sensors``) gather the
inputs and turn the outputs into run requests, check evaluations and alerts.

- Data drift checks at most ``budget`` materialized units (a partition, or a whole unpartitioned
  table) per tick, its cursor moving on so each is checked in turn, and repairs exactly a unit
  whose fingerprints differ, under a run key made of both: one drift is repaired once, and a new
  change in MySQL gets a new repair.
- Schema drift requests the migrating run of a compatible (or approved) change, keyed by the
  change's fingerprint and the count of migrations applied (a change made, undone and made again
  runs again), and holds a destructive one, reporting it once per distinct change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mysql_pg_assets.checks.parity import Fingerprint
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.load.migrate import APPROVAL_JOB, Migration
from mysql_pg_assets.sync.spec import Freshness

FreshnessState = Literal["PASS", "WARN", "FAIL", "UNKNOWN"]

Unit = tuple[TablePlan, str | None]  # a table and one of its partitions (None: the whole table)


def units_to_check(units: Sequence[Unit], cursor: int, budget: int) -> tuple[list[Unit], int]:
    """The next ``budget`` units from ``cursor`` (wrapping round), and the cursor after them."""
    if not units:
        return [], 0
    start = cursor % len(units)
    checked = [units[(start + i) % len(units)] for i in range(min(budget, len(units)))]
    return checked, (start + len(checked)) % len(units)


@dataclass(frozen=True)
class Repair:
    """A run that reloads exactly one unit, and why."""

    table: TablePlan
    partition: str | None
    run_key: str
    reason: str


def data_repair(table: TablePlan, partition: str | None, source: Fingerprint, target: Fingerprint) -> Repair | None:
    """The repair of a unit whose fingerprints differ (None: they agree)."""
    if source == target:
        return None
    return Repair(table, partition,
                  f"drift:{table.target_label}:{partition}:{source.rows}:{source.checksum}:{target.rows}:"
                  f"{target.checksum}",
                  f"{table.target_label} [{partition or 'all'}] drifted: MySQL {source}, PostgreSQL {target}")


@dataclass(frozen=True)
class SchemaRun:
    """The run that migrates a table and reloads what the change touches."""

    table: TablePlan
    migration: Migration
    run_key: str
    reason: str


@dataclass(frozen=True)
class Held:
    """A destructive change waiting for approval, to report (once)."""

    table: TablePlan
    migration: Migration
    how: str

    @property
    def changes(self) -> str:
        return "; ".join(self.migration.summary())


def schema_decisions(
    tables: Sequence[TablePlan], migrations: dict[str, Migration], approved: dict[str, bool],
    applied: dict[str, int], reported: dict[str, str],
) -> tuple[list[SchemaRun], list[Held], dict[str, str]]:
    """Runs for compatible and approved changes, new holds to report, and the fingerprints reported so far
    (the cursor: a hold is reported once per distinct change, and forgotten when the table conforms)."""
    runs, holds, reported = [], [], dict(reported)
    for table in tables:
        label, migration = table.target_label, migrations.get(table.target_label)
        if not migration:
            reported.pop(label, None)
            continue
        if not migration.destructive or approved.get(label):
            reason = "schema drift" + (" (approved)" if migration.destructive else "")
            runs.append(SchemaRun(table, migration, f"schema:{label}:{migration.fingerprint}:{applied.get(label, 0)}",
                                  reason))
        elif reported.get(label) != migration.fingerprint:
            reported[label] = migration.fingerprint
            holds.append(Held(table, migration,
                              f"launch the job {APPROVAL_JOB} with config table: {label}, approve: true"))
    return runs, holds, reported


def reload_range(materialized: Sequence[str], every_key: Sequence[str], reloads_rows: bool) -> tuple[str, str]:
    """The partitions a migrating run loads, as one single-run range: every materialized one (gaps
    included) when rows must be read again, else the newest; every partition when this instance
    has materialized none (loads made elsewhere: the table may hold any)."""
    done = sorted(materialized) or list(every_key)
    return (done[0] if reloads_rows else done[-1]), done[-1]


def freshness_state(last_materialized: float | None, now: float, freshness: Freshness) -> FreshnessState:
    """PASS, WARN, FAIL or UNKNOWN (never materialized): the rule of Dagster's time-window freshness policy,
    which the UI shows, applied to the time of the asset's latest materialization."""
    if last_materialized is None:
        return "UNKNOWN"
    age = now - last_materialized
    if age >= freshness.fail_after.total_seconds():
        return "FAIL"
    if freshness.warn_after is not None and age >= freshness.warn_after.total_seconds():
        return "WARN"
    return "PASS"


def freshness_change(previous: FreshnessState, state: FreshnessState) -> bool:
    """Whether a change of freshness state is worth an alert: into WARN or FAIL, or back to PASS from
    either (not the first PASS after a table was never materialized)."""
    return state != previous and state != "UNKNOWN" and not (state == "PASS" and previous == "UNKNOWN")
