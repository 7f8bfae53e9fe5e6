//! The golden conformance corpus: every scenario under `tests/golden/` and
//! every shared case of `../shared/conformance/cases/` runs through the
//! scenario runner, and its trace must equal, byte for byte, the `.expected`
//! trace real Twisted (and Synapse) printed for it.
//!
//! Golden directories name the runner features they need; all of their
//! scenarios must be supported. Shared cases that use ops this runner does
//! not support yet are counted and skipped (later work fills them in).

use std::path::{Path, PathBuf};

use integration_tests::scenario::{Error, RunError, run_text};

struct Outcome {
    checked: usize,
    unsupported: Vec<String>,
    failures: Vec<String>,
}

fn scenarios(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    files.sort();
    files
}

fn check_dir(dir: &Path) -> Outcome {
    let mut out = Outcome {
        checked: 0,
        unsupported: Vec::new(),
        failures: Vec::new(),
    };
    for path in scenarios(dir) {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Ok(expected) = std::fs::read_to_string(path.with_extension("expected")) else {
            out.failures.push(format!("{name}: no .expected file"));
            continue;
        };
        match run_text(&text) {
            Ok(trace) if trace == expected => out.checked += 1,
            Ok(trace) => out.failures.push(format!(
                "{name}: trace differs\n--- expected (Twisted)\n{expected}--- got\n{trace}"
            )),
            Err(Error::Run(RunError::Unsupported { op, line })) => out
                .unsupported
                .push(format!("{name}: `{op}` (line {line})")),
            Err(e) => out.failures.push(format!("{name}: {e}")),
        }
    }
    out
}

fn golden_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(kind)
}

fn assert_all_match(kind: &str, minimum: usize) {
    let out = check_dir(&golden_dir(kind));
    assert!(
        out.failures.is_empty() && out.unsupported.is_empty(),
        "{} golden scenario(s) of `{kind}` differ from Twisted, {} unsupported:\n{}\n{}",
        out.failures.len(),
        out.unsupported.len(),
        out.failures.join("\n"),
        out.unsupported.join("\n")
    );
    assert!(
        out.checked >= minimum,
        "only {} `{kind}` goldens found",
        out.checked
    );
}

/// The core ops (Deferred, callbacks, chaining, pause, cancel, unhandled
/// errors): hand-written pins of the catalogue's behaviours and generated
/// scenarios, with real Twisted's traces.
#[test]
fn core_goldens_match_twisted() {
    assert_all_match("core", 140);
}

/// Coroutines (`async` … `end`, `start`): awaiting, catching, nested
/// calls, cancellation through awaits, Twisted's coroutine quirks.
#[test]
fn async_goldens_match_twisted() {
    assert_all_match("async", 120);
}

/// Combinators and Synapse's helpers: `gather`, `dlist`, `race`,
/// `observable`/`observe`, `stop_cancellation`, `delay_cancellation`.
#[test]
fn combinator_goldens_match_twisted_and_synapse() {
    assert_all_match("combinators", 130);
}

/// Time: `call_later`, `advance`, `add_timeout`, Synapse's `timeout`.
#[test]
fn clock_goldens_match_twisted_and_synapse() {
    assert_all_match("clock", 110);
}

/// Synapse's logging contexts: `enter`, `exit`, `current`, `yieldable`,
/// `background`, `bgprocess`, the `ctx` effect and the `! logcontext:` checks.
#[test]
fn logcontext_goldens_match_synapse() {
    assert_all_match("logcontext", 115);
}

/// The shared cases: every one the runner supports must match.
#[test]
fn supported_shared_cases_match_twisted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/cases");
    if !dir.is_dir() {
        eprintln!("{} not found; skipping the shared cases", dir.display());
        return;
    }
    let out = check_dir(&dir);
    eprintln!(
        "shared cases: {} match, {} unsupported so far",
        out.checked,
        out.unsupported.len()
    );
    assert!(out.failures.is_empty(), "{}", out.failures.join("\n"));
    assert!(
        out.unsupported.is_empty(),
        "unsupported: {}",
        out.unsupported.join("\n")
    );
    assert!(out.checked >= 31, "every shared case must run");
}
