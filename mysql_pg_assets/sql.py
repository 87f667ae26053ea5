"""The one place SQL text is assembled: identifiers are always quoted, values never pasted.

Values travel as bind parameters. The only things interpolated into SQL are identifiers (quoted
here) and PostgreSQL type names, which the spec validates against :data:`PG_TYPE_PATTERN`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

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
