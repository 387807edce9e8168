#!/usr/bin/env bash
# Runs the browser suite (run.mjs) against target/debug/sotto and
# target/debug/sotto-relay, which it does not build: scripts/test.sh builds
# them first. --screenshots also writes docs/screenshots/*.png.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "--screenshots" ]; then
    export SOTTO_SCREENSHOTS=docs
fi
exec node --test-reporter=spec run.mjs
