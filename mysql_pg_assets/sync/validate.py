"""Validate: a pandera (polars) schema generated from the mapping runs on every batch.

Rows that fail go to the reject table, with their key, the column, the offending value and the
reason; the rest of the batch loads. The schema holds what PostgreSQL would refuse or what
MySQL should never have let in:

- nullability: a NULL in a NOT NULL column (typically a zero date made NULL);
- ENUM values: outside strict mode MySQL stores an invalid ENUM value as '' (index 0), which the
  extract flags; the flag, not the member list, decides, since information_schema cannot show
  members beyond the BMP;
- integer ranges of the MySQL type, so the PostgreSQL type chosen always holds the value;
- JSON with the escape ``\\u0000``, which ``jsonb`` cannot store.

The same schema is what later asset checks run.

The user's own checks (``expect`` in the spec) are pandera checks too (its built-ins ``in_range``,
``str_matches``, ``isin``, ``notin``, nullability, and a DataFrame check for an expression), run on the
rows that passed, batch by batch: a row that fails one is still loaded (it is MySQL's data), counted,
and shown with its key in that check's failure cases; a NULL passes every check but ``not_null`` (as
a SQL CHECK does). ``unique`` is a property of the whole table, so it is counted in PostgreSQL after
the load (``checks.parity``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pandera.errors
import pandera.polars as pa
import polars as pl

from mysql_pg_assets.sync.catalog.plans import (
    ColumnPlan,
    TablePlan,
    converted_flag_name,
    invalid_flag_name,
    staging_name,
)
from mysql_pg_assets.sync.expressions import expression_columns, polars_expression
from mysql_pg_assets.sync.spec import Expectation
from mysql_pg_assets.sync.transform import Conversions, LoadContext, typed_values

REJECT_SCHEMA = {"primary_key": pl.String, "column_name": pl.String, "value": pl.String, "reason": pl.String}

_INTEGER_RANGES = {
    ("tinyint", False): (-(2**7), 2**7 - 1), ("tinyint", True): (0, 2**8 - 1),
    ("smallint", False): (-(2**15), 2**15 - 1), ("smallint", True): (0, 2**16 - 1),
    ("mediumint", False): (-(2**23), 2**23 - 1), ("mediumint", True): (0, 2**24 - 1),
    ("int", False): (-(2**31), 2**31 - 1), ("int", True): (0, 2**32 - 1),
    ("integer", False): (-(2**31), 2**31 - 1), ("integer", True): (0, 2**32 - 1),
    ("bigint", False): (-(2**63), 2**63 - 1),
}
_INTEGER_DTYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)

_REASONS = {
    "not_nullable": "NULL in a NOT NULL column",
    "in_range": "outside the MySQL type's range",
}


class ValidationFailed(RuntimeError):
    """The batch does not have the shape the mapping promises: a defect, not bad data."""


# \u0000 escaped in JSON text: an odd run of backslashes before u0000 (an even one is a backslash).
_JSON_NUL_ESCAPE = r"(^|[^\\])(\\\\)*\\u0000"
# What that escape cannot match without: a literal search, a tenth of the regex's cost on every JSON value.
_JSON_NUL_TEXT = "\\u0000"


def _predicates(index: int, column: ColumnPlan, quick: bool = False) -> list[tuple[str, pl.Expr]]:
    """(check name, expression true where a value passes) for one column, nulls passing. ``quick``: the same
    checks, cheaper but stricter where that pays (a JSON value with the text \\u0000 fails, escaped or not),
    for :func:`passes_all` to ask whether the exact checks need to run at all."""
    source, value = column.source, pl.col(staging_name(index))
    predicates: list[tuple[str, pl.Expr]] = []
    if column.rule.invalid:
        predicates.append((column.rule.invalid_as, ~pl.col(invalid_flag_name(index))))
    if column.expression is not None:
        predicates.append((f"derived {column.target_name} = {column.expression}: not a {column.pg_type}",
                           ~pl.col(invalid_flag_name(index))))
    elif column.python is not None:
        predicates.append((f"transform {column.python}: {column.target_name} not a {column.pg_type}",
                           ~pl.col(invalid_flag_name(index))))
    if column.pg_type == "jsonb":
        nul = value.str.contains(_JSON_NUL_TEXT, literal=True) if quick else value.str.contains(_JSON_NUL_ESCAPE)
        predicates.append(("jsonb cannot hold \\u0000", ~nul))
    bounds = _INTEGER_RANGES.get((source.data_type, source.unsigned))
    if bounds and column.pg_type in ("smallint", "integer", "bigint"):
        predicates.append((f"in_range({bounds[0]}, {bounds[1]})", value.is_between(*bounds)))
    return [(name, expression.fill_null(True)) for name, expression in predicates]


def _check(name: str, expression: pl.Expr) -> pa.Check:
    return pa.Check(lambda data: data.lazyframe.select(expression), name=name)


def schema_for(table: TablePlan) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {staging_name(i): pa.Column(None, nullable=c.nullable, checks=[_check(*p) for p in _predicates(i, c)])
         for i, c in enumerate(table.columns)},
        name=table.target_label,
    )


@dataclass
class Failures:
    """Rows that failed one of the user's checks: how many, and the first few with their key and values."""

    rows: int = 0
    cases: list[dict[str, object]] = field(default_factory=list)

    def add(self, other: Failures, keep: int = 20) -> None:
        self.rows += other.rows
        self.cases += other.cases[: max(0, keep - len(self.cases))]


@dataclass(frozen=True)
class ValidatedBatch:
    rows: pl.DataFrame  # the staging columns of the rows that passed
    rejects: pl.DataFrame  # one row per failed value: REJECT_SCHEMA
    rejected_keys: pl.DataFrame  # the key columns (staging names) of the rejected rows
    rejected_rows: int
    conversions: Conversions
    # In a load of several partitions: rows read and rows rejected, per partition of the range.
    read_by_partition: Counter[int] = field(default_factory=Counter)
    rejected_by_partition: Counter[int] = field(default_factory=Counter)
    expectations: dict[str, Failures] = field(default_factory=dict)  # the user's checks that some row failed


def _reason(check: str) -> str:
    name = check.split("(")[0]
    return _REASONS.get(name, check)


def passes_all(table: TablePlan) -> pl.Expr:
    """One boolean for a whole batch: every value passes every check of the schema. It may be false for a
    batch that does pass (``_predicates``' quick form): the schema then runs, and finds no failure."""
    expressions = [pl.lit(True)]
    for i, column in enumerate(table.columns):
        if not column.nullable:
            expressions.append(pl.col(staging_name(i)).is_not_null())
        expressions += [expression for _, expression in _predicates(i, column, quick=True)]
    return pl.all_horizontal(expressions).all()


def validate(
    frame: pl.DataFrame, conversions: Conversions, table: TablePlan, schema: pa.DataFrameSchema,
    user_checks: dict[str, pa.DataFrameSchema] | None = None,
) -> ValidatedBatch:
    """The batch's rows split into those that load and the rejects; the spec's own checks (``user_checks``,
    from :func:`expectation_schemas`) run on the former."""
    batch = _validated(frame, conversions, table, schema)
    if not table.expectations:
        return batch
    if user_checks is None:
        user_checks = expectation_schemas(table, LoadContext.of(table))
    return replace(batch, expectations=check_expectations(batch.rows, table, user_checks))


def _validated(
    frame: pl.DataFrame, conversions: Conversions, table: TablePlan, schema: pa.DataFrameSchema
) -> ValidatedBatch:
    staging = [staging_name(i) for i in range(len(table.columns))]
    if frame.select(passes_all(table)).item():  # the usual case: no need for pandera's failure cases
        return ValidatedBatch(frame.select(staging), pl.DataFrame(schema=REJECT_SCHEMA),
                              frame.select(table.key_staging_names).clear(), 0, conversions)
    key_names = table.key_staging_names
    try:
        schema.validate(frame, lazy=True)
        failures = None
    except pandera.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    if failures is None or failures.height == 0:
        return ValidatedBatch(frame.select(staging), pl.DataFrame(schema=REJECT_SCHEMA),
                              frame.select(key_names).clear(), 0, conversions)
    if failures["index"].null_count():
        raise ValidationFailed(f"{table.target_label}: {failures.filter(pl.col('index').is_null()).to_dicts()}")

    numbered = frame.with_row_index("row")
    bad_rows = failures["index"].unique().cast(pl.UInt32)
    targets = {staging_name(i): c.target_name for i, c in enumerate(table.columns)}
    keys = numbered.filter(pl.col("row").is_in(bad_rows.implode())).select(
        "row",
        pl.struct(pl.col(k).alias(targets[k]) for k in key_names).struct.json_encode().alias("primary_key")
        if key_names else pl.lit(None, dtype=pl.String).alias("primary_key"),
        *(pl.col(converted_flag_name(i)).alias(f"zero{i}") for i in range(len(table.columns))
          if converted_flag_name(i) in frame.columns),
    )
    rejects = (
        failures.with_columns(pl.col("index").cast(pl.UInt32).alias("row"))
        .join(keys, on="row", how="left")
        .select(
            pl.col("primary_key"),
            pl.col("column").replace_strict(targets, default=pl.col("column")).alias("column_name"),
            pl.col("failure_case").fill_null("NULL").alias("value"),
            pl.col("check").map_elements(_reason, return_dtype=pl.String).alias("reason"),
            pl.col("column").alias("staging_column"),
            pl.col("row"),
        )
    )
    for i in range(len(table.columns)):
        if f"zero{i}" in keys.columns:
            zero_rows = keys.filter(pl.col(f"zero{i}"))["row"].implode()
            rejects = rejects.with_columns(
                pl.when((pl.col("staging_column") == staging_name(i)) & pl.col("row").is_in(zero_rows))
                .then(pl.lit("zero date")).otherwise(pl.col("value")).alias("value")
            )
    good = numbered.filter(~pl.col("row").is_in(bad_rows.implode()))
    return ValidatedBatch(
        rows=good.select(staging),
        rejects=rejects.select(list(REJECT_SCHEMA)).cast(REJECT_SCHEMA),
        rejected_keys=numbered.filter(pl.col("row").is_in(bad_rows.implode())).select(key_names),
        rejected_rows=bad_rows.len(),
        conversions=conversions,
    )


# ---------------------------------------------------------------- the user's checks


def _pandera_check(expectation: Expectation) -> pa.Check | None:
    """The pandera built-in check of a column expectation (None: not_null, which is the column's nullability)."""
    if expectation.in_range is not None:
        low, high = expectation.in_range
        if low is not None and high is not None:
            return pa.Check.in_range(low, high)
        return pa.Check.ge(low) if low is not None else pa.Check.le(high)
    if expectation.str_matches is not None:
        return pa.Check.str_matches(expectation.str_matches)
    if expectation.isin is not None:
        return pa.Check.isin(list(expectation.isin))
    if expectation.notin is not None:
        return pa.Check.notin(list(expectation.notin))
    return None


def expectation_schemas(table: TablePlan, context: LoadContext) -> dict[str, pa.DataFrameSchema]:
    """A pandera schema per check of the spec's (``unique`` aside: PostgreSQL counts it), over the batch's
    columns named as in the spec and typed as their values; built once per load (``now()`` is the load's)."""
    names = {c.source.name: pl.col(c.source.name) for c in table.columns}
    schemas = {}
    for expectation in table.expectations:
        if expectation.unique:
            continue
        if expectation.expression:
            condition = polars_expression(expectation.expression, names, context.functions).fill_null(True)
            schemas[expectation.check_name] = pa.DataFrameSchema(checks=[pa.Check(
                lambda data, condition=condition: data.lazyframe.select(condition), name=expectation.check_name)])
            continue
        check = _pandera_check(expectation)
        schemas[expectation.check_name] = pa.DataFrameSchema({expectation.column or "": pa.Column(
            None, nullable=not expectation.not_null, checks=[check] if check else [])})
    return schemas


def _case_columns(expectation: Expectation) -> list[str]:
    return sorted(expression_columns(expectation.expression)) if expectation.expression else [expectation.column or ""]


def check_expectations(rows: pl.DataFrame, table: TablePlan, schemas: dict[str, pa.DataFrameSchema],
                       keep: int = 20) -> dict[str, Failures]:
    """Each of the spec's checks some row of ``rows`` (staging columns) fails: how many rows, the first ``keep``
    with their key and the values the check read (NULL passes all but not_null, as a SQL CHECK does)."""
    if not schemas or rows.height == 0:
        return {}
    named = rows.select(value.alias(name) for name, value in typed_values(rows, table, len(table.columns)).items())
    targets = {c.source.name: c.target_name for c in table.columns}
    keys = [c.source.name for c in table.key_columns]
    found = {}
    for expectation in table.expectations:
        schema = schemas.get(expectation.check_name)
        if schema is None:
            continue
        try:
            schema.validate(named, lazy=True)
            continue
        except pandera.errors.SchemaErrors as errors:
            failing = errors.failure_cases["index"].drop_nulls().unique(maintain_order=True).cast(pl.UInt32)
        shown = _case_columns(expectation)
        cases = named.with_row_index("_row").filter(pl.col("_row").is_in(failing.head(keep).implode()))
        found[expectation.check_name] = Failures(failing.len(), [
            {"key": {targets[k]: _text(row[k]) for k in keys}, **{targets[c]: _text(row[c]) for c in shown}}
            for row in cases.iter_rows(named=True)])
    return found


def _text(value: object) -> str | None:
    return None if value is None else str(value)[:200]
