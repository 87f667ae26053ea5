"""The code location: the spec and MySQL's catalog, turned into assets, with their resources.

Reading order: settings (env) → spec (sync.yaml) → catalog (information_schema) → assets (with
their checks and freshness) → the schema approval job (and change capture's job, when a table has
mode: cdc) → sensors (schema drift, data drift, freshness alerts, failed runs, change capture's watch).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import click
from dagster import BetaWarning, Definitions, EnvVar, definitions

from mysql_pg_assets.core.errors import ActionableError
from mysql_pg_assets.core.settings import Settings, export_local_defaults
from mysql_pg_assets.defs.assets import build_table_assets
from mysql_pg_assets.defs.capture import build_capture_job, build_capture_sensor, build_recovery_job
from mysql_pg_assets.defs.executor import step_executor
from mysql_pg_assets.defs.jobs import build_schema_approval_job
from mysql_pg_assets.defs.rebuild import build_rebuild_job
from mysql_pg_assets.defs.resources import MySQLSource, PostgresTarget
from mysql_pg_assets.defs.sensors import (
    alert_on_run_failure,
    build_data_drift_sensor,
    build_freshness_alert_sensor,
    build_schema_drift_sensor,
)
from mysql_pg_assets.defs.trace import build_trace_job
from mysql_pg_assets.ops.logs import configure_project, json_dagster_console, json_logs
from mysql_pg_assets.sync.catalog.discover import discover
from mysql_pg_assets.sync.spec import load_spec

# backfill_policy is marked beta; single-run backfills are what partitioned loads are built on.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")


def build_definitions(settings: Settings) -> Definitions:
    if json_logs():  # a run's every console line as ECS JSON: Dagster's and the project's own
        json_dagster_console()
        configure_project()
    spec = load_spec(settings.sync_config)
    catalog = discover(spec, settings.mysql_url)
    captured = any(t.cdc for t in catalog.tables)  # change capture's job and sensor, when a table has mode: cdc
    return Definitions(
        assets=build_table_assets(catalog),
        jobs=[build_schema_approval_job(spec, catalog), build_trace_job(catalog), build_rebuild_job(spec, catalog),
              *([build_capture_job(catalog, spec.options.cdc_retention_days), build_recovery_job(catalog)]
                if captured else [])],
        sensors=[
            build_schema_drift_sensor(spec, catalog),
            build_data_drift_sensor(spec, catalog),
            build_freshness_alert_sensor(catalog),
            alert_on_run_failure,
            *([build_capture_sensor(catalog, spec.options.cdc_max_lag_s)] if captured else []),
        ],
        resources={
            "mysql": MySQLSource(url=EnvVar("MYSQL_URL")),
            "postgres": PostgresTarget(url=EnvVar("POSTGRES_URL")),
        },
        executor=step_executor(),
    )


class CodeLocationError(click.ClickException):
    """A spec, connection or privilege error met while loading the code location.

    Dagster shows any error raised here with a stack trace around it; a ``click.ClickException``
    is what its command line prints as one line (``Error: <message>``), and the UI and
    ``dagster definitions validate`` show its message first, with a single frame.
    """


# Dagster loads a code location several times over in one process within seconds: twice when a code
# server starts or `dagster definitions validate` runs, five times in `dagster asset materialize`
# (measured; about a second each for 500 tables, two for 2,000). What was built is handed out again
# for this long, unless the spec file changed. A reload of the location in the UI restarts the code
# server's process, so it always reads MySQL's catalog anew.
REBUILD_AFTER_S = 30.0
_built: dict[tuple[object, ...], tuple[float, Definitions]] = {}


def _spec_version(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@definitions
def defs() -> Definitions:
    # Built when Dagster loads the code location, not at import: importing this module never
    # connects to MySQL.
    export_local_defaults()
    settings = Settings.from_env()
    key = (settings.mysql_url.secret, settings.postgres_url.secret, str(settings.sync_config),
           _spec_version(settings.sync_config))
    built = _built.get(key)
    if built is not None and time.monotonic() - built[0] < REBUILD_AFTER_S:
        return built[1]
    try:
        definitions_ = build_definitions(settings)
    except ActionableError as exc:
        raise CodeLocationError(str(exc)) from None
    _built.clear()
    _built[key] = (time.monotonic(), definitions_)
    return definitions_
