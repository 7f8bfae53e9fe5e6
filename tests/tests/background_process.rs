//! Synapse's background processes (`twisted_compat::run_as_background_process`):
//! the instance's own context, its name and numbering, what the caller sees,
//! failures and cancellation swallowed, and the context the returned
//! Deferred fires in.
//!
//! Synapse behaviours covered: section 2.9, items 91, 92 (the context has no
//! parent; the metrics are not built), 93 and 94. Item 95
//! (`HomeServer.run_as_background_process` and shutdown) has no counterpart
//! here.
//!
//! Each test runs on its own thread, which starts in the sentinel context
//! with no process counted yet.

use std::cell::RefCell;
use std::rc::Rc;

use twisted_compat::{
    LogcontextError, LoggingContext, capture_logcontext_errors, clear_background_process_counts,
    current_context, make_deferred_yieldable, run_as_background_process,
};
use twisted_deferred::{AnyValue, Deferred, Failure, ensure_deferred, succeed};

const HS: &str = "test.server";

fn current() -> String {
    current_context().to_string()
}

fn messages(errors: &[LogcontextError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn new_log() -> Rc<RefCell<Vec<String>>> {
    Rc::new(RefCell::new(Vec::new()))
}

// Synapse: semantics 2.9 #91 (Exp); golden logcontext/bgprocess_names_and_contexts
#[test]
fn a_process_runs_at_once_in_a_fresh_context_named_after_its_description() {
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let s = seen.clone();
        let d = run_as_background_process("job", HS, move || async move {
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(1))
        });
        assert_eq!(d.result().value(), Some(Some(1)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["job-0"]);
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.9 #91 (Exp: n counts per description, from 0)
#[test]
fn instances_are_numbered_per_description_from_zero() {
    let names = new_log();
    let start = |desc: &'static str| {
        let n = names.clone();
        run_as_background_process(desc, HS, move || async move {
            n.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
    };
    start("a");
    start("b");
    start("a");
    start("a");
    start("b");
    assert_eq!(*names.borrow(), ["a-0", "b-0", "a-1", "a-2", "b-1"]);
    clear_background_process_counts();
    start("a");
    assert_eq!(names.borrow().last().map(String::as_str), Some("a-0"));
}

// Synapse: semantics 2.9 #91 (Exp: the previous context is the sentinel; the caller's is unchanged)
#[test]
fn the_callers_context_is_unchanged_and_not_the_processs_previous_context() {
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let contexts = Rc::new(RefCell::new(Vec::new()));
    let c = contexts.clone();
    let ((), errors) = capture_logcontext_errors(|| {
        run_as_background_process("job", HS, move || async move {
            c.borrow_mut().push(current_context());
            Ok::<_, Failure>(())
        });
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(current_context(), req);
    let contexts = contexts.borrow();
    let own = contexts[0].context().expect("a real context");
    assert_eq!(own.name(), "job-0");
    assert!(own.previous_context().is_sentinel());
    assert_eq!(own.server_name(), HS);
    assert!(own.finished(), "exited when the process ended");
}

// Synapse: semantics 2.9 #92 (Code: the background context has no parent)
#[test]
fn the_process_context_has_no_parent_and_no_request() {
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let own = Rc::new(RefCell::new(None));
    let o = own.clone();
    run_as_background_process("job", HS, move || async move {
        *o.borrow_mut() = current_context().context().cloned();
        Ok::<_, Failure>(())
    });
    let own = own.borrow().clone().expect("ran in a context");
    assert!(own.parent_context().is_none());
    assert!(own.request().is_none());
}

// Synapse: cancellation.md E-OK; golden logcontext/bgprocess_suspends_in_its_context
#[test]
fn a_suspended_process_keeps_its_context_and_resumes_in_the_firers() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let (x2, s) = (x.clone(), seen.clone());
    let (d, errors) = capture_logcontext_errors(|| {
        run_as_background_process("job", HS, move || async move {
            s.borrow_mut().push(current());
            let v = x2.await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(v))
        })
    });
    // It suspended with its own context current: the PreserveLoggingContext
    // block around it expected the sentinel.
    assert_eq!(
        messages(&errors),
        ["Expected logging context sentinel but found job-0"]
    );
    assert_eq!(current_context(), req);
    assert!(!d.called());
    let ((), errors) = capture_logcontext_errors(|| {
        let _outside = twisted_compat::PreserveLoggingContext::sentinel();
        x.callback(4).unwrap();
        assert!(current_context().is_sentinel());
    });
    // Resumed in the sentinel (the firer's context), so its exit found it lost.
    assert_eq!(
        messages(&errors),
        ["Expected logging context job-0 was lost"]
    );
    assert_eq!(*seen.borrow(), ["job-0", "sentinel"]);
    assert_eq!(d.result().value(), Some(Some(4)));
}

// Synapse: semantics 2.9 #91, #94 (a process that follows the rules is clean)
#[test]
fn a_process_following_the_rules_reports_nothing_and_fires_in_the_sentinel() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let (x2, s) = (x.clone(), seen.clone());
    let ((), errors) = capture_logcontext_errors(|| {
        let d = run_as_background_process("job", HS, move || async move {
            let v = make_deferred_yieldable(x2).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(v))
        });
        let s = seen.clone();
        d.add_callback(move |v| {
            s.borrow_mut().push(current());
            Ok(v)
        });
        assert_eq!(current_context(), req);
        let _outside = twisted_compat::PreserveLoggingContext::sentinel();
        x.callback(5).unwrap();
        assert_eq!(d.result().value(), Some(Some(5)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    // It resumed in its own context; the returned Deferred fired after that
    // context exited, in the sentinel.
    assert_eq!(*seen.borrow(), ["job-0", "sentinel"]);
}

// Synapse: semantics 2.9 #93 (Exp); golden logcontext/bgprocess_swallows_failures
#[test]
fn a_failure_is_swallowed_and_the_deferred_succeeds_with_none() {
    let d = run_as_background_process("fails", HS, || async {
        Err::<Option<i32>, _>(Failure::msg("lost"))
    });
    assert_eq!(d.result().value(), Some(None));
    let d: Deferred<AnyValue> = run_as_background_process("fails", HS, || async {
        Err::<AnyValue, _>(Failure::msg("lost"))
    });
    assert!(d.result().value().unwrap().is_none(), "Python's None");
    let d = run_as_background_process("fails", HS, || async { Err::<(), _>(Failure::msg("x")) });
    assert_eq!(d.result().value(), Some(()));
}

// Synapse: semantics 2.9 #93 (Exp: a panic is Rust's raise)
#[test]
fn a_panic_is_swallowed_and_the_context_still_exits() {
    let own = Rc::new(RefCell::new(None));
    let o = own.clone();
    let d = run_as_background_process("panics", HS, move || async move {
        *o.borrow_mut() = current_context().context().cloned();
        if o.borrow().is_some() {
            panic!("boom");
        }
        Ok::<_, Failure>(Some(1))
    });
    assert_eq!(d.result().value(), Some(None));
    assert!(own.borrow().as_ref().unwrap().finished());
    assert!(current_context().is_sentinel());
    // Panicking before returning a future is swallowed too.
    let d = run_as_background_process("panics", HS, || -> Deferred<Option<i32>> {
        panic!("in the function itself")
    });
    assert_eq!(d.result().value(), Some(None));
}

// Synapse: semantics 2.9 #93 (Exp: cancelling gives success(None), not CancelledError)
#[test]
fn cancelling_a_process_gives_none_not_cancelled_error() {
    let y: Deferred<Option<i32>> = Deferred::new();
    let thrown = new_log();
    let (y2, t) = (y.clone(), thrown.clone());
    let d = run_as_background_process("waits", HS, move || async move {
        match y2.await {
            Err(f) => {
                t.borrow_mut().push(f.message());
                Err(f)
            }
            ok => ok,
        }
    });
    assert!(!d.called());
    let ((), errors) = capture_logcontext_errors(|| d.cancel().unwrap());
    assert_eq!(thrown.borrow().len(), 1, "CancelledError reached the await");
    assert_eq!(d.result().value(), Some(None));
    assert!(y.called());
    // Cancelled from the sentinel: the process resumed there and found its
    // context lost when it exited.
    assert_eq!(
        messages(&errors),
        ["Expected logging context waits-0 was lost"]
    );
}

// Synapse: semantics 2.9 #91 (func may return a Deferred, awaited by the process)
#[test]
fn a_function_returning_a_deferred_is_awaited() {
    let d = run_as_background_process("deferred", HS, || succeed(Some("value")));
    assert_eq!(d.result().value(), Some(Some("value")));
    let pending: Deferred<Option<i32>> = Deferred::new();
    let p = pending.clone();
    let d = run_as_background_process("deferred", HS, move || p);
    assert!(!d.called());
    pending.callback(Some(2)).unwrap();
    assert_eq!(d.result().value(), Some(Some(2)));
}

// Synapse: semantics 2.9 #94 (Code: await the returned Deferred through make_deferred_yieldable)
#[test]
fn awaiting_the_process_through_make_deferred_yieldable_keeps_the_callers_context() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let (x2, s) = (x.clone(), seen.clone());
    let ((), errors) = capture_logcontext_errors(|| {
        let outer = ensure_deferred(async move {
            let req = LoggingContext::new("req", HS);
            let _scope = req.entered();
            let d = run_as_background_process("job", HS, move || async move {
                let v = make_deferred_yieldable(x2).await?;
                Ok::<_, Failure>(Some(v))
            });
            let v = make_deferred_yieldable(d).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(v)
        });
        x.callback(6).unwrap();
        assert_eq!(outer.result().value(), Some(Some(6)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["req"]);
    assert!(current_context().is_sentinel());
}
