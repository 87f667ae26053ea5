"""Logs: plain lines for a person, or with ``LOG_FORMAT=json`` one JSON object per line with ECS field names.

The JSON form is what Filebeat or Logstash reads without a grok pattern: ``@timestamp``, ``log.level``,
``log.logger``, ``message``, ``ecs.version``, ``service.name``, ``process.pid``, ``error.type`` and
``error.message`` (and ``error.stack_trace``) for an exception, and what the project's code adds as
``extra``: ``event.action``, ``event.outcome``, ``table``, ``partition``, ``run_id``, ``source.position``,
``row.key``, ``reason``. Dotted names nest (``{"log": {"level": "info"}}``), as ECS has them.

Every message passes through :func:`redact` first: a database URL's password never reaches a log line,
whatever the code that logged it put in it. The same formatter serves the CLI, the change-capture service
and Dagster runs: loading the code location with ``LOG_FORMAT=json`` makes the console logger Dagster builds
for each run write it (:func:`json_dagster_console`; Dagster offers no setting that does this without also
dropping messages from its event log), and the project's modules log through it in a run's processes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import TextIO

ECS_VERSION = "8.11.0"
SERVICE = "mysql-pg-assets"
# What the project's code may pass as ``extra`` (anything else a library adds stays out of the object).
FIELDS = ("event.action", "event.outcome", "event.dataset", "table", "partition", "run_id", "source.position",
          "row.key", "reason", "rows", "seconds", "error.message", "error.type")

_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.I)
_PASSWORD_PARAMETER = re.compile(r"(?P<key>password\s*=\s*)[^\s&;]+", re.I)


def redact(text: str) -> str:
    """A URL's or a connection string's password replaced by ***."""
    return _PASSWORD_PARAMETER.sub(r"\g<key>***", _PASSWORD.sub(r"\g<scheme>***@", text))


def _nest(flat: dict[str, object]) -> dict[str, object]:
    nested: dict[str, object] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})  # type: ignore[assignment]
        node[leaf] = value
    return nested


class EcsFormatter(logging.Formatter):
    """One JSON object per record, ECS names."""

    def format(self, record: logging.LogRecord) -> str:
        flat: dict[str, object] = {
            "@timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "log.level": record.levelname.lower(), "log.logger": record.name,
            "message": redact(record.getMessage()), "ecs.version": ECS_VERSION, "service.name": SERVICE,
            "process.pid": record.process,
        }
        flat.update(_dagster_fields(record))
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                flat[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            kind, error, trace = record.exc_info
            flat["error.type"] = kind.__name__
            flat["error.message"] = redact(str(error))
            flat["error.stack_trace"] = redact("".join(traceback.format_exception(kind, error, trace)))
            flat.setdefault("event.outcome", "failure")
        return json.dumps(_nest(flat), default=str, ensure_ascii=False)


def _dagster_fields(record: logging.LogRecord) -> dict[str, object]:
    """A Dagster run's record (``dagster_meta``): its own message, run id, job, step, and event type."""
    meta = record.__dict__.get("dagster_meta")
    if not isinstance(meta, dict):
        return {}
    event = meta.get("dagster_event")
    fields: dict[str, object] = {
        "message": redact(str(meta.get("orig_message") or record.getMessage())), "run_id": meta.get("run_id"),
        "labels.job": meta.get("job_name"), "labels.step": meta.get("step_key"),
        "event.action": (getattr(getattr(event, "event_type", None), "value", None) or "log").replace(
            "PIPELINE_", "RUN_"),  # Dagster's stored names of the run events
    }
    partition = (meta.get("job_tags") or {}).get("dagster/partition")
    if partition:
        fields["partition"] = partition
    if fields["event.action"] in ("STEP_FAILURE", "RUN_FAILURE"):
        fields["event.outcome"] = "failure"
    return {name: value for name, value in fields.items() if value is not None}


class _JsonConsoleLogger(logging.Logger):
    """What ``json_dagster_console`` makes every logger: a handler put on Dagster's console logger (the one named
    ``dagster``, which Dagster builds anew for each run with the logger class in force) writes ECS JSON."""

    def addHandler(self, handler: logging.Handler) -> None:  # noqa: N802 (logging's name)
        if self.name == "dagster":
            handler.setFormatter(EcsFormatter())
        super().addHandler(handler)


def json_dagster_console() -> None:
    """Dagster runs in this process write their console lines as ECS JSON: their own messages and Dagster's
    events alike, with the run id, job, step and event type. Dagster's event log (the UI) is not touched."""
    if logging.getLoggerClass() is logging.Logger:
        logging.setLoggerClass(_JsonConsoleLogger)


class PlainFormatter(logging.Formatter):
    """Time, level and message, the password taken out."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def json_logs() -> bool:
    return os.environ.get("LOG_FORMAT", "").strip().lower() == "json"


def formatter() -> logging.Formatter:
    return EcsFormatter() if json_logs() else PlainFormatter()


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """The process's root logger writes to ``stream`` (stderr) in the format ``LOG_FORMAT`` chooses: the
    project's own lines from ``level`` up, the libraries' warnings and errors."""
    root = _install(logging.getLogger(), stream or sys.stderr)
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("mysql_pg_assets").setLevel(level)


def configure_project(level: int = logging.INFO) -> None:
    """Inside a process someone else set up (Dagster's): only the project's own loggers (``mysql_pg_assets.*``)
    write in the format ``LOG_FORMAT`` chooses, to stderr."""
    project = _install(logging.getLogger("mysql_pg_assets"), sys.stderr)
    project.setLevel(level)
    project.propagate = False


def _install(logger: logging.Logger, stream: TextIO) -> logging.Logger:
    """The project's handler on ``logger``, in place of the one it put there before (any other left alone)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter())
    handler.set_name(_HANDLER)
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    return logger


_HANDLER = "mysql_pg_assets"
