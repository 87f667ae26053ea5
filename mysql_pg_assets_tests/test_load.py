"""The load is atomic and idempotent: a failure keeps the previous data, a rerun changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from dagster import AssetKey

from mysql_pg_assets.checks.parity import compare_rows
from mysql_pg_assets.core.connections import SourceUnavailable, TargetError, mysql_connection, pg_connection
from mysql_pg_assets.core.meta import last_watermark
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.core.sql import pg_qualified
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.sync import extract
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.extract import read_batches
from mysql_pg_assets.sync.load.loader import load_table
from mysql_pg_assets.sync.pipeline import sync_table, validated_batches
from mysql_pg_assets.sync.spec import load_spec, parse_spec
from mysql_pg_assets.sync.validate import ValidatedBatch


def _plan(settings: Settings, name: str) -> TablePlan:
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    return next(t for t in catalog.tables if t.source_table == name)


def _snapshot(settings: Settings, table: TablePlan) -> list[tuple]:
    with pg_connection(settings.postgres_url) as connection:
        return connection.execute(
            f"SELECT * FROM {pg_qualified(table.target_schema, table.target_table)} ORDER BY 1"
        ).fetchall()


def test_rerunning_a_load_changes_nothing(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "payments")
    first = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url, batch_rows=500)
    before = _snapshot(demo_settings, table)
    second = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url, batch_rows=500)
    assert first.rows_read == second.rows_read == len(before) > 1000
    assert (second.inserted, second.updated, second.deleted) == (0, 0, 0)
    assert _snapshot(demo_settings, table) == before
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal


def test_a_source_failing_mid_load_leaves_the_previous_data(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "customers")
    sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    before = _snapshot(demo_settings, table)
    with mysql_connection(demo_settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("UPDATE customers SET notes = CONCAT('edited ', id)")
        cur.execute("SET SESSION foreign_key_checks = 0")  # their orders stay: this test is about the load
        cur.execute("DELETE FROM customers ORDER BY id DESC LIMIT 3")

    def server_goes_away(batches: Iterator[ValidatedBatch]) -> Iterator[ValidatedBatch]:
        yield next(batches)  # the first batch reaches the staging table …
        raise SourceUnavailable("Lost connection to MySQL server during query")  # … then MySQL is gone

    batches = validated_batches(read_batches(demo_settings.mysql_url, table, batch_rows=50), table)
    with pytest.raises(SourceUnavailable, match="Lost connection"):
        load_table(table, server_goes_away(batches), demo_settings.postgres_url)
    assert _snapshot(demo_settings, table) == before

    result = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    assert (result.updated, result.deleted) == (len(before) - 3, 3)
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal


def test_a_merge_postgresql_refuses_rolls_the_whole_load_back(demo_settings: Settings) -> None:
    table = _plan(demo_settings, "categories")
    sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    before = _snapshot(demo_settings, table)
    target = pg_qualified(table.target_schema, table.target_table)
    with pg_connection(demo_settings.postgres_url) as connection:
        # A constraint the target has and MySQL's data breaks: not a bad value, a failed load.
        connection.execute(f"ALTER TABLE {target} ADD CONSTRAINT short_names CHECK (length(name) < 5) NOT VALID")
    with mysql_connection(demo_settings.mysql_url) as connection, connection.cursor() as cur:
        cur.execute("UPDATE categories SET name = CONCAT(name, ' (edited)') WHERE id <= 3")
        cur.execute("SET SESSION foreign_key_checks = 0")  # its products stay: this test is about the load
        cur.execute("DELETE FROM categories ORDER BY id DESC LIMIT 1")
    try:
        with pytest.raises(TargetError, match="short_names"):
            sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
        assert _snapshot(demo_settings, table) == before
    finally:
        with pg_connection(demo_settings.postgres_url) as connection:
            connection.execute(f"ALTER TABLE {target} DROP CONSTRAINT short_names")
    result = sync_table(table, demo_settings.mysql_url, demo_settings.postgres_url)
    assert (result.updated, result.deleted) == (3, 1)
    assert compare_rows(demo_settings.mysql_url, demo_settings.postgres_url, table).equal


DDL_TABLE = """CREATE TABLE tickets (
  id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
  code VARCHAR(36) NOT NULL DEFAULT 'n/a',
  status ENUM('open','it''s closed') NOT NULL DEFAULT 'open',
  urgent TINYINT(1) NOT NULL DEFAULT 1,
  score DECIMAL(5,2) DEFAULT 1.50,
  tags SET('a','b') DEFAULT 'a,b',
  opened_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  UNIQUE KEY code_unique (code),
  KEY status_opened (status, opened_at)
)"""


def test_keys_defaults_checks_identities_and_indexes_are_carried_over(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("ddl"), make_pg_database("ddl")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(DDL_TABLE)
        cur.execute("INSERT INTO tickets (id, code, status, urgent) VALUES"
                    " (7, 'x', 'it''s closed', 0), (41, 'y', 'open', 1)")
    spec = parse_spec({"target": {"schema": "ddl"}, "options": {
        "indexes": True, "casts": [{"match": "tinyint(1)", "pg_type": "smallint"}]}})
    (table,) = discover(spec, source).tables
    result = sync_table(table, source, target)
    assert result.inserted == 2 and compare_rows(source, target, table).equal

    with pg_connection(target) as connection:
        columns = {row[0]: row[1:] for row in connection.execute(
            "SELECT column_name, data_type, column_default, is_nullable, is_identity FROM information_schema.columns"
            " WHERE table_schema = 'ddl' AND table_name = 'tickets'")}
        assert columns["id"] == ("bigint", None, "NO", "YES")
        assert columns["code"][1:3] == ("'n/a'::character varying", "NO")
        assert columns["urgent"] == ("smallint", "1", "NO", "NO")
        assert columns["score"][1] == "1.50"
        assert columns["tags"][1] == "'{a,b}'::text[]"
        assert columns["opened_at"][1] == "CURRENT_TIMESTAMP"
        indexes = dict(connection.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'ddl' AND tablename = 'tickets'").fetchall())
        assert "CREATE UNIQUE INDEX tickets_code_unique ON ddl.tickets USING btree (code)" in indexes.values()
        assert "CREATE INDEX tickets_status_opened ON ddl.tickets USING btree (status, opened_at)" in indexes.values()
        # The identity continues after the largest id, as MySQL's AUTO_INCREMENT would.
        (new_id,) = connection.execute("INSERT INTO ddl.tickets (code) VALUES ('z') RETURNING id").fetchone()
        assert new_id == 42
        with pytest.raises(psycopg.errors.CheckViolation):
            connection.execute("INSERT INTO ddl.tickets (code, status) VALUES ('w', 'reopened')")


def test_foreign_keys_become_lineage_and_by_option_constraints(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl]
) -> None:
    source, target = make_mysql_database("fk"), make_pg_database("fk")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("CREATE TABLE authors (id INT PRIMARY KEY, name VARCHAR(20))")
        cur.execute("CREATE TABLE books (id INT PRIMARY KEY, author_id INT, title VARCHAR(20),"
                    " CONSTRAINT written_by FOREIGN KEY (author_id) REFERENCES authors (id) ON DELETE CASCADE)")
        cur.execute("INSERT INTO authors VALUES (1, 'Le Guin'), (2, 'Lem')")
        cur.execute("INSERT INTO books VALUES (10, 1, 'Earthsea'), (11, 2, 'Solaris'), (12, 2, 'Eden')")
    catalog = discover(parse_spec({"target": {"schema": "lib"}, "options": {"foreign_keys": True}}), source)
    authors, books = catalog.tables
    (book_asset,) = [a for a in build_table_assets(catalog) if AssetKey(["lib", "books"]) in a.keys]
    assert AssetKey(["lib", "authors"]) in book_asset.asset_deps[AssetKey(["lib", "books"])]

    for table in (authors, books):
        sync_table(table, source, target)
    with pg_connection(target) as connection:
        (definition,) = connection.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'books_written_by'").fetchone()
    assert definition == ("FOREIGN KEY (author_id) REFERENCES lib.authors(id) ON DELETE CASCADE "
                          "DEFERRABLE INITIALLY DEFERRED NOT VALID")

    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("DELETE FROM authors WHERE id = 2")  # MySQL cascades to Solaris and Eden
    assert sync_table(authors, source, target).deleted == 1
    for table in (authors, books):
        assert compare_rows(source, target, table).equal


PAGED = """
CREATE TABLE paged (
  id BIGINT UNSIGNED PRIMARY KEY,
  note VARCHAR(20) NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
)"""


def _paged_source(make_mysql_database: Callable[[str], DatabaseUrl], name: str) -> DatabaseUrl:
    source = make_mysql_database(name)
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(PAGED)
        cur.executemany("INSERT INTO paged (id, note, updated_at) VALUES (%s, %s, %s)",
                        [(i * 7, f"row {i}", f"2026-01-01 00:00:{i:02d}") for i in range(1, 12)])
    return source


def _recorded_reads(monkeypatch: pytest.MonkeyPatch, page_rows: int) -> list[str]:
    """Pages of ``page_rows``; every statement the read sends to MySQL is recorded in the list returned."""
    statements: list[str] = []
    read = extract._read

    def counted(mysql_url: DatabaseUrl, plan: TablePlan, sql: str, batch_rows: int) -> Iterator:
        statements.append(sql)
        return read(mysql_url, plan, sql, batch_rows)

    monkeypatch.setattr(extract, "PAGE_ROWS", page_rows)
    monkeypatch.setattr(extract, "_read", counted)
    return statements


def test_a_whole_table_is_read_in_pages_and_every_row_arrives(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of the whole table pages by its key (connectorx's stream has no bound): 11 rows in pages of 3 are
    four statements, each starting after the last key read, and every row arrives once."""
    source, target = _paged_source(make_mysql_database, "paged"), make_pg_database("paged")
    (table,) = discover(parse_spec({"target": {"schema": "paged"}, "tables": {"paged": {
        "cursor_column": "updated_at"}}}), source).tables
    statements = _recorded_reads(monkeypatch, page_rows=3)
    result = sync_table(table, source, target, batch_rows=2)
    pages = [s for s in statements if "ORDER BY" in s]
    assert len(pages) == 4 and "> 21 ORDER BY" in pages[1] and "> 63 ORDER BY" in pages[3]
    assert result.rows_read == result.inserted == 11
    assert compare_rows(source, target, table).equal
    with pg_connection(target) as connection:
        assert last_watermark(connection, "paged", table.target_label) == "2026-01-01T00:00:11.000000"


KEYED_OTHERWISE = [
    """CREATE TABLE by_text (
      region VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL,
      code VARBINARY(4) NOT NULL, seq INT NOT NULL, note VARCHAR(20),
      PRIMARY KEY (region, code, seq))""",
    """CREATE TABLE latin (
      name VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci PRIMARY KEY, n INT)""",
    "CREATE TABLE declared (id INT NOT NULL, note VARCHAR(20))",
    "CREATE TABLE unique_only (code VARCHAR(10) NOT NULL, n INT, UNIQUE KEY by_code (code))",
    "CREATE TABLE unique_nullable (code VARCHAR(10) NULL, n INT, UNIQUE KEY by_code (code))",
    "CREATE TABLE prefixed (code VARCHAR(40) NOT NULL, n INT, PRIMARY KEY (code(6)))",
    # An index MySQL's optimizer does not use (MariaDB's IGNORED, MySQL's INVISIBLE): a page would sort the table.
    "CREATE TABLE unique_ignored (n INT NOT NULL, code VARCHAR(10) NOT NULL, UNIQUE KEY zz_by_n (n), "
    "UNIQUE KEY by_code (code) IGNORED)",
    # MyISAM keeps its rows apart from the key: MySQL may sort rather than walk it, so it is EXPLAINed first.
    "CREATE TABLE legacy (code VARCHAR(10) NOT NULL PRIMARY KEY, n INT) ENGINE=MyISAM",
    # A DECIMAL read as an integer times 10^scale (p <= 18) and one read as text, given back as exact numbers.
    "CREATE TABLE by_decimal (amount DECIMAL(10,2) NOT NULL, big DECIMAL(30,5) NOT NULL, n INT, "
    "PRIMARY KEY (amount, big))",
]
REGIONS = ["alpha", "Beta", "gamma", "o'brien", "Zürich", "東京", "🙂", "", "trail ", "back\\slash"]
LATIN = ["Äpple", "apple", "Öl", "zebra", "Ångström", "quote'd", "Zz", "ÿ", "a b"]


def test_a_table_keyed_by_text_or_several_columns_is_read_in_pages_from_its_key(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key of text (in its own collation and character set), bytes and integers pages as an integer one does:
    each page starts after the last key read, compared in MySQL's order (case and accents folded, a quote, a
    backslash, an emoji, an empty string, Swedish letters after Z in latin1), MySQL reads it as a range of its
    primary key with no sort, and every row arrives once. So does a table without a primary key by its unique
    index of NOT NULL columns. A key the spec declares, which MySQL may not order by, a unique index of a
    nullable column, a key of a column's prefix, and an index MySQL would not walk (EXPLAIN says it sorts) are
    read in one statement: a page would sort the table."""
    source, target = make_mysql_database("keyed_otherwise"), make_pg_database("keyed_otherwise")
    with mysql_connection(source) as connection, connection.cursor() as cur:
        for statement in KEYED_OTHERWISE:
            cur.execute(statement)
        cur.executemany("INSERT INTO by_text VALUES (%s, %s, %s, %s)", [
            (region, code, seq, f"{region[:10]} {seq}")
            for region in REGIONS for code in (b"", b"\x00", b"\xff\x01") for seq in (2, 1)])
        cur.executemany("INSERT INTO latin VALUES (%s, %s)", [(name, n) for n, name in enumerate(LATIN)])
        cur.executemany("INSERT INTO declared VALUES (%s, %s)", [(n, f"row {n}") for n in range(7)])
        decimals = [(a, b) for a in ("-12.50", "0.00", "0.05", "99999999.99")
                    for b in ("-1.00001", "123456789012345678901.5")] + [("7.10", "0"), ("7.10", "0.00001")]
        cur.executemany("INSERT INTO by_decimal VALUES (%s, %s, %s)",
                        [(amount, big, n) for n, (amount, big) in enumerate(decimals)])
        for name in ("unique_only", "unique_nullable", "prefixed", "unique_ignored", "legacy"):
            cur.executemany(f"INSERT INTO {name} (code, n) VALUES (%s, %s)",
                            [(f"{n:02d}-{n * 7 % 5}", n) for n in range(8)])
    tables = {t.source_table: t for t in discover(parse_spec({"target": {"schema": "keyed"}, "tables": {
        "declared": {"primary_key": ["id"]}}}), source).tables}
    statements = _recorded_reads(monkeypatch, page_rows=3)
    for name, rows, paged in (("by_text", len(REGIONS) * 6, True), ("latin", len(LATIN), True),
                              ("declared", 7, False), ("unique_only", 8, True), ("unique_nullable", 8, False),
                              ("prefixed", 8, False), ("unique_ignored", 8, False), ("legacy", 8, None),
                              ("by_decimal", 10, True)):
        statements.clear()
        result = sync_table(tables[name], source, target, batch_rows=2)
        assert result.rows_read == result.inserted == rows, name
        assert compare_rows(source, target, tables[name]).equal, name
        pages = [s for s in statements if " ORDER BY " in s]
        assert paged is None or len(pages) == (rows // 3 + 1 if paged else 0), (name, statements)
        with mysql_connection(source) as connection, connection.cursor() as cur:
            for page in pages[1:]:
                cur.execute(f"EXPLAIN {page}")
                plan = dict(zip([d[0] for d in cur.description], cur.fetchone(), strict=True))
                assert plan["key"] in ("PRIMARY", "by_code") and "filesort" not in (plan["Extra"] or ""), (page, plan)
    assert [n for n, t in tables.items() if t.page_by_clustered] == ["by_decimal", "by_text", "latin"]  # no EXPLAIN
    with pg_connection(target) as connection:
        assert connection.execute("SELECT count(DISTINCT region) FROM keyed.by_text").fetchone() == (len(REGIONS),)


def test_a_key_with_a_date_pages_and_steps_around_its_zero_dates(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key of an integer and a DATETIME (a time series, a partitioned MySQL table) pages too. A zero date reads
    as NULL and cannot start a page: a page that ends in such keys ends before them and the next reads them
    again. Every row is read once: the dated ones loaded, those with a zero date in the key rejected with it."""
    source, target = make_mysql_database("dated"), make_pg_database("dated")
    rows = [(1, "2024-01-01 00:00:00.5", "a"), (1, "2024-01-02", "b"), (2, "0000-00-00", "zero"),
            (2, "2024-00-10", "zero month"), (2, "2024-06-01", "c"), (3, "2024-01-01", "d"),
            (3, "2024-01-01 00:00:00.001", "e"), (4, "0000-00-00", "zero, last")]
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE series (device INT NOT NULL, at DATETIME(3) NOT NULL, note VARCHAR(20), "
                    "PRIMARY KEY (device, at))")
        cur.executemany("INSERT INTO series VALUES (%s, %s, %s)", rows)
    (table,) = discover(parse_spec({"target": {"schema": "dated"}}), source).tables
    statements = _recorded_reads(monkeypatch, page_rows=3)
    result = sync_table(table, source, target, batch_rows=2)
    assert (result.rows_read, result.inserted, result.rejected_rows) == (8, 5, 3)
    # Pages 1 and 3 end in a zero date, so pages 2 and 4 start before it: after (1, b) and after (3, e).
    assert [s.split(" WHERE ")[1].split(" ORDER BY ")[0] for s in statements[1:]] == [
        "((`device` > 1) OR (`device` = 1 AND `at` > '2024-01-02 00:00:00.000000'))",
        "((`device` > 2) OR (`device` = 2 AND `at` > '2024-06-01 00:00:00.000000'))",
        "((`device` > 3) OR (`device` = 3 AND `at` > '2024-01-01 00:00:00.001000'))"]
    with pg_connection(target) as connection:
        loaded = connection.execute("SELECT note FROM dated.series ORDER BY device, at").fetchall()
        rejected = connection.execute("SELECT primary_key, column_name FROM mysql_pg_assets.rejects "
                                      "WHERE target_table = 'dated.series' ORDER BY id").fetchall()
    assert [n for (n,) in loaded] == ["a", "b", "c", "d", "e"]
    assert sorted((r["device"], column) for r, column in rejected) == [(2, "at"), (2, "at"), (4, "at")]

    # A page of nothing but such keys cannot be stepped past: the load says so, and keeps what was there; the
    # key named in the spec reads the table in one statement.
    monkeypatch.setattr(extract, "PAGE_ROWS", 2)
    with pytest.raises(SourceUnavailable, match=r"2 rows in a row hold a zero date in the primary key.*primary_key"):
        sync_table(table, source, target, batch_rows=2)
    with pg_connection(target) as connection:
        assert connection.execute("SELECT count(*) FROM dated.series").fetchone() == (5,)
    (declared,) = discover(parse_spec({"target": {"schema": "dated"}, "tables": {"series": {
        "primary_key": ["device", "at"]}}}), source).tables
    statements.clear()
    assert sync_table(declared, source, target, batch_rows=2).rows_read == 8 and len(statements) == 1


def test_a_row_changed_between_pages_is_taken_by_the_next_load(
    make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages are not one snapshot. A row of the first page changed before the second is read, then a row of a
    later page changed after it: the load records the newest cursor value MySQL held when it began, not the
    newest it read, so the next (incremental) load takes the first change too."""
    source, target = _paged_source(make_mysql_database, "paged_race"), make_pg_database("paged_race")
    (table,) = discover(parse_spec({"target": {"schema": "paged"}, "tables": {"paged": {
        "cursor_column": "updated_at"}}}), source).tables
    read = extract._read

    def changing(mysql_url: DatabaseUrl, plan: TablePlan, sql: str, batch_rows: int) -> Iterator:
        if "> 21 ORDER BY" in sql:  # the second page: the first one is read
            with mysql_connection(source) as connection, connection.cursor() as cur:
                cur.execute("UPDATE paged SET note = 'changed early', updated_at = '2026-01-02 00:00:00' WHERE id = 7")
                cur.execute("UPDATE paged SET note = 'changed late', updated_at = '2026-01-03 00:00:00' WHERE id = 70")
        return read(mysql_url, plan, sql, batch_rows)

    monkeypatch.setattr(extract, "PAGE_ROWS", 3)
    monkeypatch.setattr(extract, "_read", changing)
    first = sync_table(table, source, target)
    assert first.rows_read == 11
    with pg_connection(target) as connection:
        assert last_watermark(connection, "paged", table.target_label) == "2026-01-01T00:00:11.000000"
        assert connection.execute("SELECT note FROM paged.paged WHERE id = 7").fetchone() == ("row 1",)
    monkeypatch.setattr(extract, "_read", read)
    second = sync_table(table, source, target)
    assert second.updated == 1 and compare_rows(source, target, table).equal  # id 7; id 70 was read changed
