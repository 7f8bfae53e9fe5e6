//! The bodies of the fuzz targets (`tests/fuzz/`, run with `cargo +nightly
//! fuzz`), kept here so that stable `cargo test` replays their seed corpora
//! and every input a fuzzer ever found (`tests/tests/fuzz_corpus.rs`).
//!
//! * [`scenario::check`]: arbitrary bytes as scenario text, parsed and run
//!   within [`LIMITS`](scenario::LIMITS): no panic, no hang, every
//!   rejection a well-formed error, the same outcome twice, the same trace
//!   with recording on, and a diagram drawn from it.
//! * [`deferred_ops::run`]: bytes decoded into a sequence of public-API
//!   calls on a few Deferreds, run and checked (no panic escapes, each
//!   callback runs at most once, a fired Deferred never fires again except
//!   the one fire a cancel without canceller swallows, nothing wedges where
//!   Twisted would not, nothing leaks after `Tracker::collect()`).
//! * [`http::check`]: bytes sent in chunks to a `SynapseSite` over the
//!   in-memory `FakeChannel`, the client sometimes leaving: every response
//!   well-formed, each request answered by its servlet or 404/405, garbage
//!   refused with 400/413 and the connection closed, nothing stalled,
//!   no Deferred or logging context leaked.
//!
//! Adding a target: a module here with a
//! `check(&[u8])`, a three-line `tests/fuzz/fuzz_targets/NAME.rs` calling it,
//! a `[[bin]]` in `tests/fuzz/Cargo.toml`, seeds in
//! `tests/fuzz/corpus/NAME/`, and NAME in `tests/fuzz/fuzz.sh`'s list.

pub mod deferred_ops;
pub mod http;
pub mod scenario;
