#!/usr/bin/env bash
# Project-local MariaDB (source, binlog ON) and PostgreSQL (target + Dagster
# storage) for development and tests.
#
#   scripts/db.sh start|stop|reset|status
#
# These instances are deliberately separate from any system-wide MySQL/Postgres
# (own data dir, own ports, loopback only), so the project never depends on, or
# disturbs, whatever else runs on the machine.
#
# Settings (environment):
#   MPA_DATA_DIR        default <repo>/.local
#   MPA_MYSQL_PORT      default 33061      MPA_PG_PORT      default 54329
#   MPA_MYSQL_USER      default mpa        MPA_PG_USER      default mpa
#   MPA_MYSQL_PASSWORD  default mpa        MPA_PG_PASSWORD  default mpa
#   MPA_MYSQL_DB        default shop       MPA_PG_DB        default warehouse
set -euo pipefail

# Directories we create must stay traversable by the mysql/postgres users.
umask 022

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${MPA_DATA_DIR:-$REPO_ROOT/.local}"
DATA_DIR_CHOSEN="${MPA_DATA_DIR:+yes}"

MYSQL_PORT="${MPA_MYSQL_PORT:-33061}"
MYSQL_USER="${MPA_MYSQL_USER:-mpa}"
MYSQL_PASSWORD="${MPA_MYSQL_PASSWORD:-mpa}"
MYSQL_DB="${MPA_MYSQL_DB:-shop}"

PG_PORT="${MPA_PG_PORT:-54329}"
PG_USER="${MPA_PG_USER:-mpa}"
PG_PASSWORD="${MPA_PG_PASSWORD:-mpa}"
PG_DB="${MPA_PG_DB:-warehouse}"
PG_DAGSTER_DB="dagster"

# Set by resolve_paths / find_binaries.
MY_DATADIR="" MY_LOG="" MY_PIDFILE="" MY_SOCKDIR="" MY_SOCK=""
PG_DATADIR="" PG_LOG="" PG_SOCKDIR=""
MARIADBD="" MARIADB="" MARIADB_ADMIN="" MARIADB_INSTALL_DB="" PG_BIN=""
MYSQL_RUN_AS=""  # OS user mariadbd runs as when we are root

APT_PACKAGES=(mariadb-server mariadb-client postgresql postgresql-client)

log() { printf '[db.sh] %s\n' "$*"; }
die() { printf '[db.sh] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }

# ---------------------------------------------------------------- paths ----

# As root the servers run as the unprivileged users mysql and postgres, which must reach the data
# dir through every parent directory. A clone in a home folder others cannot traverse (/root, a
# 0700 home) would keep them out: then the data lives in /var/tmp/mpa-<hash of the clone's path>
# instead, the same place every time for this clone, and the script says so.
others_can_traverse() {
    local dir="$1"
    while [[ "$dir" != / ]]; do
        # The last mode letter: x, or t (sticky and traversable, as /tmp); T or - is not traversable.
        [[ -d "$dir" ]] && { [[ "$(stat -c %A "$dir")" == *[xt] ]] || return 1; }
        dir="$(dirname "$dir")"
    done
}

resolve_paths() {
    if is_root && [[ -z "$DATA_DIR_CHOSEN" ]] && ! others_can_traverse "$DATA_DIR"; then
        local hash
        hash="$(printf '%s' "$REPO_ROOT" | sha1sum | cut -c1-12)"
        log "$DATA_DIR is not reachable by the mysql and postgres users (a parent directory is private);" \
            "keeping the data in /var/tmp/mpa-$hash instead (set MPA_DATA_DIR to choose)"
        DATA_DIR="/var/tmp/mpa-$hash"
    fi
    mkdir -p "$DATA_DIR"
    DATA_DIR="$(cd "$DATA_DIR" && pwd)"

    MY_DATADIR="$DATA_DIR/mariadb"
    MY_LOG="$DATA_DIR/mariadb.log"
    MY_PIDFILE="$MY_DATADIR/mariadbd.pid"
    PG_DATADIR="$DATA_DIR/postgres"
    PG_LOG="$DATA_DIR/postgres.log"

    # Unix socket paths are limited to ~107 bytes (sun_path). The longest one
    # we create is postgres' lock file next to its socket; if a deep data dir
    # would overflow, use a short per-data-dir directory under /tmp instead.
    local run_dir="$DATA_DIR/run"
    local longest="$run_dir/pg/.s.PGSQL.$PG_PORT.lock"
    if (( ${#longest} > 100 )); then
        local hash
        hash="$(printf '%s' "$DATA_DIR" | sha1sum | cut -c1-12)"
        run_dir="/tmp/mpa-$hash"
    fi
    MY_SOCKDIR="$run_dir/mysql"
    MY_SOCK="$MY_SOCKDIR/mysqld.sock"
    PG_SOCKDIR="$run_dir/pg"
}

# Socket dirs are per service so each can be owned by the user its server
# runs as (mysql / postgres when we are root) without a world-writable dir.
prepare_run_dir() {
    local dir="$1" owner="$2"
    local parent
    parent="$(dirname "$dir")"
    mkdir -p "$parent"
    # A dir in /tmp could have been planted by someone else; don't trust it.
    [[ -O "$parent" ]] || die "$parent exists but is not owned by $(id -un); remove it"
    mkdir -p "$dir"
    if [[ -n "$owner" ]]; then chown "$owner:" "$dir"; fi
    chmod 755 "$dir"
}

# The servers run as unprivileged users when we are root; they need to reach
# the data dir through every parent directory.
check_traversable() {
    local user="$1" dir="$2"
    if ! (cd / && runuser -u "$user" -- test -x "$dir" -a -r "$dir") 2>/dev/null; then
        die "user '$user' cannot access $dir (a parent directory is not world-traversable," \
            "e.g. a repo under /root). Set MPA_DATA_DIR to a world-traversable path," \
            "e.g. MPA_DATA_DIR=/var/tmp/mpa-data $0 start"
    fi
}

# ------------------------------------------------------------- binaries ----

find_cmd() {
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
        # Server binaries live in sbin, which is often not on a normal user's PATH.
        local d
        for d in /usr/sbin /usr/local/sbin /usr/libexec; do
            if [[ -x "$d/$name" ]]; then echo "$d/$name"; return 0; fi
        done
    done
    return 1
}

find_pg_bin() {
    # Debian/Ubuntu install each major version side by side; take the newest.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"; return 0
    fi
    local pg_ctl
    pg_ctl="$(command -v pg_ctl 2>/dev/null || true)"
    if [[ -n "$pg_ctl" && -x "$(dirname "$pg_ctl")/initdb" ]]; then
        dirname "$pg_ctl"; return 0
    fi
    return 1
}

lookup_binaries() {
    MARIADBD="$(find_cmd mariadbd || true)"
    MARIADB="$(find_cmd mariadb || true)"
    MARIADB_ADMIN="$(find_cmd mariadb-admin || true)"
    MARIADB_INSTALL_DB="$(find_cmd mariadb-install-db || true)"
    PG_BIN="$(find_pg_bin || true)"
}

binaries_present() {
    [[ -n "$MARIADBD" && -n "$MARIADB" && -n "$MARIADB_ADMIN" && -n "$MARIADB_INSTALL_DB" \
       && -n "$PG_BIN" && -x "$PG_BIN/psql" && -x "$PG_BIN/pg_isready" ]]
}

# Only 'start' installs; stop/status just need to know what is there.
find_binaries() {
    local install="${1:-}"
    lookup_binaries
    binaries_present && return 0
    [[ "$install" == install ]] || return 0

    if is_root && [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; then
        log "server binaries missing; installing ${APT_PACKAGES[*]} (system services this may start are not used)"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
        lookup_binaries
        binaries_present || die "packages installed but binaries still not found"
    else
        printf '[db.sh] ERROR: MariaDB and/or PostgreSQL server binaries not found.\n' >&2
        printf '[db.sh] Install them, e.g. on Debian/Ubuntu:\n' >&2
        printf '    sudo apt-get install -y --no-install-recommends %s\n' "${APT_PACKAGES[*]}" >&2
        exit 1
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Mask the password so URLs can be printed safely.
print_urls() {
    echo "  mysql://$MYSQL_USER:***@127.0.0.1:$MYSQL_PORT/$MYSQL_DB"
    echo "  postgresql://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB"
    echo "  postgresql://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DAGSTER_DB  (dagster storage)"
}

# -------------------------------------------------------------- mariadb ----

mysql_pid() {
    [[ -f "$MY_PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$MY_PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # Guard against a stale pid file whose pid was reused by something else.
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || echo mariadbd)" =~ ^(mariadbd|mysqld)$ ]] || return 1
    echo "$pid"
}

mysql_ping() {
    # Returns success even on "access denied": we only ask whether it answers.
    [[ -n "$MARIADB_ADMIN" ]] || return 1
    "$MARIADB_ADMIN" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$MYSQL_PORT" \
        --connect-timeout=2 -u root ping >/dev/null 2>&1
}

mysql_is_up() { mysql_pid >/dev/null && mysql_ping; }

# SQL string literal / identifier quoting for values coming from the environment.
sql_str() { local s="${1//\\/\\\\}"; printf "'%s'" "${s//\'/\'\'}"; }
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

mysql_init() {
    [[ -d "$MY_DATADIR/mysql" ]] && return 0
    log "initializing MariaDB data dir $MY_DATADIR"
    mkdir -p "$MY_DATADIR"
    local user_opt=()
    if is_root; then user_opt=(--user="$MYSQL_RUN_AS"); chown "$MYSQL_RUN_AS:" "$MY_DATADIR"; fi
    chmod 750 "$MY_DATADIR"
    # --no-defaults must come first: never pick up /etc/mysql/my.cnf of the
    # system instance (its port, socket, datadir...).
    if ! "$MARIADB_INSTALL_DB" --no-defaults --datadir="$MY_DATADIR" "${user_opt[@]}" \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            >>"$MY_LOG" 2>&1; then
        tail -n 30 "$MY_LOG" >&2
        die "mariadb-install-db failed (full log: $MY_LOG)"
    fi
}

mysql_provision() {
    local u p db
    u="$(sql_str "$MYSQL_USER")"; p="$(sql_str "$MYSQL_PASSWORD")"; db="$(sql_ident "$MYSQL_DB")"
    # Root has no password (--auth-root-authentication-method=normal) and is
    # reachable over the private socket only, as the port is loopback-only.
    "$MARIADB" --no-defaults -S "$MY_SOCK" -u root --batch <<SQL
CREATE USER IF NOT EXISTS $u@'127.0.0.1' IDENTIFIED BY $p;
CREATE USER IF NOT EXISTS $u@'localhost' IDENTIFIED BY $p;
ALTER USER $u@'127.0.0.1' IDENTIFIED BY $p;
ALTER USER $u@'localhost' IDENTIFIED BY $p;
GRANT ALL PRIVILEGES ON *.* TO $u@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO $u@'localhost' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS $db CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
SQL
}

mysql_start() {
    if mysql_is_up; then
        mysql_provision
        log "mariadb already up on 127.0.0.1:$MYSQL_PORT"
        return 0
    fi
    if port_in_use "$MYSQL_PORT"; then
        die "port $MYSQL_PORT is used by another process; set MPA_MYSQL_PORT to a free port"
    fi

    MYSQL_RUN_AS=""
    if is_root; then
        # Prefer the unprivileged 'mysql' user; fall back to root (allowed via --user=root).
        if id mysql >/dev/null 2>&1; then MYSQL_RUN_AS=mysql; else MYSQL_RUN_AS=root; fi
        [[ "$MYSQL_RUN_AS" == root ]] || check_traversable "$MYSQL_RUN_AS" "$DATA_DIR"
    fi
    prepare_run_dir "$MY_SOCKDIR" "$MYSQL_RUN_AS"
    touch "$MY_LOG"
    if [[ -n "$MYSQL_RUN_AS" ]]; then chown "$MYSQL_RUN_AS:" "$MY_LOG"; fi

    mysql_init
    if [[ -n "$MYSQL_RUN_AS" ]]; then chown -R "$MYSQL_RUN_AS:" "$MY_DATADIR"; fi

    log "starting mariadb on 127.0.0.1:$MYSQL_PORT"
    local user_opt=()
    if [[ -n "$MYSQL_RUN_AS" ]]; then user_opt=(--user="$MYSQL_RUN_AS"); fi
    # setsid: the server must outlive this shell and its process group.
    # stdout/stderr also go to the log, to catch errors from before log-error opens.
    setsid -f "$MARIADBD" --no-defaults \
        --datadir="$MY_DATADIR" \
        --port="$MYSQL_PORT" \
        --bind-address=127.0.0.1 \
        --socket="$MY_SOCK" \
        --pid-file="$MY_PIDFILE" \
        --log-error="$MY_LOG" \
        "${user_opt[@]}" \
        --log-bin="$MY_DATADIR/binlog" \
        --binlog-format=ROW \
        --binlog-row-image=FULL \
        --binlog-row-metadata=FULL \
        --server-id=1 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --default-time-zone=+00:00 \
        --skip-name-resolve \
        --innodb-buffer-pool-size=512M \
        --max-allowed-packet=256M \
        --innodb-flush-log-at-trx-commit=2 \
        </dev/null >>"$MY_LOG" 2>&1

    local i
    for (( i = 0; i < 60; i++ )); do
        if mysql_is_up; then break; fi
        sleep 1
    done
    if ! mysql_is_up; then
        tail -n 30 "$MY_LOG" >&2
        die "mariadb did not come up within 60s (full log: $MY_LOG)"
    fi
    mysql_provision
    log "mariadb up (pid $(mysql_pid))"
}

mysql_stop() {
    local pid
    if ! pid="$(mysql_pid)"; then
        log "mariadb not running"
        return 0
    fi
    log "stopping mariadb (pid $pid)"
    # Clean shutdown over the socket; SIGTERM (also a clean shutdown) if that fails.
    "$MARIADB_ADMIN" --no-defaults -S "$MY_SOCK" -u root shutdown >/dev/null 2>&1 \
        || kill -TERM "$pid" 2>/dev/null || true
    local i
    for (( i = 0; i < 120; i++ )); do
        kill -0 "$pid" 2>/dev/null || { log "mariadb stopped"; return 0; }
        sleep 0.5
    done
    die "mariadb (pid $pid) did not stop within 60s"
}

# ------------------------------------------------------------- postgres ----

# initdb / pg_ctl refuse to run as root, so run them as 'postgres' then.
# cd /: a cwd the postgres user cannot read (e.g. /root) makes them fail.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_ensure_os_user() {
    is_root || return 0
    if ! id postgres >/dev/null 2>&1; then
        log "creating system user 'postgres'"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    check_traversable postgres "$DATA_DIR"
}

pg_is_running() {
    [[ -n "$PG_BIN" && -f "$PG_DATADIR/PG_VERSION" ]] || return 1
    is_root && ! id postgres >/dev/null 2>&1 && return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATADIR" >/dev/null 2>&1
}

pg_is_up() {
    pg_is_running && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2
}

pg_init() {
    if [[ -f "$PG_DATADIR/PG_VERSION" ]]; then
        local have want
        have="$(cat "$PG_DATADIR/PG_VERSION")"
        want="$("$PG_BIN/pg_ctl" --version | sed -E 's/.* ([0-9]+).*/\1/')"
        [[ "$have" == "$want" ]] || die "$PG_DATADIR was created by PostgreSQL $have but binaries are $want; run '$0 reset'"
        return 0
    fi
    log "initializing PostgreSQL data dir $PG_DATADIR"
    mkdir -p "$PG_DATADIR"
    if is_root; then chown postgres: "$PG_DATADIR"; fi
    chmod 700 "$PG_DATADIR"

    local locale_opt=(--no-locale)
    if locale -a 2>/dev/null | grep -Eqi '^c\.utf-?8$'; then locale_opt=(--locale=C.UTF-8); fi
    if ! as_pg "$PG_BIN/initdb" -D "$PG_DATADIR" -U postgres \
            --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 "${locale_opt[@]}" >>"$PG_LOG" 2>&1; then
        tail -n 30 "$PG_LOG" >&2
        die "initdb failed (full log: $PG_LOG)"
    fi
}

pg_psql() {
    # Local socket auth is 'trust', so this needs no password.
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_provision() {
    # \gexec runs the generated statement only when the WHERE finds it missing;
    # %I / %L quote the names and password safely.
    pg_psql -v user="$PG_USER" -v pw="$PG_PASSWORD" \
            -v db="$PG_DB" -v dagster_db="$PG_DAGSTER_DB" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN SUPERUSER', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I LOGIN SUPERUSER PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'db', :'user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'dagster_db', :'user', 'UTF8')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dagster_db') \gexec
SQL
}

pg_start() {
    if pg_is_up; then
        pg_provision
        log "postgres already up on 127.0.0.1:$PG_PORT"
        return 0
    fi
    if port_in_use "$PG_PORT"; then
        die "port $PG_PORT is used by another process; set MPA_PG_PORT to a free port"
    fi

    pg_ensure_os_user
    local owner=""
    if is_root; then owner=postgres; fi
    prepare_run_dir "$PG_SOCKDIR" "$owner"
    touch "$PG_LOG"
    if [[ -n "$owner" ]]; then chown "$owner:" "$PG_LOG"; fi

    pg_init
    if [[ -n "$owner" ]]; then chown -R "$owner:" "$PG_DATADIR"; fi

    log "starting postgres on 127.0.0.1:$PG_PORT"
    # fsync/full_page_writes off: a throwaway local dev/test server, where speed
    # matters more than surviving an OS crash. Never copy these to production.
    # -o goes through a shell inside pg_ctl, hence the quoted socket dir.
    local opts="-p $PG_PORT -k '$PG_SOCKDIR' -c listen_addresses=127.0.0.1"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    opts+=" -c max_connections=200 -c shared_buffers=256MB"
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATADIR" -w -t 60 -l "$PG_LOG" -o "$opts" >/dev/null; then
        tail -n 30 "$PG_LOG" >&2
        die "postgres failed to start (full log: $PG_LOG)"
    fi
    pg_is_up || die "postgres started but does not answer on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
    pg_provision
    log "postgres up"
}

pg_stop() {
    if ! pg_is_running; then
        log "postgres not running"
        return 0
    fi
    log "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATADIR" -m fast -w -t 60 >/dev/null
    log "postgres stopped"
}

# ------------------------------------------------------------- commands ----

cmd_start() {
    find_binaries install
    if mysql_is_up && pg_is_up; then
        # Re-run the (idempotent) provisioning in case an earlier start was interrupted.
        mysql_provision
        pg_provision
        echo "already up: mariadb 127.0.0.1:$MYSQL_PORT, postgres 127.0.0.1:$PG_PORT ($DATA_DIR)"
        return 0
    fi
    mysql_start
    pg_start
    log "ready:"
    print_urls
}

cmd_stop() {
    find_binaries
    mysql_stop
    pg_stop
}

cmd_reset() {
    cmd_stop
    # Only the two data dirs: logs are kept for debugging, socket dirs are
    # reused, and nothing with a generic name is removed should MPA_DATA_DIR
    # point somewhere shared.
    log "deleting $MY_DATADIR $PG_DATADIR"
    rm -rf -- "$MY_DATADIR" "$PG_DATADIR"
    cmd_start
}

cmd_status() {
    find_binaries
    local rc=0 state
    if mysql_is_up; then state=up; else state=down; rc=3; fi
    printf '%-9s %-5s port %-6s data %s\n' mariadb "$state" "$MYSQL_PORT" "$MY_DATADIR"
    if pg_is_up; then state=up; else state=down; rc=3; fi
    printf '%-9s %-5s port %-6s data %s\n' postgres "$state" "$PG_PORT" "$PG_DATADIR"
    return "$rc"
}

# One server stopped and started again (the fault tests of change capture): restart mariadb|postgres.
cmd_restart() {
    find_binaries install
    case "${1:-}" in
        mariadb) mysql_stop; mysql_start ;;
        postgres) pg_stop; pg_start ;;
        *) echo "usage: $0 restart mariadb|postgres" >&2; exit 2 ;;
    esac
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        start|stop|reset|status|restart) ;;
        *) echo "usage: $0 start|stop|reset|status|restart mariadb|postgres" >&2; exit 2 ;;
    esac
    resolve_paths
    "cmd_$cmd" "${@:2}"
}

main "$@"
