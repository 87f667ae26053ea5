"""What to sync: the ``sync.yaml`` file, validated.

The spec says which MySQL tables to sync and where; everything it leaves out is discovered from
MySQL's ``information_schema`` by :mod:`mysql_pg_assets.sync.catalog.discover`. Unknown keys and wrong values
fail at load time with the file name and the path of the offending key, so a typo never turns
into a silently ignored setting.

Example::

    source:
      database: shop          # default: the database in MYSQL_URL
      parallel_tables: 4      # tables one run loads at once (see defs/assets.py)
    target:
      schema: shop            # PostgreSQL schema the tables land in
    include: ["*"]            # globs over base table names; "*" is every base table
    exclude: ["tmp_*"]
    options:
      naming: keep            # or snake_case
      enum_check: true        # ENUM → text with a CHECK of its values
      indexes: false          # true: also MySQL's unique and secondary indexes
      foreign_keys: false     # true: also foreign keys between synced tables
      casts:                  # per-type overrides, first match wins
        - {match: "tinyint(1)", pg_type: smallint}
      freshness: {warn_after: PT1H, fail_after: PT2H}
      checks:                 # severity error (default) or warn
        rows_valid: {max_reject_rate: 0.001}   # up to 0.1 % rejects only warn
        parity: {sampled_rows: 50}
    tables:
      orders:
        primary_key: [id]     # default: the table's PRIMARY KEY
        partition: {column: ordered_at, granularity: daily, start: 2025-01-01}
        deletes: delete       # or tombstone: keep the row, set _deleted_at
        checks: {rows_valid: {max_reject_rate: 0.05}}
      customers:
        cursor_column: updated_at   # unpartitioned, incremental by high-watermark
        columns:
          coupon_code: {pg_type: text, rename: coupon}
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.sql import PG_NAME_BYTES, pg_type
from mysql_pg_assets.sync import environments

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _fits_postgresql(name: str | None) -> str | None:
    if name is not None and len(name.encode()) > PG_NAME_BYTES:
        raise ValueError(f"{name!r} is longer than PostgreSQL's {PG_NAME_BYTES} bytes")
    return name


PgName = Annotated[NonEmpty, AfterValidator(_fits_postgresql)]
PgType = Annotated[str, AfterValidator(pg_type)]  # a PostgreSQL type name, checked before it reaches DDL or a cast


class SpecError(ActionableError, ValueError):
    """The sync spec is wrong; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MaskMethod = Literal["hash", "null", "redact", "truncate"]


class Mask(_Strict):
    """How a column's values are hidden before they leave the process (see ``sync.transform``)."""

    method: MaskMethod = Field(description="hash: salted SHA-256 in hex; null: NULL; redact: '[redacted]'; "
                                           "truncate: the first ``length`` characters")
    length: int | None = Field(None, ge=0, description="truncate: characters kept")
    salt_env: NonEmpty = Field("MPA_MASK_SALT", description="hash: the environment variable holding the salt")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        return {"method": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _length(self) -> Mask:
        if (self.method == "truncate") != (self.length is not None):
            raise ValueError("length goes with truncate, and truncate needs it")
        return self


class ColumnMasking(_Strict):
    exclude: bool = Field(False, description="never read: the column is left out of PostgreSQL")
    mask: Mask | None = Field(None, description="hash, null, redact or {method: truncate, length: N}")

    @model_validator(mode="before")
    @classmethod
    def _bare_null(cls, data: object) -> object:
        # `mask: null` in YAML is None: a user who wrote the key meant a mask, and the safe reading is NULL.
        if isinstance(data, dict) and "mask" in data and data["mask"] is None:
            return {**data, "mask": "null"}
        return data

    @model_validator(mode="after")
    def _one(self) -> ColumnMasking:
        if self.exclude and self.mask is not None:
            raise ValueError("a column is excluded or masked, not both")
        return self


class ColumnOverride(ColumnMasking):
    pg_type: PgType | None = Field(None, description="PostgreSQL type to use instead of the casting rule's")
    rename: PgName | None = Field(None, description="name of the column in PostgreSQL")


class Derived(_Strict):
    """A column computed from the others, in the expression language of ``sync.expressions``."""

    expression: NonEmpty = Field(description="e.g. upper(email), total - tax, now(), source_database()")
    pg_type: PgType | None = Field(None, description="PostgreSQL type; default: inferred from the expression")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: object) -> object:
        return {"expression": data} if isinstance(data, str) else data


class PythonTransform(_Strict):
    """A function of one batch, for what expressions cannot say: ``fn(frame, context) -> frame``."""

    function: NonEmpty = Field(description="import path, 'package.module:function'")
    columns: dict[PgName, PgType] = Field(default_factory=dict, description="columns it adds, with their "
                                                                            "PostgreSQL types (known before row one)")
    modifies: tuple[NonEmpty, ...] = Field((), description="existing columns whose values it changes")

    @field_validator("function")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(f"{value!r} is not 'package.module:function'")
        return value


_EXPECTATION_KINDS = ("in_range", "str_matches", "isin", "notin", "unique", "not_null", "expression")


class Expectation(_Strict):
    """A check of the user's: one Dagster asset check per expectation, failing rows shown with their key.

    Exactly one of the kinds; all but ``expression`` name a ``column``. Rows that fail are loaded (they
    are MySQL's data); the check shows red (severity error) or yellow (warn) with the failure cases.
    """

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        None, description="the check's name; default: <column>_<kind>")
    column: NonEmpty | None = None
    in_range: tuple[float | None, float | None] | None = Field(None, description="[min, max], inclusive; null: open")
    str_matches: NonEmpty | None = Field(None, description="a regular expression the value must match from its start")
    isin: tuple[str | int | float | bool, ...] | None = None
    notin: tuple[str | int | float | bool, ...] | None = None
    unique: bool = Field(False, description="no two rows of the PostgreSQL table share the value")
    not_null: bool = False
    expression: NonEmpty | None = Field(None, description="true for every row, e.g. 'total >= tax'")
    severity: Severity = "error"

    @property
    def kind(self) -> str:
        return next(k for k in _EXPECTATION_KINDS if getattr(self, k) not in (None, False))

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        return re.sub(r"\W", "_", f"{self.column}_{self.kind}")

    @model_validator(mode="after")
    def _one_kind(self) -> Expectation:
        kinds = [k for k in _EXPECTATION_KINDS if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            raise ValueError(f"one of {', '.join(_EXPECTATION_KINDS)} per expectation (found {kinds or 'none'})")
        if kinds == ["expression"]:
            if self.column is not None or self.name is None:
                raise ValueError("an expression names itself (name:) and no column")
        elif self.column is None:
            raise ValueError(f"{kinds[0]} needs a column")
        return self


class Partitioning(_Strict):
    """Time-window partitions on a DATE, DATETIME or TIMESTAMP column, in UTC."""

    column: NonEmpty
    granularity: Literal["hourly", "daily", "weekly", "monthly"] = "daily"
    start: datetime = Field(description="first partition's start, e.g. 2025-01-01")
    end_offset: int = Field(1, ge=0, description="1 includes the current, still open, period")


class Freshness(_Strict):
    """How stale the table may get before Dagster shows it as such (ISO 8601 or seconds)."""

    fail_after: timedelta = Field(description="e.g. PT2H: failed when the last load is older")
    warn_after: timedelta | None = Field(None, description="e.g. PT1H: warning when the last load is older")


Severity = Literal["error", "warn"]
SchemaChange = Literal["in_place", "blue_green"]
FullReload = Literal["auto", "replace", "merge"]


class CheckSetting(_Strict):
    severity: Severity = Field("error", description="how a failure shows: error (red; a blocking check blocks) or warn")


class RowsValid(CheckSetting):
    max_reject_rate: float = Field(
        0.0, ge=0, le=1, description="share of the rows read that may be rejected with the check only warning; "
                                     "above it, the check fails with its severity")


class Parity(CheckSetting):
    sampled_rows: int = Field(20, ge=1, le=10_000, description="rows drawn at random per load and compared "
                                                               "value by value")


# Checks of earlier versions, and where their settings went: a spec that names one is told.
_MERGED_CHECKS = {
    "reject_rate": "rows_valid (max_reject_rate: the share of rejects that only warns)",
    "row_count_parity": "parity (row counts, checksums and sampled rows in one check)",
    "checksum_parity": "parity (row counts, checksums and sampled rows in one check)",
    "sampled_rows_match": "parity (sampled_rows: the rows compared value by value)",
}


class _ChecksBase(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _merged(cls, data: object) -> object:
        old = [name for name in _MERGED_CHECKS if isinstance(data, dict) and name in data]
        if old:
            raise ValueError("; ".join(f"{name} is now part of {_MERGED_CHECKS[name]}" for name in old))
        return data


class Checks(_ChecksBase):
    """How each asset check's failure shows (and the rejects that only warn)."""

    rows_valid: RowsValid = Field(default_factory=RowsValid)
    parity: Parity = Field(default_factory=Parity)
    table_row_count_parity: CheckSetting = Field(default_factory=CheckSetting)
    schema_conforms: CheckSetting = Field(default_factory=CheckSetting)


class TableChecks(_ChecksBase):
    """Per table: each check given here replaces the one of ``options.checks``."""

    rows_valid: RowsValid | None = None
    parity: Parity | None = None
    table_row_count_parity: CheckSetting | None = None
    schema_conforms: CheckSetting | None = None

    def over(self, defaults: Checks) -> Checks:
        return defaults.model_copy(update={k: v for k, v in self if v is not None})


class TableOverride(_Strict):
    mode: Literal["batch", "cdc"] = Field(
        "batch", description="cdc: a materialization takes a snapshot, then `cli cdc` applies the binlog's changes")
    primary_key: list[NonEmpty] | None = Field(None, min_length=1)
    cursor_column: NonEmpty | None = Field(
        None, description="unpartitioned incremental loads read rows whose cursor is at or past the last load's"
    )
    partition: Partitioning | None = None
    deletes: Literal["delete", "tombstone"] = Field(
        "delete", description="rows gone from MySQL: deleted, or kept with _deleted_at set"
    )
    freshness: Freshness | None = None
    checks: TableChecks = Field(default_factory=TableChecks)
    rename: PgName | None = Field(None, description="name of the table in PostgreSQL")
    columns: dict[str, ColumnOverride] = Field(default_factory=dict)
    visible_columns_only: bool = Field(
        False, description="sync only the columns the MySQL user may read (a column-level grant); "
                           "without it such a table is an error"
    )
    filter: NonEmpty | None = Field(None, description="rows to sync: a MySQL condition, validated and pushed down "
                                                      "into every read (e.g. tenant_id = 7)")
    derived: dict[PgName, Derived] = Field(default_factory=dict, description="columns computed from the others")
    transform: PythonTransform | None = None
    expect: list[Expectation] = Field(default_factory=list, description="the user's own checks")
    schema_change: SchemaChange | None = Field(None, description="how a schema change that reloads the rows "
                                                                 "reaches PostgreSQL; default: options.schema_change")
    full_reload: FullReload | None = Field(None, description="how a load that reads the whole table writes it; "
                                                             "default: options.full_reload")

    @model_validator(mode="after")
    def _cdc_alone(self) -> TableOverride:
        if self.mode == "cdc" and (self.partition is not None or self.cursor_column is not None):
            raise ValueError("mode cdc follows every change from the binlog: it takes no partition or cursor_column")
        if self.mode == "cdc" and self.filter is not None:
            raise ValueError("a filter is a MySQL condition, which the binlog's rows never meet: mode cdc takes none "
                             "(exclude or mask columns instead, or sync the table in batch mode)")
        return self


class Migrations(_Strict):
    """Versioned PostgreSQL migrations: a Sqitch project (``sync.load.versioned``)."""

    directory: NonEmpty = Field("migrations", description="the Sqitch project, relative to this file; loads "
                                                          "apply its scripts where it has one for the change")
    require: bool = Field(False, description="true: a load applies no schema change that has no committed script "
                                             "(run cli migrations generate, review, commit)")


class CastOverride(_Strict):
    """Every column whose MySQL type matches ``match`` becomes ``pg_type``."""

    match: NonEmpty = Field(description="glob over the MySQL column type, case-insensitive: 'tinyint(1)', 'varchar(*)'")
    pg_type: PgType


class Options(_Strict):
    naming: Literal["keep", "snake_case"] = Field(
        "keep", description="PostgreSQL names: as in MySQL, or snake_case ('OrderDate' → 'order_date')"
    )
    enum_check: bool = Field(True, description="ENUM columns get a CHECK of their values")
    schema_change: SchemaChange = Field(
        "in_place", description="in_place: a load migrates the table in its transaction; blue_green: a load that "
                                "reads every row builds the new shape in a shadow table and swaps it in at commit, "
                                "keeping the previous table for cli swap-back")
    full_reload: FullReload = Field(
        "auto", description="how a load that reads the whole of an existing table writes it. replace: aside, then "
                            "swapped in at commit (sync.load.replace; merged instead where the table carries what a "
                            "new one would lack); merge: upserted, only the rows that changed written (far less WAL); "
                            "auto: replace from a million rows, merge below")
    indexes: bool = Field(False, description="also create MySQL's unique and secondary indexes")
    foreign_keys: bool = Field(
        False, description="also create MySQL's foreign keys between synced tables (DEFERRABLE, NOT VALID)"
    )
    casts: list[CastOverride] = Field(default_factory=list, description="per-type overrides, first match wins")
    freshness: Freshness | None = Field(None, description="the default freshness of every table")
    checks: Checks = Field(default_factory=Checks, description="severity of each check, reject-rate threshold")
    cdc_retention_days: int = Field(30, ge=1, description="change capture: change-log entries are kept this long "
                                                            "(rollback and restore reach no further back)")
    cdc_max_lag_s: int = Field(60, ge=1, description="change capture: alert when a table's applied position has not "
                                                     "moved for this long while MySQL's binlog has")
    columns: dict[NonEmpty, ColumnMasking] = Field(
        default_factory=dict, description="globs over MySQL column names, in every table: exclude or mask")
    derived: dict[PgName, Derived] = Field(default_factory=dict, description="columns every table gets")
    expect: list[Expectation] = Field(default_factory=list, description="checks of every table that has the "
                                                                        "columns they name")


class Source(_Strict):
    database: NonEmpty | None = Field(None, description="MySQL database; default: the one in MYSQL_URL")
    parallel_tables: int = Field(
        4, ge=1, le=64, description="tables one run loads at once from this database (each holds a MySQL and "
                                    "a PostgreSQL connection while it loads)")


class Target(_Strict):
    schema_name: PgName | None = Field(
        None, alias="schema", description="PostgreSQL schema; default: the source database's name"
    )


class SyncSpec(_Strict):
    source: Source = Field(default_factory=Source)
    migrations: Migrations = Field(default_factory=Migrations)
    target: Target = Field(default_factory=Target)
    include: list[NonEmpty] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[NonEmpty] = Field(default_factory=list)
    tables: dict[str, TableOverride] = Field(default_factory=dict)
    options: Options = Field(default_factory=Options)


def parse_spec(data: object, origin: str = "<spec>") -> SyncSpec:
    if data is None:
        data = {}
    try:
        return SyncSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{origin}: {problems}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; a spec that says a thing twice is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_spec(path: Path) -> SyncSpec:
    if not path.is_file():
        raise SpecError(f"sync spec not found: {path} (set SYNC_CONFIG to the path of your sync.yaml)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}:{line}: not valid YAML: {problem}") from None
    spec = environments.resolve(data, str(path), parse_spec, SpecError)
    directory = (path.parent / spec.migrations.directory).absolute()  # an absolute directory stays as it is
    return spec.model_copy(update={"migrations": spec.migrations.model_copy(update={"directory": str(directory)})})
