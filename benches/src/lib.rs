//! Benchmarks of twisted-deferred (see `benches/`).
