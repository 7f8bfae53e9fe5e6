//! Helpers shared by the integration tests.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Once;

/// A shared log of what happened, in order.
pub type Log<T> = Rc<RefCell<Vec<T>>>;

/// A new, empty [`Log`].
pub fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

struct ThreadLogger;

thread_local! {
    static LOGGED: RefCell<Option<Vec<(log::Level, String)>>> = const { RefCell::new(None) };
}

impl log::Log for ThreadLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let _ = LOGGED.try_with(|l| {
            if let Some(records) = l.borrow_mut().as_mut() {
                records.push((record.level(), record.args().to_string()));
            }
        });
    }

    fn flush(&self) {}
}

static LOGGER: ThreadLogger = ThreadLogger;

/// Runs `f`, returning its result with what the libraries logged on this
/// thread meanwhile (through the `log` facade), as (level, message) pairs.
/// Installs a per-thread capturing logger the first time; a test binary that
/// uses this must not install another logger.
pub fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<(log::Level, String)>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Trace);
    });
    LOGGED.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let result = f();
    let records = LOGGED.with(|l| l.borrow_mut().take()).unwrap_or_default();
    (result, records)
}
