"""pg_chameleon (PyPI ``pg-chameleon`` 2.0) run as the reference replica of bench/cdc.py's ``events`` table.

``Chameleon`` writes pg_chameleon's configuration under a temporary HOME (pg_chameleon reads
``~/.pg_chameleon/configuration/<name>.yml``; the real home is never touched), then runs
``create_replica_schema``, ``add_source``, ``init_replica`` (timed) and ``start_replica`` against a fresh
destination database. With ``log_dest: stdout`` pg_chameleon stays in the foreground, so the replica is a child
process of ours: it is stopped with SIGINT (its own graceful stop, what ``stop_replica`` sends) on exit.

What it measures:

- ``init_seconds``: wall time of ``init_replica`` (the initial copy, its index builds and the schema swap,
  plus one interpreter start, about 0.5 s).
- ``caught_up(timeout_s)``: seconds until the destination table equals the MySQL table in ``count(*)``,
  ``sum(n)`` and ``max(written_at)``. pg_chameleon stores row images in its log tables and replays them in
  batches with a PL/pgSQL function, so the real destination table is compared, not its bookkeeping.
- ``lag_samples(stop)``: staleness of the copy while a writer stamps ``written_at = NOW(6)``: every 50 ms,
  MySQL's clock now minus the newest ``written_at`` visible in PostgreSQL (or minus the sampling start, while
  nothing written since has arrived). With writes every 50 ms this is each change's lag plus at most about
  the write interval and the poll interval.
- ``peak_rss_mib``: the sum over pg_chameleon's replica processes (supervisor, binlog reader, replayer) of
  each one's ``VmHWM`` from /proc, read every half second and just before the stop; ``init_peak_rss_mib``:
  the ``init_replica`` process's peak (``wait4``).

How it fails: ``missing()`` says in one line why pg_chameleon cannot run here. Known traps it handles:
pg_chameleon exits (code 10) when run as root, so under root it runs as ``MPA_CHAMELEON_USER`` (default
``nobody``) through util-linux ``setpriv``, keeping only CAP_DAC_READ_SEARCH so that an interpreter under a
root-only directory (pyenv in /root) can still be read; and its launcher imports ``pkg_resources``, which a
venv without setuptools lacks, so the launcher runs with a stand-in for ``get_distribution`` when that import
fails. The source server needs ``log_bin=ON``, ``binlog_format=ROW``, ``binlog_row_image=FULL`` and on
MariaDB ``binlog_row_metadata=FULL`` (mysql-replication 1.0 takes column names from it): ``Chameleon``
checks them before it starts. pg_chameleon replays a source transaction in batches of ``replay_max_rows``,
so a huge transaction is not atomic in PostgreSQL.

``make chameleon`` installs it into ``.local/chameleon`` (where :func:`find_executable` looks after
``MPA_CHAMELEON`` and the PATH); ``make bench-cdc`` then runs it after the project's own capture.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql
import yaml
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
CONFIG_NAME = "bench"
SOURCE_NAME = "mysql"
CATALOG_SCHEMA = "sch_chameleon"
FAILURE = re.compile(r"\b(ERROR|FATAL|CRITICAL)\b")

_LAUNCHER = """\
import importlib.metadata, sys, types
try:
    import pkg_resources
except ImportError:
    stand_in = types.ModuleType("pkg_resources")
    stand_in.get_distribution = lambda name: f"{name} {importlib.metadata.version(name)}"
    sys.modules["pkg_resources"] = stand_in
script = sys.argv.pop(1)
sys.argv[0] = script
exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__", "__file__": script})
"""


class Unavailable(RuntimeError):
    """pg_chameleon cannot run here; the message says why in one line."""


@dataclass(frozen=True)
class Launch:
    """How to start pg_chameleon here: the command's head, and the user it runs as (None: as we are)."""

    argv: tuple[str, ...]
    owner: tuple[int, int] | None

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]


def find_executable() -> Path | None:
    """``MPA_CHAMELEON``, else ``chameleon`` on the PATH, else ``<repo>/.local/chameleon/bin/chameleon``."""
    candidates = [os.environ.get("MPA_CHAMELEON"), shutil.which("chameleon"),
                  str(REPO / ".local" / "chameleon" / "bin" / "chameleon")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def _interpreter(executable: Path) -> list[str]:
    with executable.open("rb") as handle:
        first = handle.readline(1024).decode(errors="replace")
    if not first.startswith("#!"):
        raise Unavailable(f"{executable} is not a Python script (no #! line); point MPA_CHAMELEON at pip's one")
    return shlex.split(first[2:])


def _unprivileged() -> tuple[list[str], tuple[int, int] | None]:
    if os.geteuid() != 0:
        return [], None
    setpriv = shutil.which("setpriv")
    name = os.environ.get("MPA_CHAMELEON_USER", "nobody")
    if setpriv is None:
        raise Unavailable("pg_chameleon refuses to run as root, and setpriv (util-linux) is not here to run it as "
                          f"{name}: run the bench as another user")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise Unavailable(f"pg_chameleon refuses to run as root, and MPA_CHAMELEON_USER={name} is no user") from None
    head = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return head, (user.pw_uid, user.pw_gid)


def launch() -> Launch:
    """The command that runs pg_chameleon's CLI here; raises ``Unavailable``."""
    executable = find_executable()
    if executable is None:
        raise Unavailable("pg_chameleon is not installed: set MPA_CHAMELEON to its `chameleon` executable, put it "
                          "on the PATH, or `pip install pg-chameleon` into a venv at .local/chameleon")
    script = executable.with_name("chameleon.py")
    script = script if script.is_file() else executable
    head, owner = _unprivileged()
    return Launch((*head, *_interpreter(executable), "-c", _LAUNCHER, str(script)), owner)


def _environment(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "TZ": "UTC"}


def missing() -> str | None:
    """None when pg_chameleon can run here, else one line saying why."""
    try:
        how = launch()
    except Unavailable as error:
        return str(error)
    with tempfile.TemporaryDirectory(prefix="mpa-chameleon-probe-") as home:
        if how.owner:
            os.chown(home, *how.owner)
        try:
            done = subprocess.run(how.command("--version"), env=_environment(Path(home)), cwd=home,
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"pg_chameleon does not start: {error}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit code {done.returncode}"]
        return f"pg_chameleon does not start: {lines[-1]}"
    return None


def _mysql_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with suppress(OSError, ValueError):
                stack.extend(int(child) for child in children.read_text().split())
        if parent != pid:
            found.append(parent)
    return found


class PeakRss(threading.Thread):
    """Each process's VmHWM in a process tree, kept at its highest, read every ``interval_s``."""

    def __init__(self, root: int, interval_s: float = 0.5) -> None:
        super().__init__(name="chameleon-rss", daemon=True)
        self.root, self.interval_s, self.kib = root, interval_s, {}
        self.done = threading.Event()

    def sample(self) -> None:
        for pid in [self.root, *_descendants(self.root)]:
            value = _vm_hwm_kib(pid)
            if value is not None:
                self.kib[pid] = max(value, self.kib.get(pid, 0))

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.sample()


@dataclass(frozen=True)
class TableState:
    """What ``caught_up`` compares: row count, the sum of the changed column and the newest stamp."""

    rows: int
    total: int
    newest: datetime | None

    @classmethod
    def of(cls, row: tuple | None) -> TableState:
        rows, total, newest = row or (0, 0, None)
        return cls(int(rows or 0), int(total or 0), newest)


def percentiles(samples: list[float]) -> str:
    """p50, p95 and max of lag samples, for a report line."""
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return (f"p50 {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s"
            f" over {len(ordered)} samples")


class Chameleon:
    """pg_chameleon replicating one MySQL database into a fresh PostgreSQL database, for the life of a ``with``."""

    def __init__(self, mysql_host: str, mysql_port: int, mysql_user: str, mysql_password: str,
                 source_database: str, postgres_url: str, database: str, schema: str, *, table: str = "events",
                 sum_column: str = "n", time_column: str = "written_at", sleep_loop: float = 1,
                 batch_rows: int = 10_000, keep_database: bool = False) -> None:
        server = urlsplit(postgres_url)
        self.mysql = {"host": mysql_host, "port": int(mysql_port), "user": mysql_user, "password": mysql_password}
        self.postgres = {"host": server.hostname or "localhost", "port": server.port or 5432,
                         "user": unquote(server.username or ""), "password": unquote(server.password or "")}
        self.admin_database = unquote(server.path.lstrip("/")) or "postgres"
        self.source_database, self.database, self.schema = source_database, database, schema
        self.table, self.sum_column, self.time_column = table, sum_column, time_column
        self.sleep_loop, self.batch_rows, self.keep_database = sleep_loop, batch_rows, keep_database
        self.init_seconds = float("nan")
        self.init_peak_rss_mib = float("nan")
        self.how: Launch | None = None
        self.workdir: Path | None = None
        self.replica: subprocess.Popen | None = None
        self.rss: PeakRss | None = None
        self.clock_offset = timedelta(0)

    def __enter__(self) -> Chameleon:
        self.how = launch()
        self._check_source()
        self.workdir = Path(tempfile.mkdtemp(prefix="mpa-chameleon-"))
        try:
            self._write_configuration()
            self._reset_database()
            self._step("create_replica_schema")
            self._step("add_source", "--source", SOURCE_NAME)
            started = time.perf_counter()
            self.init_peak_rss_mib = self._step("init_replica", "--source", SOURCE_NAME) / 1024
            self.init_seconds = time.perf_counter() - started
            self._expect_status({"initialised"}, 0)
            self.clock_offset = self._clock_offset()
            self._start_replica()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._close()

    @property
    def peak_rss_mib(self) -> float:
        """The sum of each replica process's peak resident set, in MiB (0 before the replica started)."""
        return sum(self.rss.kib.values()) / 1024 if self.rss else 0.0

    @property
    def peak_rss_by_process(self) -> dict[int, float]:
        return {pid: kib / 1024 for pid, kib in self.rss.kib.items()} if self.rss else {}

    def caught_up(self, timeout_s: float) -> float:
        """Seconds until the destination table equals the source one (count, sum, newest stamp) as of now."""
        want, started = self.source_state(), time.monotonic()
        with self._destination() as connection:
            while True:
                got = self._destination_state(connection)
                if got == want:
                    return time.monotonic() - started
                self._check_running()
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"pg_chameleon did not catch up within {timeout_s:g} s: MySQL {want}, "
                                       f"PostgreSQL {got}")
                time.sleep(0.05)

    def lag_samples(self, stop: threading.Event, interval_s: float = 0.05) -> list[float]:
        """Staleness samples (seconds, see the module docstring) until ``stop`` is set; run it in a thread."""
        query = sql.SQL("SELECT max({}) FROM {}.{}").format(
            sql.Identifier(self.time_column), sql.Identifier(self.schema), sql.Identifier(self.table))
        samples: list[float] = []
        since = datetime.now() + self.clock_offset
        with self._destination() as connection:
            while not stop.is_set():
                tick = time.monotonic()
                newest = connection.execute(query).fetchone()[0]
                now = datetime.now() + self.clock_offset
                samples.append((now - max(newest or since, since)).total_seconds())
                time.sleep(max(0.0, interval_s - (time.monotonic() - tick)))
        return samples

    def source_state(self) -> TableState:
        query = (f"SELECT count(*), sum({_mysql_identifier(self.sum_column)}), "
                 f"max({_mysql_identifier(self.time_column)}) FROM {_mysql_identifier(self.source_database)}."
                 f"{_mysql_identifier(self.table)}")
        with self.source_connection() as connection, connection.cursor() as cur:
            cur.execute(query)
            return TableState.of(cur.fetchone())

    def _destination_state(self, connection: psycopg.Connection) -> TableState:
        query = sql.SQL("SELECT count(*), sum({}), max({}) FROM {}.{}").format(
            sql.Identifier(self.sum_column), sql.Identifier(self.time_column), sql.Identifier(self.schema),
            sql.Identifier(self.table))
        return TableState.of(connection.execute(query).fetchone())

    @contextmanager
    def source_connection(self) -> Iterator[pymysql.Connection]:
        """An autocommit connection to the source server, closed when the ``with`` ends."""
        connection = pymysql.connect(**self.mysql, autocommit=True, connect_timeout=10)
        try:
            yield connection
        finally:
            connection.close()

    def _pg(self, database: str) -> psycopg.Connection:
        return psycopg.connect(dbname=database, autocommit=True, connect_timeout=10, **self.postgres)

    def _destination(self) -> psycopg.Connection:
        return self._pg(self.database)

    def _check_source(self) -> None:
        wanted = {"log_bin": "ON", "binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
        with self.source_connection() as connection, connection.cursor() as cur:
            cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (%s, %s, %s, %s)", tuple(wanted))
            found = {name: str(value).upper() for name, value in cur.fetchall()}
        wrong = [f"{name}={found[name]} (needs {value})" for name, value in wanted.items()
                 if name in found and found[name] != value]
        if wrong:
            raise Unavailable(f"the source server cannot feed pg_chameleon: {', '.join(wrong)}")

    def _server_id(self) -> int:
        return 3_000_000 + zlib.crc32(self.schema.encode()) % 1_000_000

    def _source_configuration(self) -> dict:
        assert self.workdir is not None
        return {
            "db_conn": {**self.mysql, "port": str(self.mysql["port"]), "charset": "utf8", "connect_timeout": 10},
            "schema_mappings": {self.source_database: self.schema},
            "limit_tables": [f"{self.source_database}.{self.table}"], "skip_tables": [], "grant_select_to": [],
            "lock_timeout": "120s", "my_server_id": self._server_id(), "replica_batch_size": self.batch_rows,
            "replay_max_rows": self.batch_rows, "batch_retention": "1 day", "copy_max_memory": "300M",
            "copy_mode": "file", "out_dir": str(self.workdir / "copy"), "sleep_loop": self.sleep_loop,
            "on_error_replay": "continue", "on_error_read": "continue", "auto_maintenance": "disabled",
            "gtid_enable": False, "type": "mysql", "skip_events": {"insert": [], "delete": [], "update": []},
            "keep_existing_schema": False, "net_read_timeout": 600,
        }

    def _write_configuration(self) -> None:
        assert self.workdir is not None and self.how is not None
        home = self.workdir / "home" / ".pg_chameleon"
        for folder in (home / "configuration", home / "pid", home / "logs", self.workdir / "copy"):
            folder.mkdir(parents=True)
        configuration = {
            "pid_dir": "~/.pg_chameleon/pid/", "log_dir": "~/.pg_chameleon/logs/", "log_dest": "stdout",
            "log_level": "info", "log_days_keep": 1, "rollbar_key": "", "rollbar_env": "", "type_override": {},
            "pg_conn": {**self.postgres, "port": str(self.postgres["port"]), "database": self.database,
                        "charset": "utf8"},
            "sources": {SOURCE_NAME: self._source_configuration()}, "fillfactor": {},
        }
        (home / "configuration" / f"{CONFIG_NAME}.yml").write_text(yaml.safe_dump(configuration, sort_keys=False))
        if self.how.owner:
            for path in [self.workdir, *self.workdir.rglob("*")]:
                os.chown(path, *self.how.owner)

    def _reset_database(self) -> None:
        with self._pg(self.admin_database) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database)))
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _drop_database(self) -> None:
        with self._pg(self.admin_database) as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database)))

    def _home(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "home"

    def _log(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{name}.log"

    def _spawn(self, command: str, *args: str) -> subprocess.Popen:
        assert self.how is not None
        with self._log(command).open("ab") as log:
            return subprocess.Popen(self.how.command(command, "--config", CONFIG_NAME, *args),
                                    env=_environment(self._home()), cwd=self._home(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _step(self, command: str, *args: str) -> int:
        """Run one pg_chameleon command to its end; returns its peak RSS in KiB, raises on a reported failure."""
        process = self._spawn(command, *args)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        output = self._log(command).read_text(errors="replace")
        failed = [line for line in output.splitlines() if FAILURE.search(line)]
        if process.returncode != 0 or failed:
            raise RuntimeError(f"pg_chameleon {command} failed (exit code {process.returncode}): "
                               f"{(failed or output.strip().splitlines() or ['no output'])[-1]}")
        return usage.ru_maxrss

    def _status(self) -> str | None:
        with self._destination() as connection:
            row = connection.execute(
                sql.SQL("SELECT enm_status::text FROM {}.t_sources WHERE t_source = %s").format(
                    sql.Identifier(CATALOG_SCHEMA)), (SOURCE_NAME,)).fetchone()
        return row[0] if row else None

    def _expect_status(self, wanted: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (status := self._status()) not in wanted:
            self._check_running()
            if time.monotonic() >= deadline:
                raise RuntimeError(f"pg_chameleon's source is {status!r}, expected {' or '.join(sorted(wanted))}"
                                   f"{self._log_tail('start_replica')}")
            time.sleep(0.1)

    def _clock_offset(self) -> timedelta:
        """MySQL's NOW(6) minus this machine's local time, so stamps and wall clock compare in MySQL's zone."""
        with self.source_connection() as connection, connection.cursor() as cur:
            before = datetime.now()
            cur.execute("SELECT NOW(6)")
            after = datetime.now()
            return cur.fetchone()[0] - (before + (after - before) / 2)

    def _start_replica(self) -> None:
        self.replica = self._spawn("start_replica", "--source", SOURCE_NAME)
        self.rss = PeakRss(self.replica.pid)
        self.rss.start()
        self._expect_status({"running"}, 60)

    def _check_running(self) -> None:
        if self.replica is not None and self.replica.poll() is not None:
            raise RuntimeError(f"pg_chameleon's replica exited with code {self.replica.returncode}"
                               f"{self._log_tail('start_replica')}")

    def _log_tail(self, command: str, lines: int = 5) -> str:
        path = self._log(command)
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:] if path.exists() else []
        return (": " + " | ".join(tail)) if tail else ""

    def _stop_replica(self) -> None:
        if self.replica is None:
            return
        if self.rss is not None:
            self.rss.sample()
            self.rss.done.set()
        if self.replica.poll() is None:
            self.replica.send_signal(signal.SIGINT)
            try:
                self.replica.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.replica.pid, signal.SIGKILL)
                self.replica.wait()
        with suppress(ProcessLookupError):
            os.killpg(self.replica.pid, signal.SIGKILL)

    def _close(self) -> None:
        try:
            self._stop_replica()
            if not self.keep_database:
                self._drop_database()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)


def exercise(replica: Chameleon, rows: int, seconds: float, write: Callable[[], int]) -> None:
    """The bench's workload on the replica: ``write`` (the steady writer, returns the changes it made), then one
    UPDATE of every row; prints what it measured."""
    print(f"init_replica: {rows:,} rows in {replica.init_seconds:.2f} s ({rows / replica.init_seconds:,.0f} rows/s), "
          f"peak RSS {replica.init_peak_rss_mib:.0f} MiB")
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=lambda: samples.extend(replica.lag_samples(stop)), daemon=True)
    sampler.start()
    written = write()
    drained = replica.caught_up(300)
    stop.set()
    sampler.join()
    print(f"steady: {written:,} changes in {seconds:g} s; caught up {drained:.2f} s after the last; "
          f"staleness {percentiles(samples)}")
    with replica.source_connection() as connection, connection.cursor() as cur:
        cur.execute(f"UPDATE {_mysql_identifier(replica.source_database)}.{_mysql_identifier(replica.table)}"
                    f" SET n = n + 1")
        big = cur.rowcount
    seconds_big = replica.caught_up(3600)
    print(f"big: one UPDATE of {big:,} rows caught up in {seconds_big:.2f} s: {big / seconds_big:,.0f} rows/s")
    print(f"replica peak RSS: {replica.peak_rss_mib:.0f} MiB in all "
          f"({', '.join(f'{mib:.0f}' for mib in replica.peak_rss_by_process.values())} MiB per process)")
