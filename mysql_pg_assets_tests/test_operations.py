"""Operating it: the exporter and the capture service scraped by a real Prometheus while the shop writes, the
alert rules under promtool, the dashboard's queries against the names really exposed, JSON logs, and the
trace of one record, on the real servers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

import mysql_pg_assets_demo as demo
from mysql_pg_assets.core.connections import mysql_connection, pg_connection
from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl, Settings
from mysql_pg_assets.core.sql import mysql_qualified
from mysql_pg_assets.definitions import build_definitions
from mysql_pg_assets.defs.observe import check_states, failed_loads
from mysql_pg_assets.ops.logs import EcsFormatter, redact
from mysql_pg_assets.ops.metrics import serve
from mysql_pg_assets.ops.trace import named, render, trace
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.catalog.plans import TablePlan
from mysql_pg_assets.sync.pipeline import sync_table
from mysql_pg_assets.sync.spec import load_spec
from mysql_pg_assets_tests.conftest import DEMO_ORDERS, free_port, materialize_everything, write_spec

DEPLOY = PROJECT_ROOT / "deploy"
CAPTURED = ["orders", "order_items", "payments"]
BATCH = ["customers", "products", "categories", "reviews"]


@pytest.fixture(scope="module")
def prometheus_bin() -> Path:
    """Debian's prometheus and promtool (scripts/prometheus.sh fetches them once)."""
    found = subprocess.run([str(PROJECT_ROOT / "scripts" / "prometheus.sh")], capture_output=True, text=True,
                           check=True)
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def operated(make_mysql_database: Callable[[str], DatabaseUrl], make_pg_database: Callable[[str], DatabaseUrl],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[TablePlan], DagsterInstance]]:
    """A demo shop, three tables change-captured and four loaded in batches, materialized through Dagster."""
    source = make_mysql_database("ops")
    demo.create_schema(source.secret)
    demo.seed(source.secret, orders=DEMO_ORDERS, log=lambda _line: None)
    spec = {"source": {"database": source.database}, "target": {"schema": "shop_ops"}, "include": CAPTURED + BATCH,
            "options": {"freshness": {"fail_after": "PT6H"}},
            "tables": {name: {"mode": "cdc"} for name in CAPTURED}}
    path = write_spec(tmp_path_factory.mktemp("ops") / "sync.yaml", spec)
    settings = Settings(mysql_url=source, postgres_url=make_pg_database("ops"), sync_config=path)
    saved = {k: os.environ.get(k) for k in ("MYSQL_URL", "POSTGRES_URL", "SYNC_CONFIG")}
    os.environ.update(MYSQL_URL=source.secret, POSTGRES_URL=settings.postgres_url.secret, SYNC_CONFIG=str(path))
    with DagsterInstance.ephemeral() as instance:
        assert all(r.success for r in materialize_everything(build_definitions(settings), instance))
        yield settings, list(discover(load_spec(path), source).tables), instance
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)



def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]["result"]


def _wait(what: Callable[[], bool], timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.5)


def _prometheus(binary: Path, directory: Path, targets: dict[str, int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (directory / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": ["alerts.yml"],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}
                                 for job, target in targets.items()]}
    (directory / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [str(binary / "prometheus"), f"--config.file={directory / 'prometheus.yml'}",
         f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    _wait(ready, 60, "Prometheus did not start")
    return process, port


def _exposed_names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/label/__name__/values", timeout=10) as response:
        return set(json.load(response)["data"])


def _declared(port: int) -> set[str]:
    """The series names an endpoint declares (# TYPE), whether or not it has a sample of them right now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {name + suffix for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
            for suffix in suffixes.get(kind, [""])}


def _metric_names(promql: str) -> set[str]:
    """The project's metric names a query refers to (by name, or by a __name__ regex of alternatives)."""
    names = set(re.findall(r"\b(mpa_[a-z0-9_]+)\b", promql))
    return {n for n in names if not n.endswith("_")}


def test_prometheus_scrapes_the_exporter_and_the_capture_service(
        operated: tuple[Settings, list[TablePlan], DagsterInstance], prometheus_bin: Path, tmp_path: Path) -> None:
    settings, tables, instance = operated
    exporter_port, capture_port = free_port(), free_port()
    server, _ = serve(settings, exporter_port, checks=lambda found: check_states(found, instance),
                      failures=lambda found: failed_loads(found, instance))
    env = {**os.environ, "LOG_FORMAT": "json"}
    log_file = tmp_path / "cdc.log"
    service = subprocess.Popen([sys.executable, "-m", "mysql_pg_assets.cli", "cdc", "--seconds", "60",
                                "--metrics-port", str(capture_port)], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=log_file.open("w"))
    prometheus, port = _prometheus(prometheus_bin, tmp_path,
                                   {"mysql-pg-assets": exporter_port, "mysql-pg-assets-cdc": capture_port})
    writing = threading.Event()
    writing.set()

    def shop() -> None:
        while writing.is_set():
            demo.simulate(settings.mysql_url.secret, interval=0, iterations=2, out=None)
            time.sleep(0.2)

    writer = threading.Thread(target=shop)
    writer.start()
    try:
        _wait(lambda: bool(_query(port, 'sum(mpa_cdc_changes_applied_total{table="shop_ops.orders"}) > 0')), 60,
              "no change applied to shop_ops.orders reached Prometheus")
        _wait(lambda: bool(_query(port, 'mpa_rows_read_total{table="shop_ops.customers"}')), 30,
              "the exporter's load figures did not reach Prometheus")
        read = _query(port, 'mpa_rows_read_total{table="shop_ops.customers"}')[0]["value"][1]
        with pg_connection(settings.postgres_url) as connection:
            ledger = connection.execute("SELECT sum(rows_read) FROM mysql_pg_assets.loads WHERE target_table ="
                                        " 'shop_ops.customers'").fetchone()[0]
        assert int(float(read)) == ledger > 0
        lags = {r["metric"]["table"]: float(r["value"][1]) for r in _query(port, "mpa_cdc_lag_seconds")}
        assert set(lags) == {f"shop_ops.{name}" for name in CAPTURED} and all(v >= 0 for v in lags.values())
        checks = {(r["metric"]["table"], r["metric"]["check"]): r["value"][1]
                  for r in _query(port, "mpa_check_failed")}
        assert checks[("shop_ops.customers", "parity")] == "0" and len(checks) >= len(tables) * 3
        failed = {r["metric"]["table"]: r["value"][1] for r in _query(port, "mpa_load_failed")}
        assert failed == {t.target_label: "0" for t in tables}  # every newest attempt succeeded
        _wait(lambda: bool(_query(port, "histogram_quantile(0.95, sum by (le) (rate(mpa_cdc_batch_lag_seconds_bucket"
                                        "[1m]))) >= 0")), 30, "no lag percentile from the capture's histogram")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as response:
            rules = [r for g in json.load(response)["data"]["groups"] for r in g["rules"]]
        written = len(re.findall(r"- alert: ", (DEPLOY / "prometheus" / "alerts.yml").read_text()))
        assert len(rules) == written and all(r["health"] == "ok" for r in rules), [r for r in rules
                                                                                   if r["health"] != "ok"]
        exposed = _exposed_names(port) | _declared(exporter_port) | _declared(capture_port)
    finally:
        writing.clear()
        writer.join()
        prometheus.terminate()
        prometheus.wait(timeout=30)
        server.shutdown()
        service.terminate()
        service.wait(timeout=60)
    logged = log_file.read_text()
    _dashboard_and_rules_use_only(exposed)
    _logs_are_ecs_json(logged, settings)


def _dashboard_and_rules_use_only(exposed: set[str]) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "mysql-pg-assets.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    used = {n for q in queries for n in _metric_names(q)} | _metric_names(rules)
    # Counters are exposed with _total, a histogram with _bucket/_sum/_count; a gauge with no sample right now
    # (no load has failed) is declared all the same.
    assert used and not used - exposed, sorted(used - exposed)
    assert len(queries) > 20


def _logs_are_ecs_json(logged: str, settings: Settings) -> None:
    lines = [line for line in logged.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert records and all({"@timestamp", "log", "message", "ecs"} <= set(r) for r in records)
    assert any(r.get("event", {}).get("action") == "cdc-apply" and r.get("source", {}).get("position")
               for r in records)
    assert settings.mysql_url.secret not in logged and settings.postgres_url.secret not in logged


def test_alert_rules_pass_promtool(prometheus_bin: Path) -> None:
    rules = DEPLOY / "prometheus"
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                    ["check", "config", "prometheus.yml"]):
        done = subprocess.run([str(prometheus_bin / "promtool"), *command], cwd=rules, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (rules / "alerts_test.yml").read_text()))
    assert tested == set(re.findall(r"- alert: (\w+)", (rules / "alerts.yml").read_text()))  # each rule tested


def test_a_record_is_traced_through_both_paths(operated: tuple[Settings, list[TablePlan], DagsterInstance]) -> None:
    settings, tables, instance = operated
    source = settings.mysql_url
    with mysql_connection(source) as connection, connection.cursor() as cur:
        cur.execute(f"SELECT min(id) FROM {mysql_qualified(source.database, 'orders')}")
        order = str(cur.fetchone()[0])
        cur.execute(f"UPDATE {mysql_qualified(source.database, 'orders')} SET status = 'shipped' WHERE id = %s",
                    (order,))
    subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "cdc", "--once"], cwd=PROJECT_ROOT, check=True,
                   env=os.environ.copy(), capture_output=True)
    found = trace(source, settings.postgres_url, named(tables, "shop_ops.orders"), [order])
    assert found.equal and found.mysql_row is not None and found.changes
    assert found.changes[-1]["after"]["status"] == "shipped" and found.changes[-1]["operation"] == "update"
    text = render(found)
    assert "equal, every column" in text and "'shipped'" in text

    customers = named(tables, "customers")  # loaded in batches: a load, then the trace
    sync_table(customers, source, settings.postgres_url, run_id="reloaded")
    found = trace(source, settings.postgres_url, customers, ["1"])
    assert found.equal and not found.changes and found.loads[0]["run_id"] == "reloaded"
    assert {load["scope"] for load in found.loads} == {"full"} and len(found.loads) >= 2
    with pg_connection(settings.postgres_url) as connection:  # PostgreSQL edited behind the sync's back
        connection.execute("UPDATE shop_ops.customers SET full_name = %s WHERE id = 1", ("someone else",))
    found = trace(source, settings.postgres_url, customers, ["1"])
    assert [d["column"] for d in found.differences] == ["full_name"]

    done = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "trace", "customers", "1"],
                          cwd=PROJECT_ROOT, env=os.environ.copy(), capture_output=True, text=True)
    assert done.returncode == 1 and "DIFFERENT" in done.stdout and "full_name: MySQL" in done.stdout
    job = build_definitions(settings).get_job_def("trace_record")
    result = job.execute_in_process(run_config={"ops": {"trace": {"config": {"table": "orders", "key": [order]}}}},
                                    instance=instance)
    assert result.success


def test_json_log_lines_name_the_run_and_hide_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    record = logging.LogRecord("mysql_pg_assets", logging.ERROR, __file__, 1,
                               "cannot reach mysql://sync:s3cret@db.internal:3306/shop", None, None)
    record.__dict__.update({"table": "shop.orders", "run_id": "abc", "event.action": "load"})
    line = json.loads(EcsFormatter().format(record))
    assert line["log"]["level"] == "error" and line["table"] == "shop.orders" and line["event"]["action"] == "load"
    assert "s3cret" not in json.dumps(line) and line["message"] == "cannot reach mysql://sync:***@db.internal:3306/shop"
    assert redact("host=db password=s3cret user=x") == "host=db password=*** user=x"


def test_a_dagster_run_logs_ecs_json(operated: tuple[Settings, list[TablePlan], DagsterInstance],
                                     monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A run of a code location loaded with LOG_FORMAT=json: each of its console lines one ECS JSON object."""
    import logging

    settings, _, instance = operated
    monkeypatch.setenv("LOG_FORMAT", "json")
    project = logging.getLogger("mysql_pg_assets")
    try:
        job = build_definitions(settings).get_job_def("trace_record")
        result = job.execute_in_process(run_config={"ops": {"trace": {"config": {"table": "categories",
                                                                                 "key": ["1"]}}}},
                                        instance=instance)
        stored = [e.user_message for e in instance.all_logs(result.run_id)]
        logged = capfd.readouterr().err
    finally:  # the project's loggers as other tests expect them
        logging.setLoggerClass(logging.Logger)
        for handler in [h for h in project.handlers if h.get_name() == "mysql_pg_assets"]:
            project.removeHandler(handler)
        project.propagate = True
        project.setLevel(logging.NOTSET)
    assert result.success
    lines = [line for line in logged.splitlines() if result.run_id in line]
    records = [json.loads(line) for line in lines]  # each of the run's lines one JSON object
    assert {"STEP_START", "STEP_SUCCESS", "RUN_SUCCESS"} <= {r["event"]["action"] for r in records}
    assert all(r["run_id"] == result.run_id and r["labels"]["job"] == "trace_record" for r in records)
    assert any("categories" in r["message"] and "equal, every column" in r["message"] for r in records)
    assert any("equal, every column" in message for message in stored)  # the UI's event log keeps it all
