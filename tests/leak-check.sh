#!/usr/bin/env bash
# Runs the core's test binaries (the twisted-deferred unit tests and the
# integration tests) under valgrind's leak checker and fails on any
# definitely or indirectly lost block. The million-Deferred depth tests are
# skipped (too slow under valgrind); the rest of chain_depth runs.
#
#   tests/leak-check.sh            # all core test binaries
#   tests/leak-check.sh cancel     # only binaries whose name contains "cancel"
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-}
binaries=$(cargo test --no-run -p twisted-deferred -p integration-tests 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | sort -u)
status=0
for bin in $binaries; do
  case "$bin" in *"$filter"*) ;; *) continue ;; esac
  # Doctest-free, deterministic: one test thread.
  log=$(mktemp)
  if valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
      --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
      "$bin" --test-threads=1 --skip a_million >"$log" 2>&1; then
    printf 'no leak   %s (%s)\n' "$(basename "$bin")" "$(grep -o '[0-9]* passed' "$log" | head -1)"
  else
    status=1
    printf 'LEAK/FAIL %s\n' "$(basename "$bin")"
    grep -E 'definitely|indirectly|FAILED|panicked|ERROR SUMMARY' "$log" | head -20
  fi
  rm -f "$log"
done
exit $status
