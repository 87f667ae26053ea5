"""What a load did: the figures it returns, records in the ledger and reports, in all and per partition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from mysql_pg_assets.sync.extract import Scope, Window
from mysql_pg_assets.sync.transform import Conversions


@dataclass(frozen=True)
class LoadResult:
    rows_read: int
    inserted: int
    updated: int
    deleted: int
    rejected_rows: int
    rejected_values: int
    seconds: float
    conversions: Conversions = field(default_factory=Conversions)
    watermark: str | None = None  # the newest cursor value loaded, for the next incremental load
    newest_source_value: datetime | None = None  # the newest cursor or partition timestamp: lag
    schema_changes: tuple[str, ...] = ()  # the migration this load applied (migrate.Migration.summary)
    schema_pending: tuple[str, ...] = ()  # what of it waits for a load that covers every row
    rejects_table: str = "mysql_pg_assets.rejects"  # where this load's rejects are (see meta)
    # A range of several partitions: per partition (0: the range's first), rows_read, rows_rejected,
    # rows_inserted, rows_updated, rows_deleted.
    by_partition: dict[int, dict[str, int]] = field(default_factory=dict)
    # The user's checks (spec ``expect``) that loaded rows failed: rows failed and the first failure cases.
    expectations: dict[str, tuple[int, tuple[dict[str, object], ...]]] = field(default_factory=dict)
    # How the rows were written: "merged" (upserted into the table), "built" (a first load straight into a new
    # table, ``build``), "replaced" (a full reload built aside and swapped in, ``replace``); a merge that could
    # not replace says why.
    written: str = "merged"

    @property
    def rows_loaded(self) -> int:
        return self.rows_read - self.rejected_rows


Counts = dict[int, Counter]  # partition of the range (0 when the load is not a range) → what happened to its rows


def per_bucket(rows: Iterable[tuple], names: tuple[str, ...]) -> Counts:
    counts: Counts = {}
    for bucket, *values in rows:
        counts.setdefault(int(bucket), Counter()).update(dict(zip(names, map(int, values), strict=True)))
    return counts


def add_counts(total: Counts, more: Counts) -> None:
    for bucket, counter in more.items():
        total.setdefault(bucket, Counter()).update(counter)


def by_partition(scope: Scope, staged: Counts, merged: Counts) -> dict[int, dict[str, int]]:
    if not isinstance(scope, Window) or not scope.splits:
        return {}
    both = {b: staged.get(b, Counter()) + merged.get(b, Counter()) for b in range(len(scope.splits) + 1)}
    return {b: {"rows_read": c["read"], "rows_rejected": c["rejected"] + c["refused"], "rows_inserted": c["inserted"],
                "rows_updated": c["updated"], "rows_deleted": c["deleted"]} for b, c in both.items()}
