#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz, libFuzzer, AddressSanitizer and
# LeakSanitizer) for a bounded time each and prints, per target, how many
# inputs ran and what was found.
#
#   tests/fuzz/fuzz.sh                    # every target, 60 s each
#   tests/fuzz/fuzz.sh -t 600 scenario    # one target, 10 minutes
#   tests/fuzz/fuzz.sh --ci               # CI: install cargo-fuzz if missing
#
# Uses the nightly toolchain if installed, else the default (stable) one with
# RUSTC_BOOTSTRAP=1. New inputs go to
# tests/fuzz/work/TARGET (not committed); the committed seeds are
# tests/fuzz/corpus/TARGET, plus the golden scenarios for `scenario`. A
# crash leaves its input in tests/fuzz/artifacts/TARGET/ and fails the
# script; minimize it with
#   cargo +nightly fuzz tmin --fuzz-dir tests/fuzz TARGET ARTIFACT
# and, once fixed, keep it in tests/fuzz/regressions/TARGET/ (stable
# `cargo test` replays those).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
fuzz_dir=tests/fuzz
all_targets=(scenario deferred_ops http)
seconds=60
ci=false
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    --ci) ci=true; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

# cargo-fuzz needs unstable compiler flags (sanitizers, coverage): the
# nightly toolchain if there is one, else the default one with
# RUSTC_BOOTSTRAP=1 (its standard library ships the sanitizer runtimes).
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  if $ci; then
    echo "installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
  else
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 1
  fi
fi

# Extra read-only seed directories per target.
seeds_for() {
  case "$1" in
    scenario)
      for d in tests/golden/*/ ../shared/conformance/cases/; do
        [ -d "$d" ] && printf '%s\n' "$d"
      done ;;
  esac
}
# libFuzzer flags per target.
flags_for() {
  case "$1" in
    scenario) echo "-dict=$fuzz_dir/scenario.dict" ;;
    http) echo "-dict=$fuzz_dir/http.dict -use_value_profile=1" ;;
  esac
}

echo "== building the fuzz targets"
mkdir -p "$fuzz_dir/work"
if ! cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz_dir" >"$fuzz_dir/work/build.log" 2>&1; then
  tail -30 "$fuzz_dir/work/build.log"
  exit 1
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "$fuzz_dir/work/$t" "$fuzz_dir/corpus/$t"
  mapfile -t extra < <(seeds_for "$t")
  log="$fuzz_dir/work/$t.log"
  echo "== fuzzing $t for ${seconds}s"
  # shellcheck disable=SC2046
  if cargo "${toolchain[@]}" fuzz run --fuzz-dir "$fuzz_dir" "$t" \
      "$fuzz_dir/work/$t" "$fuzz_dir/corpus/$t" "${extra[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 $(flags_for "$t") >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    corpus=$(ls "$fuzz_dir/work/$t" | wc -l)
    echo "   $t: ${runs:-?} inputs in ${seconds}s, ${cov:-cov: ?}, working corpus $corpus files, no crash"
  else
    status=1
    echo "   $t: FAILED (log: $log)"
    grep -E 'panicked at|ERROR: |SUMMARY|Test unit written|after |leak|tokens' "$log" | head -20 || true
    echo "   minimize: cargo +nightly fuzz tmin --fuzz-dir $fuzz_dir $t ARTIFACT"
  fi
done
exit $status
