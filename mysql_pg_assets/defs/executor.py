"""Where a run's steps run: in the run's own process when it has one step, else forked, else on Celery.

Most runs a user launches have one step: a partition, a table, a sensor's repair (tables of one source and
partitions share a step, ``defs/assets.py``). Dagster's multiprocess executor would start a process for it
(here: a forkserver that imports the project, Dagster and the drivers, then a fork), about two seconds
before the load begins, in a run process that has imported all of that already. So a run of one step runs
it where it is (Dagster's in-process executor, which takes pool slots the same way); a run of more steps
forks them from the forkserver, side by side. With ``MPA_CELERY_BROKER`` set, every step goes to Celery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from dagster import Executor, ExecutorDefinition, executor, multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.multiprocess import MultiprocessExecutor

PRELOADED = ["mysql_pg_assets.definitions", "mysql_pg_assets.defs.assets"]


class OneStepHere(Executor):
    """One step: in process; more: forked from a forkserver that imported ``PRELOADED`` once."""

    def __init__(self) -> None:
        self.here = InProcessExecutor(retries=RetryMode.ENABLED)
        self.forked = MultiprocessExecutor(retries=RetryMode.ENABLED, max_concurrent=None, start_method="forkserver",
                                           explicit_forkserver_preload=PRELOADED)

    @property
    def retries(self) -> RetryMode:
        return RetryMode.ENABLED

    def execute(self, plan_context, execution_plan) -> Iterator:
        chosen = self.here if len(execution_plan.step_keys_to_execute) == 1 else self.forked
        return chosen.execute(plan_context, execution_plan)


@executor(name="one_step_here_or_forked", requirements=multiple_process_executor_requirements())
def one_step_here_or_forked(_init_context) -> Executor:
    return OneStepHere()


def step_executor() -> ExecutorDefinition:
    """The runs' executor; with ``MPA_CELERY_BROKER`` set (``redis://host:6379/0``) Celery workers on any number
    of machines (``dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml``), through Dagster's
    own executor (dagster-celery); the broker is the results backend too. The workers share the Dagster
    instance (``DAGSTER_HOME``) with the runs. The broker is named by its variable, never its value, so a
    password in it reaches no run config or UI."""
    if not os.environ.get("MPA_CELERY_BROKER"):
        return one_step_here_or_forked
    from dagster_celery import celery_executor

    broker = {"env": "MPA_CELERY_BROKER"}
    return celery_executor.configured({"broker": broker, "backend": broker}, name="celery")
