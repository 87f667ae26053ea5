"""What the MySQL user may not read is an error that names it, never a table or column silently left out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from mysql_pg_assets.core.connections import mysql_connection
from mysql_pg_assets.core.settings import DatabaseUrl
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.grants import AccessDenied
from mysql_pg_assets.sync.spec import SpecError, parse_spec
from mysql_pg_assets_tests.conftest import SESSION_ID


@pytest.fixture(scope="module")
def guarded(make_mysql_database: Callable[[str], DatabaseUrl]) -> Iterator[tuple[DatabaseUrl, Callable]]:
    """A database with an 11-column table and a hidden one, and a maker of users with given grants."""
    url = make_mysql_database("grants")
    columns = ", ".join(f"c{i} INT" for i in range(1, 11))
    with mysql_connection(url) as connection, connection.cursor() as cur:
        cur.execute(f"CREATE TABLE people (id INT PRIMARY KEY, {columns})")
        cur.execute("CREATE TABLE hidden (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO people (id, c1, c2) VALUES (1, 2, 3)")
    made: list[str] = []

    def user(name: str, *grants: str) -> DatabaseUrl:
        account = f"mpa_{SESSION_ID}_{name}"
        made.append(account)
        with mysql_connection(url) as connection, connection.cursor() as cur:
            cur.execute(f"CREATE USER '{account}'@'%' IDENTIFIED BY 'pw'")
            for grant in grants:
                cur.execute(grant.format(db=f"`{url.database}`", user=f"'{account}'@'%'", role=f"{account}_r"))
        return DatabaseUrl(url.scheme, account, "pw", url.host, url.port, url.database)

    yield url, user
    with mysql_connection(url) as connection, connection.cursor() as cur:
        for account in made:
            cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")
            cur.execute(f"DROP ROLE IF EXISTS {account}_r")


def test_a_column_level_grant_is_an_error_naming_the_table_columns_and_grant(guarded: tuple) -> None:
    url, user = guarded
    reader = user("columns", "GRANT SELECT (id, c1, c2) ON {db}.people TO {user}")
    with pytest.raises(AccessDenied) as denied:
        discover(parse_spec({"include": ["people"]}), reader)
    message = str(denied.value)
    assert "may read only the columns id, c1, c2 of" in message and ".people" in message, message
    assert f"GRANT SELECT ON `{url.database}`.`people` TO '{reader.user}'@'%'" in message, message
    assert "visible_columns_only" in message

    # Said on purpose: the visible columns are synced, and only those.
    (table,) = discover(parse_spec({"include": ["people"], "tables": {"people": {"visible_columns_only": True}}}),
                        reader).tables
    assert [c.source.name for c in table.columns] == ["id", "c1", "c2"]


def test_a_table_the_user_cannot_see_is_an_error_when_named(guarded: tuple, caplog: pytest.LogCaptureFixture) -> None:
    url, user = guarded
    reader = user("tables", "GRANT SELECT ON {db}.people TO {user}")
    with pytest.raises(SpecError, match=r"no base table 'hidden' in database .* that MySQL user .* may see; if it "
                                        r"exists, run GRANT SELECT ON .*`hidden`"):
        discover(parse_spec({"include": ["people", "hidden"]}), reader)
    with pytest.raises(SpecError, match="tables: hidden configured but not among the synced base tables"):
        discover(parse_spec({"tables": {"hidden": {}}}), reader)
    # With a glob, a table it has no grant on cannot be known: the log says why it may be missing.
    with caplog.at_level(logging.WARNING, logger="mysql_pg_assets.sync.catalog.grants"):
        catalog = discover(parse_spec({"include": ["*"]}), reader)
    assert [t.source_table for t in catalog.tables] == ["people"]
    assert "only on single tables" in caplog.text and f"`{url.database}`.*" in caplog.text


def test_grants_through_a_database_or_a_role_read_everything(guarded: tuple) -> None:
    _, user = guarded
    for reader in (user("db", "GRANT SELECT ON {db}.* TO {user}"),
                   user("role", "CREATE ROLE {role}", "GRANT SELECT ON {db}.* TO {role}", "GRANT {role} TO {user}",
                        "SET DEFAULT ROLE {role} FOR {user}")):
        catalog = discover(parse_spec({"include": ["*"]}), reader)
        assert {t.source_table: len(t.columns) for t in catalog.tables} == {"hidden": 1, "people": 11}


def test_a_misspelled_database_or_an_include_that_matches_nothing_is_an_error(guarded: tuple) -> None:
    url, _ = guarded
    with pytest.raises(SpecError, match=r"source.database: MySQL at mysql://mpa:\*\*\*@.* has no database 'shpo' "
                                        r"that its user may see \(databases it may see: .*" + url.database):
        discover(parse_spec({"source": {"database": "shpo"}}), url)
    with pytest.raises(SpecError, match=r"include: \['ppl\*'\] \(exclude: \[\]\) selects no base table .* \(its "
                                        r"tables: hidden, people\)"):
        discover(parse_spec({"include": ["ppl*"]}), url)
