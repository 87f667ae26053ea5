"""The user's transforms of one table, planned: columns left out or masked, derived and Python-added
columns, the row filter and the user's checks, resolved against the table's MySQL columns.

Everything is decided here, at spec load, so a mistake is an error naming the spec key before any
row moves, and the PostgreSQL table (with its derived columns and their types) is known before the
first row. The rules, and why:

- A key, cursor or partition column cannot be excluded or masked: the load merges, pages and
  partitions on MySQL's values, and the checks read rows back by key.
- Masks that break uniqueness (``null``, ``redact``, ``truncate``) drop MySQL's indexes over the
  column; ``hash`` keeps them (equal values stay equal, different ones differ). A masked column
  loses its default and ENUM CHECK, which would show the values it hides.
- ``options.columns`` globs, ``options.derived`` and ``options.expect`` apply to every table that has
  the columns they name; a table's own entries win over them and must name columns it has.
- A row filter is per table only: a default filter that skipped the tables without its columns
  would sync rows its author meant to leave out.
"""

from __future__ import annotations

import fnmatch
from dataclasses import replace

import polars as pl

from mysql_pg_assets.core.sql import mysql_ident
from mysql_pg_assets.sync.catalog.casting import CastRule, MySQLColumn
from mysql_pg_assets.sync.catalog.plans import COMPUTED, ColumnPlan, TablePlan
from mysql_pg_assets.sync.expressions import (
    ExpressionError,
    expression_columns,
    expression_dtype,
    filter_columns,
    mysql_condition,
    pg_type_of,
    polars_expression,
)
from mysql_pg_assets.sync.spec import (
    ColumnMasking,
    Derived,
    Expectation,
    Options,
    SpecError,
    TableOverride,
)

# Kinds of value a hash, redaction or truncation reads as text, the same on both sides.
_TEXT_MASKABLE = frozenset({"string", "integer", "decimal", "json"})
_COMPUTED_RULE = CastRule("computed", frozenset(), lambda _column: "text", kind="computed")
_BUILT_IN_CHECKS = frozenset({"rows_valid", "parity", "table_row_count_parity", "schema_conforms"})
# What an expression sees for the load functions when the plan infers a derived column's type.
_EXAMPLE_LOAD = {"now": pl.lit(None, dtype=pl.Datetime("us", "UTC")), "today": pl.lit(None, dtype=pl.Date),
                 "source_database": "", "source_table": ""}


def _masking(name: str, override: TableOverride, options: Options) -> ColumnMasking | None:
    own = override.columns.get(name)
    if own is not None and (own.exclude or own.mask is not None):
        return own
    return next((m for pattern, m in options.columns.items() if fnmatch.fnmatchcase(name, pattern)), None)


def _protected(plan: TablePlan) -> dict[str, str]:
    """Target column name → why it cannot be excluded or masked."""
    why = {name: "the primary key" for name in plan.primary_key}
    if plan.cursor_column:
        why[plan.cursor_column] = "the cursor column"
    if plan.partition is not None:
        why[plan.partition.column] = "the partition column"
    return why


def _masked_column(column: ColumnPlan, masking: ColumnMasking, where: str) -> ColumnPlan:
    mask = masking.mask
    assert mask is not None
    if mask.method != "null" and column.rule.kind not in _TEXT_MASKABLE:
        raise SpecError(f"{where}.columns.{column.source.name}.mask: {mask.method} reads the value as text, which a "
                        f"{column.source.column_type} column is not the same on both sides; use null or exclude")
    pg_type = column.pg_type
    if mask.method in ("hash", "redact") or (mask.method == "truncate" and column.rule.kind != "string"):
        pg_type = "text"
    return replace(column, mask=mask, pg_type=pg_type, default_sql=None, allowed_values=None)


def _masked_and_kept(plan: TablePlan, override: TableOverride, options: Options, where: str) -> TablePlan:
    protected = _protected(plan)
    kept, hidden = [], set()
    for column in plan.columns:
        masking = _masking(column.source.name, override, options)
        if masking is None:
            kept.append(column)
            continue
        if column.target_name in protected:
            raise SpecError(f"{where}.columns.{column.source.name}: {protected[column.target_name]} cannot be "
                            f"{'excluded' if masking.exclude else 'masked'}")
        if masking.exclude:
            hidden.add(column.target_name)
            continue
        kept.append(_masked_column(column, masking, where))
        if kept[-1].mask.method != "hash":
            hidden.add(column.target_name)
    indexes = tuple(i for i in plan.indexes if not hidden.intersection(i.columns))
    return replace(plan, columns=tuple(kept), indexes=indexes)


def _column_values(plan: TablePlan) -> dict[str, pl.Expr]:
    """Each column, by the name the spec uses (MySQL's, or the derived name), as an empty typed value."""
    return {c.source.name: pl.lit(None, dtype=expression_dtype(c.pg_type)) for c in plan.columns}


def _derived_column(name: str, derived: Derived, plan: TablePlan, where: str) -> ColumnPlan:
    try:
        expression = polars_expression(derived.expression, _column_values(plan), _EXAMPLE_LOAD)
        dtype = pl.select(expression.alias("v")).schema["v"]
    except ExpressionError as exc:
        raise SpecError(f"{where}.derived.{name}: {exc}") from None
    except pl.exceptions.PolarsError as exc:
        raise SpecError(f"{where}.derived.{name}: {derived.expression!r} cannot be computed: "
                        f"{str(exc).splitlines()[0]}") from None
    pg_type = derived.pg_type or pg_type_of(dtype)
    if pg_type is None:
        raise SpecError(f"{where}.derived.{name}: {derived.expression!r} gives {dtype}; say which PostgreSQL type "
                        f"it is with pg_type")
    source = MySQLColumn(name=name, position=0, data_type=COMPUTED, column_type=COMPUTED, nullable=True)
    return ColumnPlan(source=source, target_name=name, pg_type=pg_type, rule=_COMPUTED_RULE,
                      expression=derived.expression)


def _with_derived(plan: TablePlan, override: TableOverride, options: Options, where: str) -> TablePlan:
    columns = list(plan.columns)
    known = {c.source.name for c in columns}
    wanted = {**{n: d for n, d in options.derived.items() if expression_columns(d.expression) <= known},
              **override.derived}
    for name, derived in wanted.items():
        taken = {c.target_name for c in columns} | {c.source.name for c in columns}
        if name in taken:
            raise SpecError(f"{where}.derived.{name}: the table already has a column {name!r}")
        columns.append(_derived_column(name, derived, replace(plan, columns=tuple(columns)), where))
    return replace(plan, columns=tuple(columns))


def _with_python(plan: TablePlan, override: TableOverride, where: str) -> TablePlan:
    transform = override.transform
    if transform is None:
        return plan
    names = {c.source.name for c in plan.columns}
    protected = _protected(plan)
    columns = []
    for column in plan.columns:
        if column.source.name in transform.modifies:
            if column.target_name in protected:
                raise SpecError(f"{where}.transform.modifies: {protected[column.target_name]} cannot be changed")
            column = replace(column, python=transform.function)
        columns.append(column)
    for name in transform.modifies:
        if name not in names:
            raise SpecError(f"{where}.transform.modifies: no column {name!r}")
    for name, pg_type in transform.columns.items():
        if name in names:
            raise SpecError(f"{where}.transform.columns.{name}: the table already has it (list it in modifies)")
        source = MySQLColumn(name=name, position=0, data_type=COMPUTED, column_type=COMPUTED, nullable=True)
        columns.append(ColumnPlan(source=source, target_name=name, pg_type=pg_type, rule=_COMPUTED_RULE,
                                  python=transform.function))
    return replace(plan, columns=tuple(columns), transform=transform)


def _check_expectation(expectation: Expectation, plan: TablePlan, where: str) -> None:
    """What would fail at the first batch fails here: a regular expression that is not one, or not on text;
    an expression the language refuses or polars cannot compute on the columns' types."""
    name = expectation.check_name
    if expectation.str_matches is not None:
        kind = next(c.pg_type for c in plan.columns if c.source.name == expectation.column)
        if expression_dtype(kind) != pl.String:
            raise SpecError(f"{where}.expect.{name}: str_matches needs a text column; {expectation.column} is {kind}")
        try:
            pl.select(pl.lit("").str.contains(expectation.str_matches))
        except pl.exceptions.PolarsError as exc:
            raise SpecError(f"{where}.expect.{name}: not a regular expression: {str(exc).splitlines()[0]}") from None
    if expectation.expression:
        try:
            pl.select(polars_expression(expectation.expression, _column_values(plan), _EXAMPLE_LOAD).alias("v"))
        except (ExpressionError, pl.exceptions.PolarsError) as exc:
            raise SpecError(f"{where}.expect.{name}: {str(exc).splitlines()[0]}") from None


def _expectations(plan: TablePlan, override: TableOverride, options: Options, where: str) -> tuple[Expectation, ...]:
    names = {c.source.name for c in plan.columns}

    def columns_of(expectation: Expectation) -> set[str]:
        return expression_columns(expectation.expression) if expectation.expression else {expectation.column or ""}

    chosen = [e for e in options.expect if columns_of(e) <= names] + list(override.expect)
    seen: set[str] = set()
    for expectation in chosen:
        name = expectation.check_name
        if name in seen or name in _BUILT_IN_CHECKS:
            raise SpecError(f"{where}.expect: two checks would be named {name!r} (give one a name:)")
        seen.add(name)
        missing = columns_of(expectation) - names
        if missing:
            raise SpecError(f"{where}.expect.{name}: no column {', '.join(sorted(missing))} in the table")
        _check_expectation(expectation, plan, where)
    return tuple(chosen)


def _row_filter(plan: TablePlan, override: TableOverride, mysql_columns: list[MySQLColumn], where: str) -> TablePlan:
    if override.filter is None:
        return plan
    try:  # the filter may name any of MySQL's columns, even one left out of PostgreSQL
        rendered = mysql_condition(override.filter, {c.name: mysql_ident(c.name) for c in mysql_columns})
    except ExpressionError as exc:
        raise SpecError(f"{where}.filter: {exc}") from None
    if not filter_columns(override.filter):
        raise SpecError(f"{where}.filter: {override.filter!r} names no column")
    return replace(plan, row_filter=override.filter, filter_sql=rendered)


def apply_transforms(plan: TablePlan, override: TableOverride, options: Options,
                     mysql_columns: list[MySQLColumn]) -> TablePlan:
    """The plan with the user's transforms of the table (see the module docstring)."""
    where = f"tables.{plan.source_table}"
    plan = _masked_and_kept(plan, override, options, where)
    plan = _with_derived(plan, override, options, where)
    plan = _with_python(plan, override, where)
    plan = _row_filter(plan, override, mysql_columns, where)
    return replace(plan, expectations=_expectations(plan, override, options, where))
