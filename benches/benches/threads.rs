//! `call_from_thread` throughput.
//! The case bodies live in `benches::cases`, shared with the comparison
//! command (`cargo run --release -p benches --bin compare`).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    common::bench_group(c, benches::Group::Threads);
}

criterion_group!(group, benches);
criterion_main!(group);
