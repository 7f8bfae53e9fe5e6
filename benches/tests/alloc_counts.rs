//! Allocation counts per operation, with the counting allocator installed:
//! none may grow past what was measured when this suite was written (lower
//! is welcome; then lower the bound here too).

use benches::alloc::{self, CountingAlloc};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn the_counting_allocator_counts_timed_sections_only() {
    let (counts, ()) = alloc::count(|| {
        let outside = Box::new(1u64);
        let (_, inside) = benches::timed(|| (Box::new(2u64), vec![3u8; 10]));
        drop((outside, inside));
    })
    .expect("installed");
    assert_eq!(counts.allocs, 2);
    assert_eq!(counts.bytes, 18);
}

/// (key, allocations per unit at most)
const BOUNDS: &[(&str, f64)] = &[
    ("deferred", 1.0),
    ("succeed", 1.0),
    ("callback_4", 0.0),
    ("callback_16", 0.125),
    ("callback_capture_3", 0.0),
    ("callback_capture_4", 1.0),
    ("fire_4", 0.0),
    ("chain_step", 1.0),
    ("one_hop", 2.0),
    ("gather_input", 0.0),
    ("deferred_list_input", 0.0),
    ("ensure_deferred", 3.0),
    ("await_fired", 1.0),
    ("await_unfired", 1.0),
    ("observer", 2.01),
    ("failure", 2.0),
    // The heap and the two vectors of the queue's slot table grow by
    // doubling while the 1,000 calls are scheduled: 0.03 per call.
    ("timer_reactor", 1.03),
    ("timer_clock", 1.0),
    ("call_from_thread", 0.0),
];

#[test]
fn allocations_per_operation_do_not_grow() {
    let lines = benches::alloc_profile().expect("the counting allocator is installed");
    let mut failures = Vec::new();
    for &(key, bound) in BOUNDS {
        let line = lines
            .iter()
            .find(|l| l.key == key)
            .unwrap_or_else(|| panic!("no line {key}"));
        println!("{key}: {:.3} allocations ({})", line.allocs, line.what);
        // 0.01: the vectors that hold what was made count a fraction
        if line.allocs > bound + 0.01 {
            failures.push(format!(
                "{key}: {:.3} > {bound} ({})",
                line.allocs, line.what
            ));
        }
    }
    assert!(lines.len() == BOUNDS.len(), "every line has a bound");
    assert!(
        failures.is_empty(),
        "allocations grew:\n{}",
        failures.join("\n")
    );
}
