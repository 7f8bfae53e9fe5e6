//! Arbitrary bytes through the scenario parser and runner (and the diagram
//! drawn from a run): see `integration_tests::fuzzing::scenario::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_tests::fuzzing::scenario::check(data);
});
