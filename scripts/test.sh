#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end scenarios, which
# start the real relay on 127.0.0.1 and drive the real `sotto` binary.
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
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
