#!/usr/bin/env bash
# Runs the core's tests that reach its `unsafe` code (Deferreds written in
# place, the link list's reset, inline type-erased values) under Miri: the
# core's unit tests and the integration tests of firing, chaining,
# errbacks, pause, re-entrancy, cancel, coroutines and gather. Needs a
# nightly toolchain with the miri component (`rustup +nightly component
# add miri`). The million-Deferred tests are skipped (hours under Miri).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo +nightly miri test -q -p twisted-deferred --lib
cargo +nightly miri test -q -p integration-tests \
  --test firing --test chaining --test errbacks --test pause \
  --test reentrancy --test cancel --test coroutines --test gather \
  -- --skip a_million --skip a_gather_of_a_million
