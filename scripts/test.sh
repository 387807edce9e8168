#!/usr/bin/env bash
# Runs every test: unit tests of each crate, the end-to-end scenarios, which
# start the real relay on 127.0.0.1 and drive the real `sotto` binary, and the
# browser suite, which drives `sotto app` in chromium.
# The scenarios run target/debug/sotto and target/debug/sotto-relay, which
# `cargo test` alone does not build (they belong to other packages), so build
# them first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
# The browser suite: a real relay, real `sotto app` services and Debian's
# chromium (browser-tests/run.mjs); its failures fail this script too.
browser-tests/run.sh 2>&1 | tee -a "$log"
# One closing line for the whole run (cargo prints one per test binary, and
# node's test runner its own "ℹ pass N" / "ℹ fail N").
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     /^ℹ pass [0-9]+$/ { p += $3 } /^ℹ fail [0-9]+$/ { f += $3 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
