//! Reporting failures nobody handled: Twisted's "Unhandled error in
//! Deferred" log message.
//!
//! A Deferred whose chain ended on a failure remembers it (Twisted's
//! `DebugInfo.failResult`); a later errback that handles it, or a Deferred
//! that takes it over by chaining, clears the record. If the Deferred is
//! dropped while the record is still set, the failure is reported. Python
//! reports at garbage collection; Rust drops deterministically, when the last
//! handle goes away.
//!
//! Reports go to the current thread's hook if one is installed
//! ([`set_unhandled_error_hook`], [`capture_unhandled_errors`]), otherwise to
//! the [`log`] facade at error level.

use std::cell::RefCell;

use crate::failure::Failure;

/// A function receiving unhandled failures ([`set_unhandled_error_hook`]).
pub type UnhandledErrorHook = Box<dyn Fn(&Failure)>;

thread_local! {
    static HOOK: RefCell<Option<UnhandledErrorHook>> = const { RefCell::new(None) };
}

/// Installs `hook` to receive every unhandled failure reported on this thread
/// and returns the previous hook. Deferreds are single-threaded, so each
/// thread (each test) has its own.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_deferred::{fail, set_unhandled_error_hook, Failure};
///
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let sink = seen.clone();
/// let previous = set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
///     sink.borrow_mut().push(f.message())
/// })));
/// drop(fail::<i32>(Failure::msg("lost")));   // del d  (d = fail(...))
/// assert_eq!(*seen.borrow(), ["lost"]);
/// set_unhandled_error_hook(previous);
/// ```
pub fn set_unhandled_error_hook(hook: Option<UnhandledErrorHook>) -> Option<UnhandledErrorHook> {
    HOOK.with(|h| h.replace(hook))
}

/// Runs `f` and returns what it returned together with every failure reported
/// as unhandled on this thread meanwhile, in report order. Meant for tests.
///
/// ```
/// use twisted_deferred::{capture_unhandled_errors, fail, Failure};
///
/// let ((), reports) = capture_unhandled_errors(|| {
///     let d = fail::<i32>(Failure::msg("boom"));
///     drop(d);
/// });
/// assert_eq!(reports.len(), 1);
/// assert_eq!(reports[0].message(), "boom");
/// ```
pub fn capture_unhandled_errors<R>(f: impl FnOnce() -> R) -> (R, Vec<Failure>) {
    let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let previous = set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
        sink.borrow_mut().push(f.clone())
    })));
    let result = f();
    set_unhandled_error_hook(previous);
    let reports = seen.take();
    (result, reports)
}

/// Reports one unhandled failure (with what its Deferred recorded while
/// debugging was on, if anything).
pub(crate) fn report(failure: Failure, debug: Option<crate::debug::DebugInfo>) {
    let handled = HOOK
        .try_with(|h| match h.try_borrow() {
            Ok(hook) => match hook.as_ref() {
                Some(hook) => {
                    hook(&failure);
                    true
                }
                None => false,
            },
            // A report made while the hook itself runs goes to the log.
            Err(_) => false,
        })
        // The thread is shutting down and its hook is gone.
        .unwrap_or(false);
    if !handled {
        match debug.filter(|d| !d.is_empty()) {
            Some(info) => log::error!("Unhandled error in Deferred: {failure} (debug: {info})"),
            None => log::error!("Unhandled error in Deferred: {failure}"),
        }
    }
}
