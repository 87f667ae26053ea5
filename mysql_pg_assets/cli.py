"""Command line: ``python -m mysql_pg_assets.cli check | summary [--rows] | schema | materialize |
reset-target --yes | rules | cdc [--once] [--seconds N] [--metrics-port P] | exporter [--port P] | trace TABLE KEY``.

``cdc`` follows the binlog into the tables with ``mode: cdc`` (see ``sync.capture``): for good, for
``--seconds``, or until caught up (``--once``). It is what production runs as a service of its own.
``exporter`` serves Prometheus metrics of every synced table; ``cdc --metrics-port`` serves the capture's
own (see ``ops.metrics``). ``trace TABLE KEY...`` prints one record's path (see ``ops.trace``).
``migrations generate`` writes the ready schema changes as Sqitch changes (see ``sync.load.versioned``);
``rebuild TABLE`` loads a table whole, and ``swap-back TABLE`` puts a blue/green table's previous one back
(see ``sync.load.swap``).
``check-migration FILE.sql`` judges a MySQL migration before it runs (see ``checks.gate``): exit 0 when
nothing is destructive, 2 when something is, 1 when it cannot judge.
``recover TABLE --rollback RUN | --restore-to FILE:POS|TIME (--into NEW | --in-place) | --replay-from
FILE:POS`` recovers a change-captured table from the change log (see ``sync.capture.recover``).

``check`` checks the spec, both servers, the grants and Dagster's storage, in order, and creates
Dagster's storage database when it is missing (see ``preflight``).

Every command prints an error a person can act on (a wrong spec key, a server that does not answer,
a missing grant) as its message alone and exits 1; anything else is a defect and keeps its traceback.

``summary`` prints, for every table the spec syncs, the row counts on both sides; ``--rows``
also compares every value (use it on demo-sized data). Exits 1 when any table differs.

``schema`` prints the migration each table's next load would apply (see ``migrate``), and exits 1
when a destructive change waits for approval: a check for CI or cron, the same one the
schema-drift sensor makes.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mysql_pg_assets.checks.parity import compare_rows, count_parity
from mysql_pg_assets.checks.preflight import checks
from mysql_pg_assets.core.connections import mysql_connection, pg_connect, pg_connection
from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.meta import existing
from mysql_pg_assets.core.settings import DatabaseUrl, Settings
from mysql_pg_assets.ops import logs
from mysql_pg_assets.sync.catalog.casting import rules_markdown
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan, find_table
from mysql_pg_assets.sync.load.migrate import approved, plan_tables
from mysql_pg_assets.sync.spec import load_spec

if TYPE_CHECKING:
    from mysql_pg_assets.ops.metrics import CaptureMetrics

log = logging.getLogger("mysql_pg_assets.cli")


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


def schema_changes(settings: Settings) -> int:
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    held = 0
    with pg_connect(settings.postgres_url, autocommit=True) as connection:
        for label, migration in plan_tables(connection, catalog.tables).items():
            if not migration:
                continue
            waiting = bool(migration.destructive) and not approved(connection, migration)
            held += waiting
            state = ("held: approve with the job approve_schema_change" if waiting else
                     "approved: the next load applies it" if migration.destructive else
                     "compatible: the next load applies it")
            print(f"{label} ({state}; fingerprint {migration.fingerprint})")
            for change in migration.summary():
                print(f"    {change}")
    print(f"{len(catalog.tables)} tables, {held} destructive change{'s' * (held != 1)} waiting for approval")
    return 1 if held else 0


def materialize_all(settings: Settings) -> int:
    """Materialize every asset with the dagster CLI: unpartitioned ones in one run, and each set
    of partitioned ones over all its partitions in one run (their backfill policy is single-run)."""
    from mysql_pg_assets.defs.translator import asset_key, partitions_for

    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    # A wrong URL (a database the user may not use, a closed port): one line here, not one per table of the run.
    with mysql_connection(settings.mysql_url), pg_connection(settings.postgres_url):
        pass
    groups: dict[tuple[str, str], list[str]] = {}
    plain: list[str] = []
    for table in catalog.tables:
        key = asset_key(table).to_user_string()
        partitions = partitions_for(table)
        if partitions is None:
            plain.append(key)
        else:
            keys = partitions.get_partition_keys()
            groups.setdefault((keys[0], keys[-1]), []).append(key)
    dagster = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "mysql_pg_assets.definitions"]
    commands = [[*dagster, "--select", ",".join(plain)]] if plain else []
    commands += [[*dagster, "--select", ",".join(keys), "--partition-range", f"{first}...{last}"]
                 for (first, last), keys in groups.items()]
    for command in commands:
        print("$", " ".join(command[2:]), flush=True)
        if subprocess.run(command, check=False).returncode:
            return 1
    return 0


def reset_target(settings: Settings) -> int:
    """Drop the spec's tables in PostgreSQL and forget their loads: the next materialization starts over.

    The tables, not the schema: a role that owns a pre-created schema may not create it again."""
    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    with pg_connection(settings.postgres_url) as connection, connection.transaction():
        for table in catalog.tables:
            connection.execute(f"DROP TABLE IF EXISTS {table.target} CASCADE")
        meta = existing(connection, catalog.target_schema)
        for history in (meta.ledger, meta.rejects, meta.schema_changes) if meta else ():
            connection.execute(f"DELETE FROM {history} WHERE target_table = ANY(%s)",
                               ([t.target_label for t in catalog.tables],))
    print(f"dropped {len(catalog.tables)} tables of PostgreSQL schema {catalog.target_schema!r} and their load history")
    return 0


def check(settings: Settings) -> int:
    """What a run needs, checked in order (see ``preflight``); exits 1 at the first failure."""
    dagster = os.environ.get("DAGSTER_POSTGRES_URL")
    for finding in checks(settings, DatabaseUrl.parse(dagster) if dagster else None):
        print(finding, flush=True)
        if not finding.ok:
            return 1
    return 0


def capture(settings: Settings, seconds: float | None, once: bool, metrics_port: int | None = None,
            exporter_too: bool = False) -> int:
    from mysql_pg_assets.sync.capture.apply import Applied
    from mysql_pg_assets.sync.capture.stream import follow

    catalog_spec = load_spec(settings.sync_config)
    catalog = discover(catalog_spec, settings.mysql_url)
    tables = [t for t in catalog.tables if t.cdc]
    metrics = serve_metrics(settings, metrics_port, capture=True, tables=exporter_too)[1] \
        if metrics_port is not None else None

    def report(applied: Applied) -> None:
        log.info("applied %s changes up to %s", applied.changes, applied.end,
                 extra={"event.action": "cdc-apply", "source.position": str(applied.end)})
        if metrics is not None:
            metrics.applied(applied)

    followed = follow(settings.mysql_url, settings.postgres_url, tables, seconds, once=once, on_batch=report,
                      retention_days=catalog_spec.options.cdc_retention_days,
                      on_idle=metrics.beat if metrics else None, on_error=metrics.failed if metrics else None)
    for label in followed.not_snapshotted:
        print(f"{label}: never snapshotted, its changes are not applied: materialize its asset first")
    for label, why in followed.held.items():
        print(f"{label}: held {why}")
    lag = f", lag p50 {sorted(followed.lags_s)[len(followed.lags_s) // 2]:.2f} s" if followed.lags_s else ""
    where = followed.position or "the stored positions"
    print(f"{followed.changes} changes in {followed.batches} batches, at {where}{lag}")
    return 1 if followed.not_snapshotted or followed.held else 0


def serve_metrics(settings: Settings, port: int, host: str = "127.0.0.1", capture: bool = False,
                  tables: bool = True) -> tuple[object, CaptureMetrics | None]:
    """The metrics on ``host:port``; with ``DAGSTER_HOME`` set, the asset checks' newest results and failed
    loads too."""
    from mysql_pg_assets.ops.metrics import serve

    if not tables or not os.environ.get("DAGSTER_HOME"):
        return serve(settings, port, host, capture=capture, tables=tables)
    from mysql_pg_assets.defs.observe import readers

    checks, failures = readers()
    return serve(settings, port, host, capture=capture, checks=checks, failures=failures)


def exporter(settings: Settings, port: int, host: str, seconds: float | None) -> int:
    server, _ = serve_metrics(settings, port, host)
    try:
        time.sleep(seconds if seconds is not None else float("inf"))
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    return 0


def trace_record(settings: Settings, table_name: str, key: list[str]) -> int:
    from mysql_pg_assets.ops.trace import render, trace

    table = _named(settings, table_name)
    found = trace(settings.mysql_url, settings.postgres_url, table, key)
    print(render(found))
    return 0 if found.equal else 1


def check_migration(settings: Settings, path: str) -> int:
    """Exit 0: nothing destructive; 2: destructive changes wait for approval; 1: the gate could not judge."""
    from mysql_pg_assets.checks import gate

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise gate.GateError(f"{path}: {exc.strerror}") from None
    result = gate.check_migration(load_spec(settings.sync_config), settings.mysql_url, settings.postgres_url, text)
    print(gate.render(result))
    return result.exit_code


def generate_migrations(settings: Settings) -> int:
    """Write a Sqitch change for every table whose schema change is ready (see ``sync.load.versioned``)."""
    from mysql_pg_assets.sync.load.versioned import Project

    spec = load_spec(settings.sync_config)
    catalog, project = discover(spec, settings.mysql_url), Project(spec.migrations.directory)
    written = 0
    with pg_connect(settings.postgres_url, autocommit=True) as connection:
        for label, migration in plan_tables(connection, catalog.tables).items():
            if not migration:
                continue
            script = project.script_for(migration)
            if script is not None:
                print(f"{label}: already versioned as {script.name} ({script.path})")
            elif migration.destructive and not approved(connection, migration):
                print(f"{label}: held, not written: approve it first (job approve_schema_change, fingerprint "
                      f"{migration.fingerprint})")
            else:
                entry = project.add(migration)
                written += 1
                print(f"{label}: wrote {entry.name} (deploy, revert, verify) for: {'; '.join(migration.summary())}")
    print(f"{written} change{'s' * (written != 1)} written to {project.directory}; review and commit them. The next "
          f"load of each table applies its script; sqitch deploy applies them too (see README)")
    return 0


def rebuild(settings: Settings, table_name: str) -> int:
    """Load a table whole: a blue/green table's new shape is built aside and swapped in."""
    from mysql_pg_assets.sync.pipeline import sync_table

    table = _named(settings, table_name)
    result = sync_table(table, settings.mysql_url, settings.postgres_url)
    print(f"{table.target_label}: {result.rows_read} rows read, {result.rejected_rows} rejected")
    for change in result.schema_changes:
        print(f"    {change}")
    return 0


def swap_back(settings: Settings, table_name: str) -> int:
    from mysql_pg_assets.sync.load.swap import swap_back as back

    table = _named(settings, table_name)
    print(f"{table.target_label}: swapped back; the table that was live is now {back(settings.postgres_url, table)}")
    return 0


def _named(settings: Settings, table_name: str) -> TablePlan:
    from mysql_pg_assets.ops.trace import named

    return named(list(discover(load_spec(settings.sync_config), settings.mysql_url).tables), table_name)


def recover(settings: Settings, args: argparse.Namespace) -> int:
    from mysql_pg_assets.sync.capture import recover as recovery

    catalog = discover(load_spec(settings.sync_config), settings.mysql_url)
    table = find_table(catalog.tables, args.table)
    if table is None or not table.cdc:
        raise recovery.RecoveryError(f"{args.table}: not a table with mode: cdc (those have a change log)")

    if args.rollback:
        done = recovery.rollback(settings.postgres_url, table, args.rollback)
    elif args.restore_to:
        position, time = recovery.parse_point(args.restore_to)
        done = recovery.restore(settings.postgres_url, table, position, time, args.into, args.in_place)
    else:
        position, _ = recovery.parse_point(args.replay_from)
        if position is None:
            raise recovery.RecoveryError("--replay-from takes a binlog position, FILE:POS")
        done = recovery.replay(settings.postgres_url, table, position)
    print(f"{done.table}: {done.keys} rows recovered from {done.changes} logged changes")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs a command; an error a person can act on is printed as its message alone, exit status 1."""
    logs.configure()
    try:
        return _run(argv)
    except ActionableError as exc:
        if logs.json_logs():
            log.error("%s", exc, extra={"event.action": "cli", "event.outcome": "failure",
                                        "error.message": str(exc)})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mysql_pg_assets.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="check the spec, both servers and Dagster's storage; create what is missing")
    summary_parser = commands.add_parser("summary", help="row counts (and values) on both sides")
    summary_parser.add_argument("--rows", action="store_true", help="compare every row and value")
    commands.add_parser("rules", help="print the casting rules as a Markdown table")
    commands.add_parser("schema", help="pending schema migrations; exits 1 when a destructive one waits")
    commands.add_parser("materialize", help="materialize every asset, all partitions, with the dagster CLI")
    reset = commands.add_parser("reset-target", help="drop the target schema and its load history")
    reset.add_argument("--yes", action="store_true", required=True, help="really drop it")
    cdc = commands.add_parser("cdc", help="follow the binlog into the tables with mode: cdc")
    cdc.add_argument("--once", action="store_true", help="stop when caught up")
    cdc.add_argument("--seconds", type=float, default=None, help="stop after this long")
    cdc.add_argument("--metrics-port", type=int, default=None, help="serve its Prometheus metrics on this port")
    cdc.add_argument("--exporter", action="store_true", help="serve the exporter's table metrics there too (where "
                                                             "no exporter runs: never scrape both)")
    exp = commands.add_parser("exporter", help="serve Prometheus metrics (/metrics) of every synced table")
    exp.add_argument("--port", type=int, default=int(os.environ.get("MPA_METRICS_PORT", "9187")))
    exp.add_argument("--host", default=os.environ.get("MPA_METRICS_HOST", "127.0.0.1"),
                     help="the address to listen on (0.0.0.0: every interface)")
    exp.add_argument("--seconds", type=float, default=None, help="stop after this long")
    tracer = commands.add_parser("trace", help="one record's path: MySQL, change log, loads, rejects, PostgreSQL")
    tracer.add_argument("table", help="the table (schema.table, or its MySQL name)")
    tracer.add_argument("key", nargs="+", help="the primary key's values, in its column order")
    gate = commands.add_parser("check-migration", help="judge a MySQL migration (a .sql file) before it runs: "
                                                        "exit 0 compatible, 2 destructive, 1 cannot judge")
    gate.add_argument("file", help="the migration's SQL")
    rec = commands.add_parser("recover", help="undo a run, restore to a point, or replay, from the change log")
    rec.add_argument("table", help="the table (schema.table, or its MySQL name)")
    how = rec.add_mutually_exclusive_group(required=True)
    how.add_argument("--rollback", metavar="RUN_ID", help="undo what this capture run applied, in place")
    how.add_argument("--restore-to", metavar="FILE:POS|TIME", help="the table as of a binlog position or time")
    how.add_argument("--replay-from", metavar="FILE:POS", help="apply the changes after this position again")
    rec.add_argument("--into", help="--restore-to: the new table to build (in the same schema)")
    rec.add_argument("--in-place", action="store_true", help="--restore-to: rewrite the table itself")
    migrations = commands.add_parser("migrations", help="versioned PostgreSQL migrations (a Sqitch project)")
    migrations.add_argument("action", choices=["generate"], help="generate: write the ready schema changes")
    for name, text in (("rebuild", "load a table whole; blue/green: build its new shape aside and swap it in"),
                       ("swap-back", "blue/green: put the previous table back (run again to undo)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("table", help="the table (schema.table, or its MySQL name)")
    args = parser.parse_args(argv)
    if args.command == "migrations":
        return generate_migrations(Settings.from_env())
    if args.command == "rebuild":
        return rebuild(Settings.from_env(), args.table)
    if args.command == "swap-back":
        return swap_back(Settings.from_env(), args.table)
    if args.command == "recover":
        return recover(Settings.from_env(), args)
    if args.command == "cdc":
        return capture(Settings.from_env(), args.seconds, args.once, args.metrics_port, args.exporter)
    if args.command == "check-migration":
        return check_migration(Settings.from_env(), args.file)
    if args.command == "trace":
        return trace_record(Settings.from_env(), args.table, args.key)
    if args.command == "exporter":
        return exporter(Settings.from_env(), args.port, args.host, args.seconds)
    if args.command == "rules":
        print(rules_markdown())
        return 0
    if args.command == "check":
        return check(Settings.from_env())
    if args.command == "materialize":
        return materialize_all(Settings.from_env())
    if args.command == "reset-target":
        return reset_target(Settings.from_env())
    if args.command == "schema":
        return schema_changes(Settings.from_env())
    return summary(Settings.from_env(), rows=args.rows)


if __name__ == "__main__":
    sys.exit(main())
