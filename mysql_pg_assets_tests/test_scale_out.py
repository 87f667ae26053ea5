"""Scale-out on Dagster's own engine: the demo shop materialized with its steps on two Celery workers through a
real Redis broker (Debian's redis-server, started here on a free port), a Dagster instance in PostgreSQL
shared by the run and the workers; every row then compared with MySQL, as after an in-process run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from mysql_pg_assets.core.settings import PROJECT_ROOT, DatabaseUrl
from mysql_pg_assets_tests.conftest import free_port, write_spec

REDIS = shutil.which("redis-server")



@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
            time.sleep(0.2)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian's redis-server package)")
def test_steps_run_on_two_celery_workers_with_the_same_result(
        broker: str, demo_source: DatabaseUrl, make_pg_database: Callable[[str], DatabaseUrl],
        tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    spec = yaml.safe_load((PROJECT_ROOT / "sync.yaml").read_text())
    spec.update(source={"database": demo_source.database}, target={"schema": "shop_celery"})
    env = {**os.environ, "DAGSTER_HOME": str(home), "MPA_CELERY_BROKER": broker, "MPA_MASK_SALT": "celery",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # celery, dagster
           "MYSQL_URL": demo_source.secret, "POSTGRES_URL": make_pg_database("celery").secret,
           "DAGSTER_POSTGRES_URL": make_pg_database("celery_dagster").secret,
           "SYNC_CONFIG": str(write_spec(tmp_path / "sync.yaml", spec))}
    logs = [tmp_path / f"worker{n}.log" for n in (1, 2)]
    workers = [subprocess.Popen(["dagster-celery", "worker", "start", "-A",
                                 "dagster_celery.app", "-y", str(PROJECT_ROOT / "deploy" / "celery.yaml"),
                                 "-n", f"w{n}"], cwd=PROJECT_ROOT, env=env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)  # the worker is a child
                for n, log in enumerate(logs, 1)]
    try:
        run = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "materialize"], cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    finally:  # the wrapper and the celery worker it started (with its pool's processes): the whole group
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)  # what a warm shutdown left
    done = [log.read_text().count("succeeded in") for log in logs]
    assert sum(done) >= 2, [log.read_text()[-2000:] for log in logs]  # the steps ran on the workers
    summary = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "summary", "--rows"], cwd=PROJECT_ROOT,
                             env=env, capture_output=True, text=True, timeout=600)
    assert summary.returncode == 0 and "0 different" in summary.stdout, summary.stdout + summary.stderr
