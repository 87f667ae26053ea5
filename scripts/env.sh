# shellcheck shell=bash
# Default connection settings for the project-local databases started by
# scripts/db.sh. Meant to be sourced (Makefile recipes, interactive shells):
#
#   source scripts/env.sh
#
# Only fills in variables that are not already set, so anything exported
# beforehand (CI, a real deployment) wins. Safe under `set -u` and `set -e`.
# Values from MPA_* are put into URLs verbatim: passwords with URL-special
# characters must be percent-encoded or set MYSQL_URL / POSTGRES_URL directly.

__mpa_env() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

    local my_port="${MPA_MYSQL_PORT:-33061}" pg_port="${MPA_PG_PORT:-54329}"

    # The local demo's salt for hash masks (sync.yaml masks customers.email). Only for the local
    # databases: against your own MySQL, set MPA_MASK_SALT to a secret of your own, or the load says so.
    if [[ -z "${MYSQL_URL:-}" ]]; then
        : "${MPA_MASK_SALT:=local-demo-salt-not-a-secret}"
        export MPA_MASK_SALT
    fi
    : "${MYSQL_URL:=mysql://${MPA_MYSQL_USER:-mpa}:${MPA_MYSQL_PASSWORD:-mpa}@127.0.0.1:${my_port}/${MPA_MYSQL_DB:-shop}}"
    : "${POSTGRES_URL:=postgresql://${MPA_PG_USER:-mpa}:${MPA_PG_PASSWORD:-mpa}@127.0.0.1:${pg_port}/${MPA_PG_DB:-warehouse}}"
    export MYSQL_URL POSTGRES_URL

    # Dagster's run/event storage lives in its own database on the same server:
    # same URL with the path swapped for /dagster, query string kept.
    if [[ -z "${DAGSTER_POSTGRES_URL:-}" ]]; then
        local re='^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(/[^?#]*)?(.*)$'
        if [[ "$POSTGRES_URL" =~ $re ]]; then
            DAGSTER_POSTGRES_URL="${BASH_REMATCH[1]}/dagster${BASH_REMATCH[3]}"
        else
            echo "env.sh: cannot parse POSTGRES_URL; set DAGSTER_POSTGRES_URL explicitly" >&2
            DAGSTER_POSTGRES_URL="$POSTGRES_URL"
        fi
    fi
    export DAGSTER_POSTGRES_URL

    : "${SYNC_CONFIG:=$root/sync.yaml}"
    : "${DAGSTER_HOME:=$root/.local/dagster_home}"
    export SYNC_CONFIG DAGSTER_HOME
    # Dagster stores a run's planned events (one per table and per check: thousands for a big
    # database) in batches of this many instead of one statement each.
    : "${DAGSTER_EVENT_BATCH_SIZE:=1000}"
    export DAGSTER_EVENT_BATCH_SIZE

    # Dagster requires DAGSTER_HOME to exist; the instance config is shared
    # from the repo via a symlink so edits to dagster.yaml apply immediately.
    if mkdir -p "$DAGSTER_HOME" 2>/dev/null; then
        if [[ ! -e "$DAGSTER_HOME/dagster.yaml" && ! -L "$DAGSTER_HOME/dagster.yaml" ]]; then
            ln -s "$root/dagster.yaml" "$DAGSTER_HOME/dagster.yaml" \
                || echo "env.sh: could not link $DAGSTER_HOME/dagster.yaml" >&2
        fi
    else
        echo "env.sh: could not create DAGSTER_HOME=$DAGSTER_HOME" >&2
    fi
    return 0
}

__mpa_env
unset -f __mpa_env
