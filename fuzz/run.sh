#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain
# (what `cargo fuzz` passes, minus the nightly-only sanitizer flag) and runs them.
#
#   fuzz/run.sh build [release|dev]             build every target
#   fuzz/run.sh run TARGET SECONDS [release|dev] run one target for SECONDS on fuzz/corpus/TARGET
#   fuzz/run.sh smoke SECONDS                   dev build, every target for SECONDS (CI)
#
# Crashes land in fuzz/artifacts/TARGET/; turn each into a regression test.
set -euo pipefail
cd "$(dirname "$0")"
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# Debug assertions and overflow checks are on in both profiles (Cargo.toml).
TARGETS="snapshot_open manifest csv_reader normalise listing request_decode"

build() {
    local profile=${1:-release}
    cargo build --profile "$profile" --target "$TRIPLE" --bins
}

bin_dir() {
    local profile=${1:-release}
    [ "$profile" = dev ] && profile=debug
    echo "target/$TRIPLE/$profile"
}

run() {
    local target=$1 seconds=$2 profile=${3:-release}
    mkdir -p "corpus/$target" "artifacts/$target" "seeds/$target"
    "$(bin_dir "$profile")/$target" "corpus/$target" "seeds/$target" \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1
}

case ${1:-} in
    build) build "${2:-release}" ;;
    run) run "$2" "$3" "${4:-release}" ;;
    smoke)
        build dev
        for t in $TARGETS; do
            echo "== $t"
            run "$t" "${2:-5}" dev 2>&1 | grep -E '^(stat::|Done|==|INFO: .*(crash|deadly))|ERROR|panicked' || true
            # A crash makes libFuzzer exit non-zero and leave an artifact.
            if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
                echo "fuzz target $t crashed: see fuzz/artifacts/$t" >&2
                exit 1
            fi
        done
        ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
esac
