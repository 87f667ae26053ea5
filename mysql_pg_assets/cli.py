"""Command line: ``python -m mysql_pg_assets.cli summary [--rows]`` and ``... rules``.

``summary`` prints, for every table the spec syncs, the row counts on both sides; ``--rows``
also compares every value (use it on demo-sized data). Exits 1 when any table differs.
"""

from __future__ import annotations

import argparse
import sys

from mysql_pg_assets.casting import rules_markdown
from mysql_pg_assets.catalog import discover
from mysql_pg_assets.parity import compare_rows, count_parity
from mysql_pg_assets.settings import Settings
from mysql_pg_assets.spec import load_spec


def summary(settings: Settings, rows: bool) -> int:
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    labels = {t.source_table: f"{t.source_label} → {t.target_label}" for t in catalog.tables}
    width = max((len(label) for label in labels.values()), default=5)
    print(f"{'table':<{width}} {'mysql rows':>12} {'postgres rows':>14}  status")
    failures = 0
    for table in catalog.tables:
        if rows:
            parity = compare_rows(settings.mysql_url, settings.postgres_url, table)
        else:
            parity = count_parity(settings.mysql_url, settings.postgres_url, table)
        target = "missing" if parity.postgres_rows is None else str(parity.postgres_rows)
        status = "equal" if parity.equal else "DIFFERENT"
        failures += not parity.equal
        print(f"{labels[table.source_table]:<{width}} {parity.mysql_rows:>12} {target:>14}  {status}")
        for difference in parity.differences:
            print(f"    {difference}")
    print(f"{len(catalog.tables)} tables, {failures} different"
          f" ({'every value compared' if rows else 'row counts compared'})")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mysql_pg_assets.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    summary_parser = commands.add_parser("summary", help="row counts (and values) on both sides")
    summary_parser.add_argument("--rows", action="store_true", help="compare every row and value")
    commands.add_parser("rules", help="print the casting rules as a Markdown table")
    args = parser.parse_args(argv)
    if args.command == "rules":
        print(rules_markdown())
        return 0
    return summary(Settings.from_env(), rows=args.rows)


if __name__ == "__main__":
    sys.exit(main())
