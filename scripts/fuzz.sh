#!/usr/bin/env bash
# Runs Sotto's fuzz targets (fuzz/fuzz_targets/, cargo-fuzz + libFuzzer), each
# for a bounded time:
#   scripts/fuzz.sh                       # every target, 60 s each
#   scripts/fuzz.sh relay_handler 600     # one target, 10 minutes
#   scripts/fuzz.sh replay                # re-run fuzz/regressions/* once each
#   SOTTO_FUZZ_STRICT=1 scripts/fuzz.sh replay   # ... with relay_handler's extra checks
# Targets: frame_decoder (framing, invite links, contact codes) and
# relay_handler (the relay's request handler over a temporary database).
# Needs the nightly toolchain (sanitizers); installs cargo-fuzz if missing.
# Builds in fuzz/target (apart from ./target). Runs one job with one worker.
# The corpus grows in fuzz/corpus/TARGET, crashes land in fuzz/artifacts/TARGET,
# the libFuzzer log in fuzz/logs/TARGET.log (all ignored by git); reproducers
# worth keeping go in fuzz/regressions/TARGET. See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(frame_decoder relay_handler)
target="${1:-all}"
seconds="${2:-60}"

usage() {
    echo "usage: scripts/fuzz.sh [all|replay|frame_decoder|relay_handler] [SECONDS]" >&2
    exit 2
}

case "$target" in
    all) targets=("${all_targets[@]}") ;;
    replay) targets=() ;;
    frame_decoder | relay_handler) targets=("$target") ;;
    -h | --help) usage ;;
    *) echo "fuzz: unknown target '$target'" >&2; usage ;;
esac
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: SECONDS must be a positive whole number, got '$seconds'" >&2
    usage
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    cat >&2 <<'EOF'
fuzz: the nightly Rust toolchain is needed (libFuzzer needs sanitizer flags).
Install it with:
    rustup toolchain install nightly --profile minimal
then run this script again.
EOF
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
scripts/setup.sh # protoc, for libsignal's build script

mkdir -p fuzz/logs

if [ "$target" = replay ]; then
    status=0
    for t in "${all_targets[@]}"; do
        dir="fuzz/regressions/$t"
        [ -d "$dir" ] || continue
        for input in "$dir"/*; do
            [ -f "$input" ] || continue
            if cargo +nightly fuzz run "$t" "$input" -- -detect_leaks=0 >"fuzz/logs/replay.log" 2>&1; then
                echo "fuzz: $input: passes"
            else
                echo "fuzz: $input: FAILS (see fuzz/logs/replay.log)"
                status=1
            fi
        done
    done
    exit "$status"
fi

status=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    extra=()
    if [ -f "fuzz/dict/$t.dict" ]; then
        extra+=("-dict=fuzz/dict/$t.dict")
    fi
    if [ "$t" = relay_handler ]; then
        # The relay (and its sled caches) lives across inputs, so every input
        # looks like a leak; LeakSanitizer's scans would take most of the time.
        extra+=("-detect_leaks=0")
    fi
    echo "fuzz: $t for ${seconds}s (log: fuzz/logs/$t.log)"
    # -jobs/-workers=1: one fuzzing process (the machine is shared). With
    # -jobs libFuzzer writes the job's output to ./fuzz-0.log; keep it.
    rm -f fuzz-0.log
    set +e
    cargo +nightly fuzz run "$t" "$corpus" "fuzz/seeds/$t" -- \
        -jobs=1 -workers=1 -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=10 "${extra[@]}"
    rc=$?
    set -e
    if [ -f fuzz-0.log ]; then
        mv fuzz-0.log "fuzz/logs/$t.log"
        grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb|^(==[0-9]+== ?)?ERROR|^SUMMARY|panicked at' \
            "fuzz/logs/$t.log" || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $rc); the input is in fuzz/artifacts/$t/, the log in fuzz/logs/$t.log" >&2
        status=1
    else
        echo "fuzz: $t: no crash in ${seconds}s"
    fi
done
exit "$status"
