#!/usr/bin/env bash
# Sqitch (PostgreSQL engine) for the versioned migrations in migrations/ and for their round-trip test
# (mysql_pg_assets_tests/test_sqitch.py).
#
#   scripts/sqitch.sh        prints the path of a sqitch that can reach PostgreSQL
#
# Uses the `sqitch` on the PATH when it has its PostgreSQL driver (DBD::Pg); otherwise, as root on
# Debian or Ubuntu, installs Debian's `sqitch` and `libdbd-pg-perl` packages with apt-get (as
# scripts/db.sh installs the database servers). Elsewhere it says what to install and exits 1.
# Idempotent; progress goes to stderr.
set -euo pipefail

log() { printf '[sqitch.sh] %s\n' "$*" >&2; }
die() { printf '[sqitch.sh] ERROR: %s\n' "$*" >&2; exit 1; }

usable() {
    local sqitch
    sqitch="$(command -v sqitch 2>/dev/null)" || return 1
    perl -MDBD::Pg -e 1 2>/dev/null || return 1
    printf '%s\n' "$sqitch"
}

if usable; then exit 0; fi

PACKAGES=(sqitch libdbd-pg-perl)
if [[ "$(id -u)" -eq 0 && -f /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${PACKAGES[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    output="$(mktemp)"
    trap 'rm -f "$output"' EXIT
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$output" 2>&1 || {
        log "apt-get install failed; refreshing the package lists and retrying"
        apt-get -qq update >&2 || die "apt-get update failed; check the machine's apt sources and network"
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$output" 2>&1 \
            || { cat "$output" >&2; die "could not install ${PACKAGES[*]}"; }
    }
    usable || die "installed ${PACKAGES[*]}, but sqitch or DBD::Pg is still missing"
else
    die "sqitch with its PostgreSQL driver is missing; install it, e.g. on Debian or Ubuntu:
    sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}
or see https://sqitch.org/download/"
fi
