//! Debug info: Twisted's `setDebugging(True)`, with source locations
//! (captured by `#[track_caller]`) where Twisted records stacks.
//!
//! Twisted behaviours covered: B61, B62, B63 (catalogue section 2.7) and the
//! debug part of B65. The flag is process-wide, so every test here holds a
//! lock while it is on.

use std::sync::{Mutex, MutexGuard};

use integration_tests::support::capture_logs;
use twisted_deferred::{AlreadyCalledError, Deferred, Failure, debug, fail};

static FLAG: Mutex<()> = Mutex::new(());

/// Holds the flag lock with debugging set to `on`; turns it off when dropped.
struct Debugging(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Debugging {
    fn set(on: bool) -> Debugging {
        let guard = FLAG.lock().unwrap_or_else(|e| e.into_inner());
        debug::set_debugging(on);
        Debugging(guard)
    }
}

impl Drop for Debugging {
    fn drop(&mut self) {
        debug::set_debugging(false);
    }
}

fn already_called(err: &Failure) -> AlreadyCalledError {
    err.downcast_ref::<AlreadyCalledError>().unwrap().clone()
}

// Twisted: AlreadyCalledTests.testNoDebugging
#[test]
fn without_debugging_already_called_carries_no_locations() {
    let _off = Debugging::set(false);
    let d: Deferred<u8> = Deferred::new();
    d.callback(1).unwrap();
    let err = d.callback(2).unwrap_err();
    assert!(already_called(&err).debug_info().is_none());
    assert_eq!(err.message(), "deferred has already been called");
    assert!(!format!("{d:?}").contains("created at"));
}

// Twisted: AlreadyCalledTests.testAlreadyCalledDebug_CC
#[test]
fn with_debugging_already_called_names_the_creator_and_the_first_invoker() {
    let _on = Debugging::set(true);
    let d: Deferred<u8> = Deferred::new();
    let created = line!() - 1;
    d.callback(1).unwrap();
    let fired = line!() - 1;
    let err = d.callback(2).unwrap_err();
    let info = *already_called(&err).debug_info().unwrap();
    assert_eq!(info.creator.unwrap().line(), created);
    assert_eq!(info.invoker.unwrap().line(), fired);
    assert!(info.creator.unwrap().file().ends_with("debug_info.rs"));
    let message = err.message();
    assert!(message.contains(" C: Deferred was created:"), "{message}");
    assert!(message.contains(" I: First Invoker was:"), "{message}");
}

/// Only the first invoker is recorded; the failed later calls are not.
// Twisted: AlreadyCalledTests.testAlreadyCalledDebug_CE / _EC / _EE
#[test]
fn the_invoker_recorded_is_the_first_fire_whatever_kind() {
    let _on = Debugging::set(true);
    let first_by_callback: Deferred<u8> = Deferred::new();
    let _ = first_by_callback.callback(0);
    let callback_line = line!() - 1;
    let first_by_errback: Deferred<u8> = Deferred::new();
    let _ = first_by_errback.errback(Failure::msg("x"));
    let errback_line = line!() - 1;
    for (d, line) in [
        (first_by_callback, callback_line),
        (first_by_errback, errback_line),
    ] {
        let _second = d.errback(Failure::msg("y")).unwrap_err();
        let third = d.callback(3).unwrap_err();
        let info = *already_called(&third).debug_info().unwrap();
        assert_eq!(info.invoker.unwrap().line(), line);
        d.add_errback(|_| Ok(0));
    }
}

/// `cancel()` fires the Deferred: it is the first invoker.
// Twisted: experiment E08 (cancel records the invoker through errback)
#[test]
fn a_cancel_is_recorded_as_the_first_invoker() {
    let _on = Debugging::set(true);
    let d: Deferred<u8> = Deferred::new();
    d.cancel().unwrap();
    let cancelled = line!() - 1;
    let err = d.callback(1);
    // Without a canceller the first late fire is swallowed; the second raises.
    assert!(err.is_ok());
    let err = d.callback(2).unwrap_err();
    assert_eq!(
        already_called(&err)
            .debug_info()
            .unwrap()
            .invoker
            .unwrap()
            .line(),
        cancelled
    );
    d.add_errback(|_| Ok(0));
}

/// Debug output shows where the Deferred was created and first fired.
// Twisted: LogTests.test_errorLogDebugInfo (the creator/invoker text)
#[test]
fn debug_output_shows_the_recorded_locations() {
    let _on = Debugging::set(true);
    let d: Deferred<u8> = Deferred::new();
    let shown = format!("{d:?}");
    assert!(
        shown.contains("created at") && shown.contains("debug_info.rs"),
        "{shown}"
    );
    assert!(!shown.contains("first fired at"));
    d.callback(7).unwrap();
    let shown = format!("{d:?}");
    assert!(
        shown.contains("current result: 7") && shown.contains("first fired at"),
        "{shown}"
    );
}

/// Turning debugging on between creation and firing records the invoker
/// only; turning it off before the second fire gives a plain error.
// Twisted: AlreadyCalledTests.testSwitchDebugging
#[test]
fn switching_debugging_between_creation_and_firing_breaks_nothing() {
    let guard = Debugging::set(false);
    let d: Deferred<u8> = Deferred::new();
    debug::set_debugging(true);
    d.callback(1).unwrap();
    let err = d.callback(2).unwrap_err();
    let info = *already_called(&err).debug_info().unwrap();
    assert!(info.creator.is_none());
    assert!(info.invoker.is_some());
    debug::set_debugging(false);
    let err = d.callback(3).unwrap_err();
    assert!(already_called(&err).debug_info().is_none());
    drop(guard);
}

/// The unhandled-error report carries the debug text.
// Twisted: LogTests.test_errorLogDebugInfo
#[test]
fn unhandled_error_reports_include_the_debug_info() {
    let _on = Debugging::set(true);
    let ((), records) = capture_logs(|| {
        let d = fail::<u8>(Failure::msg("lost"));
        drop(d);
    });
    let report = records
        .iter()
        .find(|(_, m)| m.contains("Unhandled error in Deferred"))
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    assert!(report.contains("lost"), "{report}");
    assert!(
        report.contains("(debug:") && report.contains("Deferred was created"),
        "{report}"
    );
}
