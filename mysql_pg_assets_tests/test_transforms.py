"""The user's transforms: excluded and masked columns, row filters, derived columns, a Python transform and
the user's own checks, first as pure pieces, then end to end on MySQL's Sakila sample through Dagster."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from mysql_pg_assets.checks.parity import compare_rows, mysql_row_count
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_ident, mysql_qualified, pg_ident
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan, staging_name
from mysql_pg_assets.sync.expressions import ExpressionError, mysql_condition, polars_expression
from mysql_pg_assets.sync.extract import select_sql
from mysql_pg_assets.sync.spec import Mask, SpecError, load_spec, parse_spec
from mysql_pg_assets.sync.transform import LoadContext, TransformError, masked, masked_value, to_staging
from mysql_pg_assets.sync.validate import schema_for, validate
from mysql_pg_assets_tests.conftest import materializations, materialize_everything, write_spec
from mysql_pg_assets_tests.plans import table_plan
from mysql_pg_assets_tests.test_sample_schemas import SAKILA, _load

SALT = "a salt only these tests know"

# ---------------------------------------------------------------- the languages


@pytest.mark.parametrize("text", [
    "tenant_id = 1; DROP TABLE t", "tenant_id = (SELECT 1)", "sleep(5) = 0", "tenant_id = 1 UNION SELECT 1",
    "nope = 1", "t.tenant_id = 1", "tenant_id IN (SELECT id FROM x)", "load_file('/etc/passwd') IS NULL",
])
def test_a_filter_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(ExpressionError):
        mysql_condition(text, {"tenant_id": "`tenant_id`", "name": "`name`"})


def test_a_filter_is_rendered_again_never_pasted() -> None:
    rendered = mysql_condition("tenant_id = 7 AND name <> 'O''Brien\\' OR 1=1 -- ' AND name IS NOT NULL",
                               {"tenant_id": "`tenant_id`", "name": "`name`"})
    # Every string is a hex literal: no quote of the spec's text reaches MySQL.
    assert "O'Brien" not in rendered and "--" not in rendered and "'O" not in rendered
    assert rendered.count("_utf8mb4 X'") == 1 and "`tenant_id` = 7" in rendered


def test_derived_expressions_compute_and_refuse() -> None:
    frame = pl.DataFrame({"total": [10.5, None], "tax": [0.5, 1.0], "email": ["A@x.org", None]})
    columns = {name: pl.col(name) for name in frame.columns}
    load = LoadContext("shop", "orders").functions
    cases = {"total - tax": [10.0, None], "upper(email)": ["A@X.ORG", None],
             "split_part(email, '@', 2)": ["x.org", None], "'big' if total > 5 else 'small'": ["big", "small"],
             "source_database()": ["shop", "shop"], "coalesce(total, 0) * 2": [21.0, 0.0]}
    for text, expected in cases.items():
        assert frame.with_columns(polars_expression(text, columns, load).alias("v"))["v"].to_list() == expected, text
    for text in ("__import__('os').system('true')", "email.upper()", "total[0]", "nope + 1", "lambda: 1",
                 "open('/etc/passwd')", "now(1)"):
        with pytest.raises(ExpressionError):
            polars_expression(text, columns, load)


def test_a_hash_is_the_same_in_polars_and_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load hashes with polars; the checks hash MySQL's value again in Python: they must agree."""
    monkeypatch.setenv("MPA_MASK_SALT", SALT)
    values = ["a@b.org", "émile@exemple.fr", "", None, "x" * 300]
    mask = Mask(method="hash")
    hashed = pl.DataFrame({"v": values}).select(masked(pl.col("v"), mask).alias("v"))["v"].to_list()
    assert hashed == [masked_value(mask, v) for v in values]
    assert hashed[0] == hashlib.sha256((SALT + "a@b.org").encode()).hexdigest() and hashed[3] is None
    monkeypatch.delenv("MPA_MASK_SALT")
    with pytest.raises(TransformError, match="MPA_MASK_SALT"):
        masked(pl.col("v"), mask)


# ---------------------------------------------------------------- the plan


def _error(**override: object) -> str:
    with pytest.raises(SpecError) as caught:
        table_plan(columns="id int NO, email varchar(80) YES, score float YES, total int YES", **override)
    return str(caught.value)


def test_mistakes_in_transforms_are_spec_errors_naming_the_key() -> None:
    assert "the primary key cannot be excluded" in _error(column_settings={"id": {"exclude": True}})
    assert "null or exclude" in _error(column_settings={"score": {"mask": "hash"}})
    assert "tables.t.filter" in _error(filter="nope = 1")
    assert "tables.t.derived.d" in _error(derived={"d": "email.upper()"})
    assert "already has a column" in _error(derived={"email": "upper(email)"})
    assert "no column nope" in _error(expect=[{"column": "nope", "not_null": True}])
    assert "two checks" in _error(expect=[{"column": "total", "not_null": True},
                                         {"column": "total", "not_null": True}])
    with pytest.raises(SpecError, match="excluded or masked, not both"):
        parse_spec({"tables": {"t": {"columns": {"email": {"exclude": True, "mask": "hash"}}}}})
    with pytest.raises(SpecError, match="one of in_range"):
        parse_spec({"tables": {"t": {"expect": [{"column": "a", "not_null": True, "unique": True}]}}})


def test_a_bare_mask_key_masks_with_null() -> None:
    """`mask:` with nothing after it is YAML's null: a user who wrote the key meant a mask, so NULL it is."""
    plan = table_plan(columns="id int NO, email varchar(80) NO", column_settings={"email": {"mask": None}})
    email = next(c for c in plan.columns if c.target_name == "email")
    assert email.mask is not None and email.mask.method == "null" and email.nullable


def test_the_plan_reads_only_what_it_keeps_and_filters_in_mysql() -> None:
    plan = table_plan(columns="id int NO, secret varchar(20) YES, tenant int YES, price int YES",
                      column_settings={"secret": {"exclude": True}}, filter="tenant = 7",
                      derived={"price_x2": "price * 2", "loaded": "now()"})
    sql = select_sql(plan)
    assert "secret" not in sql and "`tenant` = 7" in sql and "price_x2" not in sql
    assert [c.target_name for c in plan.columns] == ["id", "tenant", "price", "price_x2", "loaded"]
    assert [c.pg_type for c in plan.columns[-2:]] == ["bigint", "timestamptz"]
    assert "derived: price * 2" in plan.columns[3].origin


def _batch(plan: TablePlan, **columns: list) -> pa.Table:
    return pa.table({staging_name(i): columns[c.source.name] for i, c in plan.read_columns})


def rental_days(frame: pl.DataFrame, context: LoadContext) -> pl.DataFrame:
    """A Python transform of the kind a user writes: one column added from two others."""
    assert context.source_table == "rental"
    return frame.with_columns((pl.col("return_date") - pl.col("rental_date")).dt.total_days().alias("days_out"))


def sneaky(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("v").str.to_uppercase(), pl.lit(1).alias("n"))


def test_a_python_transform_must_keep_its_promises() -> None:
    plan = table_plan(transform={"function": f"{__name__}:sneaky", "columns": {"n": "integer"}})
    with pytest.raises(TransformError, match="changed v without listing it in modifies"):
        to_staging(_batch(plan, id=[1], v=["a"]), plan)
    plan = table_plan(transform={"function": f"{__name__}:sneaky", "columns": {"n": "integer"}, "modifies": ["v"]})
    frame, _ = to_staging(_batch(plan, id=[1], v=["a"]), plan)
    assert frame.select("c1", "c2").row(0) == ("A", 1)


def test_a_derived_value_that_cannot_be_its_type_is_a_reject_naming_the_expression() -> None:
    plan = table_plan(columns="id int NO, v varchar(20) YES",
                      derived={"n": {"expression": "to_int(v) * 2", "pg_type": "smallint"}})
    frame, conversions = to_staging(_batch(plan, id=[1, 2, 3], v=["4", "40000", None]), plan)
    batch = validate(frame, conversions, plan, schema_for(plan))
    assert batch.rows["c2"].to_list() == [8, None] and batch.rejected_rows == 1
    assert batch.rejects.row(0, named=True)["reason"] == "derived n = to_int(v) * 2: not a smallint"


def test_the_users_checks_count_failures_with_their_keys() -> None:
    plan = table_plan(columns="id int NO, v varchar(20) YES, n int YES", expect=[
        {"column": "n", "in_range": [0, 10]}, {"column": "v", "str_matches": "[a-z]+$", "severity": "warn"},
        {"name": "n_small", "expression": "n < 100"}])
    frame, conversions = to_staging(_batch(plan, id=[1, 2, 3], v=["ok", "NO", None], n=[5, 50, None]), plan)
    batch = validate(frame, conversions, plan, schema_for(plan))
    assert batch.rejected_rows == 0 and batch.rows.height == 3  # a failing check does not drop the row
    assert batch.expectations["n_in_range"].rows == 1
    assert batch.expectations["n_in_range"].cases == [{"key": {"id": "2"}, "n": "50"}]
    assert batch.expectations["v_str_matches"].cases == [{"key": {"id": "2"}, "v": "NO"}]
    assert "n_small" not in batch.expectations


# ---------------------------------------------------------------- end to end, on Sakila


@pytest.fixture(scope="module")
def sakila_source(make_mysql_database: Callable[[str], DatabaseUrl]) -> DatabaseUrl:
    url = make_mysql_database("sakila_transforms")
    files = [SAKILA / "sakila-mv-schema.sql", SAKILA / "sakila-mv-data.sql"]
    _load(url, re.sub(rb"\bsakila(?=[;.])", mysql_ident(url.database).encode(),
                      b"\n".join(f.read_bytes() for f in files)))
    return url


SPEC = {
    "include": ["customer", "staff", "payment", "rental", "store"],
    "target": {"schema": "sakila_t"},
    "options": {
        "indexes": True,
        "columns": {"password": {"exclude": True}, "email": {"mask": "hash"}},
        "derived": {"synced_at": "now()", "source_db": "source_database()"},
        "expect": [{"column": "last_update", "not_null": True}],
    },
    "tables": {
        "customer": {"cursor_column": "last_update", "filter": "store_id = 1 AND active = 1",
                     "columns": {"last_name": {"mask": {"method": "truncate", "length": 1}},
                                 "first_name": {"mask": "redact"}},
                     "expect": [{"column": "store_id", "isin": [1]}]},
        "staff": {"columns": {"picture": {"exclude": True}}},
        "payment": {"partition": {"column": "payment_date", "granularity": "monthly", "start": "2005-05-01"},
                    "filter": "amount >= 2.99",
                    "derived": {"amount_cents": "to_int(amount * 100)", "pricey": "amount > 5"},
                    "expect": [{"column": "amount", "in_range": [0, 5]},
                               {"name": "amount_positive", "expression": "amount > 0"},
                               {"column": "payment_id", "unique": True}]},
        "rental": {"transform": {"function": f"{__name__}:rental_days", "columns": {"days_out": "bigint"}}},
    },
}


def _secrets(url: DatabaseUrl) -> list[str]:
    """What must never reach PostgreSQL, the logs, the metadata or the alerts: the values masked or left out."""
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT email FROM {mysql_qualified(url.database, 'customer')} WHERE email IS NOT NULL "
                    f"UNION SELECT email FROM {mysql_qualified(url.database, 'staff')} WHERE email IS NOT NULL "
                    f"UNION SELECT password FROM {mysql_qualified(url.database, 'staff')} WHERE password IS NOT NULL "
                    f"UNION SELECT first_name FROM {mysql_qualified(url.database, 'customer')}")
        return [row[0].decode() if isinstance(row[0], bytes) else row[0] for row in cur.fetchall()]


def test_sakila_with_every_kind_of_transform(
    sakila_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    spec = write_spec(tmp_path / "sync.yaml", {**SPEC, "source": {"database": sakila_source.database}})
    settings = Settings(mysql_url=sakila_source, postgres_url=make_pg_database("sakila_transforms"), sync_config=spec)
    for name, value in (("MYSQL_URL", settings.mysql_url.secret), ("POSTGRES_URL", settings.postgres_url.secret),
                        ("SYNC_CONFIG", str(spec)), ("MPA_MASK_SALT", SALT)):
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO)
    catalog = discover(load_spec(spec), settings.mysql_url)
    plans = {t.source_table: t for t in catalog.tables}
    defs = build_definitions(settings)
    with DagsterInstance.ephemeral() as instance:
        results = materialize_everything(defs, instance)
        assert all(r.success for r in results)
        checks = {(c.asset_key.path[-1], c.check_name): c for r in results for c in r.get_asset_check_evaluations()}
        logs = "\n".join(str(event) for r in results for event in instance.all_logs(r.run_id))

    # The asset's column schema in the UI says where each column comes from.
    schema = materializations(results, "sakila_t", "customer")[-1].metadata["dagster/column_schema"].value
    origins = {column.name: column.description for column in schema.columns}
    assert origins["email"].endswith("masked: hash") and origins["synced_at"] == "derived: now()", origins
    assert origins["customer_id"].startswith("MySQL smallint(5) unsigned → PostgreSQL integer")
    assert origins["first_name"].endswith("masked: redact")

    # The user's failing check is red with its failure cases; every other check passes.
    failing = checks[("payment", "amount_in_range")]
    assert not failing.passed and failing.severity == AssetCheckSeverity.ERROR
    cases = failing.metadata["failure_cases"].value
    assert cases and all(Decimal(c["amount"]) > 5 and "payment_id" in c["key"] for c in cases)
    passed = {k for k, c in checks.items() if c.passed}
    assert set(checks) - passed == {("payment", "amount_in_range")}, [checks[k] for k in set(checks) - passed]
    assert {("payment", "amount_positive"), ("payment", "payment_id_unique"), ("customer", "store_id_isin"),
            ("rental", "last_update_not_null")} <= passed

    with pg_connection(settings.postgres_url) as connection:
        columns = {(t, c) for t, c in connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'sakila_t'")}
        dump = "\n".join(row[0] for table in plans.values() for row in connection.execute(
            f"SELECT t::text FROM {table.target} t"))
        dump += "\n".join(str(row) for row in connection.execute("SELECT * FROM mysql_pg_assets.rejects"))
        customers = dict(connection.execute("SELECT customer_id, email FROM sakila_t.customer").fetchall())
        payments = connection.execute("SELECT amount, amount_cents, pricey, synced_at, source_db "
                                      "FROM sakila_t.payment").fetchall()
        rentals = connection.execute("SELECT rental_date, return_date, days_out FROM sakila_t.rental").fetchall()

    # Excluded columns never reach PostgreSQL; masked values appear nowhere: not in a table, a reject, a
    # log line, a piece of metadata or an alert.
    assert ("staff", "password") not in columns and ("staff", "picture") not in columns
    secrets = _secrets(settings.mysql_url)
    assert len(secrets) > 500
    for where, text in (("PostgreSQL", dump), ("Dagster's events", logs), ("the logs", caplog.text)):
        leaked = [s for s in secrets if len(s) > 4 and s in text]
        assert not leaked, (where, leaked[:3])

    # Hashed: every email is the salted hash of MySQL's, the same on both sides.
    with mysql_connection(settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT customer_id, email FROM {mysql_qualified(sakila_source.database, 'customer')} "
                    "WHERE store_id = 1 AND active = 1")
        expected = {key: hashlib.sha256((SALT + email).encode()).hexdigest() for key, email in cur.fetchall()}
    assert customers == expected

    # Filtered tables hold exactly MySQL's rows under the filter; derived and Python columns hold their values.
    assert len(payments) == mysql_row_count(settings.mysql_url, plans["payment"]) < 16049
    assert all(cents == int(amount * 100) and pricey == (amount > 5) for amount, cents, pricey, _, _ in payments)
    assert len({synced for *_, synced, _ in payments}) == 1 and {db for *_, db in payments} == {sakila_source.database}
    assert all(days == (None if back is None else (back - out).days) for out, back, days in rentals)
    for table in plans.values():
        parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
        assert parity.equal, (table.source_label, parity.mysql_rows, parity.postgres_rows, parity.differences)

    # A row changed so that the filter no longer takes it leaves PostgreSQL with the next incremental load.
    with mysql_connection(settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute(f"UPDATE {mysql_qualified(sakila_source.database, 'customer')} SET store_id = 2 "
                    "WHERE customer_id = 1")
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in materialize_everything(defs, instance))
    with pg_connection(settings.postgres_url) as connection:
        gone = connection.execute(f"SELECT count(*) FROM sakila_t.customer WHERE {pg_ident('customer_id')} = 1")
        assert gone.fetchone()[0] == 0
    parity = compare_rows(settings.mysql_url, settings.postgres_url, plans["customer"])
    assert parity.equal, parity.differences


def test_a_mask_or_filter_added_later_rewrites_every_row(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Values loaded before a mask existed must not stay behind, even for an incremental table whose rows did
    not change; rows a new filter leaves out leave PostgreSQL. The spec change is a migration that reloads."""
    source = make_mysql_database("transform_change")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(80), tenant INT,"
                    " updated_at DATETIME NOT NULL)")
        cur.executemany("INSERT INTO people VALUES (%s, %s, %s, '2025-01-01' + INTERVAL %s MINUTE)",
                        [(i, f"person{i}@example.org", i % 2, i) for i in range(1, 41)])
    table = {"cursor_column": "updated_at"}
    spec_path = tmp_path / "sync.yaml"
    settings = Settings(mysql_url=source, postgres_url=make_pg_database("transform_change"), sync_config=spec_path)
    for name, value in (("MYSQL_URL", source.secret), ("POSTGRES_URL", settings.postgres_url.secret),
                        ("SYNC_CONFIG", str(spec_path)), ("MPA_MASK_SALT", SALT)):
        monkeypatch.setenv(name, value)

    def load(spec_table: dict) -> list[tuple]:
        write_spec(spec_path, {"source": {"database": source.database}, "target": {"schema": "people"},
                               "tables": {"people": spec_table}})
        with DagsterInstance.ephemeral() as instance:
            assert all(r.success for r in materialize_everything(build_definitions(settings), instance))
        with pg_connection(settings.postgres_url) as connection:
            return connection.execute("SELECT id, email FROM people.people ORDER BY id").fetchall()

    assert load(table)[0] == (1, "person1@example.org")
    # An incremental load would read only the newest row: the mask (of the same type) must still reach every row.
    masked_email = {"email": {"mask": {"method": "truncate", "length": 7}}}
    rows = load({**table, "columns": masked_email, "filter": "tenant = 1"})
    assert [key for key, _ in rows] == list(range(1, 41, 2))
    assert all(email == f"person{key}@example.org"[:7] for key, email in rows)
    with pg_connection(settings.postgres_url) as connection:
        changes = connection.execute("SELECT changes::text FROM mysql_pg_assets.schema_changes").fetchall()
        note = connection.execute("SELECT col_description('people.people'::regclass, 2)").fetchone()[0]
    assert any("masked: truncate 7" in c and "rows where tenant = 1" in c for (c,) in changes), changes
    assert note == "mysql-pg-assets: masked: truncate 7"
    # And back: the filter taken away brings the rows it left out; the mask taken away, MySQL's values.
    assert len(load({**table, "columns": masked_email})) == 40
    assert load(table)[1] == (2, "person2@example.org")


def test_a_bad_regular_expression_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="not a regular expression"):
        table_plan(expect=[{"column": "v", "str_matches": "([a-z"}])
