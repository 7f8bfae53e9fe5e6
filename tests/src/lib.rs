//! Support code for the integration tests: the conformance scenario runner
//! behind the `deferred-scenario` binary and the golden-corpus tests.

#![warn(missing_docs)]

pub mod fuzzing;
pub mod scenario;
pub mod support;
