#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS
# (default 60) each and fails if any of them finds a crash, a hang or an
# out-of-memory. See docs/fuzzing.md.
#
#   FUZZ_SECONDS=300 make fuzz                      # longer runs
#   FUZZ_TARGETS="authority tokens" make fuzz       # some targets only
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, sanitizer
# coverage); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    "$CARGO" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

all_targets=$("$CARGO" fuzz list)
targets=${FUZZ_TARGETS:-$all_targets}

# Per-target input size bound and dictionary.
max_len() {
    case $1 in
        authority) echo 65536 ;;
        mount_request | spc_manifest | file_paths) echo 16384 ;;
        jmes_path | yaml_depth) echo 65536 ;;
        *) echo 8192 ;;
    esac
}
dict() {
    case $1 in
        mount_request | tokens | vault_extract) echo fuzz/dicts/json.dict ;;
        vault_objects | spc_manifest | yaml_depth) echo fuzz/dicts/yaml.dict ;;
        jmes_path) echo fuzz/dicts/jmes.dict ;;
        file_paths) echo fuzz/dicts/paths.dict ;;
        authority) echo fuzz/dicts/http2.dict ;;
    esac
}

echo "== building the fuzz targets"
"$CARGO" fuzz build

run_dir=$ROOT/e2e/.run/fuzz
mkdir -p "$run_dir"
summary=$run_dir/summary.md
{
    echo "| target | seconds | executions | exec/s | corpus | result |"
    echo "|---|---:|---:|---:|---:|---|"
} >"$summary"

failed=()
for t in $targets; do
    if ! grep -qx "$t" <<<"$all_targets"; then
        echo "unknown fuzz target: $t (have: $(echo $all_targets))" >&2
        exit 2
    fi
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    # The committed seeds (fuzz/seeds/) start the git-ignored corpus.
    if [ -d "fuzz/seeds/$t" ]; then
        cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    log=$run_dir/$t.log
    echo "== fuzzing $t for ${FUZZ_SECONDS}s (log: ${log#"$ROOT"/})"
    set +e
    "$CARGO" fuzz run "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" \
        -max_len="$(max_len "$t")" \
        -dict="$(dict "$t")" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    size=$(find "$corpus" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed+=("$t")
        echo "-- $t failed; the end of its log:" >&2
        tail -40 "$log" >&2
        ls -1 fuzz/artifacts/"$t"/ 2>/dev/null | sed 's/^/   artifact: /' >&2 || true
    fi
    echo "| $t | $FUZZ_SECONDS | ${execs:-?} | ${rate:-?} | $size | $result |" >>"$summary"
done

echo
cat "$summary"
if [ "${#failed[@]}" -gt 0 ]; then
    echo
    echo "fuzzing found problems in: ${failed[*]}" >&2
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
