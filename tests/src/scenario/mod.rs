//! The conformance scenario runner: parses a scenario
//! (`../shared/conformance/FORMAT.md`), runs it through the library's public
//! API and prints the trace real Twisted prints for it.
//!
//! ```
//! let trace = integration_tests::scenario::run_text("new x\ncb x add:1\ncallback x 1\n").unwrap();
//! assert_eq!(trace, "x.1 cb <- 1 @sentinel\n= x result 2\n");
//! ```

pub mod ast;
mod features;
pub mod parse;
pub mod record;
pub mod run;
mod run_clock;
mod run_logcontext;
mod run_synapse;
pub mod trace_diagram;
pub mod values;

pub use parse::{ParseError, parse};
pub use run::{Limits, RunError, run, run_recorded, run_recorded_with_limits, run_with_limits};

/// Why [`run_text`] produced no trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The text is not a well-formed scenario (exit code 2).
    Parse(ParseError),
    /// The scenario could not be run (exit code 3 when unsupported, 4 when
    /// it turned out invalid, 5 when it exceeded its [`Limits`]).
    Run(RunError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Parse(e) => write!(f, "malformed scenario: {e}"),
            Error::Run(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The process exit code the `deferred-scenario` binary uses for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Parse(_) => 2,
            Error::Run(RunError::Unsupported { .. }) => 3,
            Error::Run(RunError::Invalid { .. }) => 4,
            Error::Run(RunError::LimitExceeded { .. }) => 5,
        }
    }
}

/// Parses and runs scenario text.
pub fn run_text(text: &str) -> Result<String, Error> {
    run_text_with_limits(text, Limits::UNLIMITED)
}

/// Parses and runs scenario text within `limits`: whatever the text, this
/// returns promptly, with the trace or an [`Error`] (never a panic).
///
/// ```
/// use integration_tests::scenario::{Error, Limits, RunError, run_text_with_limits};
/// // c2 calls c1 twice, c3 calls c2 twice, …: exponential work.
/// let mut text = String::from("async c0\nreturn 1\nend\n");
/// for i in 1..40 {
///     text += &format!("async c{i}\ncall c{j}\ncall c{j}\nend\n", j = i - 1);
/// }
/// text += "start r c39\n";
/// let e = run_text_with_limits(&text, Limits::steps(10_000)).unwrap_err();
/// assert!(matches!(e, Error::Run(RunError::LimitExceeded { max_steps: 10_000, .. })));
/// assert_eq!(e.exit_code(), 5);
/// ```
pub fn run_text_with_limits(text: &str, limits: Limits) -> Result<String, Error> {
    let scenario = parse(text).map_err(Error::Parse)?;
    run_with_limits(&scenario, limits).map_err(Error::Run)
}
