#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the end-to-end scenarios, which
# start the real relay on 127.0.0.1 and drive the real `sotto` binary.
# `--workspace` matters: it builds both binaries the scenarios run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace "$@"
