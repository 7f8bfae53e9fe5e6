//! The cost of debug info (Twisted's `setDebugging(True)`,
//! `twisted_deferred::debug::set_debugging`): each case with debugging off
//! (the default: one relaxed atomic load per Deferred created and per fire)
//! and on (the creation and first-fire locations recorded, one small
//! allocation per Deferred).
//!
//! ```sh
//! cargo bench -p benches --bench debug_info
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use twisted_deferred::{Deferred, Failure, debug, ensure_deferred};

fn f(x: i64, a: i64) -> i64 {
    x + a
}

/// Runs `case` under the name `off` and `on`, with debugging set so.
fn off_and_on(c: &mut Criterion, group: &str, case: impl Fn() -> Deferred<i64> + Copy) {
    let mut g = c.benchmark_group(group);
    for on in [false, true] {
        debug::set_debugging(on);
        g.bench_function(if on { "on" } else { "off" }, |b| b.iter(case));
    }
    debug::set_debugging(false);
    g.finish();
}

fn debug_info(c: &mut Criterion) {
    // Twisted: test_deferred_callback_chain_fires_at_end (the 4-step chain).
    off_and_on(c, "debug_info/chain_4_fires_at_end", || {
        let d: Deferred<i64> = Deferred::new();
        d.add_callback(|x| Ok(f(x, 1)));
        d.add_callback(|x| Ok(f(x, 2)));
        d.add_callback(|x| Ok(f(x, 3)));
        d.add_callback(|x| Ok(f(x, 4)));
        d.callback(black_box(2)).unwrap();
        d
    });
    // Creating a Deferred (and dropping it).
    off_and_on(c, "debug_info/create", || black_box(Deferred::new()));
    // Creating and firing one (the first fire records its location).
    off_and_on(c, "debug_info/create_and_fire", || {
        let d: Deferred<i64> = Deferred::new();
        d.callback(black_box(1)).unwrap();
        d
    });
    // A coroutine suspended on one Deferred, then resumed by its fire.
    off_and_on(c, "debug_info/coroutine_one_await", || {
        let page: Deferred<i64> = Deferred::new();
        let p = page.clone();
        let d = ensure_deferred(async move { Ok::<_, Failure>(p.await? + 1) });
        page.callback(black_box(41)).unwrap();
        d
    });
}

criterion_group!(benches, debug_info);
criterion_main!(benches);
