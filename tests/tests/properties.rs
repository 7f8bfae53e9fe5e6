//! Property tests: random operation sequences against the invariants of
//! the behaviour catalogue (`../shared/reference/twisted_semantics.md`, cited
//! as B-numbers). Each property runs a small model of Twisted's rules beside
//! the library and compares them after every operation. Case counts are
//! kept low enough for the whole file to run in seconds in a debug build;
//! `PROPTEST_CASES=10000 cargo test --release -p integration-tests --test
//! properties` runs more.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use proptest::prelude::*;
use twisted_deferred::{
    AlreadyCalledError, CancelledError, Deferred, Failure, Outcome, State, tracking::Tracker,
};

use integration_tests::fuzzing::deferred_ops;

/// A failure the tests raise, told apart by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Code(u8);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.0)
    }
}

impl std::error::Error for Code {}

/// What a Deferred holds, as the models see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Value(i64),
    Failed(u8),
    Cancelled,
}

fn held<T: Clone + Into<i64> + 'static>(d: &Deferred<T>) -> Option<Held> {
    match d.result() {
        State::Value(v) => Some(Held::Value(v.into())),
        State::Failure(f) if f.check::<CancelledError>() => Some(Held::Cancelled),
        State::Failure(f) => Some(Held::Failed(f.downcast_ref::<Code>().map_or(255, |c| c.0))),
        _ => None,
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// A fired Deferred never fires again; a cancel without canceller swallows
// exactly one later fire.

#[derive(Debug, Clone, Copy)]
enum CancellerKind {
    /// `Deferred()`.
    None,
    /// A canceller that does nothing (a `CancelledError` follows).
    Noop,
    /// A canceller that calls the Deferred back with this value.
    Fires(i64),
    /// A canceller that raises.
    Raises,
}

#[derive(Debug, Clone, Copy)]
enum FireOp {
    Callback(i64),
    Errback(u8),
    Cancel,
}

fn canceller_kind() -> impl Strategy<Value = CancellerKind> {
    prop_oneof![
        Just(CancellerKind::None),
        Just(CancellerKind::Noop),
        any::<i8>().prop_map(|v| CancellerKind::Fires(i64::from(v))),
        Just(CancellerKind::Raises),
    ]
}

fn fire_op() -> impl Strategy<Value = FireOp> {
    prop_oneof![
        any::<i8>().prop_map(|v| FireOp::Callback(i64::from(v))),
        (0u8..4).prop_map(FireOp::Errback),
        Just(FireOp::Cancel),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// B13, B60: once fired, `callback`/`errback` raise `AlreadyCalledError`
    /// and change nothing. B48, B49, B50: a cancel without canceller fires
    /// `CancelledError` and swallows exactly the next `callback`/`errback`
    /// (further cancels do not re-arm it). B51, B52, B53: a canceller runs
    /// once per cancel of an unfired Deferred; no swallow follows; one that
    /// fires decides the result; one that raises leaves it unfired. B54: a
    /// cancel after the fire does nothing. B11: the one callback runs once.
    #[test]
    fn a_fired_deferred_never_fires_again(
        kind in canceller_kind(),
        ops in prop::collection::vec(fire_op(), 1..12),
    ) {
        let calls = Rc::new(Cell::new(0));
        let d: Deferred<i64> = match kind {
            CancellerKind::None => Deferred::new(),
            CancellerKind::Noop => {
                let calls = calls.clone();
                Deferred::with_canceller(move |_d: &Deferred<i64>| calls.set(calls.get() + 1))
            }
            CancellerKind::Fires(v) => {
                let calls = calls.clone();
                Deferred::with_canceller(move |d: &Deferred<i64>| {
                    calls.set(calls.get() + 1);
                    d.callback(v).unwrap();
                })
            }
            CancellerKind::Raises => {
                let calls = calls.clone();
                Deferred::with_canceller(move |_d: &Deferred<i64>| -> Result<(), Failure> {
                    calls.set(calls.get() + 1);
                    Err(Failure::new(Code(9)))
                })
            }
        };
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        d.add_both(move |x: Result<i64, Failure>| {
            r.set(r.get() + 1);
            x
        });
        // The model.
        let (mut called, mut suppress, mut result, mut expected_calls) =
            (false, false, None, 0);
        for op in ops {
            match op {
                FireOp::Callback(_) | FireOp::Errback(_) => {
                    let outcome = match op {
                        FireOp::Callback(v) => d.callback(v),
                        FireOp::Errback(c) => d.errback(Code(c)),
                        FireOp::Cancel => unreachable!(),
                    };
                    if !called {
                        prop_assert!(outcome.is_ok());
                        called = true;
                        result = Some(match op {
                            FireOp::Callback(v) => Held::Value(v),
                            FireOp::Errback(c) => Held::Failed(c),
                            FireOp::Cancel => unreachable!(),
                        });
                    } else if suppress {
                        prop_assert!(outcome.is_ok(), "the fire after a cancel is swallowed (B49)");
                        suppress = false;
                    } else {
                        let f = outcome.expect_err("a second fire raises (B60)");
                        prop_assert!(f.check::<AlreadyCalledError>());
                    }
                }
                FireOp::Cancel => {
                    let outcome = d.cancel();
                    if called {
                        prop_assert!(outcome.is_ok(), "cancel after the fire is a no-op (B54)");
                        continue;
                    }
                    match kind {
                        CancellerKind::None => {
                            prop_assert!(outcome.is_ok());
                            (called, suppress, result) = (true, true, Some(Held::Cancelled));
                        }
                        CancellerKind::Noop => {
                            expected_calls += 1;
                            prop_assert!(outcome.is_ok());
                            (called, result) = (true, Some(Held::Cancelled));
                        }
                        CancellerKind::Fires(v) => {
                            expected_calls += 1;
                            prop_assert!(outcome.is_ok());
                            (called, result) = (true, Some(Held::Value(v)));
                        }
                        CancellerKind::Raises => {
                            expected_calls += 1;
                            let f = outcome.expect_err("a raising canceller's failure comes out of cancel() (B53)");
                            prop_assert_eq!(f.downcast_ref::<Code>(), Some(&Code(9)));
                        }
                    }
                }
            }
            prop_assert_eq!(d.called(), called);
            prop_assert_eq!(held(&d), result);
            prop_assert_eq!(calls.get(), expected_calls);
            prop_assert_eq!(ran.get(), u32::from(called));
        }
        // Whatever is left unhandled is not reported into other tests.
        d.add_errback(|_f: Failure| Ok(0));
    }
}

// ---------------------------------------------------------------------------
// Callbacks run in the order added, each at most once.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Callback,
    Errback,
    Both,
}

#[derive(Debug, Clone, Copy)]
enum LinkResult {
    Pass,
    Add(i64),
    Value(i64),
    Fail(u8),
    Panic,
}

#[derive(Debug, Clone)]
struct LinkSpec {
    half: Half,
    result: LinkResult,
    /// A link this one adds to its own Deferred while it runs (B21).
    adds: Option<Box<LinkSpec>>,
}

fn leaf_link() -> impl Strategy<Value = LinkSpec> {
    let half = prop_oneof![Just(Half::Callback), Just(Half::Errback), Just(Half::Both)];
    let result = prop_oneof![
        Just(LinkResult::Pass),
        (-5i64..5).prop_map(LinkResult::Add),
        (-5i64..5).prop_map(LinkResult::Value),
        (0u8..4).prop_map(LinkResult::Fail),
        Just(LinkResult::Panic),
    ];
    (half, result).prop_map(|(half, result)| LinkSpec {
        half,
        result,
        adds: None,
    })
}

fn link() -> impl Strategy<Value = LinkSpec> {
    (leaf_link(), prop::option::weighted(0.2, leaf_link())).prop_map(|(mut l, adds)| {
        l.adds = adds.map(Box::new);
        l
    })
}

/// The model's result: `Ok(value)` or `Err(code)` (255 for a panic).
type ModelResult = Result<i64, u8>;

/// Twisted's rule for one link (B7, B8, B14, B16, B20): the matching half
/// runs and its outcome is the new result; the other half passes it on.
fn model_link(spec: &LinkSpec, input: ModelResult) -> (bool, ModelResult) {
    let runs = match spec.half {
        Half::Callback => input.is_ok(),
        Half::Errback => input.is_err(),
        Half::Both => true,
    };
    if !runs {
        return (false, input);
    }
    let out = match spec.result {
        LinkResult::Pass => input,
        LinkResult::Add(k) => input.map(|x| x.wrapping_add(k)),
        LinkResult::Value(v) => Ok(v),
        LinkResult::Fail(c) => Err(c),
        LinkResult::Panic => Err(255),
    };
    (true, out)
}

fn outcome_of(r: ModelResult) -> Outcome<i64> {
    match r {
        Ok(v) => Outcome::Value(v),
        Err(c) => Outcome::Failure(Failure::new(Code(c))),
    }
}

fn code_of(f: &Failure) -> u8 {
    f.downcast_ref::<Code>().map_or(255, |c| c.0)
}

/// Adds `spec` (numbered `id`) to `d`, logging its id to `log` when it runs.
fn add_link(
    d: &Deferred<i64>,
    spec: LinkSpec,
    id: usize,
    log: &Rc<RefCell<Vec<usize>>>,
    next: &Rc<Cell<usize>>,
) {
    let log2 = log.clone();
    let next2 = next.clone();
    let me = d.clone();
    let half = spec.half;
    let body = move |input: Result<i64, Failure>| -> Outcome<i64> {
        log2.borrow_mut().push(id);
        if let Some(inner) = &spec.adds {
            let nid = next2.get();
            next2.set(nid + 1);
            add_link(&me, (**inner).clone(), nid, &log2, &next2);
        }
        let input: ModelResult = input.map_err(|f| code_of(&f));
        match spec.result {
            LinkResult::Panic => std::panic::panic_any(deferred_ops::IntentionalPanic),
            _ => outcome_of(model_link(&spec, input).1),
        }
    };
    // The link holds its Deferred while it waits: freed when it runs, or by
    // the test's tracker.
    match half {
        Half::Callback => {
            d.add_callback(move |x: i64| body(Ok(x)));
        }
        Half::Errback => {
            d.add_errback(move |f: Failure| body(Err(f)));
        }
        Half::Both => {
            d.add_both(body);
        }
    }
}

/// The model of one Deferred's chain: the queue of links and the result.
struct ChainModel {
    queue: std::collections::VecDeque<(usize, LinkSpec)>,
    result: Option<ModelResult>,
    log: Vec<usize>,
    next: usize,
}

impl ChainModel {
    /// `_runCallbacks` (B11, B21): links in order; one added by a running
    /// link goes to the end of the queue.
    fn run(&mut self) {
        let Some(mut r) = self.result else { return };
        while let Some((id, spec)) = self.queue.pop_front() {
            let (ran, out) = model_link(&spec, r);
            if ran {
                self.log.push(id);
                if let Some(inner) = &spec.adds {
                    self.queue.push_back((self.next, (**inner).clone()));
                    self.next += 1;
                }
            }
            r = out;
        }
        self.result = Some(r);
    }
}

proptest! {
    #![proptest_config(config(384))]

    /// B10, B11, B21: links run strictly in the order added, each at most
    /// once, whether added before the fire or after it (then at once), and a
    /// link added by a running link runs after every link already queued.
    /// B7, B8, B14, B16, B20: each link's matching half runs and its outcome
    /// (a panic included) becomes the result; the other half passes it by.
    #[test]
    fn callbacks_run_in_order_each_at_most_once(
        before in prop::collection::vec(link(), 0..8),
        fire in prop_oneof![(-5i64..5).prop_map(Ok), (0u8..4).prop_map(Err)],
        after in prop::collection::vec(link(), 0..8),
    ) {
        deferred_ops::install_panic_filter();
        let tracker = Tracker::start();
        let d: Deferred<i64> = Deferred::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let next = Rc::new(Cell::new(before.len() + after.len()));
        let mut model = ChainModel {
            queue: Default::default(),
            result: None,
            log: Vec::new(),
            next: before.len() + after.len(),
        };
        for (id, spec) in before.into_iter().enumerate() {
            add_link(&d, spec.clone(), id, &log, &next);
            model.queue.push_back((id, spec));
        }
        match fire {
            Ok(v) => d.callback(v).unwrap(),
            Err(c) => d.errback(Code(c)).unwrap(),
        }
        model.result = Some(fire);
        model.run();
        prop_assert_eq!(&*log.borrow(), &model.log);
        let first = log.borrow().len();
        let base = model.queue.len() + first + 100;
        for (i, spec) in after.into_iter().enumerate() {
            let id = base + i;
            add_link(&d, spec.clone(), id, &log, &next);
            model.queue.push_back((id, spec));
            model.run();
            prop_assert_eq!(&*log.borrow(), &model.log, "after adding link {}", id);
        }
        let mut seen = std::collections::HashSet::new();
        prop_assert!(log.borrow().iter().all(|id| seen.insert(*id)), "a link ran twice");
        let got = match d.result() {
            State::Value(v) => Ok(v),
            State::Failure(f) => Err(code_of(&f)),
            other => panic!("unexpected state {other:?}"),
        };
        prop_assert_eq!(Some(got), model.result);
        d.add_errback(|_f: Failure| Ok(0));
        drop(d);
        tracker.collect();
    }
}

// ---------------------------------------------------------------------------
// Results flow through chains.

proptest! {
    #![proptest_config(config(384))]

    /// B30, B31, B32, B36: d0 waits on d1, which waits on d2, …: whatever
    /// order they fire in, d0 ends with the innermost value passed through
    /// every Deferred's own later callback, innermost first, each once.
    /// B55, B49: a cancel of d0 goes to the first Deferred of the chain that
    /// has not fired, whose `CancelledError` comes back up to d0, and whose
    /// own later fire is swallowed; a cancel once every link fired does
    /// nothing (B54).
    #[test]
    fn results_flow_through_chains(
        n in 1usize..6,
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut v: Vec<usize> = (0..6).collect();
            for i in (1..v.len()).rev() {
                v.swap(i, (rng.next_u32() as usize) % (i + 1));
            }
            v
        }),
        value in -100i64..100,
        cancel_at in prop::option::of(0usize..7),
    ) {
        let tracker = Tracker::start();
        let ds: Vec<Deferred<i64>> = (0..n).map(|_| Deferred::new()).collect();
        let log = Rc::new(RefCell::new(Vec::new()));
        for i in 0..n {
            if i + 1 < n {
                let next = ds[i + 1].clone();
                ds[i].add_callback(move |_ignored: i64| next);
            }
            let log = log.clone();
            ds[i].add_callback(move |x: i64| {
                log.borrow_mut().push(i);
                Ok(x.wrapping_mul(3).wrapping_add(i as i64))
            });
        }
        let order: Vec<usize> = order.into_iter().filter(|i| *i < n).collect();
        let mut cancelled: Option<usize> = None;
        let mut fired = vec![false; n];
        for (step, &i) in order.iter().enumerate() {
            if cancel_at == Some(step) {
                // The first Deferred of the chain that has not fired.
                cancelled = fired.iter().position(|f| !f);
                ds[0].cancel().unwrap();
                if let Some(k) = cancelled {
                    fired[k] = true;
                }
            }
            let r = ds[i].callback(if i == n - 1 { value } else { 0 });
            if cancelled == Some(i) {
                prop_assert!(r.is_ok(), "the cancelled one swallows its fire (B49)");
            } else if fired[i] {
                prop_assert!(r.unwrap_err().check::<AlreadyCalledError>());
            } else {
                prop_assert!(r.is_ok());
            }
            fired[i] = true;
        }
        match cancelled {
            None => {
                let expected = (0..n).rev().fold(value, |x, i| x.wrapping_mul(3).wrapping_add(i as i64));
                prop_assert_eq!(ds[0].result().value(), Some(expected));
                let expected_log: Vec<usize> = (0..n).rev().collect();
                let mut got = log.borrow().clone();
                got.sort_unstable_by(|a, b| b.cmp(a));
                prop_assert_eq!(got, expected_log, "each callback once");
            }
            Some(_) => {
                prop_assert_eq!(held(&ds[0]), Some(Held::Cancelled));
            }
        }
        // Inner callbacks run before the outer ones they feed (B32).
        let log = log.borrow();
        for w in log.windows(2) {
            if cancelled.is_none() {
                prop_assert!(w[0] > w[1], "order {:?}", log);
            }
        }
        ds[0].add_errback(|_f: Failure| Ok(0));
        drop(ds);
        tracker.collect();
    }
}

// ---------------------------------------------------------------------------
// pause / unpause balance.

#[derive(Debug, Clone, Copy)]
enum PauseOp {
    Pause,
    Unpause,
    Add,
    Fire(i64),
}

proptest! {
    #![proptest_config(config(512))]

    /// B43: no link runs while the pause count is non-zero, fired or not;
    /// `unpause()` reaching exactly 0 on a fired Deferred runs the pending
    /// links. B44: on an unfired Deferred it only counts. B45: an unbalanced
    /// `unpause()` drives the count negative, which also holds links back,
    /// and a `pause()` back to 0 runs nothing until the next add. After
    /// balancing, every link has run, in order, once.
    #[test]
    fn pause_and_unpause_balance(
        ops in prop::collection::vec(prop_oneof![
            Just(PauseOp::Pause),
            Just(PauseOp::Unpause),
            Just(PauseOp::Add),
            (-9i64..9).prop_map(PauseOp::Fire),
        ], 0..24),
    ) {
        let d: Deferred<i64> = Deferred::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let (mut paused, mut fired, mut pending, mut expected, mut links) =
            (0i32, false, 0usize, Vec::new(), 0usize);
        let add = |links: &mut usize| {
            let id = *links;
            *links += 1;
            let log = log.clone();
            d.add_callback(move |x: i64| {
                log.borrow_mut().push(id);
                Ok(x + 1)
            });
        };
        for op in ops {
            let run_pending = |pending: &mut usize, expected: &mut Vec<usize>, links: usize| {
                expected.extend(links - *pending..links);
                *pending = 0;
            };
            match op {
                PauseOp::Pause => {
                    d.pause();
                    paused += 1;
                }
                PauseOp::Unpause => {
                    d.unpause();
                    paused -= 1;
                    if paused == 0 && fired {
                        run_pending(&mut pending, &mut expected, links);
                    }
                }
                PauseOp::Add => {
                    add(&mut links);
                    pending += 1;
                    if fired && paused == 0 {
                        run_pending(&mut pending, &mut expected, links);
                    }
                }
                PauseOp::Fire(v) => {
                    let r = d.callback(v);
                    if fired {
                        prop_assert!(r.is_err());
                    } else {
                        prop_assert!(r.is_ok());
                        fired = true;
                        if paused == 0 {
                            run_pending(&mut pending, &mut expected, links);
                        }
                    }
                }
            }
            prop_assert_eq!(d.paused(), paused);
            prop_assert_eq!(&*log.borrow(), &expected);
        }
        // Balance, fire, add: everything runs, in order, once.
        while paused > 0 {
            d.unpause();
            paused -= 1;
        }
        while paused < 0 {
            d.pause();
            paused += 1;
        }
        let _ = d.callback(0);
        add(&mut links);
        prop_assert_eq!(&*log.borrow(), &(0..links).collect::<Vec<_>>());
    }
}

// ---------------------------------------------------------------------------
// The operation-sequence harness as a property.

proptest! {
    #![proptest_config(config(256))]

    /// Random sequences over the whole public API (new/with_canceller,
    /// callback/errback, add_* with bodies that chain, fail, panic and fire,
    /// cancel or pause others, chain_deferred, gather_results,
    /// DeferredList, race, ensure_deferred, handles copied and dropped) keep
    /// the harness's invariants (`integration_tests::fuzzing::deferred_ops`):
    /// no panic escapes (B14), each callback runs at most once (B11), a
    /// fired Deferred fires again only as the one swallow after a cancel
    /// without canceller (B49, B60), nothing wedges once pauses are balanced
    /// and chains re-triggered (B40, B41, B43), and nothing is left alive
    /// after `Tracker::collect()` (B64's collection, here explicit).
    #[test]
    fn random_api_sequences_keep_the_invariants(
        data in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        deferred_ops::install_panic_filter();
        let stats = deferred_ops::run(&data);
        prop_assert!(stats.ran <= stats.callbacks);
    }
}
