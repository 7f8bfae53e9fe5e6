//! Every row of the suite, by bench file.

use crate::{Group, Row};

mod chain;
mod combinators;
mod coroutines;
mod observable;
mod profile;
mod threads;
mod timers;
mod twisted;

pub use profile::{AllocLine, alloc_profile};

/// The sizes of the scale rows.
pub const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

/// Every row, in table order.
pub fn rows() -> Vec<Row> {
    let mut rows = twisted::rows();
    rows.extend(combinators::rows());
    rows.extend(chain::rows());
    rows.extend(coroutines::rows());
    rows.extend(observable::rows());
    rows.extend(timers::rows());
    rows.extend(threads::rows());
    rows
}

/// The rows of one bench file.
pub fn rows_in(group: Group) -> Vec<Row> {
    match group {
        Group::Twisted => twisted::rows(),
        Group::Chain => chain::rows(),
        Group::Combinators => combinators::rows(),
        Group::Coroutines => coroutines::rows(),
        Group::Observable => observable::rows(),
        Group::Timers => timers::rows(),
        Group::Threads => threads::rows(),
    }
}

/// Rows of a million elements are heavy.
fn heavy(n: u64) -> bool {
    n >= 100_000
}

/// The `call_from_thread` row (for the allocation profile).
fn threads_row() -> Row {
    threads::rows().remove(0)
}
