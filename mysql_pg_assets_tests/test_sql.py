"""The SQL helper: quoting, and placeholders that identifiers and literals can never be taken for."""

from __future__ import annotations

import pytest
from psycopg import sql

from mysql_pg_assets.core.connections import pg_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.core.sql import bound, mysql_ident, numbered, pg_ident, pg_literal

HOSTILE = ["%s", "%", "%%", "%(x)s", "{}", "$1", "?", "'", '"', "`", "\\", "a\nb", "--", "/*", "#", "$x$"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_postgresql_identifier_or_literal_is_never_a_placeholder(name: str) -> None:
    sql = f"SELECT {pg_ident(name)}, {pg_literal(name)} FROM t WHERE a = %s AND b = %s"
    assert numbered(sql) == f"SELECT {pg_ident(name)}, {pg_literal(name)} FROM t WHERE a = $1 AND b = $2"


@pytest.mark.parametrize("name", HOSTILE)
def test_a_mysql_identifier_is_never_a_placeholder(name: str) -> None:
    sql = f"SELECT {mysql_ident(name)} FROM t WHERE a = %s AND d = DATE_FORMAT(x, '%Y-%m-%d %s') AND b = %s"
    assert bound(sql, ["1", "'x'"]) == (
        f"SELECT {mysql_ident(name)} FROM t WHERE a = 1 AND d = DATE_FORMAT(x, '%Y-%m-%d %s') AND b = 'x'")


def test_dollar_quoted_bodies_and_comments_are_text() -> None:
    sql = "CREATE FUNCTION f() RETURNS text AS $fn$ SELECT format('%s', $1) $fn$ LANGUAGE sql; -- %s\nSELECT %s"
    assert numbered(sql).endswith("-- %s\nSELECT $1") and "format('%s', $1)" in numbered(sql)


def test_mysql_backslash_escapes_do_not_end_a_literal() -> None:
    assert bound(r"SELECT 'it\'s %s', %s", ["1"]) == r"SELECT 'it\'s %s', 1"


def test_a_doubled_percent_is_one_percent_and_too_few_values_fail() -> None:
    assert numbered("SELECT 7 %% 3, %s") == "SELECT 7 % 3, $1"
    with pytest.raises(ValueError, match="more placeholders"):
        bound("SELECT %s, %s", ["1"])
    with pytest.raises(ValueError, match="unterminated"):
        numbered('SELECT "open')


def test_named_placeholders_bind_by_name_outside_quotes() -> None:
    sql = "SELECT `%(a)s`, '%(a)s', %(a)s, %(b)s, %(a)s"
    assert bound(sql, {"a": "1", "b": "'x'"}) == "SELECT `%(a)s`, '%(a)s', 1, 'x', 1"
    with pytest.raises(ValueError, match="do not match"):
        bound("SELECT %(a)s", ["1"])
    with pytest.raises(ValueError, match="positional"):
        numbered("SELECT %(a)s")


def test_a_query_composed_with_psycopg_binds_like_any_other(servers: tuple[DatabaseUrl, DatabaseUrl]) -> None:
    with pg_connection(servers[1]) as connection:
        composed = sql.SQL("SELECT {} AS {}, %s").format(sql.Literal("a%s"), sql.Identifier("x%s"))
        assert connection.execute(composed, (7,)).fetchone() == ("a%s", 7)
