//! Synapse's `ReadWriteLock` (`twisted_compat::rwlock`): behaviours 56–62
//! of `synapse_semantics.md` (2.6).
//!
//! Citations: `TRW` is Synapse's `tests/util/test_rwlock.py`; "experiment"
//! is a check run against Synapse 1.163.2 (the expected values below are
//! what it printed).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use twisted_compat::{
    CancelledError, Deferred, Failure, LoggingContext, PreserveLoggingContext, ReadWriteLock,
    capture_logcontext_errors, current_context, make_deferred_yieldable,
};
use twisted_deferred::ensure_deferred;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Read,
    Write,
}

/// A reader or writer that takes the lock, blocks, then completes
/// (`TRW`'s `_start_reader_or_writer`): the operation's Deferred (with
/// `return_value` on success), one fired once it holds the lock, and the
/// Deferred that unblocks it.
struct Op {
    d: Deferred<&'static str>,
    acquired: Deferred<()>,
    unblock: Deferred<()>,
}

fn start(lock: &ReadWriteLock<&'static str>, mode: Mode, return_value: &'static str) -> Op {
    let acquired: Deferred<()> = Deferred::new();
    let unblock: Deferred<()> = Deferred::new();
    let (l, a, u) = (lock.clone(), acquired.clone(), unblock.clone());
    // async with read_or_write(key): acquired_d.callback(None); await unblock_d
    // return return_value
    let d = ensure_deferred(async move {
        {
            let _guard = match mode {
                Mode::Read => l.read("key").await?,
                Mode::Write => l.write("key").await?,
            };
            a.callback(())?;
            u.await?;
        }
        Ok::<_, Failure>(return_value)
    });
    Op {
        d,
        acquired,
        unblock,
    }
}

/// `_start_nonblocking_reader` / `_start_nonblocking_writer`: unblocked
/// from the start, so it releases as soon as it has the lock.
fn start_nonblocking(
    lock: &ReadWriteLock<&'static str>,
    mode: Mode,
    return_value: &'static str,
) -> Op {
    let op = start(lock, mode, return_value);
    op.unblock.callback(()).unwrap();
    op
}

/// `_assert_first_n_resolved`.
fn assert_first_n_acquired(ops: &[Op], n: usize) {
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(
            op.acquired.called(),
            i < n,
            "deferred {i} was unexpectedly {}",
            if i < n { "unresolved" } else { "resolved" }
        );
    }
}

fn holds_cancelled_error(d: &Deferred<&'static str>) -> bool {
    d.result()
        .failure()
        .is_some_and(|f| f.check::<CancelledError>())
}

// Synapse: TRW::ReadWriteLockTestCase.test_rwlock
#[test]
fn readers_share_writers_are_exclusive_and_later_readers_queue_behind_a_writer() {
    let lock = ReadWriteLock::new();
    let ops = [
        start(&lock, Mode::Read, "0"),
        start(&lock, Mode::Read, "1"),
        start(&lock, Mode::Write, "2"),
        start(&lock, Mode::Write, "3"),
        start(&lock, Mode::Read, "4"),
        start(&lock, Mode::Read, "5"),
        start(&lock, Mode::Write, "6"),
    ];
    // The first two readers have their locks.
    assert_first_n_acquired(&ops, 2);

    // One reader releases: the writer still waits for the other.
    ops[0].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 2);
    // The other releases: the writer goes.
    ops[1].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 3);
    // The writer releases: the next writer goes.
    ops[2].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 4);
    // That writer releases: both readers behind it go.
    ops[3].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 6);
    // One reader releases: the last writer waits for the other.
    ops[5].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 6);
    ops[4].unblock.callback(()).unwrap();
    assert_first_n_acquired(&ops, 7);
    ops[6].unblock.callback(()).unwrap();
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(
            op.d.result().value(),
            Some(["0", "1", "2", "3", "4", "5", "6"][i])
        );
    }

    // And once more, for good measure.
    let last_writer = start_nonblocking(&lock, Mode::Write, "last writer");
    assert!(last_writer.acquired.called());
    let last_reader = start_nonblocking(&lock, Mode::Read, "last reader");
    assert!(last_reader.acquired.called());
}

// Synapse: TRW::ReadWriteLockTestCase.test_lock_handoff_to_nonblocking_writer
#[test]
fn a_writer_hands_the_lock_synchronously_to_a_writer_that_completes_at_once() {
    let lock = ReadWriteLock::new();
    let w1 = start(&lock, Mode::Write, "write 1 completed");
    let w2 = start_nonblocking(&lock, Mode::Write, "write 2 completed");
    assert!(!w1.d.called() && !w2.d.called());

    // Unblocking the first writer completes the second without blocking.
    w1.unblock.callback(()).unwrap();
    assert_eq!(w1.d.result().value(), Some("write 1 completed"));
    assert_eq!(w2.d.result().value(), Some("write 2 completed"));

    // The lock works as normal afterwards.
    let w3 = start_nonblocking(&lock, Mode::Write, "write 3 completed");
    assert_eq!(w3.d.result().value(), Some("write 3 completed"));
}

// Synapse: TRW::ReadWriteLockTestCase.test_cancellation_while_holding_read_lock
#[test]
fn a_reader_cancelled_while_holding_lets_the_waiting_writer_in() {
    let lock = ReadWriteLock::new();
    let reader = start(&lock, Mode::Read, "read completed");
    let writer = start_nonblocking(&lock, Mode::Write, "write completed");
    assert!(!writer.d.called());

    reader.d.cancel().unwrap();
    assert!(holds_cancelled_error(&reader.d));
    assert!(
        writer.d.called(),
        "Writer is stuck waiting for a cancelled reader"
    );
    assert_eq!(writer.d.result().value(), Some("write completed"));
    reader.d.add_errback(|_| Ok(""));
}

// Synapse: TRW::ReadWriteLockTestCase.test_cancellation_while_holding_write_lock
#[test]
fn a_writer_cancelled_while_holding_lets_the_waiting_reader_in() {
    let lock = ReadWriteLock::new();
    let writer = start(&lock, Mode::Write, "write completed");
    let reader = start_nonblocking(&lock, Mode::Read, "read completed");
    assert!(!reader.d.called());

    writer.d.cancel().unwrap();
    assert!(holds_cancelled_error(&writer.d));
    assert!(
        reader.d.called(),
        "Reader is stuck waiting for a cancelled writer"
    );
    assert_eq!(reader.d.result().value(), Some("read completed"));
    writer.d.add_errback(|_| Ok(""));
}

// Synapse: TRW::ReadWriteLockTestCase.test_cancellation_while_waiting_for_read_lock
#[test]
fn a_reader_cancelled_while_waiting_fails_at_once_and_cancels_no_writer() {
    let lock = ReadWriteLock::new();
    let writer1 = start(&lock, Mode::Write, "write 1 completed");
    let reader = start_nonblocking(&lock, Mode::Read, "read completed");
    assert!(!reader.d.called());
    let writer2 = start_nonblocking(&lock, Mode::Write, "write 2 completed");
    assert!(!writer2.d.called());

    // Cancel the waiting reader: neither writer is cancelled, and the
    // second still waits, now only for the first.
    reader.d.cancel().unwrap();
    assert!(holds_cancelled_error(&reader.d));
    assert!(
        !writer1.d.called(),
        "First writer was unexpectedly cancelled"
    );
    assert!(
        !writer2.d.called(),
        "Second writer was unexpectedly cancelled or given the lock before the first writer finished"
    );

    writer1.unblock.callback(()).unwrap();
    assert_eq!(writer1.d.result().value(), Some("write 1 completed"));
    assert!(
        writer2.d.called(),
        "Second writer is stuck waiting for a cancelled reader"
    );
    assert_eq!(writer2.d.result().value(), Some("write 2 completed"));
    reader.d.add_errback(|_| Ok(""));
}

// Synapse: TRW::ReadWriteLockTestCase.test_cancellation_while_waiting_for_write_lock
#[test]
fn a_writer_cancelled_while_waiting_fails_only_once_it_would_have_the_lock() {
    let lock = ReadWriteLock::new();
    let reader = start(&lock, Mode::Read, "read completed");
    let writer1 = start(&lock, Mode::Write, "write 1 completed");
    let writer2 = start_nonblocking(&lock, Mode::Write, "write 2 completed");
    assert!(!writer2.d.called());
    let writer3 = start_nonblocking(&lock, Mode::Write, "write 3 completed");
    assert!(!writer3.d.called());

    // The second writer is cancelled, but goes on waiting.
    writer2.d.cancel().unwrap();
    assert!(
        writer2.d.result().failure().is_none() && writer2.d.result().value().is_none(),
        "the cancelled writer has no result yet"
    );
    assert!(!reader.d.called(), "Reader was unexpectedly cancelled");
    assert!(
        !writer1.d.called(),
        "First writer was unexpectedly cancelled"
    );
    assert!(
        !writer3.d.called(),
        "Third writer was unexpectedly cancelled or given the lock before the first writer finished"
    );

    // The reader finishes: the first writer gets the lock and blocks; the
    // third still waits for the second.
    reader.unblock.callback(()).unwrap();
    assert_eq!(reader.d.result().value(), Some("read completed"));
    assert!(writer1.acquired.called());
    assert!(writer2.d.result().value().is_none() && writer2.d.result().failure().is_none());
    assert!(
        !writer3.d.called(),
        "Third writer was unexpectedly given the lock before the first writer finished"
    );

    // The first writer finishes: the second takes the lock and releases it
    // at once, failing with CancelledError; the third goes.
    writer1.unblock.callback(()).unwrap();
    assert_eq!(writer1.d.result().value(), Some("write 1 completed"));
    assert!(holds_cancelled_error(&writer2.d));
    assert!(!writer2.acquired.called(), "its body never ran");
    assert!(
        writer3.d.called(),
        "Third writer is stuck waiting for a cancelled writer"
    );
    assert_eq!(writer3.d.result().value(), Some("write 3 completed"));
    writer2.d.add_errback(|_| Ok(""));
}

// Synapse: experiment (behaviour 57)
#[test]
fn a_new_reader_waits_only_for_the_latest_writer_queued_when_it_arrives() {
    let lock = ReadWriteLock::new();
    let reader1 = start(&lock, Mode::Read, "r1");
    let writer = start_nonblocking(&lock, Mode::Write, "w");
    // A reader arriving now waits for the queued writer, though only a
    // reader holds the lock.
    let reader2 = start_nonblocking(&lock, Mode::Read, "r2");
    assert!(!reader2.acquired.called());
    reader1.unblock.callback(()).unwrap();
    assert_eq!(writer.d.result().value(), Some("w"));
    assert_eq!(reader2.d.result().value(), Some("r2"));
    // With no writer queued, a reader does not wait for other readers.
    let reader3 = start(&lock, Mode::Read, "r3");
    let reader4 = start(&lock, Mode::Read, "r4");
    assert!(reader3.acquired.called() && reader4.acquired.called());
    reader3.unblock.callback(()).unwrap();
    reader4.unblock.callback(()).unwrap();
}

// Synapse: experiment (behaviours 58, 60 and 62: which context is current
// while waiting, on resumption and after a release)
#[test]
fn waiting_follows_the_logcontext_rules_and_releases_happen_under_the_sentinel() {
    let ((), errors) = capture_logcontext_errors(|| {
        let lock: ReadWriteLock<&str> = ReadWriteLock::new();
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let blocks: Vec<Deferred<()>> = (0..5).map(|_| Deferred::new()).collect();
        let task = |mode: Mode, name: &'static str, block: Option<Deferred<()>>| {
            let (l, log) = (lock.clone(), log.clone());
            ensure_deferred(async move {
                let ctx = LoggingContext::new(name, "hs");
                let _scope = ctx.entered();
                let body = async {
                    {
                        let _guard = match mode {
                            Mode::Read => l.read("k").await?,
                            Mode::Write => l.write("k").await?,
                        };
                        log.borrow_mut()
                            .push(format!("{name} in {}", current_context()));
                        if let Some(block) = block {
                            make_deferred_yieldable(block).await?;
                        }
                    }
                    log.borrow_mut()
                        .push(format!("{name} out {}", current_context()));
                    Ok::<_, Failure>(())
                };
                let outcome = body.await;
                if outcome.as_ref().is_err_and(|f| f.check::<CancelledError>()) {
                    log.borrow_mut()
                        .push(format!("{name} CE {}", current_context()));
                }
                outcome
            })
        };
        let after = |what: &str| {
            log.borrow_mut()
                .push(format!("{what} {}", current_context()))
        };

        let a = task(Mode::Write, "A", Some(blocks[0].clone()));
        after("after A");
        let b = task(Mode::Read, "B", Some(blocks[1].clone()));
        after("after B");
        let c = task(Mode::Write, "C", Some(blocks[2].clone()));
        after("after C");
        let d = task(Mode::Read, "D", None);
        c.cancel().unwrap();
        after("after cancel C");
        d.cancel().unwrap();
        after("after cancel D");
        {
            let _sentinel = PreserveLoggingContext::sentinel();
            blocks[0].callback(()).unwrap();
        }
        after("after A done");
        {
            let _sentinel = PreserveLoggingContext::sentinel();
            blocks[1].callback(()).unwrap();
        }
        after("after B done");
        assert_eq!(
            *log.borrow(),
            [
                "A in A",
                "after A sentinel",
                "after B sentinel",
                "after C sentinel",
                "after cancel C sentinel",
                "D CE D",
                "after cancel D sentinel",
                "B in B",
                "A out A",
                "after A done sentinel",
                "C CE C",
                "B out B",
                "after B done sentinel",
            ]
        );
        for op in [&a, &b] {
            assert_eq!(op.result().value(), Some(()));
        }
        for op in [&c, &d] {
            assert!(
                op.result()
                    .failure()
                    .is_some_and(|f| f.check::<CancelledError>())
            );
            op.add_errback(|_| Ok(()));
        }
    });
    assert!(errors.is_empty(), "{errors:?}");
}

#[derive(Debug)]
struct BodyError;

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body failed")
    }
}

impl std::error::Error for BodyError {}

// Synapse: code (Python's `finally` releases on any exception)
#[test]
fn a_failing_body_releases_its_lock_and_its_failure_propagates() {
    let lock: ReadWriteLock<&str> = ReadWriteLock::new();
    let gate: Deferred<()> = Deferred::new();
    let (l, g) = (lock.clone(), gate.clone());
    let failing = ensure_deferred(async move {
        let _guard = l.write("key").await?;
        g.await?;
        Err::<(), _>(Failure::new(BodyError))
    });
    let reader = start_nonblocking(&lock, Mode::Read, "read");
    assert!(!reader.d.called());
    gate.callback(()).unwrap();
    assert!(failing.result().failure().unwrap().check::<BodyError>());
    assert_eq!(reader.d.result().value(), Some("read"));
    failing.add_errback(|_| Ok(()));
}

// Synapse: experiment (behaviour 62: the latest-writer entry is removed only
// if it is still this writer's)
#[test]
fn keys_are_independent_and_a_released_lock_leaves_nothing_behind() {
    let lock = ReadWriteLock::new();
    let w = start(&lock, Mode::Write, "w");
    let l2 = lock.clone();
    let other = ensure_deferred(async move {
        let _guard = l2.write("other key").await?;
        Ok::<_, Failure>(())
    });
    assert!(other.called(), "another key does not wait");
    w.unblock.callback(()).unwrap();
    assert!(format!("{lock:?}").contains("keys_with_readers: 0"));
    assert!(format!("{lock:?}").contains("keys_with_writer: 0"));
}

fn poll_once<F: Future>(f: &mut Pin<Box<F>>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    f.as_mut().poll(&mut Context::from_waker(&waker))
}

// Rust-specific: a pending `read` future that is dropped gives its place
// back, as Python's `finally` would for a coroutine closed while waiting.
#[test]
fn a_read_future_dropped_while_waiting_gives_its_place_back() {
    let lock = ReadWriteLock::new();
    let writer1 = start(&lock, Mode::Write, "w1");
    let mut reader = Box::pin(lock.read("key"));
    assert!(poll_once(&mut reader).is_pending());
    let writer2 = start_nonblocking(&lock, Mode::Write, "w2");
    drop(reader);
    writer1.unblock.callback(()).unwrap();
    assert_eq!(
        writer2.d.result().value(),
        Some("w2"),
        "the second writer does not wait for the dropped reader"
    );
}
