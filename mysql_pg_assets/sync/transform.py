"""Transform: apply each column's casting rule to a batch with polars, counting what changed, then the
user's transforms (masks, derived columns, a Python function), in that order.

The output frame has the staging columns ``c0 … cN`` in the plan's order, typed so that the
load can COPY them and PostgreSQL can cast each to its target type, plus the ``converted<i>``
and ``invalid<i>`` flags the extract read beside the values, which validation uses. A derived or
Python-added value that cannot be its column's type is NULL with its ``invalid<i>`` flag set: the
row is rejected, the reason naming the expression or the function.

Masks (``hash``: SHA-256 of the salt then the value's text, in hex; ``null``; ``redact``: the text
'[redacted]'; ``truncate``: the first N characters) run before anything else sees the values, so no
later step, reject, log or check can show what they hide; NULL stays NULL. The salt comes from the
environment (``MPA_MASK_SALT`` unless the mask names another variable) and is never shown. The same
value hashes to the same text in every table and every load, so joins on a hashed column still work.

Conversions are counted per column and kind, never silent:

- ``zero date → NULL``: MySQL zero dates, made NULL by the read expression;
- ``NUL bytes removed``: PostgreSQL text cannot hold U+0000, so it is removed from text values.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import polars_hash  # noqa: F401 (registers the chash namespace the hash mask uses)
import pyarrow as pa

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.sync.catalog.casting import converted_is_null
from mysql_pg_assets.sync.catalog.dates import reads_packed, unpacked, unpacked_valid
from mysql_pg_assets.sync.catalog.plans import (
    ColumnPlan,
    TablePlan,
    converted_flag_name,
    invalid_flag_name,
    staging_name,
)
from mysql_pg_assets.sync.expressions import expression_dtype, polars_expression, value_dtype
from mysql_pg_assets.sync.spec import Mask

NUL_REMOVED = "NUL bytes removed"
REDACTED = "[redacted]"


class TransformError(ActionableError, RuntimeError):
    """A user's transform cannot run: a salt not set, a Python function missing or breaking its promise."""


@dataclass(frozen=True)
class LoadContext:
    """What a load's transforms may know besides the rows: the values of now(), source_table() and the rest."""

    source_database: str
    source_table: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str | None = None
    partition: str | None = None

    @property
    def functions(self) -> dict[str, object]:
        return {"now": self.started_at, "today": self.started_at.date(), "source_database": self.source_database,
                "source_table": self.source_table}

    @classmethod
    def of(cls, table: TablePlan, run_id: str | None = None, partition: str | None = None) -> LoadContext:
        return cls(table.source_database, table.source_table, run_id=run_id, partition=partition)


@dataclass
class Conversions:
    """How many values each conversion changed, keyed by (target column, conversion)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: Conversions) -> None:
        self.counts.update(other.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metadata(self) -> dict[str, int]:
        return {f"{column}: {kind}": count for (column, kind), count in sorted(self.counts.items())}


def _strips_nul(frame: pl.DataFrame, name: str, pg_type: str) -> bool:
    return frame.schema[name] == pl.String and pg_type != "bytea"


def _may_hold_nul(column: pa.Array | pa.ChunkedArray) -> bool:
    """False when no value of ``column`` holds a NUL byte, told by one scan (memchr) of each chunk's character
    data: counting value by value costs about 25 ns a value, most of it for short values, where this costs
    next to nothing. True when there is a NUL there, which may lie outside the values (a slice, a null's
    bytes), or for a layout not scanned here: then the values are counted one by one."""
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else (column,):
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return True
        data = chunk.buffers()[2]
        if data is not None and data.to_pybytes().find(b"\x00") >= 0:
            return True
    return False


def _counted(frame: pl.DataFrame, table: TablePlan, batch: pa.RecordBatch | pa.Table) -> Conversions:
    """What the batch's values need converted, per column and kind: zero dates (flagged by the read, or NULL in
    a NOT NULL column) and text with NUL bytes."""
    conversions, expressions = Conversions(), []
    for i, column in table.read_columns:
        value, flag = pl.col(staging_name(i)), converted_flag_name(i)
        if flag in frame.columns:
            expressions.append(pl.col(flag).cast(pl.Boolean).sum().alias(f"{i}\t{column.rule.converted_as}"))
        elif converted_is_null(column.rule, column.source):  # the flag MySQL was not asked for (see extract)
            expressions.append(value.is_null().sum().alias(f"{i}\t{column.rule.converted_as}"))
        if _strips_nul(frame, staging_name(i), column.pg_type) and _may_hold_nul(batch.column(staging_name(i))):
            expressions.append(value.str.contains("\x00", literal=True).sum().alias(f"{i}\t{NUL_REMOVED}"))
    if expressions:
        for key, count in frame.select(expressions).row(0, named=True).items():
            if count:
                index, kind = key.split("\t")
                conversions.counts[(table.columns[int(index)].target_name, kind)] += int(count)
    return conversions


def _unpacked_dates(frame: pl.DataFrame, table: TablePlan) -> pl.DataFrame:
    """Dates the extract read as integers (``catalog.dates``) made dates again, each with the flag of the zero or
    invalid dates made NULL, as MySQL would have set it. A batch of valid dates only (nearly every batch) takes
    polars' own constructor."""
    packed = [(i, column.rule.kind != "date") for i, column in table.read_columns
              if reads_packed(column.rule, column.source) and frame.schema.get(staging_name(i)) == pl.Int64]
    if not packed:
        return frame
    try:
        return frame.with_columns([unpacked_valid(pl.col(staging_name(i)), t).alias(staging_name(i)) for i, t in packed]
                                  + [pl.lit(False).alias(converted_flag_name(i)) for i, _ in packed])
    except pl.exceptions.ComputeError:  # a zero or invalid date in the batch
        values = [(i, unpacked(pl.col(staging_name(i)), t)) for i, t in packed]
        return frame.with_columns([value.alias(staging_name(i)) for i, value in values] + [
            (pl.col(staging_name(i)).is_not_null() & value.is_null()).alias(converted_flag_name(i))
            for i, value in values])


def to_staging(batch: pa.RecordBatch | pa.Table, table: TablePlan,
               context: LoadContext | None = None) -> tuple[pl.DataFrame, Conversions]:
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    frame = _unpacked_dates(frame, table)
    conversions = _counted(frame, table, batch)
    expressions: list[pl.Expr] = []
    for i, column in table.read_columns:
        name, flag = staging_name(i), converted_flag_name(i)
        value = pl.col(name)
        if flag in frame.columns:
            expressions.append(pl.col(flag).cast(pl.Boolean).fill_null(False))
        elif converted_is_null(column.rule, column.source):
            expressions.append(value.is_null().alias(flag))
        if invalid_flag_name(i) in frame.columns:
            expressions.append(pl.col(invalid_flag_name(i)).cast(pl.Boolean).fill_null(False))
        elif column.invalid_is_empty:  # the flag MySQL was not asked for (see extract)
            expressions.append((value == "").fill_null(False).alias(invalid_flag_name(i)))
        if conversions.counts[(column.target_name, NUL_REMOVED)]:  # only then: a copy of every value
            value = value.str.replace_all("\x00", "", literal=True)
        value = column.rule.to_staging(value)
        expressions.append((masked(value, column.mask) if column.mask else value).alias(name))
    staged = frame.select(expressions)
    if len(table.read_columns) < len(table.columns):
        staged = _computed(staged, table, context or LoadContext.of(table))
    return staged, conversions


# ---------------------------------------------------------------- masks


def salt(mask: Mask) -> str:
    value = os.environ.get(mask.salt_env)
    if not value:
        raise TransformError(f"a hash mask needs its salt in the environment variable {mask.salt_env}, which is not "
                             f"set (any secret text; the same salt gives the same hashes, so keep it)")
    return value


def masked(value: pl.Expr, mask: Mask) -> pl.Expr:
    """The mask applied to a column's values (NULL stays NULL)."""
    if mask.method == "null":
        return pl.lit(None).cast(pl.String)
    text = value.cast(pl.String)
    if mask.method == "hash":
        return pl.concat_str([pl.lit(salt(mask)), text]).chash.sha2_256()  # type: ignore[attr-defined]  # polars-hash
    if mask.method == "redact":
        return pl.when(text.is_null()).then(None).otherwise(pl.lit(REDACTED))
    return text.str.head(mask.length or 0)


def masked_value(mask: Mask, value: Any) -> Any:
    """The mask applied to one value as MySQL holds it (for the checks that compare both sides)."""
    if value is None or mask.method == "null":
        return None
    text = str(value).replace("\x00", "")
    if mask.method == "hash":
        return hashlib.sha256((salt(mask) + text).encode()).hexdigest()
    if mask.method == "redact":
        return REDACTED
    return text[: mask.length or 0]


def transforms_ready(tables: list[TablePlan] | tuple[TablePlan, ...]) -> str:
    """What the spec's transforms need before a load, checked (every salt set, every Python function
    importable), and a line saying what they are."""
    masks = [c.mask for t in tables for c in t.columns if c.mask is not None]
    for mask in masks:
        if mask.method == "hash":
            salt(mask)
    functions = {t.transform.function for t in tables if t.transform is not None}
    for path in functions:
        _function(path)
    derived = sum(c.expression is not None for t in tables for c in t.columns)
    filters = sum(t.filter_sql is not None for t in tables)
    checks = sum(len(t.expectations) for t in tables)
    return (f"{len(masks)} masked columns, {derived} derived, {filters} row filters, {len(functions)} Python "
            f"transforms, {checks} checks of the spec's own")


# ---------------------------------------------------------------- derived and Python-added columns


def typed_values(staged: pl.DataFrame, table: TablePlan, upto: int) -> dict[str, pl.Expr]:
    """Each column before position ``upto``, by its spec name, as the value type its PostgreSQL type has."""
    values = {}
    for i, column in enumerate(table.columns[:upto]):
        if staging_name(i) not in staged.schema:
            continue  # added by the Python transform, which has not run yet
        dtype = expression_dtype(column.pg_type)
        value = pl.col(staging_name(i))
        values[column.source.name] = value if staged.schema[staging_name(i)] == dtype else value.cast(
            dtype, strict=False)
    return values


def _as_staged(name: str, value: pl.Expr, column: ColumnPlan, index: int) -> list[pl.Expr]:
    """A computed value cast to its column's type: NULL and flagged invalid where it cannot be."""
    dtype = value_dtype(column.pg_type)
    cast = value.cast(dtype, strict=False)  # a decimal travels as one too: ADBC COPYs it as numeric
    return [cast.alias(name), (value.is_not_null() & cast.is_null()).alias(invalid_flag_name(index))]


def _computed(staged: pl.DataFrame, table: TablePlan, context: LoadContext) -> pl.DataFrame:
    for i, column in enumerate(table.columns):
        if column.expression is not None:
            value = polars_expression(column.expression, typed_values(staged, table, i), context.functions)
            staged = staged.with_columns(_as_staged(staging_name(i), value, column, i))
    if table.transform is not None:
        staged = _python(staged, table, context)
    return staged


_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def _function(path: str) -> Callable[..., Any]:
    if path not in _FUNCTIONS:
        module, _, name = path.partition(":")
        try:
            _FUNCTIONS[path] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise TransformError(f"transform {path}: cannot import it ({exc})") from None
    return _FUNCTIONS[path]


def _python(staged: pl.DataFrame, table: TablePlan, context: LoadContext) -> pl.DataFrame:
    """The table's Python transform on the batch, its columns named as in the spec and typed as their values."""
    assert table.transform is not None
    path = table.transform.function
    function = _function(path)
    given = staged.select(value.alias(name) for name, value in typed_values(staged, table, len(table.columns)).items())
    takes_context = len(inspect.signature(function).parameters) > 1
    out = function(given, context) if takes_context else function(given)
    out = out.collect() if isinstance(out, pl.LazyFrame) else out
    if not isinstance(out, pl.DataFrame) or out.height != given.height:
        raise TransformError(f"transform {path}: must return a polars frame with the {given.height} rows it was "
                             f"given, in order (it returned {type(out).__name__}"
                             f"{f' of {out.height} rows' if isinstance(out, pl.DataFrame) else ''})")
    changed = [n for n in given.columns if n in out.columns and n not in table.transform.modifies
               and not out[n].equals(given[n], check_dtypes=False, null_equal=True)]
    if changed:
        raise TransformError(f"transform {path}: changed {', '.join(changed)} without listing it in modifies")
    computed = []
    for i, column in enumerate(table.columns):
        if column.python is not None:
            if column.source.name not in out.columns:
                raise TransformError(f"transform {path}: returned no column {column.source.name!r}")
            computed += _as_staged(staging_name(i), pl.lit(out[column.source.name]), column, i)
    return staged.with_columns(computed)


def partitions_of(values: pl.Series, splits: tuple[datetime, ...]) -> pl.Series:
    """Which partition of a range each value is in (0: the first, which also holds NULL and earlier values):
    the number of splits at or before it, as PostgreSQL's ``width_bucket`` counts it in the load."""
    naive = [s.astimezone(UTC).replace(tzinfo=None) if s.tzinfo else s for s in splits]
    if values.dtype == pl.Date:
        values = values.cast(pl.Datetime("us"))
    elif isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone:
        values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    values = values.cast(pl.Datetime("us")).fill_null(datetime.min)
    return pl.Series(naive, dtype=pl.Datetime("us")).search_sorted(values, side="right")


def count_by_partition(frame: pl.DataFrame, column: str, splits: tuple[datetime, ...]) -> Counter[int]:
    if not splits or frame.height == 0:
        return Counter({0: frame.height}) if frame.height else Counter()
    return Counter(partitions_of(frame[column], splits).to_list())


def keys_to_staging(batch: pa.RecordBatch, table: TablePlan) -> pl.DataFrame:
    """The primary-key columns of a keys-only read, typed like the same columns of a full batch."""
    frame = pl.from_arrow(batch)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(
        column.rule.to_staging(pl.col(staging_name(i))).alias(staging_name(i))
        for i, column in enumerate(table.columns) if column.target_name in table.primary_key
    )
