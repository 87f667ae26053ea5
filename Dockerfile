# The project's image: the code location (Dagster's user-code deployment), the change-capture service and the
# exporter all run from it; only the command differs (see deploy/helm and deploy/k8s).
FROM python:3.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY mysql_pg_assets ./mysql_pg_assets
COPY sync.yaml workspace.yaml dagster.yaml ./
RUN uv sync --frozen --no-dev

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 mpa
WORKDIR /app
COPY --from=build --chown=mpa /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 DAGSTER_HOME=/app/dagster_home SYNC_CONFIG=/app/sync.yaml
RUN mkdir -p "$DAGSTER_HOME" && cp dagster.yaml "$DAGSTER_HOME/" && chown -R mpa "$DAGSTER_HOME"
USER mpa
EXPOSE 3030 9187 9188
# The user-code server, as Dagster's Helm chart runs it; the capture: python -m mysql_pg_assets.cli cdc
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "mysql_pg_assets.definitions"]
