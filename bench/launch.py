"""Benchmark: from launch to committed, one partition (and one small table) through Dagster.

What a user waits for after a click is mostly not the load. Each round runs, in a fresh process as the UI's
run launcher would, ``dagster asset materialize -m mysql_pg_assets.definitions --select <asset>
--partition <key>`` against a Dagster instance in PostgreSQL, and splits its wall time (spawn to exit) into:

- ``python + imports``: a process importing ``mysql_pg_assets.definitions`` and nothing else;
- ``code location``: building the definitions (the spec, MySQL's catalog, the assets) in a fresh process,
  less its imports;
- ``load``: the load itself, from the ledger (``mysql_pg_assets.loads.seconds``);
- ``run + step``: the rest: Dagster's run, the step process, events, checks.

With ``--ui`` it also launches as a click in the UI does: ``dagster-webserver`` and ``dagster-daemon`` are
started on the instance, and each round sends the UI's own GraphQL mutation (``launchRun`` of the asset job
for the asset and partition); the run then goes through the queue (the daemon), the run launcher (a process
of its own, which loads the code location) and the executor. Launch to committed is read from the ledger's
``loaded_at`` (the load's commit), launch to done from the run's status.

Source: the demo shop in ``MYSQL_URL`` (``make seed``); target: ``POSTGRES_URL`` (a durable server for
figures).

Usage: ``make bench-launch ARGS="--repeat 5 --ui"``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
TARGET = 10.0  # seconds, launch to committed, one partition


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - started, done


def last_load(postgres_url: str, table: str) -> tuple[float, str | None]:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT seconds, partition FROM mysql_pg_assets.loads WHERE target_table = %s "
                                 "ORDER BY id DESC LIMIT 1", (table,)).fetchone()
    return (float(row[0]), row[1]) if row else (0.0, None)


LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["data"]


def newest_commit(postgres_url: str, table: str) -> tuple[int, float] | None:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT id, extract(epoch FROM loaded_at) FROM mysql_pg_assets.loads WHERE "
                                 "target_table = %s ORDER BY id DESC LIMIT 1", (table,)).fetchone()
    return (int(row[0]), float(row[1])) if row else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def through_ui(env: dict[str, str], home: Path, postgres: str, selects: list[tuple[str, str | None]],
               repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Each asset (and partition) launched ``repeat`` times as the UI launches it: (to committed, to done)."""
    port, bin_dir = free_port(), Path(sys.executable).parent
    logs = [(home / name).open("w") for name in ("webserver.log", "daemon.log")]
    servers = [subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w",
                                 str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=logs[0],
                                stderr=subprocess.STDOUT, start_new_session=True),
               subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                                cwd=REPO, env=env, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)]
    found: dict[str, list[tuple[float, float]]] = {select: [] for select, _ in selects}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "dagster-webserver did not start"
                time.sleep(0.5)
        time.sleep(5)  # the daemon's first ticks
        for n in range(1, repeat + 1):
            for select, partition in selects:
                table = select.replace("/", ".")
                before = newest_commit(postgres, table)
                params = {"selector": {"repositoryLocationName": "mysql_pg_assets", "repositoryName": "__repository__",
                                       "jobName": "__ASSET_JOB", "assetSelection": [{"path": select.split("/")}]},
                          "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]
                                                if partition else []},
                          "mode": "default", "runConfigData": {}}
                clicked = time.time()
                launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
                if launched["__typename"] != "LaunchRunSuccess":
                    raise RuntimeError(f"launchRun: {launched}")
                run_id = launched["run"]["runId"]
                status = "QUEUED"
                while status not in ("SUCCESS", "FAILURE", "CANCELED"):
                    time.sleep(0.1)
                    status = graphql(port, STATUS, {"id": run_id})["runOrError"].get("status", status)
                done = time.time()
                after = newest_commit(postgres, table)
                if status != "SUCCESS" or after is None or after == before:
                    raise RuntimeError(f"{select}: run {run_id} ended {status} without a new load")
                found[select].append((after[1] - clicked, done - clicked))
                print(f"  ui round {n} {select:<16} launch to committed {after[1] - clicked:6.2f} s, to done "
                      f"{done - clicked:6.2f} s", flush=True)
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=60)
    return found


BUILD = ("from mysql_pg_assets.core.settings import Settings; from mysql_pg_assets.definitions import "
         "build_definitions; build_definitions(Settings.from_env())")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--partitioned", default="shop/orders", help="a partitioned asset")
    parser.add_argument("--plain", default="shop/customers", help="an unpartitioned asset")
    parser.add_argument("--ui", action="store_true", help="also launch through the webserver and daemon")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mpa-bench-launch-"))
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    python, dagster = sys.executable, str(Path(sys.executable).with_name("dagster"))
    postgres = os.environ["POSTGRES_URL"]
    sys.path.insert(0, str(REPO))
    from mysql_pg_assets.core.settings import Settings
    from mysql_pg_assets.definitions import build_definitions

    settings = Settings.from_env()
    defs = build_definitions(settings)
    asset = next(a for a in defs.assets or [] if any(k.to_user_string() == args.partitioned for k in a.keys))
    partition = asset.partitions_def.get_partition_keys()[-1]
    print(f"launch to committed through Dagster; instance {home}; {args.partitioned} partition {partition}, "
          f"{args.plain}; {args.repeat} rounds")
    # Once first, untimed: the tables exist, as they do for a user's daily partition.
    for select, extra in ((args.partitioned, ["--partition", partition]), (args.plain, [])):
        seconds, done = timed([dagster, "asset", "materialize", "-m", "mysql_pg_assets.definitions", "--select",
                               select, *extra], env)
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
    rows: dict[str, list[tuple[float, float, float, float]]] = {args.partitioned: [], args.plain: []}
    for n in range(1, args.repeat + 1):
        imports, _ = timed([python, "-c", "import mysql_pg_assets.definitions"], env)
        location = timed([python, "-c", BUILD], env)[0] - imports
        for select, extra in ((args.partitioned, ["--partition", partition]), (args.plain, [])):
            seconds, done = timed([dagster, "asset", "materialize", "-m", "mysql_pg_assets.definitions",
                                   "--select", select, *extra], env)
            if done.returncode != 0:
                print(done.stderr[-3000:])
                return 1
            load, _ = last_load(postgres, select.replace("/", "."))
            rows[select].append((seconds, imports, location, load))
            print(f"  round {n} {select:<16} {seconds:6.2f} s = python + imports {imports:5.2f} + code location "
                  f"{location:5.2f} + load {load:5.2f} + run and step {seconds - imports - location - load:5.2f}",
                  flush=True)
    print("\nmedians:")
    for select, values in rows.items():
        columns = list(zip(*values, strict=True))
        total, imports, location, load = (statistics.median(c) for c in columns)
        print(f"  {select:<16} {total:6.2f} s (python + imports {imports:.2f}, code location {location:.2f}, load "
              f"{load:.2f}, run and step {total - imports - location - load:.2f})")
    partitioned = statistics.median(v[0] for v in rows[args.partitioned])
    if args.ui:
        print("\nthrough the UI's launch (webserver, queue, daemon, run launcher):")
        found = through_ui(env, home, postgres, [(args.partitioned, partition), (args.plain, None)], args.repeat)
        for select, values in found.items():
            print(f"  {select:<16} launch to committed {statistics.median(v[0] for v in values):6.2f} s, to done "
                  f"{statistics.median(v[1] for v in values):6.2f} s (medians)")
        partitioned = statistics.median(v[0] for v in found[args.partitioned])
    print(f"\ntarget: one partition launch to committed <= {TARGET:g} s: {partitioned:.1f} s -> "
          f"{'MET' if partitioned <= TARGET else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
