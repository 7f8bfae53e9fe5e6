//! `gather_results` and `DeferredList` from 1k to 1M inputs.
//! The case bodies live in `benches::cases`, shared with the comparison
//! command (`cargo run --release -p benches --bin compare`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    common::bench_group(c, benches::Group::Combinators);
}

criterion_group!(group, benches);
criterion_main!(group);
