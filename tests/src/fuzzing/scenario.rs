//! The scenario fuzz target's body: arbitrary bytes through the scenario
//! parser and runner.

use crate::scenario::trace_diagram::diagram_text_with_limits;
use crate::scenario::{Error, Limits, RunError, run_text_with_limits};

/// The fuzz target's bound on a run's work ([`Limits`]): far more than any
/// golden scenario takes, little enough that a run ends in milliseconds.
pub const LIMITS: Limits = Limits {
    max_steps: Some(20_000),
};

/// Runs `data` (as text; invalid UTF-8 is replaced) through
/// [`run_text_with_limits`] and checks, panicking otherwise:
///
/// * a trace is whole lines;
/// * a rejection is an [`Error`] naming a line of the text (or line 1 of an
///   empty one) with a non-empty message, and its `Display` says so;
/// * a second run gives the same outcome (nothing leaks from one run into
///   the next through the thread's state);
/// * running with recording on (`diagram_text_with_limits`) gives the same
///   outcome, and the diagram draws as Mermaid and SVG.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count().max(1);
    let first = run_text_with_limits(&text, LIMITS);
    match &first {
        Ok(trace) => assert!(
            trace.is_empty() || trace.ends_with('\n'),
            "a trace that is not whole lines: {trace:?}"
        ),
        Err(e) => check_error(e, lines),
    }
    let again = run_text_with_limits(&text, LIMITS);
    assert_eq!(first, again, "the same scenario ran differently twice");
    match diagram_text_with_limits(&text, LIMITS) {
        Ok((trace, diagram)) => {
            assert_eq!(Ok(&trace), first.as_ref(), "recording changed the trace");
            let mermaid = diagram.mermaid();
            assert!(mermaid.starts_with("sequenceDiagram"), "{mermaid}");
            let svg = diagram.svg("fuzz");
            assert!(svg.starts_with("<svg"), "{svg}");
        }
        Err(e) => assert_eq!(Err(&e), first.as_ref(), "recording changed the outcome"),
    }
}

fn check_error(e: &Error, lines: usize) {
    let (line, message) = match e {
        Error::Parse(p) => (p.line, p.message.clone()),
        Error::Run(RunError::Unsupported { op, line }) => (*line, (*op).to_owned()),
        Error::Run(RunError::Invalid { line, message }) => (*line, message.clone()),
        Error::Run(RunError::LimitExceeded { line, .. }) => (*line, "limit".to_owned()),
    };
    assert!(
        (1..=lines).contains(&line),
        "error names line {line} of {lines}: {e}"
    );
    assert!(!message.trim().is_empty(), "error without a message: {e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("line {line}")),
        "error display does not name its line: {shown}"
    );
    assert!((2..=5).contains(&e.exit_code()));
}
