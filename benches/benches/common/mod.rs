//! Criterion glue shared by the bench files: one criterion group per row
//! (named by the row's key), one function per case, each timed through the
//! case's own `iter_custom` body from `benches::cases`.

use std::time::Duration;

use benches::{Group, Row};
use criterion::{Criterion, SamplingMode, Throughput};

/// Registers every row of `group`.
pub fn bench_group(c: &mut Criterion, group: Group) {
    for row in benches::rows_in(group) {
        bench_row(c, &row);
    }
}

/// Registers one row.
pub fn bench_row(c: &mut Criterion, row: &Row) {
    let mut g = c.benchmark_group(&row.key);
    if row.elements > 1 {
        g.throughput(Throughput::Elements(row.elements));
    }
    if row.heavy {
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if row.elements >= 1_000_000 {
            15
        } else {
            5
        }));
    } else {
        g.sample_size(30);
        g.measurement_time(Duration::from_secs(3));
    }
    for case in &row.cases {
        g.bench_function(case.name, |b| b.iter_custom(|iters| (case.run)(iters)));
    }
    g.finish();
}
