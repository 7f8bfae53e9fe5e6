//! Allocations per operation: what one Deferred, one callback, one chain
//! step, one gather input … costs in heap allocations. Needs the counting
//! allocator ([`crate::alloc::CountingAlloc`]) installed as the global
//! allocator; returns `None` otherwise.

use std::hint::black_box;

use twisted_compat::ObservableDeferred;
use twisted_deferred::{Deferred, DeferredList, Failure, ensure_deferred, gather_results, succeed};
use twisted_reactor::{Clock, Reactor};

use crate::alloc::{self, Counts};
use crate::timed;

/// One line of the allocation profile.
#[derive(Debug, Clone)]
pub struct AllocLine {
    /// A stable key (used by the allocation-count test).
    pub key: &'static str,
    /// What one unit is.
    pub what: &'static str,
    /// Allocations per unit.
    pub allocs: f64,
    /// Bytes requested per unit.
    pub bytes: f64,
}

/// Counts the allocations of `f`'s timed sections, per `units`.
fn per(units: u64, f: impl FnOnce()) -> Option<(f64, f64)> {
    let (counts, ()): (Counts, ()) = alloc::count(f)?;
    Some(counts.per(units))
}

fn line(key: &'static str, what: &'static str, units: u64, f: impl FnOnce()) -> Option<AllocLine> {
    let (allocs, bytes) = per(units, f)?;
    Some(AllocLine {
        key,
        what,
        allocs,
        bytes,
    })
}

/// Keeps values alive until the end of the timed section's caller, so
/// that their drop is not counted (drops free, they never allocate, but
/// keeping them also keeps the measurement to construction).
fn keep<T>(v: T) -> T {
    black_box(v)
}

/// The allocation profile, or `None` when the counting allocator is not
/// installed.
pub fn alloc_profile() -> Option<Vec<AllocLine>> {
    const N: u64 = 1000;
    let mut lines = Vec::new();
    lines.push(line(
        "deferred",
        "Deferred::new() (one Deferred)",
        N,
        || {
            let (_, ds) = timed(|| (0..N).map(|_| Deferred::<i64>::new()).collect::<Vec<_>>());
            keep(ds);
        },
    )?);
    lines.push(line("succeed", "succeed(x) (a fired Deferred)", N, || {
        let (_, ds) = timed(|| (0..N as i64).map(succeed).collect::<Vec<_>>());
        keep(ds);
    })?);
    // Vectors of handles above: subtract the Vec's own allocation.
    for l in lines.iter_mut() {
        l.allocs -= 1.0 / N as f64;
        l.bytes -= (N * std::mem::size_of::<Deferred<i64>>() as u64) as f64 / N as f64;
    }
    for (key, what, count) in [
        (
            "callback_4",
            "add_callback, 4 on an unfired Deferred (per callback; closure captures nothing)",
            4u64,
        ),
        (
            "callback_16",
            "add_callback, 16 on an unfired Deferred (per callback)",
            16,
        ),
    ] {
        lines.push(line(key, what, N * count, || {
            let ds: Vec<Deferred<i64>> = (0..N).map(|_| Deferred::new()).collect();
            let (_, ()) = timed(|| {
                for d in &ds {
                    for _ in 0..count {
                        d.add_callback(|x| Ok(x + 1));
                    }
                }
            });
            keep(ds);
        })?);
    }
    lines.push(line(
        "callback_capture_3",
        "add_callback, closure capturing 3 words (per callback, 4 per Deferred)",
        N * 4,
        || {
            let ds: Vec<Deferred<i64>> = (0..N).map(|_| Deferred::new()).collect();
            let (a, b, c) = (black_box(1i64), black_box(2i64), black_box(3i64));
            let (_, ()) = timed(|| {
                for d in &ds {
                    for _ in 0..4 {
                        d.add_callback(move |x| Ok(x + a + b + c));
                    }
                }
            });
            keep(ds);
        },
    )?);
    lines.push(line(
        "callback_capture_4",
        "add_callback, closure capturing 4 words (per callback, 4 per Deferred)",
        N * 4,
        || {
            let ds: Vec<Deferred<i64>> = (0..N).map(|_| Deferred::new()).collect();
            let (a, b, c, e) = (
                black_box(1i64),
                black_box(2i64),
                black_box(3i64),
                black_box(4i64),
            );
            let (_, ()) = timed(|| {
                for d in &ds {
                    for _ in 0..4 {
                        d.add_callback(move |x| Ok(x + a + b + c + e));
                    }
                }
            });
            keep(ds);
        },
    )?);
    lines.push(line(
        "fire_4",
        "callback() running 4 callbacks (per callback)",
        N * 4,
        || {
            let ds: Vec<Deferred<i64>> = (0..N).map(|_| Deferred::new()).collect();
            for d in &ds {
                for _ in 0..4 {
                    d.add_callback(|x| Ok(x + 1));
                }
            }
            let (_, ()) = timed(|| {
                for d in &ds {
                    d.callback(black_box(1)).unwrap();
                }
            });
            keep(ds);
        },
    )?);
    lines.push(line(
        "chain_step",
        "chain step: one level of a 100,000-deep chain (its Deferred included)",
        100_000,
        || {
            let (_, ds) = timed(|| {
                let n = 100_000usize;
                let ds: Vec<Deferred<i64>> = (0..n).map(|_| Deferred::new()).collect();
                for i in (0..n - 1).rev() {
                    let next = ds[i + 1].clone();
                    ds[i].add_callback(move |_: i64| next);
                    ds[i].callback(0).unwrap();
                }
                ds[n - 1].callback(7).unwrap();
                ds
            });
            keep(ds);
        },
    )?);
    lines.push(line(
        "one_hop",
        "one hop: outer waits on inner, inner fires (both Deferreds included)",
        N,
        || {
            let (_, pairs) = timed(|| {
                (0..N)
                    .map(|_| {
                        let outer: Deferred<i64> = Deferred::new();
                        let inner: Deferred<i64> = Deferred::new();
                        let i2 = inner.clone();
                        outer.add_callback(move |_| i2);
                        outer.callback(0).unwrap();
                        inner.callback(5).unwrap();
                        (outer, inner)
                    })
                    .collect::<Vec<_>>()
            });
            keep(pairs);
        },
    )?);
    for (key, what, list) in [
        (
            "gather_input",
            "gather_results input (100,000 unfired inputs made outside, then fired)",
            false,
        ),
        (
            "deferred_list_input",
            "DeferredList input (100,000 unfired inputs made outside, then fired)",
            true,
        ),
    ] {
        lines.push(line(key, what, 100_000, || {
            let inputs: Vec<Deferred<u64>> = (0..100_000).map(|_| Deferred::new()).collect();
            let (_, out) = timed(|| {
                let out = if list {
                    DeferredList::new(inputs.iter().cloned())
                        .into_deferred()
                        .as_any()
                } else {
                    gather_results(inputs.iter().cloned(), false).as_any()
                };
                for (i, d) in inputs.iter().enumerate() {
                    d.callback(i as u64).unwrap();
                }
                out
            });
            keep((inputs, out));
        })?);
    }
    lines.push(line(
        "ensure_deferred",
        "ensure_deferred of a coroutine that returns at once",
        N,
        || {
            let (_, ds) = timed(|| {
                (0..N)
                    .map(|i| ensure_deferred(async move { Ok::<_, Failure>(i) }))
                    .collect::<Vec<_>>()
            });
            keep(ds);
        },
    )?);
    lines.push(line(
        "await_fired",
        "await of a fired Deferred (succeed(x).await, the Deferred included)",
        N,
        || {
            let (_, d) = timed(|| {
                ensure_deferred(async {
                    for x in 0..N as i64 {
                        black_box(succeed(x).await?);
                    }
                    Ok::<_, Failure>(())
                })
            });
            keep(d);
        },
    )?);
    lines.push(line(
        "await_unfired",
        "await of an unfired Deferred, resumed by its callback() (the Deferred included)",
        N,
        || {
            let (_, out) = timed(|| {
                let ds: Vec<Deferred<i64>> = (0..N).map(|_| Deferred::new()).collect();
                let waiting = ds.clone();
                let result = ensure_deferred(async move {
                    let mut total = 0;
                    for d in waiting {
                        total += d.await?;
                    }
                    Ok::<_, Failure>(total)
                });
                for (i, d) in ds.iter().enumerate() {
                    d.callback(i as i64).unwrap();
                }
                (ds, result)
            });
            keep(out);
        },
    )?);
    lines.push(line(
        "observer",
        "ObservableDeferred observer (1,000 observers, origin fired)",
        N,
        || {
            let (_, out) = timed(|| {
                let origin: Deferred<i64> = Deferred::new();
                let od = ObservableDeferred::new(origin.clone(), false);
                let observers: Vec<Deferred<i64>> = (0..N).map(|_| od.observe()).collect();
                origin.callback(7).unwrap();
                (od, observers)
            });
            keep(out);
        },
    )?);
    lines.push(line(
        "failure",
        "Failure::msg(\"boom!\") (one failure)",
        N,
        || {
            let (_, fs) = timed(|| (0..N).map(|_| Failure::msg("boom!")).collect::<Vec<_>>());
            keep(fs);
        },
    )?);
    lines.push(line(
        "timer_reactor",
        "Reactor::call_later (one timer, 1,000 pending)",
        N,
        || {
            let reactor = Reactor::new().expect("a poller");
            let mut calls = Vec::with_capacity(N as usize);
            let (_, ()) = timed(|| {
                for i in 0..N {
                    calls.push(reactor.call_later(1000.0 + i as f64, || {}).unwrap());
                }
            });
            keep((reactor, calls));
        },
    )?);
    lines.push(line(
        "timer_clock",
        "Clock::call_later (one timer, 1,000 pending)",
        N,
        || {
            let clock = Clock::new();
            let mut calls = Vec::with_capacity(N as usize);
            let (_, ()) = timed(|| {
                for i in 0..N {
                    calls.push(clock.call_later(1000.0 + i as f64, || {}));
                }
            });
            keep((clock, calls));
        },
    )?);
    lines.push(line(
        "call_from_thread",
        "call_from_thread call, closure capturing nothing (sent from 1 thread and run; both threads counted)",
        100_000,
        || {
            let row = super::threads_row();
            let ours = row.by_role(crate::Role::Ours).expect("ours");
            (ours.run)(1);
        },
    )?);
    Some(lines)
}
