#!/usr/bin/env bash
# Real-world MySQL sample schemas that nobody here wrote, for
# mysql_pg_assets_tests/test_sample_schemas.py (and anyone who wants to try the
# sync on something other than the demo shop).
#
#   scripts/sample_schemas.sh        (or: make samples)
#
# We may not commit third-party data, so the SQL is fetched from Debian
# packages with `apt-get download` (nothing is installed) and unpacked with
# dpkg-deb; only the SQL files and each package's copyright file are kept:
#
#   mariadb-test-data  MariaDB's test suite (GPL-2), same version as the
#                      installed MariaDB when the archive still has it:
#                      world (world_schema.inc + world.inc) and TPC-H at
#                      scale 0.01 (dbt3_s001.inc)
#   zoneminder         ZoneMinder's database (GPL-2+): zm_create.sql + triggers.sql
#
# Idempotent: a package already unpacked is not fetched again. Prints the
# absolute path of each SQL file, one per line, on stdout; progress goes to
# stderr.
#
# Settings (environment):
#   MPA_DATA_DIR        default <repo>/.local; files land in $MPA_DATA_DIR/samples
set -euo pipefail
umask 022

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${MPA_DATA_DIR:-$REPO_ROOT/.local}"
SAMPLES_DIR="$DATA_DIR/samples"

MARIADB_INCLUDE="usr/share/mysql/mysql-test/include"
ZONEMINDER_DB="usr/share/zoneminder/db"
MARIADB_FILES=("$MARIADB_INCLUDE/world_schema.inc" "$MARIADB_INCLUDE/world.inc" "$MARIADB_INCLUDE/dbt3_s001.inc")
ZONEMINDER_FILES=("$ZONEMINDER_DB/zm_create.sql" "$ZONEMINDER_DB/triggers.sql")

TMP_DIR=""
APT_UPDATED=0

log() { printf '[sample_schemas.sh] %s\n' "$*" >&2; }
die() { printf '[sample_schemas.sh] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }
cleanup() { if [[ -n "$TMP_DIR" ]]; then rm -rf "$TMP_DIR"; fi; }
trap cleanup EXIT

require_apt() {
    local missing=()
    local tool
    for tool in apt-get apt-cache dpkg-deb tar; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "${missing[*]} not found: the sample schemas are fetched from Debian packages" \
            "(mariadb-test-data, zoneminder), which needs a Debian or Ubuntu system with apt." \
            "Elsewhere, unpack those two .deb files by hand so that $SAMPLES_DIR/<package>/ holds" \
            "the files listed at the top of $0, then run it again."
    fi
}

# The version of the installed MariaDB (server, else client), so the test data
# matches the server; empty when MariaDB did not come from a Debian package.
installed_mariadb_version() {
    local package version
    for package in mariadb-server-core mariadb-server mariadb-client-core mariadb-client; do
        version="$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$package" 2>/dev/null || true)"
        if [[ "$version" == "ii |"* ]]; then
            printf '%s\n' "${version#ii |}"
            return 0
        fi
    done
}

# apt-get download PKG[=VERSION] into the current directory. Root gets one
# `apt-get update` when the download fails (package lists missing or stale).
apt_download() {
    local spec="$1"
    local options=()
    # As root, apt drops privileges to _apt, which cannot write to our private
    # temp dir: download as root directly instead of warning about it.
    if is_root; then options+=(-o APT::Sandbox::User=root); fi
    if apt-get "${options[@]}" -qq download "$spec" >&2; then
        return 0
    fi
    if is_root && ((APT_UPDATED == 0)); then
        log "apt-get download $spec failed; refreshing the package lists (apt-get update) and retrying"
        APT_UPDATED=1
        apt-get -qq update >&2 || die "apt-get update failed; check the machine's apt sources and network"
        apt-get "${options[@]}" -qq download "$spec" >&2 && return 0
    elif ! is_root; then
        log "apt-get download $spec failed; if the package lists are stale, run 'sudo apt-get update' and retry"
    fi
    return 1
}

# fetch PACKAGE VERSION-OR-EMPTY FILE...: unpack FILEs (paths inside the
# package) and the package's copyright file into $SAMPLES_DIR/PACKAGE.
fetch() {
    local package="$1" version="$2"
    shift 2
    local dest="$SAMPLES_DIR/$package"
    if [[ -f "$dest/.complete" ]]; then
        return 0
    fi

    TMP_DIR="$(mktemp -d "$SAMPLES_DIR/.fetch-$package.XXXXXX")"
    cd "$TMP_DIR"  # apt-get download writes to the current directory
    if [[ -z "$version" ]] || ! apt_download "$package=$version"; then
        if [[ -n "$version" ]]; then
            log "$package $version is not in the apt archive; taking the archive's current version"
        fi
        apt_download "$package" \
            || die "could not download $package with apt-get (is it in the apt sources? try: apt-cache policy $package)"
    fi
    cd "$SAMPLES_DIR"

    local debs=("$TMP_DIR"/*.deb)
    [[ -f "${debs[0]}" ]] || die "apt-get download $package produced no .deb file"
    local got
    got="$(dpkg-deb -f "${debs[0]}" Version)"
    log "unpacking $package $got"

    local members=()
    local file
    for file in "$@" "usr/share/doc/$package/copyright"; do
        members+=("./$file")
    done
    mkdir "$TMP_DIR/root"
    dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$TMP_DIR/root" "${members[@]}" \
        || die "$package $got does not hold the expected files: $*"
    printf '%s %s\n' "$package" "$got" >"$TMP_DIR/root/.complete"

    rm -rf "$dest"
    mv "$TMP_DIR/root" "$dest"
    rm -rf "$TMP_DIR"
    TMP_DIR=""
}

main() {
    mkdir -p "$SAMPLES_DIR"
    SAMPLES_DIR="$(cd "$SAMPLES_DIR" && pwd)"

    # Two test sessions may start at once: one fetches, the other waits.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$SAMPLES_DIR/.lock"
        flock 9
    fi

    if [[ ! -f "$SAMPLES_DIR/mariadb-test-data/.complete" || ! -f "$SAMPLES_DIR/zoneminder/.complete" ]]; then
        require_apt
        fetch mariadb-test-data "$(installed_mariadb_version)" "${MARIADB_FILES[@]}"
        fetch zoneminder "" "${ZONEMINDER_FILES[@]}"
    fi

    local file
    for file in "${MARIADB_FILES[@]/#/mariadb-test-data/}" "${ZONEMINDER_FILES[@]/#/zoneminder/}"; do
        [[ -f "$SAMPLES_DIR/$file" ]] || die "$SAMPLES_DIR/$file is missing; remove $SAMPLES_DIR and run $0 again"
        printf '%s\n' "$SAMPLES_DIR/$file"
    done
}

main "$@"
