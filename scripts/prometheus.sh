#!/usr/bin/env bash
# Prometheus and promtool for the tests of the metrics, the alert rules and the dashboard
# (mysql_pg_assets_tests/test_operations.py) and for anyone who wants to try them locally.
#
#   scripts/prometheus.sh        (or: make prometheus)
#
# Uses `prometheus` and `promtool` from the PATH when both are there; otherwise fetches Debian's
# `prometheus` package with `apt-get download` (nothing is installed, no service started) and
# unpacks the two binaries and the package's copyright file into $MPA_DATA_DIR/prometheus/.
# Idempotent. Prints the directory that holds both binaries on stdout; progress goes to stderr.
#
# Settings (environment):
#   MPA_DATA_DIR        default <repo>/.local
set -euo pipefail
umask 022

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${MPA_DATA_DIR:-$REPO_ROOT/.local}"
DEST="$DATA_DIR/prometheus"
TMP_DIR=""

log() { printf '[prometheus.sh] %s\n' "$*" >&2; }
die() { printf '[prometheus.sh] ERROR: %s\n' "$*" >&2; exit 1; }
cleanup() { if [[ -n "$TMP_DIR" ]]; then rm -rf "$TMP_DIR"; fi; }
trap cleanup EXIT

on_path() {
    local prometheus promtool
    prometheus="$(command -v prometheus 2>/dev/null || true)"
    promtool="$(command -v promtool 2>/dev/null || true)"
    if [[ -n "$prometheus" && -n "$promtool" && "$(dirname "$prometheus")" == "$(dirname "$promtool")" ]]; then
        dirname "$prometheus"
    fi
}

fetch() {
    for tool in apt-get dpkg-deb tar; do
        command -v "$tool" >/dev/null 2>&1 \
            || die "$tool not found: Prometheus is fetched from Debian's package; elsewhere put prometheus and promtool on the PATH"
    done
    mkdir -p "$DATA_DIR"
    TMP_DIR="$(mktemp -d "$DATA_DIR/.fetch-prometheus.XXXXXX")"
    local options=()
    if [[ "$(id -u)" -eq 0 ]]; then options+=(-o APT::Sandbox::User=root); fi
    (cd "$TMP_DIR" && apt-get "${options[@]}" -qq download prometheus >&2) || {
        if [[ "$(id -u)" -eq 0 ]]; then
            log "apt-get download prometheus failed; refreshing the package lists and retrying"
            apt-get -qq update >&2 || die "apt-get update failed; check the machine's apt sources and network"
            (cd "$TMP_DIR" && apt-get "${options[@]}" -qq download prometheus >&2) \
                || die "could not download Debian's prometheus package (try: apt-cache policy prometheus)"
        else
            die "could not download Debian's prometheus package; if the package lists are stale, run 'sudo apt-get update'"
        fi
    }
    local debs=("$TMP_DIR"/*.deb)
    [[ -f "${debs[0]}" ]] || die "apt-get download prometheus produced no .deb file"
    log "unpacking $(dpkg-deb -f "${debs[0]}" Package) $(dpkg-deb -f "${debs[0]}" Version)"
    mkdir "$TMP_DIR/root"
    dpkg-deb --fsys-tarfile "${debs[0]}" | tar -x -C "$TMP_DIR/root" ./usr/bin/prometheus ./usr/bin/promtool \
        ./usr/share/doc/prometheus/copyright
    mkdir -p "$TMP_DIR/out"
    mv "$TMP_DIR/root/usr/bin/prometheus" "$TMP_DIR/root/usr/bin/promtool" \
        "$TMP_DIR/root/usr/share/doc/prometheus/copyright" "$TMP_DIR/out/"
    "$TMP_DIR/out/promtool" --version >/dev/null || die "the unpacked promtool does not run on this machine"
    rm -rf "$DEST"
    mv "$TMP_DIR/out" "$DEST"
}

main() {
    local found
    found="$(on_path)"
    if [[ -n "$found" ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    mkdir -p "$DATA_DIR"
    if command -v flock >/dev/null 2>&1; then  # two sessions at once: one fetches, the other waits
        exec 9>"$DATA_DIR/.prometheus.lock"
        flock 9
    fi
    if [[ ! -x "$DEST/prometheus" || ! -x "$DEST/promtool" ]]; then
        fetch
    fi
    printf '%s\n' "$(cd "$DEST" && pwd)"
}

main "$@"
