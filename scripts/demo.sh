#!/usr/bin/env bash
# A local demo: a relay on 127.0.0.1 and two staffers, Alice and Bob, who
# exchange end-to-end encrypted messages. Everything lives in a temporary
# directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --quiet
bin="$PWD/target/debug"
work="$(mktemp -d)"
relay_pid=""
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
export SOTTO_PASSPHRASE="demo passphrase, use a real one"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The operator creates a relay"
"$bin/sotto-relay" init --data-dir "$work/relay" --listen 127.0.0.1:0
"$bin/sotto-relay" serve --data-dir "$work/relay" >"$work/serve.out" 2>"$work/serve.log" &
relay_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
cat "$work/serve.out"

step "The operator makes one invite for each staffer"
alice_link=$("$bin/sotto-relay" invite --data-dir "$work/relay" | tail -1)
bob_link=$("$bin/sotto-relay" invite --data-dir "$work/relay" | tail -1)
echo "$alice_link"

step "Alice and Bob join"
"$bin/sotto" --home "$work/alice" init --invite "$alice_link" --name Alice
"$bin/sotto" --home "$work/bob" init --invite "$bob_link" --name Bob
alice_code=$("$bin/sotto" --home "$work/alice" whoami | head -1)
bob_code=$("$bin/sotto" --home "$work/bob" whoami | head -1)

step "They swap contact codes and compare safety numbers"
"$bin/sotto" --home "$work/alice" contact add bob "$bob_code"
"$bin/sotto" --home "$work/bob" contact add alice "$alice_code"
"$bin/sotto" --home "$work/alice" contact verify bob

step "Alice warns Bob; Bob syncs and answers"
"$bin/sotto" --home "$work/alice" send bob "Heads up: don't share a taxi with him after the reception."
"$bin/sotto" --home "$work/bob" sync
"$bin/sotto" --home "$work/bob" send alice "Thank you. Same happened to a colleague last year."
"$bin/sotto" --home "$work/alice" sync

step "Alice's history with Bob (kept encrypted on her disk)"
"$bin/sotto" --home "$work/alice" history bob

step "What the relay holds: ciphertext only"
if grep -rq "taxi" "$work/relay"; then echo "FOUND plaintext on the relay"; exit 1; else echo "no message text anywhere in the relay's data directory"; fi
