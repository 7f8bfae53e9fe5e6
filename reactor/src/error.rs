//! The reactor's errors: Twisted's `twisted.internet.error`, with the same
//! messages, plus the few misuses Rust reports where Python would assert.
//!
//! Twisted's exception hierarchy becomes separate types (`Failure::check`
//! matches exact types): [`ConnectionAborted`] is its own type where Twisted
//! subclasses `ConnectionLost`, so [`is_connection_lost`] answers "was the
//! connection lost uncleanly" for both.
//!
//! ```
//! use twisted_deferred::Failure;
//! use twisted_reactor::error::{ConnectionDone, ConnectionLost, is_connection_lost};
//!
//! let clean = Failure::new(ConnectionDone);                         // Failure(ConnectionDone())
//! assert_eq!(clean.message(), "Connection was closed cleanly.");
//! assert!(!is_connection_lost(&clean));
//! assert!(is_connection_lost(&Failure::new(ConnectionLost::new())));
//! ```

use std::error::Error;
use std::fmt;
use std::io;

use twisted_deferred::Failure;

macro_rules! simple_error {
    ($(#[$doc:meta])* $name:ident, $message:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($message)
            }
        }

        impl Error for $name {}
    };
}

simple_error!(
    /// `ReactorNotRunning`: [`Reactor::stop`](crate::Reactor::stop) on a
    /// reactor that is not running (never run, or already stopped).
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let err = reactor.stop().unwrap_err();                      // reactor.stop() raises
    /// assert_eq!(err.to_string(), "Can't stop reactor that isn't running.");
    /// ```
    ReactorNotRunning,
    "Can't stop reactor that isn't running."
);

simple_error!(
    /// `ReactorAlreadyRunning`: [`Reactor::run`](crate::Reactor::run) (or
    /// [`iterate`](crate::Reactor::iterate)) called from inside the running
    /// loop.
    ///
    /// ```
    /// use twisted_reactor::{Reactor, RunError};
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || {
    ///     assert!(matches!(r.run(), Err(RunError::AlreadyRunning(_))));   // reactor.run() raises
    ///     r.stop().unwrap();
    /// });
    /// reactor.run().unwrap();
    /// ```
    ReactorAlreadyRunning,
    "The reactor is already running."
);

simple_error!(
    /// `ReactorNotRestartable`: [`Reactor::run`](crate::Reactor::run) on a
    /// reactor that was stopped; a reactor runs once (a
    /// [`crash`](crate::Reactor::crash)ed one may run again).
    ///
    /// ```
    /// use twisted_reactor::{Reactor, RunError};
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || r.stop());                  // reactor.callWhenRunning(reactor.stop)
    /// reactor.run().unwrap();
    /// assert!(matches!(reactor.run(), Err(RunError::NotRestartable(_))));  // reactor.run() raises
    /// ```
    ReactorNotRestartable,
    "The reactor was stopped and cannot run again."
);

/// Why [`Reactor::run`](crate::Reactor::run) or
/// [`Reactor::iterate`](crate::Reactor::iterate) refused or gave up.
///
/// ```
/// use twisted_reactor::{Reactor, RunError};
/// let reactor = Reactor::new().unwrap();
/// let r = reactor.clone();
/// reactor.call_when_running(move || r.stop());
/// reactor.run().unwrap();
/// let err = reactor.run().unwrap_err();
/// assert!(matches!(err, RunError::NotRestartable(_)));
/// assert_eq!(err.to_string(), "The reactor was stopped and cannot run again.");
/// ```
#[derive(Debug)]
pub enum RunError {
    /// `ReactorAlreadyRunning`.
    AlreadyRunning(ReactorAlreadyRunning),
    /// `ReactorNotRestartable`.
    NotRestartable(ReactorNotRestartable),
    /// Waiting for I/O failed (the OS refused `epoll_wait`); the loop
    /// stopped as if [`crash`](crate::Reactor::crash)ed.
    Io(io::Error),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::AlreadyRunning(e) => e.fmt(f),
            RunError::NotRestartable(e) => e.fmt(f),
            RunError::Io(e) => write!(f, "waiting for I/O failed: {e}"),
        }
    }
}

impl Error for RunError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            RunError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The real reactor's `callLater` asserts that the delay is not negative;
/// here the call is refused with this error (`NaN` too).
///
/// ```
/// let reactor = twisted_reactor::Reactor::new().unwrap();
/// let err = reactor.call_later(-1.0, || {}).unwrap_err();           // reactor.callLater(-1, f)
/// assert_eq!(err.to_string(), "-1 is not greater than or equal to 0 seconds");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidDelayError {
    /// The delay asked for.
    pub delay: f64,
}

impl fmt::Display for InvalidDelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not greater than or equal to 0 seconds",
            self.delay
        )
    }
}

impl Error for InvalidDelayError {}

simple_error!(
    /// A call handed to a reactor that will never run it: it stopped for
    /// good (its [`run`](crate::Reactor::run) returned after
    /// [`stop`](crate::Reactor::stop)) or was dropped. Twisted would queue
    /// the call and silently never run it; here the sender is told.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// let handle = reactor.handle();
    /// drop(reactor);
    /// let refused = std::thread::spawn(move || handle.call_from_thread(|_| {})).join().unwrap();
    /// assert!(refused.is_err());
    /// ```
    ReactorGone,
    "The reactor has stopped for good; the call will never run."
);

/// `removeSystemEventTrigger` with a handle whose trigger was already
/// removed or has run (Python's `ValueError`).
///
/// ```
/// use twisted_reactor::{Phase, Reactor};
/// let reactor = Reactor::new().unwrap();
/// let id = reactor.add_system_event_trigger(Phase::Before, "shutdown", || {});
/// reactor.remove_system_event_trigger(&id).unwrap();
/// let err = reactor.remove_system_event_trigger(&id).unwrap_err();  // raises ValueError
/// assert_eq!(err.to_string(), "invalid trigger handle");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TriggerNotFound;

impl fmt::Display for TriggerNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid trigger handle")
    }
}

impl Error for TriggerNotFound {}

/// `ThreadPool(min, max)` / `adjustPoolsize` with a minimum above the
/// maximum (Python asserts "minimum is greater than maximum").
///
/// ```
/// let err = twisted_reactor::ThreadPool::new(3, 2, "pool").unwrap_err();  // ThreadPool(3, 2)
/// assert_eq!(err.to_string(), "minimum is greater than maximum");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizeError {
    /// The minimum asked for.
    pub min: usize,
    /// The maximum asked for.
    pub max: usize,
}

impl fmt::Display for PoolSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("minimum is greater than maximum")
    }
}

impl Error for PoolSizeError {}

simple_error!(
    /// Work handed to a [`ThreadPool`](crate::ThreadPool) after its
    /// [`stop`](crate::ThreadPool::stop), or left unstarted in a pool
    /// stopped before it ever started. Twisted drops such work silently
    /// (`if self.joined: return`); here `call_in_thread` says so, and a
    /// `defer_to_thread` Deferred fails with this error.
    ///
    /// ```
    /// let pool = twisted_reactor::ThreadPool::new(0, 1, "pool").unwrap();
    /// pool.start();
    /// pool.stop();                                                    // pool.stop()
    /// let err = pool.call_in_thread(|| {}).unwrap_err();              // pool.callInThread(f): dropped
    /// assert_eq!(err.to_string(), "The thread pool was stopped; the work will not run.");
    /// ```
    ThreadPoolStopped,
    "The thread pool was stopped; the work will not run."
);

simple_error!(
    /// `ConnectionDone`: the connection was closed cleanly (the peer
    /// closed it, or [`lose_connection`](crate::TcpTransport::lose_connection)
    /// finished).
    ///
    /// ```
    /// use twisted_reactor::error::ConnectionDone;
    /// assert_eq!(ConnectionDone.to_string(), "Connection was closed cleanly.");
    /// ```
    ConnectionDone,
    "Connection was closed cleanly."
);

/// `ConnectionLost`: the connection was lost in a non-clean fashion (a
/// reset, a failed read or write, the reactor shutting down), with the OS
/// error when there is one.
///
/// ```
/// use twisted_reactor::error::ConnectionLost;
/// // str(ConnectionLost())
/// assert_eq!(ConnectionLost::new().to_string(), "Connection to the other side was lost in a non-clean fashion.");
/// let reset = ConnectionLost::from_io(std::io::ErrorKind::ConnectionReset.into());
/// assert!(reset.to_string().starts_with("Connection to the other side was lost in a non-clean fashion: "));
/// ```
#[derive(Debug, Default)]
pub struct ConnectionLost {
    /// The OS error that ended the connection, if any.
    pub os_error: Option<io::Error>,
}

impl ConnectionLost {
    /// `ConnectionLost()`.
    ///
    /// ```
    /// assert!(twisted_reactor::error::ConnectionLost::new().os_error.is_none());
    /// ```
    pub fn new() -> Self {
        ConnectionLost { os_error: None }
    }

    /// `ConnectionLost(str(socket_error))`.
    ///
    /// ```
    /// use twisted_reactor::error::ConnectionLost;
    /// let e = ConnectionLost::from_io(std::io::ErrorKind::BrokenPipe.into());
    /// assert_eq!(e.os_error.unwrap().kind(), std::io::ErrorKind::BrokenPipe);
    /// ```
    pub fn from_io(error: io::Error) -> Self {
        ConnectionLost {
            os_error: Some(error),
        }
    }
}

impl fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connection to the other side was lost in a non-clean fashion")?;
        if let Some(e) = &self.os_error {
            write!(f, ": {e}")?;
        }
        f.write_str(".")
    }
}

impl Error for ConnectionLost {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.os_error.as_ref().map(|e| e as _)
    }
}

simple_error!(
    /// `ConnectionAborted`: the connection was aborted locally with
    /// [`abort_connection`](crate::TcpTransport::abort_connection). (A
    /// subclass of `ConnectionLost` in Twisted; see
    /// [`is_connection_lost`].)
    ///
    /// ```
    /// use twisted_reactor::error::ConnectionAborted;
    /// assert_eq!(ConnectionAborted.to_string(),
    ///            "Connection was aborted locally using ITCPTransport.abortConnection.");
    /// ```
    ConnectionAborted,
    "Connection was aborted locally using ITCPTransport.abortConnection."
);

/// True when `reason` is a `ConnectionLost` in Twisted's sense: a
/// [`ConnectionLost`] or a [`ConnectionAborted`] (`reason.check(ConnectionLost)`).
///
/// ```
/// use twisted_deferred::Failure;
/// use twisted_reactor::error::{ConnectionAborted, ConnectionDone, is_connection_lost};
/// assert!(is_connection_lost(&Failure::new(ConnectionAborted)));    // f.check(ConnectionLost)
/// assert!(!is_connection_lost(&Failure::new(ConnectionDone)));
/// ```
pub fn is_connection_lost(reason: &Failure) -> bool {
    reason.check::<ConnectionLost>() || reason.check::<ConnectionAborted>()
}

/// `ConnectionRefusedError`: the other side refused the connection (a TCP
/// reset answered the SYN).
///
/// ```
/// use twisted_reactor::error::ConnectionRefusedError;
/// let e = ConnectionRefusedError { address: "127.0.0.1:1".parse().unwrap() };
/// assert_eq!(e.to_string(), "Connection was refused by other side: 127.0.0.1:1.");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRefusedError {
    /// The address that refused.
    pub address: std::net::SocketAddr,
}

impl fmt::Display for ConnectionRefusedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connection was refused by other side: {}.", self.address)
    }
}

impl Error for ConnectionRefusedError {}

/// `ConnectError`: a connection attempt failed for another reason than a
/// refusal (no route, the reactor shutting down, …).
///
/// ```
/// use twisted_reactor::error::ConnectError;
/// let e = ConnectError { os_error: None, detail: "shutting down".into() };
/// assert_eq!(e.to_string(), "An error occurred while connecting: shutting down.");
/// ```
#[derive(Debug)]
pub struct ConnectError {
    /// The OS error, if any.
    pub os_error: Option<io::Error>,
    /// More about what happened (may be empty).
    pub detail: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("An error occurred while connecting")?;
        if let Some(e) = &self.os_error {
            write!(f, ": {e}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        f.write_str(".")
    }
}

impl Error for ConnectError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.os_error.as_ref().map(|e| e as _)
    }
}

/// `twisted.internet.error.TimeoutError`: "User timeout caused connection
/// failure." (the `timeout` of `connectTCP` ran out).
///
/// ```
/// use twisted_reactor::error::ConnectTimeoutError;
/// assert_eq!(ConnectTimeoutError { timeout: 30.0 }.to_string(),
///            "User timeout caused connection failure: 30 seconds.");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectTimeoutError {
    /// The timeout, in seconds.
    pub timeout: f64,
}

impl fmt::Display for ConnectTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "User timeout caused connection failure: {} seconds.",
            self.timeout
        )
    }
}

impl Error for ConnectTimeoutError {}

/// `ConnectingCancelledError`: the Deferred of a connection attempt was
/// cancelled before it connected.
///
/// ```
/// use twisted_reactor::error::ConnectingCancelledError;
/// let e = ConnectingCancelledError { address: "example.invalid:80".into() };
/// assert_eq!(e.to_string(), "Connecting to example.invalid:80 was cancelled.");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectingCancelledError {
    /// Where the attempt was going.
    pub address: String,
}

impl fmt::Display for ConnectingCancelledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connecting to {} was cancelled.", self.address)
    }
}

impl Error for ConnectingCancelledError {}

/// `DNSLookupError`: the host name of a connection attempt could not be
/// resolved.
///
/// ```
/// use twisted_reactor::error::DNSLookupError;
/// let e = DNSLookupError { host: "nowhere.invalid".into(), detail: "no address".into() };
/// assert_eq!(e.to_string(), "DNS lookup failed: nowhere.invalid: no address.");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DNSLookupError {
    /// The name looked up.
    pub host: String,
    /// What the resolver said.
    pub detail: String,
}

impl fmt::Display for DNSLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DNS lookup failed: {}: {}.", self.host, self.detail)
    }
}

impl Error for DNSLookupError {}

simple_error!(
    /// `NoProtocol`: the factory given to
    /// [`connect_tcp`](crate::Reactor::connect_tcp) built no protocol
    /// (`buildProtocol` returned `None`).
    ///
    /// ```
    /// use twisted_reactor::error::NoProtocol;
    /// assert_eq!(NoProtocol.to_string(), "The factory built no protocol for the connection.");
    /// ```
    NoProtocol,
    "The factory built no protocol for the connection."
);

/// `CannotListenError`: [`listen_tcp`](crate::Reactor::listen_tcp) could
/// not bind or listen (the port is in use, a privileged port, a bad
/// interface).
///
/// ```
/// use twisted_reactor::error::CannotListenError;
/// let e = CannotListenError {
///     interface: String::new(),
///     port: 80,
///     socket_error: std::io::Error::from(std::io::ErrorKind::AddrInUse),
/// };
/// assert!(e.to_string().starts_with("Couldn't listen on any:80: "));
/// ```
#[derive(Debug)]
pub struct CannotListenError {
    /// The interface asked for (`""` is every interface).
    pub interface: String,
    /// The port asked for.
    pub port: u16,
    /// What the OS said.
    pub socket_error: io::Error,
}

impl fmt::Display for CannotListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iface = if self.interface.is_empty() {
            "any"
        } else {
            &self.interface
        };
        write!(
            f,
            "Couldn't listen on {}:{}: {}.",
            iface, self.port, self.socket_error
        )
    }
}

impl Error for CannotListenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.socket_error)
    }
}
