//! The benchmark suite of twisted-deferred: every case as a function shared
//! by the criterion benchmarks (`benches/`) and the comparison command
//! (`cargo run --release -p benches --bin compare`).
//!
//! A [`Row`] is one job (a case of Twisted's `benchmarks/test_deferred.py`,
//! a combinator at some size, a timer operation, …); its [`Case`]s do that
//! job in different ways: with this crate ([`Role::Ours`]), with the closest
//! idiomatic `futures`/`tokio` code ([`Role::Closest`], plus other
//! [`Role::Equivalent`]s), and as the *floor*, the least work the same job
//! can take ([`Role::Floor`]). [`Role::Variant`]s are extra measurements
//! shown by criterion and by `compare --all` only.
//!
//! Every case is a function `run(iters) -> Duration` in the shape of
//! criterion's `iter_custom`: it does the job `iters` times and returns the
//! time spent in the timed part only, measured with [`timed`] (setup such as
//! making a combinator's inputs stays outside). The same functions feed the
//! comparison command's own timing loop ([`measure`]) and its allocation
//! counts ([`alloc`]): [`timed`] also switches allocation counting on for
//! exactly the timed part when a count was requested.
//!
//! The Python side (`benches/python/twisted_cases.py`) implements the same
//! jobs under the same row keys.

#![deny(unsafe_code)]

pub mod alloc;
pub mod cases;
pub mod floor;
pub mod measure;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use cases::{alloc_profile, rows, rows_in};

/// What a case is, for the comparison table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This crate (twisted-deferred and its reactor and compat crates).
    Ours,
    /// The closest idiomatic `futures`/`tokio` code: the target's yardstick.
    Closest,
    /// Another `futures`/`tokio` way to do the job.
    Equivalent,
    /// The least work the same job can take.
    Floor,
    /// Another measurement of ours (shown by criterion and `compare --all`).
    Variant,
}

/// The benchmark file (criterion group family) a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Twisted's `benchmarks/test_deferred.py`, case for case.
    Twisted,
    /// Chains: depth 10k..1M, one hop.
    Chain,
    /// `gather_results`, `DeferredList`.
    Combinators,
    /// Cancelling through nested coroutines.
    Coroutines,
    /// Synapse's `ObservableDeferred`.
    Observable,
    /// Reactor timers at scale.
    Timers,
    /// `call_from_thread`.
    Threads,
}

/// The body of a case: does the job `iters` times, returns the timed part.
pub type Run = Box<dyn Fn(u64) -> Duration>;

/// One way of doing a row's job.
pub struct Case {
    /// Criterion's function id, the table's label (`deferred`,
    /// `tokio_oneshot_map`, `floor_boxed_closures`, …).
    pub name: &'static str,
    /// What it is.
    pub role: Role,
    /// The body.
    pub run: Run,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// One job, done by several [`Case`]s.
#[derive(Debug)]
pub struct Row {
    /// The key shared with the Python script and used as criterion's group
    /// name: `chain_fires_at_end`, `gather/100000`, `timers_cancel/1000000`.
    pub key: String,
    /// What the row measures, for the table.
    pub title: String,
    /// The bench file it belongs to.
    pub group: Group,
    /// A case of Twisted's `benchmarks/test_deferred.py`: the CPython and
    /// PyPy targets apply.
    pub twisted: bool,
    /// Elements per iteration (inputs, levels, calls): the table shows the
    /// time per element when this is more than 1.
    pub elements: u64,
    /// One iteration takes long (a million elements): measured one
    /// iteration per sample, fewer samples.
    pub heavy: bool,
    /// The family (`gather`, `chain_depth`, `timers_fire`, …) whose per-element time
    /// must stay flat from 10k to 1M elements, and this row's size.
    pub scaling: Option<(&'static str, u64)>,
    /// Notes for the table's legend (what the closest equivalent and the
    /// floor are).
    pub notes: &'static str,
    /// The ways of doing the job.
    pub cases: Vec<Case>,
}

impl Row {
    pub(crate) fn new(key: impl Into<String>, title: impl Into<String>, group: Group) -> Row {
        Row {
            key: key.into(),
            title: title.into(),
            group,
            twisted: false,
            elements: 1,
            heavy: false,
            scaling: None,
            notes: "",
            cases: Vec::new(),
        }
    }

    pub(crate) fn twisted(mut self) -> Row {
        self.twisted = true;
        self
    }

    pub(crate) fn elements(mut self, n: u64) -> Row {
        self.elements = n;
        self
    }

    pub(crate) fn heavy(mut self, heavy: bool) -> Row {
        self.heavy = heavy;
        self
    }

    pub(crate) fn scaling(mut self, family: &'static str, n: u64) -> Row {
        self.scaling = Some((family, n));
        self
    }

    pub(crate) fn notes(mut self, notes: &'static str) -> Row {
        self.notes = notes;
        self
    }

    pub(crate) fn case(
        mut self,
        name: &'static str,
        role: Role,
        run: impl Fn(u64) -> Duration + 'static,
    ) -> Row {
        self.cases.push(Case {
            name,
            role,
            run: Box::new(run),
        });
        self
    }

    /// `case` for a job without setup: runs `job` `iters` times, all timed
    /// (its result dropped inside the timed part, as Python frees it).
    pub(crate) fn simple<R>(self, name: &'static str, role: Role, job: fn() -> R) -> Row
    where
        R: 'static,
    {
        self.case(name, role, move |iters| {
            timed(|| {
                for _ in 0..iters {
                    std::hint::black_box(job());
                }
            })
            .0
        })
    }

    /// The case with this role (the first one).
    pub fn by_role(&self, role: Role) -> Option<&Case> {
        self.cases.iter().find(|c| c.role == role)
    }
}

/// Runs `f`, timing it, with allocation counting on for its duration when
/// [`alloc::request_counting`] asked for it. Returns the time and `f`'s
/// result (dropped by the caller, outside the timed part).
#[inline]
pub fn timed<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let guard = alloc::CountingGuard::start();
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    drop(guard);
    (elapsed, r)
}

/// Sums `timed` over `iters` rounds of `setup` (untimed) then `job` (timed);
/// the job's output is dropped untimed.
pub fn batched<S, R>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut job: impl FnMut(S) -> R,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let (t, out) = timed(|| job(input));
        total += t;
        drop(out);
    }
    total
}

/// Polls a future once with a no-op waker.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

/// Polls a future that is ready by construction.
pub fn poll_ready<F: Future>(fut: F) -> F::Output {
    match poll_once(std::pin::pin!(fut)) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("benchmark futures are ready"),
    }
}

/// xorshift64*: deterministic random numbers without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}
