//! Synapse's logging contexts (`twisted_compat::logcontext`): the current
//! context, entering and exiting, the sentinel, `PreserveLoggingContext`,
//! `make_deferred_yieldable`, `run_in_background`, `nested_logging_context`
//! and the misuse reports.
//!
//! Synapse behaviours covered: section 2.8, items 69 to 86 and 89 (the
//! hook). Items 87 and 88 have their own files (`resource_usage.rs`,
//! `logcontext_threads.rs`), and so do log records (`logcontext_logging.rs`);
//! item 90 (collected orphan coroutines) depends on the core's cycle
//! collection and is left out. The thread checks of item 75 are the
//! compiler's: contexts are not `Send`.
//!
//! Each test runs on its own thread, so it starts, as Synapse's test base
//! class requires, in the sentinel context.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};

use twisted_compat::{
    ContextRequest, LogcontextError, LoggingContext, LoggingContextOrSentinel,
    PreserveLoggingContext, SENTINEL_CONTEXT, SENTINEL_SERVER_NAME, capture_logcontext_errors,
    current_context, make_deferred_yieldable, nested_logging_context, run_coroutine_in_background,
    run_in_background, set_current_context, set_logcontext_error_hook,
};
use twisted_deferred::{
    AnyValue, CancelledError, Deferred, Failure, PanicError, ensure_deferred, succeed,
};

const HS: &str = "test.server";

fn ctx(name: &str) -> LoggingContext {
    LoggingContext::new(name, HS)
}

/// The name of the current context (`_check_test_key` reads it this way).
fn current() -> String {
    current_context().to_string()
}

/// The reports' messages, in order.
fn messages(errors: &[LogcontextError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// A callback that records the context it runs in.
fn record_context<T: 'static>(d: &Deferred<T>, seen: &Rc<RefCell<Vec<String>>>) {
    let seen = seen.clone();
    d.add_both(move |r: Result<T, Failure>| {
        seen.borrow_mut().push(current());
        r
    });
}

fn new_log() -> Rc<RefCell<Vec<String>>> {
    Rc::new(RefCell::new(Vec::new()))
}

// ---------------------------------------------------------------------------
// 69. The per-thread current context
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_sleep (starts in the sentinel context); semantics 2.8 #69 (Exp)
#[test]
fn the_initial_current_context_is_the_sentinel() {
    assert_eq!(current_context(), SENTINEL_CONTEXT);
    assert!(current_context().is_sentinel());
    assert_eq!(current(), "sentinel");
}

// Synapse: semantics 2.8 #69 (Exp)
#[test]
fn set_current_context_returns_the_previous_context() {
    let a = ctx("a");
    let b = ctx("b");
    let ((), errors) = capture_logcontext_errors(|| {
        assert_eq!(set_current_context(&a), SENTINEL_CONTEXT);
        assert_eq!(set_current_context(&b), a);
        assert_eq!(current_context(), b);
        assert_eq!(set_current_context(SENTINEL_CONTEXT), b);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #69 (Exp: switching to the same object does nothing)
#[test]
fn switching_to_the_context_already_current_does_nothing() {
    let a = ctx("a");
    let ((), errors) = capture_logcontext_errors(|| {
        set_current_context(&a);
        // A second start would report "already-active"; nothing happens.
        assert_eq!(set_current_context(&a), a);
        assert_eq!(set_current_context(&a), a);
        set_current_context(SENTINEL_CONTEXT);
        // Nor does switching from the sentinel to the sentinel.
        assert_eq!(set_current_context(SENTINEL_CONTEXT), SENTINEL_CONTEXT);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #69 (Code: stop(rusage) on the old context, then start(rusage) on the new)
#[test]
fn switching_stops_the_old_context_before_starting_the_new_one() {
    let old = ctx("old");
    let new = ctx("new");
    drop(new.entered()); // finished: starting it again is reported
    set_current_context(&old);
    old.stop(); // stopped behind the switch's back: stopping it again is reported
    let (previous, errors) = capture_logcontext_errors(|| set_current_context(&new));
    assert_eq!(previous, old);
    assert_eq!(
        messages(&errors),
        [
            "Called stop on logcontext old without recording a start rusage",
            "Re-starting finished log context new",
        ]
    );
    assert_eq!(current_context(), new);
    set_current_context(SENTINEL_CONTEXT);
}

// ---------------------------------------------------------------------------
// 70. The sentinel
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #70 (Exp)
#[test]
fn the_sentinel_is_falsy_named_sentinel_and_inert() {
    let s = SENTINEL_CONTEXT;
    assert!(s.is_sentinel());
    assert!(s.context().is_none());
    assert_eq!(s.to_string(), "sentinel");
    assert_eq!(s.name(), "sentinel");
    assert_eq!(s.server_name(), "unknown_server_from_sentinel_context");
    assert_eq!(s.server_name(), SENTINEL_SERVER_NAME);
    assert!(s.request().is_none());
    assert!(!s.finished());
    let ((), errors) = capture_logcontext_errors(|| {
        s.start();
        s.start();
        s.stop();
        s.stop();
        s.stop();
    });
    assert!(errors.is_empty(), "the sentinel never reports: {errors:?}");
    assert_eq!(LoggingContextOrSentinel::default(), SENTINEL_CONTEXT);
}

// ---------------------------------------------------------------------------
// 71. Creating a context
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #71 (Exp: previous_context is the current context when constructed)
#[test]
fn a_context_records_the_context_current_when_created_not_when_entered() {
    let outer = ctx("outer");
    let inner = {
        let _scope = outer.entered();
        ctx("inner")
    };
    assert_eq!(inner.previous_context(), &outer);
    assert!(outer.previous_context().is_sentinel());
    assert_eq!(inner.name(), "inner");
    assert_eq!(inner.server_name(), HS);
    assert!(inner.parent_context().is_none());
    assert!(!inner.finished());
}

// Synapse: semantics 2.8 #71 (Exp: request taken from the parent; an explicit request wins)
#[test]
fn a_context_takes_its_request_from_its_parent_unless_given_one() {
    let r1 = Rc::new(ContextRequest {
        request_id: "GET-1".into(),
        ..ContextRequest::default()
    });
    let parent = LoggingContext::builder("p", HS).request(r1.clone()).build();
    let child = LoggingContext::builder("c", HS)
        .parent_context(&parent)
        .build();
    let other = LoggingContext::builder("o", HS)
        .parent_context(&parent)
        .request(ContextRequest {
            request_id: "GET-2".into(),
            ..ContextRequest::default()
        })
        .build();
    assert!(Rc::ptr_eq(&child.request().unwrap(), &r1));
    assert_eq!(other.request().unwrap().request_id, "GET-2");
    assert_eq!(child.parent_context(), Some(&parent));
    assert!(ctx("lone").request().is_none());
}

// ---------------------------------------------------------------------------
// 72, 73. Entering and exiting
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_with_context
#[test]
fn a_with_block_makes_the_context_current_and_finishes_it() {
    let ((), errors) = capture_logcontext_errors(|| {
        let test = ctx("test");
        {
            let scope = test.entered();
            assert_eq!(current(), "test");
            assert_eq!(scope.context(), &test);
        }
        assert!(test.finished());
        assert!(current_context().is_sentinel());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #72 (Exp)
#[test]
fn entering_with_another_context_current_reports_it_and_carries_on() {
    let x = ctx("x");
    let y = ctx("y"); // previous: sentinel
    x.enter();
    let ((), errors) = capture_logcontext_errors(|| y.enter());
    assert_eq!(
        errors,
        [LogcontextError::UnexpectedPrevious {
            expected: SENTINEL_CONTEXT,
            found: x.clone().into(),
        }]
    );
    assert_eq!(
        messages(&errors),
        ["Expected previous context sentinel, found x"]
    );
    assert_eq!(current_context(), y);
    // Exiting y restores *its* previous context, the sentinel, not x.
    let ((), errors) = capture_logcontext_errors(|| y.exit());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #73 (Exp); golden logcontext/enter_exit_nesting
#[test]
fn exiting_restores_the_context_recorded_at_creation() {
    let outer = ctx("outer");
    outer.enter();
    let inner = ctx("inner");
    inner.enter();
    assert_eq!(current(), "inner");
    inner.exit();
    assert_eq!(current_context(), outer);
    outer.exit();
    assert!(current_context().is_sentinel());
    assert!(inner.finished() && outer.finished());
}

// Synapse: semantics 2.8 #73 (Exp); golden logcontext/exit_wrong_order
#[test]
fn exiting_a_context_that_is_not_current_reports_the_one_found() {
    let a = ctx("a");
    a.enter();
    let b = ctx("b");
    b.enter();
    let ((), errors) = capture_logcontext_errors(|| a.exit());
    assert_eq!(
        errors,
        [LogcontextError::UnexpectedContext {
            expected: a.clone().into(),
            found: b.clone().into(),
        }]
    );
    assert_eq!(
        messages(&errors),
        ["Expected logging context a but found b"]
    );
    // a's previous context, whatever was current.
    assert!(current_context().is_sentinel());
    assert!(a.finished());
    assert!(!b.finished());
    // Exiting b now: a (finished) comes back, then b is found lost.
    let ((), errors) = capture_logcontext_errors(|| b.exit());
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context a",
            "Expected logging context b was lost",
        ]
    );
    assert_eq!(current_context(), a);
    set_current_context(SENTINEL_CONTEXT);
}

// Synapse: semantics 2.8 #73 (Exp: "Expected logging context X was lost")
#[test]
fn exiting_with_the_sentinel_current_reports_the_context_lost() {
    let e = ctx("e");
    let ((), errors) = capture_logcontext_errors(|| e.exit());
    assert_eq!(
        errors,
        [LogcontextError::UnexpectedContext {
            expected: e.clone().into(),
            found: SENTINEL_CONTEXT,
        }]
    );
    assert_eq!(messages(&errors), ["Expected logging context e was lost"]);
    assert!(e.finished(), "exit always finishes");
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #73 (Exp: __exit__ runs on an exception too)
#[test]
fn a_with_block_exits_when_a_panic_unwinds_through_it() {
    let c = ctx("c");
    let c2 = c.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _scope = c2.entered();
        panic!("raised inside the block");
    }));
    assert!(r.is_err());
    assert!(c.finished());
    assert!(current_context().is_sentinel());
}

// ---------------------------------------------------------------------------
// 74, 75. Restarting a finished context; start/stop misuse
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #74 (Exp); TDESC::DescriptorTestCase.test_cancel_logcontexts
#[test]
fn bringing_back_a_finished_context_reports_it_and_switches_anyway() {
    let z = ctx("z");
    drop(z.entered());
    assert!(z.finished());
    // by set_current_context
    let (previous, errors) = capture_logcontext_errors(|| set_current_context(&z));
    assert!(previous.is_sentinel());
    assert_eq!(
        errors,
        [LogcontextError::RestartFinished { context: z.clone() }]
    );
    assert_eq!(messages(&errors), ["Re-starting finished log context z"]);
    assert_eq!(current_context(), z);
    set_current_context(SENTINEL_CONTEXT);
    // by PreserveLoggingContext(z)
    let ((), errors) = capture_logcontext_errors(|| {
        let _preserve = PreserveLoggingContext::new(&z);
        assert_eq!(current_context(), z);
    });
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context z",
            // leaving z, which was current without a start recorded
            "Called stop on logcontext z without recording a start rusage",
        ]
    );
    // by make_deferred_yieldable's restore link
    let d: Deferred<i32> = Deferred::new();
    let ((), errors) = capture_logcontext_errors(|| {
        let _preserve = PreserveLoggingContext::new(&z);
        make_deferred_yieldable(d.clone());
    });
    assert!(current_context().is_sentinel());
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context z",
            "Called stop on logcontext z without recording a start rusage",
            // make_deferred_yieldable cleared z inside the block
            "Expected logging context z was lost",
        ]
    );
    let ((), errors) = capture_logcontext_errors(|| d.callback(1).unwrap());
    assert_eq!(messages(&errors), ["Re-starting finished log context z"]);
    assert_eq!(current_context(), z);
    set_current_context(SENTINEL_CONTEXT);
}

// Synapse: semantics 2.8 #75 (Code: "Re-starting already-active log context")
#[test]
fn starting_a_running_context_reports_it() {
    let c = ctx("c");
    let ((), errors) = capture_logcontext_errors(|| {
        c.start();
        c.start();
    });
    assert_eq!(
        errors,
        [LogcontextError::RestartActive { context: c.clone() }]
    );
    assert_eq!(
        messages(&errors),
        ["Re-starting already-active log context c"]
    );
    // One stop ends it.
    let ((), errors) = capture_logcontext_errors(|| c.stop());
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #75 (Code: "Called stop on logcontext X without recording a start rusage")
#[test]
fn stopping_a_context_that_is_not_running_reports_it() {
    let c = ctx("c");
    let ((), errors) = capture_logcontext_errors(|| c.stop());
    assert_eq!(
        errors,
        [LogcontextError::StopWithoutStart { context: c.clone() }]
    );
    assert_eq!(
        messages(&errors),
        ["Called stop on logcontext c without recording a start rusage"]
    );
}

// Synapse: semantics 2.8 #74, #75 (Exp: a finished context is not marked running when restarted)
#[test]
fn a_restarted_finished_context_is_not_running() {
    let c = ctx("c");
    drop(c.entered());
    let ((), errors) = capture_logcontext_errors(|| {
        c.start();
        c.stop();
    });
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context c",
            "Called stop on logcontext c without recording a start rusage",
        ]
    );
}

// ---------------------------------------------------------------------------
// 76. PreserveLoggingContext
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_deferred_callback_preserve_logging_context
#[test]
fn preserve_logging_context_switches_and_restores_without_finishing() {
    let main = ctx("main");
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = main.entered();
        {
            let _preserve = PreserveLoggingContext::sentinel();
            assert!(current_context().is_sentinel());
        }
        assert_eq!(current_context(), main);
        let other = ctx("other");
        {
            let _preserve = PreserveLoggingContext::new(&other);
            assert_eq!(current_context(), other);
        }
        assert!(!other.finished(), "PreserveLoggingContext never finishes");
        assert_eq!(current_context(), main);
        let preserve = PreserveLoggingContext::new(&other);
        preserve.exit();
        assert_eq!(current_context(), main);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(main.finished());
}

// Synapse: semantics 2.8 #76 (Exp: a ctx leaked inside a default block gives "...sentinel but found x")
#[test]
fn preserve_logging_context_reports_a_context_leaked_inside_it() {
    let x = ctx("x");
    let ((), errors) = capture_logcontext_errors(|| {
        let _preserve = PreserveLoggingContext::sentinel();
        set_current_context(&x);
    });
    assert_eq!(
        errors,
        [LogcontextError::UnexpectedContext {
            expected: SENTINEL_CONTEXT,
            found: x.clone().into(),
        }]
    );
    assert_eq!(
        messages(&errors),
        ["Expected logging context sentinel but found x"]
    );
    assert!(
        current_context().is_sentinel(),
        "the old context comes back anyway"
    );
}

// Synapse: semantics 2.8 #76 (Exp: "Expected logging context NEW was lost")
#[test]
fn preserve_logging_context_reports_its_context_lost() {
    let n = ctx("n");
    let ((), errors) = capture_logcontext_errors(|| {
        let _preserve = PreserveLoggingContext::new(&n);
        set_current_context(SENTINEL_CONTEXT);
    });
    assert_eq!(messages(&errors), ["Expected logging context n was lost"]);
    assert!(current_context().is_sentinel());
}

// ---------------------------------------------------------------------------
// 77, 78. The rules, make_deferred_yieldable
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_sleep
#[test]
fn a_coroutine_following_the_rules_keeps_its_context_across_awaits() {
    let timer: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let (t, s) = (timer.clone(), seen.clone());
        let d = ensure_deferred(async move {
            let foo = ctx("foo");
            let _scope = foo.entered();
            make_deferred_yieldable(t).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        // Suspended: the sentinel is current, nothing leaks to the "reactor".
        assert!(current_context().is_sentinel());
        // The reactor fires the timer, in the sentinel context.
        timer.callback(()).unwrap();
        assert!(d.called());
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["foo"]);
    assert!(current_context().is_sentinel());
}

// Synapse: TLC::LoggingContextTestCase.test_make_deferred_yieldable
#[test]
fn make_deferred_yieldable_resets_to_sentinel_and_restores_on_fire() {
    let foo = ctx("foo");
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = foo.entered();
        let d: Deferred<i32> = Deferred::new();
        let d1 = make_deferred_yieldable(d.clone());
        assert!(d1.ptr_eq(&d), "the same Deferred comes back");
        assert!(current_context().is_sentinel());
        // The reactor fires it from the sentinel context.
        d.callback(3).unwrap();
        assert_eq!(current(), "foo");
        assert_eq!(d1.result().value(), Some(3));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #78 (Exp: the hook restores on failure too); golden logcontext/yieldable_incomplete_resets_and_restores
#[test]
fn make_deferred_yieldable_restores_on_failure_and_passes_it_on() {
    let foo = ctx("foo");
    let _scope = foo.entered();
    let d: Deferred<i32> = Deferred::new();
    make_deferred_yieldable(d.clone());
    let seen = new_log();
    record_context(&d, &seen);
    let caught = d.add_errback(|f: Failure| Ok(f.message().len() as i32));
    d.errback(Failure::msg("boom")).unwrap();
    assert_eq!(*seen.borrow(), ["foo"]);
    assert_eq!(caught.result().value(), Some(4));
    assert_eq!(current_context(), foo);
}

// Synapse: semantics 2.8 #78 (Exp); golden logcontext/yieldable_completed_is_unchanged
#[test]
fn make_deferred_yieldable_leaves_a_complete_deferred_alone() {
    let foo = ctx("foo");
    let _scope = foo.entered();
    let d = succeed(5);
    let y = make_deferred_yieldable(d.clone());
    assert!(y.ptr_eq(&d));
    assert_eq!(current_context(), foo, "no switch");
    // No restore link was added: a callback sees the value directly, in foo.
    let seen = new_log();
    record_context(&y, &seen);
    assert_eq!(*seen.borrow(), ["foo"]);
    assert_eq!(y.result().value(), Some(5));
}

// Synapse: semantics 2.8 #78, T5; golden logcontext/yieldable_paused_counts_as_incomplete
#[test]
fn make_deferred_yieldable_counts_a_paused_deferred_as_incomplete() {
    let foo = ctx("foo");
    let _scope = foo.entered();
    let d = succeed(1);
    d.pause();
    make_deferred_yieldable(d.clone());
    assert!(current_context().is_sentinel());
    d.unpause();
    assert_eq!(current_context(), foo);
}

// Synapse: TLC::LoggingContextTestCase.test_make_deferred_yieldable_with_chained_deferreds
#[test]
fn make_deferred_yieldable_counts_a_chained_deferred_as_incomplete() {
    let foo = ctx("foo");
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = foo.entered();
        // _chained_deferred_function(): fired, but waiting on another one
        let inner: Deferred<()> = Deferred::new();
        let i2 = inner.clone();
        let d = succeed(()).add_callback(move |()| i2);
        assert!(d.called() && d.paused() > 0);
        let d1 = make_deferred_yieldable(d);
        assert!(current_context().is_sentinel());
        inner.callback(()).unwrap();
        assert_eq!(current(), "foo");
        assert!(d1.called() && d1.paused() == 0);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// ---------------------------------------------------------------------------
// 79-83. run_in_background
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_run_in_background_with_nonblocking_coroutine
#[test]
fn run_in_background_runs_the_function_now_in_the_callers_context() {
    let foo = ctx("foo");
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = foo.entered();
        let s = seen.clone();
        let d = run_in_background(move || async move {
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        assert!(d.called());
        assert_eq!(current(), "foo");
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *seen.borrow(),
        ["foo"],
        "shares the caller's context object"
    );
    assert!(current_context().is_sentinel());
}

// Synapse: TLC::LoggingContextTestCase.test_run_in_background_with_non_blocking_fn
#[test]
fn run_in_background_with_a_complete_result_keeps_the_context() {
    let foo = ctx("foo");
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = foo.entered();
        // A function that plays with contexts but returns complete.
        let d = run_in_background(|| {
            let _preserve = PreserveLoggingContext::sentinel();
            succeed(())
        });
        assert!(d.called());
        assert_eq!(current(), "foo");
        // No reset link: a callback added now runs in foo.
        let seen = new_log();
        record_context(&d, &seen);
        assert_eq!(*seen.borrow(), ["foo"]);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #79 (Exp: a plain value gives a succeeded Deferred)
#[test]
fn run_in_background_wraps_a_plain_value_in_a_succeeded_deferred() {
    let d = run_in_background(|| Ok::<_, Failure>(7));
    assert_eq!(d.result().value(), Some(7));
    let given = succeed("same");
    let g = given.clone();
    let d = run_in_background(move || g);
    assert!(d.ptr_eq(&given), "a Deferred is returned as it is");
}

// Synapse: semantics 2.8 #79 (Exp: a synchronous exception gives a failed Deferred; ctx left alone)
#[test]
fn run_in_background_turns_a_raised_failure_into_a_failed_deferred() {
    let foo = ctx("foo");
    let _scope = foo.entered();
    let leaked = ctx("leaked");
    let l = leaked.clone();
    let ((), errors) = capture_logcontext_errors(|| {
        let d = run_in_background(move || {
            set_current_context(&l);
            Err::<i32, _>(Failure::msg("raised"))
        });
        assert_eq!(d.result().failure().unwrap().message(), "raised");
        d.add_errback(|_| Ok(0));
    });
    assert!(errors.is_empty(), "no check on this path: {errors:?}");
    assert_eq!(current_context(), leaked, "the context is left alone");
    set_current_context(&foo);
}

// Synapse: semantics 2.8 #79 (Exp: a raising function gives a failed Deferred; a panic is Rust's raise)
#[test]
fn run_in_background_turns_a_panic_into_a_failed_deferred() {
    let d = run_in_background(|| -> Result<i32, Failure> { panic!("boom") });
    let f = d.result().failure().unwrap();
    assert!(f.check::<PanicError>());
    d.add_errback(|_| Ok(0));
}

// Synapse: semantics 2.8 #80 (Exp); golden logcontext/background_finished_changed_context
#[test]
fn run_in_background_reports_a_complete_function_that_changed_the_context_and_keeps_it() {
    let foo = ctx("foo");
    let _scope = foo.entered();
    let other = ctx("other");
    let o = other.clone();
    let (d, errors) = capture_logcontext_errors(|| {
        run_in_background(move || {
            set_current_context(&o);
            Ok::<_, Failure>(1)
        })
    });
    assert_eq!(d.result().value(), Some(1));
    assert_eq!(
        errors,
        [LogcontextError::ContextNotMaintained {
            calling: foo.clone().into(),
            found: other.clone().into(),
        }]
    );
    assert_eq!(
        messages(&errors),
        [
            "run_in_background: deferred already completed but the function did not \
             maintain the calling logcontext foo (found other)"
        ]
    );
    assert_eq!(current_context(), other, "not fixed");
    set_current_context(&foo);
}

// Synapse: TLC::LoggingContextTestCase.test_run_in_background_with_blocking_fn
#[test]
fn run_in_background_with_incomplete_work_restores_the_caller_and_resets_when_done() {
    let timer: Deferred<()> = Deferred::new();
    let callback_contexts = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        {
            let foo = ctx("foo");
            let _scope = foo.entered();
            let t = timer.clone();
            // async def blocking_function(): await clock.sleep(0)
            let d2 = run_in_background(move || async move {
                make_deferred_yieldable(t).await?;
                Ok::<_, Failure>(())
            });
            record_context(&d2, &callback_contexts);
            assert_eq!(current(), "foo");
        }
        assert!(current_context().is_sentinel());
        // The reactor fires the timer.
        timer.callback(()).unwrap();
        // Reset before it got back to the reactor.
        assert!(current_context().is_sentinel());
    });
    // The function resumed in foo (finished by then: the with block ended),
    // and the reset link ran before the test's callback.
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context foo",
            "Called stop on logcontext foo without recording a start rusage",
        ]
    );
    assert_eq!(*callback_contexts.borrow(), ["sentinel"]);
}

// Synapse: TLC::LoggingContextTestCase.test_run_in_background_with_coroutine
#[test]
fn run_in_background_coroutine_sees_the_sentinel_after_starting_yieldable_work() {
    let timer: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let foo = ctx("foo");
        let _scope = foo.entered();
        let (t, s) = (timer.clone(), seen.clone());
        let d = run_in_background(move || async move {
            s.borrow_mut().push(current());
            let d = make_deferred_yieldable(t);
            s.borrow_mut().push(current());
            d.await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        assert_eq!(current(), "foo");
        timer.callback(()).unwrap();
        assert!(d.called());
        assert!(current_context().is_sentinel(), "reset link");
        set_current_context(&foo);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["foo", "sentinel", "foo"]);
}

// Synapse: TLC::LoggingContextTestCase.test_run_in_background_with_chained_deferred
#[test]
fn run_in_background_with_a_chained_deferred_counts_it_as_incomplete() {
    let inner: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        {
            let foo = ctx("foo");
            let _scope = foo.entered();
            let i = inner.clone();
            let d = run_in_background(move || {
                let i2 = i.clone();
                make_deferred_yieldable(succeed(()).add_callback(move |()| i2))
            });
            record_context(&d, &seen);
            assert_eq!(current(), "foo");
        }
        inner.callback(()).unwrap();
        assert!(current_context().is_sentinel());
    });
    // make_deferred_yieldable's link brings foo back (finished), then the
    // reset link clears it before the test's callback.
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context foo",
            "Called stop on logcontext foo without recording a start rusage",
        ]
    );
    assert_eq!(*seen.borrow(), ["sentinel"]);
}

// Synapse: semantics 2.8 #81 (Exp: the returned Deferred is the work's own; cancelling it cancels the work)
#[test]
fn run_in_background_returns_the_works_deferred_so_cancel_reaches_the_work() {
    let awaited: Deferred<i32> = Deferred::new();
    let thrown = new_log();
    let (a, t) = (awaited.clone(), thrown.clone());
    let d = run_in_background(move || async move {
        match a.await {
            Err(f) if f.check::<CancelledError>() => {
                t.borrow_mut().push(f.message());
                Ok::<_, Failure>(-1)
            }
            other => other,
        }
    });
    assert!(!d.called());
    d.cancel().unwrap();
    assert_eq!(
        thrown.borrow().len(),
        1,
        "the work's await saw CancelledError"
    );
    assert!(awaited.called());
    assert_eq!(d.result().value(), Some(-1));
}

// Synapse: semantics 2.8 #81 (the returned Deferred does not follow the rules)
#[test]
fn awaiting_run_in_background_directly_loses_the_context() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let (x2, s) = (x.clone(), seen.clone());
    let outer = ensure_deferred(async move {
        let req = ctx("req");
        let _scope = req.entered();
        let bg = run_in_background(move || async move { x2.await });
        let direct = bg.await?;
        s.borrow_mut().push(current());
        Ok::<_, Failure>(direct)
    });
    x.callback(3).unwrap();
    assert_eq!(outer.result().value(), Some(3));
    assert_eq!(*seen.borrow(), ["sentinel"], "resumed after the reset link");
}

// Synapse: semantics 2.8 #81 (through make_deferred_yieldable it keeps the context); log_contexts.md "Passing synapse deferreds into third-party functions"
#[test]
fn awaiting_run_in_background_through_make_deferred_yieldable_keeps_the_context() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let (x2, s) = (x.clone(), seen.clone());
    let ((), errors) = capture_logcontext_errors(|| {
        let outer = ensure_deferred(async move {
            let req = ctx("req");
            let _scope = req.entered();
            let bg = run_in_background(move || async move { x2.await });
            let v = make_deferred_yieldable(bg).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(v)
        });
        assert!(current_context().is_sentinel());
        x.callback(3).unwrap();
        assert_eq!(outer.result().value(), Some(3));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["req"]);
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #82 (Exp); golden logcontext/background_outlives_caller
#[test]
fn background_work_that_outlives_its_caller_brings_back_the_finished_context() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        {
            let request = ctx("request");
            let _scope = request.entered();
            let y = make_deferred_yieldable(x.clone());
            let s = seen.clone();
            run_in_background(move || async move {
                y.await?;
                s.borrow_mut().push(current());
                Ok::<_, Failure>(())
            });
        }
        x.callback(1).unwrap();
    });
    assert_eq!(
        messages(&errors),
        [
            // make_deferred_yieldable cleared request, so its block found it lost
            "Expected logging context request was lost",
            "Re-starting finished log context request",
            // the reset link switches away from it
            "Called stop on logcontext request without recording a start rusage",
        ]
    );
    assert_eq!(*seen.borrow(), ["request"]);
    assert!(current_context().is_sentinel(), "the reset link ran");
}

// Synapse: TLC::LoggingContextTestCase.test_run_coroutine_in_background
#[test]
fn run_coroutine_in_background_runs_the_coroutine_in_the_callers_context() {
    // The two `clock.sleep(0)` timers, fired by the reactor in the sentinel
    // context.
    let competing_sleep: Deferred<()> = Deferred::new();
    let main_sleep: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let (t1, t2, s) = (competing_sleep.clone(), main_sleep.clone(), seen.clone());
        let main = ensure_deferred(async move {
            let foo = ctx("foo");
            let _scope = foo.entered();
            let s2 = s.clone();
            run_coroutine_in_background(async move {
                s2.borrow_mut()
                    .push(format!("competing starts in {}", current()));
                {
                    let competing = ctx("competing");
                    let _scope = competing.entered();
                    make_deferred_yieldable(t1).await?;
                    s2.borrow_mut()
                        .push(format!("competing resumes in {}", current()));
                }
                s2.borrow_mut()
                    .push(format!("competing ends in {}", current()));
                Ok::<_, Failure>(())
            });
            s.borrow_mut()
                .push(format!("main goes on in {}", current()));
            make_deferred_yieldable(t2).await?;
            s.borrow_mut()
                .push(format!("main resumes in {}", current()));
            Ok::<_, Failure>(())
        });
        assert!(current_context().is_sentinel());
        competing_sleep.callback(()).unwrap();
        assert!(
            current_context().is_sentinel(),
            "reset after the competing callback"
        );
        main_sleep.callback(()).unwrap();
        assert!(main.called());
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *seen.borrow(),
        [
            "competing starts in foo",
            "main goes on in foo",
            "competing resumes in competing",
            "competing ends in foo",
            "main resumes in foo",
        ]
    );
    assert!(current_context().is_sentinel());
}

// Synapse: TLC::LoggingContextTestCase.test_run_coroutine_in_background_already_complete
#[test]
fn run_coroutine_in_background_with_a_complete_coroutine_keeps_the_context() {
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let foo = ctx("foo");
        let _scope = foo.entered();
        let s = seen.clone();
        let d = run_coroutine_in_background(async move {
            s.borrow_mut().push(current());
            {
                let competing = ctx("competing");
                let _scope = competing.entered();
                succeed(()).await?;
                s.borrow_mut().push(current());
            }
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        assert!(d.called());
        assert_eq!(current(), "foo");
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["foo", "competing", "foo"]);
    assert!(current_context().is_sentinel());
}

// ---------------------------------------------------------------------------
// 84, 85. Firing Deferreds from inside a context
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_deferred_callback_await_in_current_logcontext; golden logcontext/callbacks_run_in_firing_context
#[test]
fn callbacks_run_in_the_context_current_when_the_deferred_fires() {
    let d: Deferred<i32> = Deferred::new();
    let seen = new_log();
    record_context(&d, &seen);
    let req = ctx("req");
    {
        let _scope = req.entered();
        d.callback(1).unwrap();
    }
    let e: Deferred<i32> = Deferred::new();
    record_context(&e, &seen);
    e.callback(2).unwrap();
    assert_eq!(*seen.borrow(), ["req", "sentinel"]);
}

// Synapse: TLC::LoggingContextTestCase.test_deferred_callback_await_in_current_logcontext (issue 1 and solution 1)
#[test]
fn a_resumed_coroutine_leaves_the_sentinel_current_for_the_firer_unless_it_awaits() {
    let timer: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let t = timer.clone();
        let s = seen.clone();
        let main = ensure_deferred(async move {
            let main_ctx = ctx("main");
            let _scope = main_ctx.entered();
            let d: Deferred<()> = Deferred::new();
            let competing = d.add_callback(move |()| {
                ensure_deferred(async move {
                    let c = ctx("competing");
                    let _scope = c.entered();
                    make_deferred_yieldable(t).await
                })
            });
            d.callback(()).unwrap();
            // Issue 1: the callback's coroutine suspended, clearing the context.
            s.borrow_mut().push(current());
            // Solution 1: await d, which follows the rules.
            competing.await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        timer.callback(()).unwrap();
        assert!(main.called());
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["sentinel", "main"]);
    assert!(current_context().is_sentinel());
}

// Synapse: TLC::LoggingContextTestCase.test_deferred_callback_preserve_logging_context (solution 2)
#[test]
fn firing_inside_preserve_logging_context_keeps_the_firers_context() {
    let timer: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let main = ctx("main");
        {
            let _scope = main.entered();
            let d: Deferred<()> = Deferred::new();
            let t = timer.clone();
            d.add_callback(move |()| {
                ensure_deferred(async move {
                    let c = ctx("competing");
                    let _scope = c.entered();
                    make_deferred_yieldable(t).await
                })
            });
            {
                let _preserve = PreserveLoggingContext::sentinel();
                d.callback(()).unwrap();
            }
            seen.borrow_mut().push(current());
        }
        timer.callback(()).unwrap();
        seen.borrow_mut().push(current());
    });
    assert!(
        errors.is_empty(),
        "no restart of a finished context: {errors:?}"
    );
    assert_eq!(*seen.borrow(), ["main", "sentinel"]);
}

// Synapse: TLC::LoggingContextTestCase.test_deferred_callback_fire_and_forget_with_current_context (solution 3)
#[test]
fn fire_and_forget_with_run_in_background_in_a_context_ended_later() {
    let timer: Deferred<()> = Deferred::new();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let main = ctx("main");
        {
            let _preserve = PreserveLoggingContext::new(&main);
            let d: Deferred<()> = Deferred::new();
            let t = timer.clone();
            d.add_callback(move |()| {
                ensure_deferred(async move {
                    let c = ctx("competing");
                    let _scope = c.entered();
                    make_deferred_yieldable(t).await
                })
            });
            // run_in_background(lambda: (d.callback(None), d)[1])
            let dd = d.clone();
            run_in_background(move || {
                dd.callback(()).unwrap();
                dd
            });
            seen.borrow_mut().push(current());
        }
        timer.callback(()).unwrap();
        seen.borrow_mut().push(current());
        // Finish main later, leaving the caller's context as it was.
        let _preserve = PreserveLoggingContext::sentinel();
        drop(main.entered());
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["main", "sentinel"]);
}

// Synapse: semantics 2.8 #85 (Docs: errback() and cancel() act as callback())
#[test]
fn errback_and_cancel_run_callbacks_in_the_current_context_like_callback() {
    let req = ctx("req");
    let _scope = req.entered();
    let seen = new_log();
    let a: Deferred<i32> = Deferred::new();
    record_context(&a, &seen);
    a.add_errback(|_| Ok(0));
    a.errback(Failure::msg("e")).unwrap();
    let b: Deferred<i32> = Deferred::new();
    record_context(&b, &seen);
    b.add_errback(|f: Failure| {
        f.trap::<CancelledError>()?;
        Ok(0)
    });
    b.cancel().unwrap();
    // And through make_deferred_yieldable: the restore link runs on a cancel.
    let c: Deferred<i32> = Deferred::new();
    let c = make_deferred_yieldable(c);
    assert!(current_context().is_sentinel());
    c.add_errback(|_| Ok(0));
    c.cancel().unwrap();
    assert_eq!(current_context(), req);
    assert_eq!(*seen.borrow(), ["req", "req"]);
}

// ---------------------------------------------------------------------------
// 86. nested_logging_context
// ---------------------------------------------------------------------------

// Synapse: TLC::LoggingContextTestCase.test_nested_logging_context
#[test]
fn nested_logging_context_is_a_child_named_after_the_current_context() {
    let foo = LoggingContext::builder("foo", HS)
        .request(ContextRequest::default())
        .build();
    let _scope = foo.entered();
    let nested = nested_logging_context("bar");
    assert_eq!(nested.name(), "foo-bar");
    assert_eq!(nested.parent_context(), Some(&foo));
    assert_eq!(nested.server_name(), HS);
    assert_eq!(nested.previous_context(), &foo);
    assert!(nested.request().is_some(), "inherited from the parent");
    assert_eq!(current_context(), foo, "not entered");
}

// Synapse: semantics 2.8 #86 (Exp: from the sentinel)
#[test]
fn nested_logging_context_from_the_sentinel_warns_and_has_no_parent() {
    logger();
    let (nested, errors) = capture_logcontext_errors(|| nested_logging_context("q"));
    assert_eq!(nested.name(), "sentinel-q");
    assert!(nested.parent_context().is_none());
    assert_eq!(nested.server_name(), SENTINEL_SERVER_NAME);
    assert!(errors.is_empty(), "a log warning, not a logcontext error");
    assert_eq!(
        logged_warnings(),
        ["Starting nested logging context from sentinel context: metrics will be lost"]
    );
}

// ---------------------------------------------------------------------------
// 89. The hook
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #89 (Code: one logcontext_error hook, patched by tests)
#[test]
fn misuse_reports_go_through_the_hook_installed_on_this_thread() {
    let seen = new_log();
    let sink = seen.clone();
    let previous = set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
        sink.borrow_mut().push(e.to_string())
    })));
    assert!(previous.is_none());
    let c = ctx("c");
    c.exit();
    drop(c.entered());
    let mine = set_logcontext_error_hook(None);
    assert!(mine.is_some());
    assert_eq!(
        *seen.borrow(),
        [
            "Expected logging context c was lost",
            "Re-starting finished log context c",
            "Called stop on logcontext c without recording a start rusage",
        ]
    );
    // Another thread has its own (no) hook.
    std::thread::spawn(|| {
        logger();
        let c = ctx("elsewhere");
        c.exit();
        assert_eq!(
            logged_warnings(),
            ["Expected logging context elsewhere was lost"]
        );
    })
    .join()
    .unwrap();
    assert!(seen.borrow().len() == 3);
}

// Synapse: semantics 2.8 #89 (Code: logcontext_error logs a warning by default)
#[test]
fn without_a_hook_misuse_is_logged_as_a_warning() {
    logger();
    let c = ctx("gone");
    c.exit();
    assert_eq!(
        logged_warnings(),
        ["Expected logging context gone was lost"]
    );
}

// Synapse: semantics 2.8 #89 (a hook may itself switch contexts or report)
#[test]
fn a_hook_may_report_and_replace_itself_while_it_runs() {
    let seen = new_log();
    let sink = seen.clone();
    set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
        sink.borrow_mut().push(e.to_string());
        if sink.borrow().len() == 1 {
            // Re-entrant: a report from inside the hook reaches it too.
            ctx("inner").exit();
            let sink2 = sink.clone();
            set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
                sink2.borrow_mut().push(format!("new: {e}"))
            })));
        }
    })));
    ctx("outer").exit();
    ctx("later").exit();
    set_logcontext_error_hook(None);
    assert_eq!(
        *seen.borrow(),
        [
            "Expected logging context outer was lost",
            "Expected logging context inner was lost",
            "new: Expected logging context later was lost",
        ]
    );
}

// Synapse: semantics 2.8 #76, #89 (clean code reports nothing)
#[test]
fn correct_use_reports_nothing() {
    let ((), errors) = capture_logcontext_errors(|| {
        let a = ctx("a");
        let _a = a.entered();
        let b = nested_logging_context("b");
        {
            let _b = b.entered();
            let _p = PreserveLoggingContext::sentinel();
            let d: Deferred<AnyValue> = Deferred::new();
            let y = make_deferred_yieldable(d.clone());
            d.callback(AnyValue::new(1)).unwrap();
            assert!(y.called());
        }
        assert_eq!(current_context(), a);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// ---------------------------------------------------------------------------
// A logger capturing this thread's warnings
// ---------------------------------------------------------------------------

type Records = Mutex<Vec<(std::thread::ThreadId, String)>>;

struct Capture(Records);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata())
            && let Ok(mut records) = self.0.lock()
        {
            records.push((std::thread::current().id(), record.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// The process's logger; call it before logging what a test checks.
fn logger() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(capture);
        log::set_max_level(log::LevelFilter::Warn);
        capture
    })
}

/// The warnings logged on this thread so far.
fn logged_warnings() -> Vec<String> {
    let me = std::thread::current().id();
    logger()
        .0
        .lock()
        .map(|r| {
            r.iter()
                .filter(|(t, _)| *t == me)
                .map(|(_, m)| m.clone())
                .collect()
        })
        .unwrap_or_default()
}
