"""The two small languages of ``sync.yaml``: row filters (MySQL) and derived columns and checks (polars).

Both are parsed into a tree and rebuilt from an allow-list, never pasted: a construct not listed is
an :class:`ExpressionError` naming it, at spec load, before any row moves.

**Row filters** are MySQL conditions (``tenant_id = 7 AND created_at >= '2025-01-01'``), parsed
with sqlglot's MySQL dialect and rendered again by :func:`mysql_condition` with every column
quoted and every string a hex literal (``_utf8mb4 X'…'``), so no text of the spec reaches MySQL as
SQL. Allowed: columns, numbers, strings, TRUE/FALSE/NULL, ``= <> < <= > >=``, ``AND OR NOT``,
``IN (…)``, ``BETWEEN``, ``IS [NOT] NULL``, ``LIKE``, ``+ - * /`` and the functions of
:func:`mysql_functions`. sqlglot is imported by the first filter parsed (60 ms of every process's start
otherwise, a code location's and a run's included).

**Derived columns and expression checks** are Python-like expressions over the table's columns
(``total - tax``, ``upper(email)``, ``'big' if total > 100 else 'small'``), turned into a polars
expression by :func:`polars_expression`. Allowed: columns (``col('odd name')`` for a name that is not
an identifier), constants, ``+ - * / // %``, comparisons and ``in [...]``, ``and or not``,
``x if c else y`` and the functions of :data:`POLARS_FUNCTIONS`. A column stands for its value as it
arrives in PostgreSQL (after its casting rule and mask), typed as :func:`value_dtype` says.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import polars as pl

from mysql_pg_assets.core.errors import ActionableError

if TYPE_CHECKING:
    from sqlglot import exp


class ExpressionError(ActionableError, ValueError):
    """An expression of the spec uses something the language does not allow, or a column that is not there."""


# ---------------------------------------------------------------- row filters (MySQL)

@functools.cache
def mysql_functions() -> dict[type[exp.Expression], str]:
    """The functions a row filter may call: sqlglot's node → MySQL's name."""
    from sqlglot import exp

    return {exp.Lower: "LOWER", exp.Upper: "UPPER", exp.Length: "CHAR_LENGTH", exp.Coalesce: "COALESCE",
            exp.Abs: "ABS", exp.Year: "YEAR", exp.Month: "MONTH", exp.Day: "DAYOFMONTH", exp.TsOrDsToDate: "DATE"}


@functools.cache
def _mysql_operators() -> dict[type[exp.Expression], str]:
    from sqlglot import exp

    return {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.And: "AND",
            exp.Or: "OR", exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Like: "LIKE"}


_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def _parse_sql(text: str) -> exp.Expression:
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(text, read="mysql")
    except sqlglot.errors.ParseError as exc:
        raise ExpressionError(f"filter {text!r} is not a MySQL condition: {str(exc).splitlines()[0]}") from None
    if isinstance(tree, exp.Command | exp.Select) or not isinstance(tree, exp.Expression):
        raise ExpressionError(f"filter {text!r}: only a condition is allowed, not a statement")
    return tree


def filter_columns(text: str) -> set[str]:
    from sqlglot import exp

    return {column.name for column in _parse_sql(text).find_all(exp.Column)}


def mysql_condition(text: str, quoted: Mapping[str, str]) -> str:
    """``text`` rendered again as MySQL from its parsed tree; ``quoted``: column name → quoted identifier."""
    from sqlglot import exp

    tree = _parse_sql(text)

    def render(node: exp.Expression) -> str:
        if isinstance(node, exp.Paren):
            return f"({render(node.this)})"
        if isinstance(node, exp.Column):
            if node.table or node.name not in quoted:
                raise ExpressionError(f"filter {text!r}: no column {node.sql('mysql')} in the table "
                                      f"(its columns: {', '.join(sorted(quoted))})")
            return quoted[node.name]
        if isinstance(node, exp.Literal):
            if node.is_string:
                return f"_utf8mb4 X'{node.this.encode().hex()}'" if node.this else "''"
            if not _NUMBER.match(node.this):
                raise ExpressionError(f"filter {text!r}: {node.this!r} is not a number")
            return node.this
        if isinstance(node, exp.Boolean):
            return "TRUE" if node.this else "FALSE"
        if isinstance(node, exp.Null):
            return "NULL"
        if isinstance(node, exp.Neg):
            return f"-({render(node.this)})"
        if isinstance(node, exp.Not):
            return f"NOT ({render(node.this)})"
        if isinstance(node, exp.Is):
            return f"({render(node.this)} IS {render(node.expression)})"
        if isinstance(node, exp.In) and not node.args.get("query"):
            return f"({render(node.this)} IN ({', '.join(render(e) for e in node.expressions)}))"
        if isinstance(node, exp.Between):
            return f"({render(node.this)} BETWEEN {render(node.args['low'])} AND {render(node.args['high'])})"
        operator = _mysql_operators().get(type(node))
        if operator:
            return f"({render(node.this)} {operator} {render(node.expression)})"
        function = mysql_functions().get(type(node))
        if function:
            arguments = [a for a in (node.this, *node.expressions) if a is not None]
            return f"{function}({', '.join(render(a) for a in arguments)})"
        raise ExpressionError(f"filter {text!r}: {node.sql('mysql')!r} is not allowed in a filter (allowed: "
                              f"columns, constants, comparisons, AND/OR/NOT, IN, BETWEEN, IS NULL, LIKE, + - * /, "
                              f"{', '.join(sorted(set(mysql_functions().values())))})")

    return render(tree)


# ---------------------------------------------------------------- derived columns (polars)

_NUMERIC = re.compile(r"^numeric\((\d+)(?:,\s*(\d+))?\)$")
_SIMPLE_TYPES: dict[str, pl.DataType] = {
    "smallint": pl.Int16(), "integer": pl.Int32(), "bigint": pl.Int64(), "real": pl.Float32(),
    "double precision": pl.Float64(), "boolean": pl.Boolean(), "text": pl.String(), "date": pl.Date(),
    "timestamp": pl.Datetime("us"), "timestamptz": pl.Datetime("us", "UTC"), "jsonb": pl.String(),
    "json": pl.String(), "bytea": pl.Binary(), "numeric": pl.Float64(),
}


def value_dtype(pg_type: str) -> pl.DataType:
    """The polars type an expression sees a PostgreSQL column's values as (and a derived value is cast to)."""
    base = pg_type.lower().strip()
    numeric = _NUMERIC.match(base)
    if numeric and int(numeric.group(1)) <= 38:
        return pl.Decimal(int(numeric.group(1)), int(numeric.group(2) or 0))
    if base.startswith(("varchar", "character varying", "char", "character")):
        return pl.String()
    if base.endswith("[]"):
        return pl.List(value_dtype(base[:-2]))
    return _SIMPLE_TYPES.get(base, pl.String())


def expression_dtype(pg_type: str) -> pl.DataType:
    """What an expression sees a column's values as: its value type, integers as 64 bits and floats as
    doubles, so that ``price * 2`` on an integer column cannot wrap around (polars does not check)."""
    dtype = value_dtype(pg_type)
    if dtype in (pl.Int8, pl.Int16, pl.Int32):
        return pl.Int64()
    return pl.Float64() if dtype == pl.Float32 else dtype


def pg_type_of(dtype: pl.DataType) -> str | None:
    """The PostgreSQL type of an expression's result, where it is plain (None: say it with pg_type)."""
    if isinstance(dtype, pl.Decimal):
        return f"numeric({dtype.precision},{dtype.scale})" if dtype.precision else "numeric"
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    plain = {pl.Int8: "smallint", pl.Int16: "smallint", pl.Int32: "integer", pl.Int64: "bigint",
             pl.UInt8: "smallint", pl.UInt16: "integer", pl.UInt32: "bigint", pl.Float32: "real",
             pl.Float64: "double precision", pl.Boolean: "boolean", pl.String: "text", pl.Date: "date",
             pl.Binary: "bytea"}
    return next((name for kind, name in plain.items() if dtype == kind), None)


def _constant(node: ast.expr, what: str) -> object:
    if not isinstance(node, ast.Constant):
        raise ExpressionError(f"{what} must be a constant")
    return node.value


def _int(node: ast.expr, what: str) -> int:
    value = _constant(node, what)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExpressionError(f"{what} must be a whole number")
    return value


def _str(node: ast.expr, what: str) -> str:
    value = _constant(node, what)
    if not isinstance(value, str):
        raise ExpressionError(f"{what} must be a string")
    return value


Builder = Callable[[list[ast.expr], Callable[[ast.expr], pl.Expr]], pl.Expr]


def _one(method: Callable[[pl.Expr], pl.Expr]) -> Builder:
    def build(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
        if len(args) != 1:
            raise ExpressionError("takes one argument")
        return method(convert(args[0]))
    return build


def _many(combine: Callable[[list[pl.Expr]], pl.Expr]) -> Builder:
    def build(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
        if not args:
            raise ExpressionError("takes at least one argument")
        return combine([convert(a) for a in args])
    return build


def _substr(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
    if len(args) not in (2, 3):
        raise ExpressionError("substr(text, start, [length]): start counts from 1")
    length = _int(args[2], "substr's length") if len(args) == 3 else None
    return convert(args[0]).str.slice(_int(args[1], "substr's start") - 1, length)


def _replace(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
    if len(args) != 3:
        raise ExpressionError("replace(text, old, new)")
    return convert(args[0]).str.replace_all(_str(args[1], "replace's old"), _str(args[2], "replace's new"),
                                            literal=True)


def _split_part(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
    if len(args) != 3:
        raise ExpressionError("split_part(text, separator, n): n counts from 1")
    return convert(args[0]).str.split(_str(args[1], "the separator")).list.get(
        _int(args[2], "split_part's n") - 1, null_on_oob=True)


def _round(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
    if len(args) not in (1, 2):
        raise ExpressionError("round(number, [decimals])")
    return convert(args[0]).round(_int(args[1], "round's decimals") if len(args) == 2 else 0)


def _when(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
    if len(args) != 3:
        raise ExpressionError("when(condition, then, otherwise)")
    return pl.when(convert(args[0])).then(convert(args[1])).otherwise(convert(args[2]))


def _left_right(right: bool) -> Builder:
    def build(args: list[ast.expr], convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
        if len(args) != 2:
            raise ExpressionError("takes (text, n)")
        n = _int(args[1], "n")
        return convert(args[0]).str.tail(n) if right else convert(args[0]).str.head(n)
    return build


POLARS_FUNCTIONS: dict[str, Builder] = {
    "upper": _one(lambda e: e.str.to_uppercase()), "lower": _one(lambda e: e.str.to_lowercase()),
    "trim": _one(lambda e: e.str.strip_chars()), "length": _one(lambda e: e.str.len_chars()),
    "abs": _one(lambda e: e.abs()), "floor": _one(lambda e: e.floor()), "ceil": _one(lambda e: e.ceil()),
    "year": _one(lambda e: e.dt.year()), "month": _one(lambda e: e.dt.month()), "day": _one(lambda e: e.dt.day()),
    "hour": _one(lambda e: e.dt.hour()), "date": _one(lambda e: e.dt.date()),
    "is_null": _one(lambda e: e.is_null()), "is_not_null": _one(lambda e: e.is_not_null()),
    "to_text": _one(lambda e: e.cast(pl.String)), "to_int": _one(lambda e: e.cast(pl.Int64, strict=False)),
    "to_float": _one(lambda e: e.cast(pl.Float64, strict=False)),
    "concat": _many(lambda e: pl.concat_str(e)), "coalesce": _many(lambda e: pl.coalesce(e)),
    "greatest": _many(lambda e: pl.max_horizontal(e)), "least": _many(lambda e: pl.min_horizontal(e)),
    "substr": _substr, "replace": _replace, "split_part": _split_part, "round": _round, "when": _when,
    "left": _left_right(False), "right": _left_right(True),
}
# Functions of the load rather than of the row: the same value for every row of one load.
LOAD_FUNCTIONS = ("now", "today", "source_database", "source_table")
_OPERATORS: dict[type, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}


def _parse_python(text: str) -> ast.expr:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not an expression: {exc.msg}") from None


def expression_columns(text: str) -> set[str]:
    """The columns an expression names."""
    tree = _parse_python(text)
    functions = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and id(node) not in functions:
            names.add(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "col" and node.args:
            names.add(_str(node.args[0], "col's argument"))
    return names


def uses_load_functions(text: str) -> bool:
    """Whether the value depends on the load (now(), source_table(), …), not only on the row."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("now", "today")
               for n in ast.walk(_parse_python(text)))


def polars_expression(text: str, columns: Mapping[str, pl.Expr], load: Mapping[str, object]) -> pl.Expr:
    """``text`` as a polars expression; ``columns``: name → the expression of its value; ``load``: the
    values of :data:`LOAD_FUNCTIONS` for this load."""

    def convert(node: ast.expr) -> pl.Expr:
        if isinstance(node, ast.Name):
            if node.id not in columns:
                raise ExpressionError(f"{text!r}: no column {node.id!r} (columns: {', '.join(sorted(columns))})")
            return columns[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool | type(None)):
            return pl.lit(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](convert(node.left), convert(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            operand = convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else ~operand if isinstance(node.op, ast.Not) else operand
        if isinstance(node, ast.BoolOp):
            parts = [convert(v) for v in node.values]
            return pl.all_horizontal(parts) if isinstance(node.op, ast.And) else pl.any_horizontal(parts)
        if isinstance(node, ast.Compare):
            return pl.all_horizontal([_compare(convert, left, op, right) for left, op, right in
                                      zip([node.left, *node.comparators], node.ops, node.comparators, strict=False)])
        if isinstance(node, ast.IfExp):
            return pl.when(convert(node.test)).then(convert(node.body)).otherwise(convert(node.orelse))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            return _call(node, convert)
        return _refuse(node)

    def _refuse(node: ast.AST) -> pl.Expr:
        raise ExpressionError(f"{text!r}: {ast.unparse(node)!r} is not allowed (allowed: columns, constants, "
                              f"+ - * / // %, comparisons, in [...], and/or/not, x if c else y, and the functions "
                              f"{', '.join(sorted([*POLARS_FUNCTIONS, *LOAD_FUNCTIONS, 'col']))})")

    def _call(node: ast.Call, convert: Callable[[ast.expr], pl.Expr]) -> pl.Expr:
        name = node.func.id  # type: ignore[attr-defined]
        if name == "col":
            column = _str(node.args[0], "col's argument") if len(node.args) == 1 else ""
            return convert(ast.Name(id=column))
        if name in LOAD_FUNCTIONS:
            if node.args:
                raise ExpressionError(f"{text!r}: {name}() takes no argument")
            value = load[name]
            return value if isinstance(value, pl.Expr) else pl.lit(value)
        if name not in POLARS_FUNCTIONS:
            return _refuse(node)
        try:
            return POLARS_FUNCTIONS[name](list(node.args), convert)
        except ExpressionError as exc:
            raise ExpressionError(f"{text!r}: {name}: {exc}") from None

    return convert(_parse_python(text))


def _compare(convert: Callable[[ast.expr], pl.Expr], left: ast.expr, op: ast.cmpop, right: ast.expr) -> pl.Expr:
    if isinstance(op, ast.In | ast.NotIn):
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            raise ExpressionError("'in' takes a list of constants: x in ['a', 'b']")
        values = [_constant(v, "a member of the list") for v in right.elts]
        member = convert(left).is_in(values)
        return ~member if isinstance(op, ast.NotIn) else member
    if type(op) not in _OPERATORS:
        raise ExpressionError(f"{ast.unparse(op)!r} is not a comparison the language has")
    return _OPERATORS[type(op)](convert(left), convert(right))
