//! Twisted's `benchmarks/test_deferred.py`, case for case, each beside the closest futures/tokio code and a floor (see `benches::cases`).
//! The case bodies live in `benches::cases`, shared with the comparison
//! command (`cargo run --release -p benches --bin compare`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    common::bench_group(c, benches::Group::Twisted);
}

criterion_group!(group, benches);
criterion_main!(group);
