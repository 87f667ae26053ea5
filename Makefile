# Two commands matter: `make demo` and `make test`. Everything else is a step they share.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UI ?= 1
ORDERS ?= 10000
# scripts/env.sh fills in MYSQL_URL, POSTGRES_URL, DAGSTER_POSTGRES_URL, SYNC_CONFIG and
# DAGSTER_HOME where the caller left them unset (the local databases of scripts/db.sh).
ENV := source scripts/env.sh &&
TOOLS := $(CURDIR)/.local/tools
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)
RUN := $(UV) run --frozen
# The project's own MariaDB and PostgreSQL (scripts/db.sh), unless MYSQL_URL and POSTGRES_URL both point at
# servers of yours: then nothing is started or installed, and your servers are used as they are.
LOCAL_DB := $(if $(and $(MYSQL_URL),$(POSTGRES_URL)),,db)

.PHONY: help install db db-stop db-reset check seed materialize summary ui demo simulate cdc alter test lint samples bench bench-sensors bench-many bench-cdc bench-metrics bench-memory bench-reload bench-launch dlt chameleon exporter prometheus worker

help:
	@echo "make demo     local databases, demo data, every asset materialized, then the Dagster UI (UI=0: stop before the UI)"
	@echo "make test     the test suite against real MariaDB and PostgreSQL"
	@echo "make db | db-stop | db-reset   the project's local MariaDB and PostgreSQL"
	@echo "make check    the spec, both servers, grants and Dagster's storage, checked (and the storage created)"
	@echo "make seed ORDERS=N | simulate | materialize | summary | ui | lint (ruff and mypy)"
	@echo "make cdc      follow the binlog into the tables with mode: cdc (SYNC_CONFIG=sync.cdc.yaml; make simulate beside it)"
	@echo "make alter CHANGE=add-column|drop-column   a schema change in the demo shop, for the schema-drift sensor"
	@echo "make bench ARGS=\"--orders 5000000 --repeat 5\"   full load against pgloader and dlt (make dlt), one partition"
	@echo "make bench-memory | bench-launch   peak RSS at 5M and 20M rows; launch to committed through Dagster"
	@echo "make bench-sensors ARGS=\"--tables 50\"   what one tick of each sensor costs"
	@echo "make bench-many ARGS=\"--tables 500\"   many small tables through Dagster against pgloader"
	@echo "make bench-cdc ARGS=\"--rate 2000 --seconds 300\"   change capture's lag, and one huge transaction's catch-up"
	@echo "make bench-metrics ARGS=\"--tables 200\"   what one scrape of the exporter costs"
	@echo "make exporter                 Prometheus metrics on MPA_METRICS_PORT (9187)"
	@echo "make samples  fetch the real-world sample schemas the tests sync"

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv

# A package added to the project (its __init__.py) reinstalls it: the editable install knows only the
# packages it found when it was made.
.venv/.installed: pyproject.toml uv.lock $(wildcard */__init__.py) | $(UV)
	$(UV) sync --frozen --compile-bytecode --reinstall-package mysql-pg-assets
	@touch $@

install: .venv/.installed

db:
	scripts/db.sh start

db-stop:
	scripts/db.sh stop

db-reset:
	scripts/db.sh reset

# Real-world sample schemas (MariaDB's world and TPC-H, ZoneMinder) from Debian packages, for the tests.
samples:
	scripts/sample_schemas.sh

# Everything a run needs, checked in order; Dagster's storage database is created when missing.
check: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets.cli check

# A fresh demo shop in MySQL (in MYSQL_URL's database; tables that are not the demo's are never
# replaced), and a fresh target in PostgreSQL to sync it into.
seed: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets_demo seed --orders $(ORDERS)
	$(ENV) $(RUN) python -m mysql_pg_assets.cli reset-target --yes

materialize: check
	$(ENV) $(RUN) python -m mysql_pg_assets.cli materialize

summary: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets.cli summary --rows

ui: check
	$(ENV) $(RUN) dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

simulate: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets_demo simulate

cdc: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets.cli cdc --metrics-port $${MPA_CDC_METRICS_PORT:-9188}

# Prometheus metrics of every synced table on MPA_METRICS_PORT (9187); deploy/ has the rules and the dashboard
exporter: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets.cli exporter

# One Celery worker for the steps of runs launched with MPA_CELERY_BROKER set (start as many as you like)
worker: install
	$(ENV) $(RUN) dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml

# Debian's prometheus and promtool in .local/prometheus (the tests fetch them too)
prometheus:
	scripts/prometheus.sh

# CHANGE=add-column (compatible: migrates by itself) or drop-column (waits for approve_schema_change)
alter: install $(LOCAL_DB)
	$(ENV) $(RUN) python -m mysql_pg_assets_demo alter $(or $(CHANGE),add-column)

demo: seed materialize summary
	@if [ "$(UI)" != "0" ]; then $(MAKE) --no-print-directory ui; fi

test: install $(LOCAL_DB)
	$(ENV) $(RUN) pytest

# ruff, then mypy over the package (its settings: pyproject.toml)
lint: install
	$(RUN) ruff check mysql_pg_assets mysql_pg_assets_tests mysql_pg_assets_demo bench
	$(RUN) mypy

# Benchmark (not a test): full load of the demo orders vs pgloader, incremental partition, peak RSS.
#   make bench ARGS="--orders 200000 --repeat 1"      (default: 5,000,000 orders, 3 rounds)
.PHONY: bench
bench: install db
	$(ENV) $(RUN) python bench/run.py $(ARGS)

bench-sensors: install db
	$(ENV) $(RUN) python bench/sensor_tick.py $(ARGS)

# Many small tables through Dagster (cli materialize) vs pgloader: make bench-many ARGS="--tables 500 --repeat 3"
bench-many: install db
	$(ENV) $(RUN) python bench/many_tables.py $(ARGS)

bench-cdc: install db
	$(ENV) $(RUN) python bench/cdc.py $(ARGS)

bench-metrics: install db
	$(ENV) $(RUN) python bench/metrics_scrape.py $(ARGS)

# Peak RSS of a full load at 5 and 20 million rows: make bench-memory ARGS="--rows 5000000 20000000"
bench-memory: install db
	$(ENV) $(RUN) python bench/memory.py $(ARGS)

# A full reload of the 5M orders, replaced (built aside, swapped in) against merged: make bench-reload ARGS="--repeat 3"
bench-reload: install db
	$(ENV) $(RUN) python bench/reload.py $(ARGS)

# From launch to committed through Dagster, one partition and one small table: make bench-launch ARGS="--repeat 5"
bench-launch: install db
	$(ENV) $(RUN) python bench/launch.py $(ARGS)

# dlt 1.31, the contender make bench adds beside pgloader, in a venv of its own (its pins are not ours)
dlt:
	$(UV) venv -q --allow-existing .local/dlt && $(UV) pip install -q --python .local/dlt/bin/python \
		"dlt[postgres,sql_database]==1.31.*" connectorx==0.4.6 pyarrow "pymysql>=1.1"

# pg_chameleon, the reference bench-cdc compares with, in a venv of its own (its pins are not ours)
chameleon:
	$(UV) venv -q --allow-existing .local/chameleon && $(UV) pip install -q --python .local/chameleon/bin/python pg-chameleon==2.0.21
