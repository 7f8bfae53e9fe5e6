//! Callback-chain benchmarks (filled in below).
fn main() {}
