"""The one place SQL text is assembled: identifiers are always quoted, values never pasted.

Values travel as bind parameters. The only things interpolated into SQL are identifiers (quoted
here) and PostgreSQL type names, which the spec validates against :data:`PG_TYPE_PATTERN`.

Placeholders are written ``%s`` and found by :func:`placeholders`, a scanner that knows each
dialect's quoting: a ``%s`` (or ``%``, ``{}``, ``$1``, ``?``) inside a quoted identifier or a string
literal is text, never a placeholder. The drivers' own ``%`` formatting cannot know that (psycopg's
``sql.Identifier("a%b")`` executed with parameters fails), so the connections of
:mod:`mysql_pg_assets.core.connections` use cursors that bind through this scanner instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Literal

Dialect = Literal["postgresql", "mysql"]


def _skip_quoted(text: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """The index just past the quoted token opening at ``start`` (a doubled quote is one quote)."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if backslash_escapes and char == "\\":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError(f"unterminated {quote} in SQL: {text[start:start + 60]!r}")


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def _skip_token(text: str, i: int, dialect: Dialect) -> int:
    """The index just past a quoted identifier, literal or comment starting at ``i``; ``i`` if none does."""
    char = text[i]
    if dialect == "postgresql":
        if char in "\"'":  # standard_conforming_strings: no backslash escapes
            return _skip_quoted(text, i, char, backslash_escapes=False)
        if char == "$" and (match := _DOLLAR_TAG.match(text, i)):
            end = text.find(match.group(0), match.end())
            if end < 0:
                raise ValueError(f"unterminated dollar quote in SQL: {text[i:i + 60]!r}")
            return end + len(match.group(0))
    else:
        if char == "`":
            return _skip_quoted(text, i, "`", backslash_escapes=False)
        if char in "\"'":
            return _skip_quoted(text, i, char, backslash_escapes=True)
        if char == "#":
            end = text.find("\n", i)
            return len(text) if end < 0 else end
    if text.startswith("--", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end < 0 else end + 2
    return i


_NAMED = re.compile(r"%\(([A-Za-z_][A-Za-z_0-9]*)\)s")


def placeholders(text: str, dialect: Dialect, render: Callable[[int | str], str]) -> str:
    """``text`` with each ``%s`` outside quotes replaced by ``render(n)`` (n from 0), each ``%(name)s`` by
    ``render(name)``, and ``%%`` by ``%``. Anything inside a quoted identifier, a string literal or a comment
    is kept as it is."""
    out: list[str] = []
    count, i, plain = 0, 0, 0
    while i < len(text):
        end = _skip_token(text, i, dialect)
        if end != i:
            i = end
            continue
        named = _NAMED.match(text, i) if text[i] == "%" else None
        if named or (text[i] == "%" and i + 1 < len(text) and text[i + 1] in "s%"):
            out.append(text[plain:i])
            if named:
                out.append(render(named.group(1)))
                i = named.end()
            elif text[i + 1] == "s":
                out.append(render(count))
                count += 1
                i += 2
            else:
                out.append("%")
                i += 2
            plain = i
            continue
        i += 1
    out.append(text[plain:])
    return "".join(out)


@lru_cache(maxsize=4096)  # the same statements again for every table: scanned once
def numbered(text: str) -> str:
    """PostgreSQL: ``%s`` placeholders as ``$1 … $n``, which the server binds."""
    def render(n: int | str) -> str:
        if isinstance(n, str):
            raise ValueError(f"named placeholder %({n})s: PostgreSQL statements here take positional ones")
        return f"${n + 1}"

    return placeholders(text, "postgresql", render)


def bound(text: str, values: Sequence[str] | Mapping[str, str]) -> str:
    """MySQL: ``%s`` (or ``%(name)s``) placeholders replaced by ``values``, already escaped as literals by
    the driver."""
    def render(key: int | str) -> str:
        if isinstance(values, Mapping) != isinstance(key, str):
            raise ValueError("named and positional placeholders and values do not match")
        if isinstance(key, int) and key >= len(values):
            raise ValueError(f"the statement has more placeholders than the {len(values)} values given")
        return values[key]  # type: ignore[index]

    return placeholders(text, "mysql", render)

PG_TYPE_PATTERN = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*( [A-Za-z_][A-Za-z0-9_]*)*( ?\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])?$"
)


def pg_ident(name: str) -> str:
    """Quote a PostgreSQL identifier, whatever characters it holds."""
    if "\x00" in name:
        raise ValueError(f"identifier contains a NUL byte: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def pg_qualified(schema: str, name: str) -> str:
    return f"{pg_ident(schema)}.{pg_ident(name)}"


def pg_idents(names: Iterable[str]) -> str:
    return ", ".join(pg_ident(n) for n in names)


def mysql_ident(name: str) -> str:
    """Quote a MySQL identifier with backticks, whatever characters it holds."""
    if "\x00" in name:
        raise ValueError(f"identifier contains a NUL byte: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def mysql_qualified(database: str, name: str) -> str:
    return f"{mysql_ident(database)}.{mysql_ident(name)}"


def pg_type(type_name: str) -> str:
    """Check that a type name is only a type name before it goes into DDL or a cast."""
    if not PG_TYPE_PATTERN.match(type_name.strip()):
        raise ValueError(f"not a PostgreSQL type name: {type_name!r}")
    return type_name.strip()


def pg_literal(text: str) -> str:
    """A PostgreSQL string literal, for DDL only (defaults, CHECKs), where no bind parameter fits.

    Data values never go through here: they travel by COPY or as bind parameters.
    """
    if "\x00" in text:
        raise ValueError(f"literal contains a NUL byte: {text!r}")
    return "'" + text.replace("'", "''") + "'"


PG_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer identifiers


def pg_fit_name(name: str) -> str:
    """``name``, or, past PostgreSQL's 63 bytes, its first 54 bytes plus a hash of the whole.

    MySQL allows 64 characters (up to 256 bytes in UTF-8); PostgreSQL would truncate them, and
    two long names sharing a prefix would collide. The hash keeps them apart and stable.
    """
    encoded = name.encode()
    if len(encoded) <= PG_NAME_BYTES:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return encoded[:54].decode(errors="ignore") + "_" + digest
