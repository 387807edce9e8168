#!/usr/bin/env bash
# Sotto's benchmark harness, in a release build. Arguments go to sotto-bench:
#   scripts/bench.sh                          # every scenario, 5 runs each
#   scripts/bench.sh --runs 3 --scenario fanout
# Prints a table and writes bench-results.json; see BENCHMARKS.md. The app
# scenario drives the real `sotto` binary, so it is built too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p sotto-relay -p sotto-client -p sotto-bench
exec target/release/sotto-bench "$@"
