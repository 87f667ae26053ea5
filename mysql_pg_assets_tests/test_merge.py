"""The merge SQL, as pure functions of a table plan: no database needed."""

from __future__ import annotations

from datetime import UTC, datetime

from mysql_pg_assets.core.meta import DEFAULT
from mysql_pg_assets.core.sql import numbered
from mysql_pg_assets.sync.extract import Since, Window
from mysql_pg_assets.sync.load.merge import bucket_sql, delete_missing_sql, insert_sql, pg_window_sql, upsert_sql
from mysql_pg_assets.sync.load.staging import Staging
from mysql_pg_assets_tests.plans import table_plan

JAN, FEB, MAR = datetime(2026, 1, 1), datetime(2026, 2, 1), datetime(2026, 3, 1)
EVENTS = "id int NO, v%s varchar(20) YES, happened datetime YES"


def _placeholders(sql: str) -> int:
    return numbered(sql).count("$")  # every %s outside quotes, as the server will bind it


def test_upsert_writes_only_changed_rows_and_counts_by_partition() -> None:
    table = table_plan(columns=EVENTS)
    sql = upsert_sql(table, "rows_0")
    assert 'ON CONFLICT ("id") DO UPDATE SET "v%s" = EXCLUDED."v%s", "happened" = EXCLUDED."happened"' in sql
    assert 'WHERE ROW(t."v%s", t."happened") IS DISTINCT FROM ROW(EXCLUDED."v%s", EXCLUDED."happened")' in sql
    assert "RETURNING (t.xmax = 0) AS inserted, 0 AS bucket" in sql and _placeholders(sql) == 0
    by, params = bucket_sql(table, Window(JAN, MAR, (FEB,)), 't."happened"')  # type: ignore[misc]
    assert by == 'coalesce(width_bucket((t."happened")::timestamptz, %s::timestamptz[]), 0)'
    assert params == [[FEB.replace(tzinfo=UTC)]]
    assert _placeholders(upsert_sql(table, "rows_0", by)) == 1


def test_a_table_without_a_key_is_appended_and_a_new_table_inserted_plainly() -> None:
    keyless = table_plan(columns=EVENTS, key=())
    assert "ON CONFLICT" not in upsert_sql(keyless, "rows_0")
    plain = insert_sql(table_plan(columns=EVENTS), "rows_0")
    assert plain.startswith('INSERT INTO "s"."t" AS t ("id", "v%s", "happened") SELECT s.c0::integer')
    assert "RETURNING" not in plain  # a table this load creates: the fast path counts rows by rowcount


def test_windows_leave_no_row_out() -> None:
    table = table_plan(columns=EVENTS, partition={"column": "happened", "start": "2026-01-01"})
    assert pg_window_sql(table, Window(None, None)) == ("", [])
    assert pg_window_sql(table, Window(None, FEB)) == ('(t."happened" < %s OR t."happened" IS NULL)', [FEB])
    assert pg_window_sql(table, Window(FEB, None)) == ('t."happened" >= %s', [FEB])
    assert pg_window_sql(table, Window(JAN, FEB)) == ('t."happened" >= %s AND t."happened" < %s', [JAN, FEB])


def test_deletes_reconcile_the_scope_against_what_arrived() -> None:
    table = table_plan(columns=EVENTS, partition={"column": "happened", "start": "2026-01-01"})
    staging = Staging(DEFAULT, "stage_x_1")
    sql, params = delete_missing_sql(table, staging, Window(None, FEB, ()), True, False)
    assert sql.startswith('WITH gone AS (DELETE FROM "s"."t" t WHERE (t."happened" < %s OR t."happened" IS NULL)')
    assert 'NOT EXISTS (SELECT 1 FROM "mysql_pg_assets"."stage_x_1_loaded_keys" s WHERE s.c0::integer = t."id")' in sql
    assert "stage_x_1_rejected_keys" in sql and params == [FEB] and _placeholders(sql) == len(params)
    # An incremental load compares every key MySQL has; tombstones are set, not deleted.
    kept = table_plan(columns=EVENTS, cursor_column="happened", deletes="tombstone")
    sql, params = delete_missing_sql(kept, staging, Since(JAN), False, True)
    assert 'UPDATE "s"."t" t SET "_deleted_at" = now()' in sql and "stage_x_1_source_keys" in sql
    assert "loaded_keys" not in sql and params == []
