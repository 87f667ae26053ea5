"""Values PostgreSQL refuses that validation did not foresee: found one by one, their rows rejected.

When a batch's merge fails with a data error (SQLSTATE class 22), the loader rolls back to a
savepoint and calls :func:`reject_refused_values`: every value of the batch that PostgreSQL's own
cast refuses (only on the columns it has to convert) is written to the rejects with PostgreSQL's
message as the reason, its row leaves the batch, and the merge runs again.
"""

from __future__ import annotations

import psycopg

from mysql_pg_assets.core.sql import pg_type
from mysql_pg_assets.sync.catalog.plans import TablePlan, staging_name
from mysql_pg_assets.sync.extract import Scope
from mysql_pg_assets.sync.load.merge import staged_bucket
from mysql_pg_assets.sync.load.result import Counts, per_bucket
from mysql_pg_assets.sync.load.staging import Staging

# Tries one cast and returns PostgreSQL's error message, or NULL when the value is accepted.
# The value is bound (USING), never pasted; the type name was checked by sql.pg_type.
_REFUSAL_FUNCTION = """CREATE OR REPLACE FUNCTION pg_temp.mpa_refusal(value text, type_name text)
RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE format('SELECT $1::%s', type_name) USING value;
  RETURN NULL;
EXCEPTION WHEN others THEN
  RETURN SQLERRM;
END
$fn$"""


def _column_types(connection: psycopg.Connection, relation: str) -> dict[str, str]:
    return dict(connection.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (relation,),
    ).fetchall())


def reject_refused_values(
    connection: psycopg.Connection, table: TablePlan, staging: Staging, rows: str, scope: Scope
) -> Counts:
    """Move every row of the batch ``rows`` holding a value PostgreSQL refuses to the rejects."""
    connection.execute(_REFUSAL_FUNCTION)
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS mpa_refused "
                       "(row_id tid, primary_key text, column_name text, value text, reason text)")
    connection.execute("TRUNCATE pg_temp.mpa_refused")
    staging_types = _column_types(connection, rows)
    target_types = _column_types(connection, table.target)
    key = [(c.target_name, f"s.{staging_name(i)}") for i, c in enumerate(table.columns)
           if c.target_name in table.primary_key]
    key_names = table.key_staging_names
    key_json = "jsonb_build_object(" + ", ".join("%s::text, " + e for _, e in key) + ")::text" if key else "NULL"
    key_params = [name for name, _ in key]
    for i, column in enumerate(table.columns):
        name = staging_name(i)
        if staging_types[name] == target_types[column.target_name]:
            continue  # COPY already produced the target type: nothing left to refuse
        connection.execute(
            f"INSERT INTO pg_temp.mpa_refused SELECT * FROM ("
            f"SELECT s.ctid, {key_json}, %s::text, s.{name}::text, pg_temp.mpa_refusal(s.{name}::text, %s) AS reason "
            f"FROM {rows} s WHERE s.{name} IS NOT NULL) checked WHERE reason IS NOT NULL",
            (*key_params, column.target_name, pg_type(column.pg_type)),
        )
    connection.execute(f"INSERT INTO {staging.rejects} SELECT primary_key, column_name, value, "
                       f"'PostgreSQL refused the value: ' || reason FROM pg_temp.mpa_refused")
    if key:
        refused_keys = f"SELECT {', '.join(e for _, e in key)} FROM {rows} s WHERE s.ctid IN " \
                       f"(SELECT row_id FROM pg_temp.mpa_refused)"
        connection.execute(f"INSERT INTO {staging.rejected_keys} {refused_keys}")
        connection.execute(f"DELETE FROM {staging.loaded_keys} k WHERE ({', '.join(f'k.{n}' for n in key_names)}) "
                           f"IN ({refused_keys})")
    bucket = staged_bucket(table, scope)
    by, params = bucket if bucket else ("0", [])
    return per_bucket(connection.execute(
        f"WITH gone AS (DELETE FROM {rows} s WHERE s.ctid IN (SELECT row_id FROM pg_temp.mpa_refused)"
        f" RETURNING {by} AS bucket) SELECT bucket, count(*) FROM gone GROUP BY bucket", params or None).fetchall(),
        ("refused",))
