//! What runs on a connection: Twisted's `twisted.internet.protocol`
//! (`Protocol`, `Factory`) and `IHalfCloseableProtocol`.
//!
//! A [`Protocol`] receives the connection's events; it talks back through
//! the [`TcpTransport`] handed to [`connection_made`](Protocol::connection_made).
//! A [`Factory`] builds one protocol per connection; any
//! `Fn(SocketAddr) -> P` closure is a factory.
//!
//! The reactor calls a protocol's methods only from its loop, never from
//! inside another of that protocol's methods: `lose_connection` and
//! `abort_connection` take effect on a later iteration, as in Twisted, so a
//! protocol may call its transport freely. A panic in a protocol method is
//! Twisted's exception in `dataReceived`: it is logged and the connection is
//! closed with that failure as the reason.
//!
//! ```
//! use twisted_deferred::Failure;
//! use twisted_reactor::{Protocol, TcpTransport};
//!
//! /// class Echo(Protocol): def dataReceived(self, data): self.transport.write(data)
//! #[derive(Default)]
//! struct Echo { transport: Option<TcpTransport> }
//!
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, transport: TcpTransport) {
//!         self.transport = Some(transport);
//!     }
//!     fn data_received(&mut self, data: &[u8]) {
//!         if let Some(t) = &self.transport {
//!             t.write(data);
//!         }
//!     }
//!     fn connection_lost(&mut self, _reason: Failure) {
//!         self.transport = None;
//!     }
//! }
//! let factory = |_addr: std::net::SocketAddr| Echo::default();     // Factory.forProtocol(Echo)
//! # let _ = factory;
//! ```

use std::net::SocketAddr;

use twisted_deferred::Failure;

use crate::tcp::TcpTransport;

/// Twisted's `IProtocol` (and `IHalfCloseableProtocol`): the events of one
/// connection. Every method has a default that does nothing.
///
/// ```
/// use twisted_reactor::Protocol;
/// struct Discard;                                                 // class Discard(Protocol): pass
/// impl Protocol for Discard {}
/// ```
pub trait Protocol: 'static {
    /// `makeConnection(transport)` / `connectionMade()`: the connection is
    /// up; keep the transport to write to it.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, TcpTransport};
    /// struct Greeter;
    /// impl Protocol for Greeter {
    ///     fn connection_made(&mut self, transport: TcpTransport) {
    ///         transport.write(b"hello\r\n");                          // self.transport.write(b"hello\r\n")
    ///     }
    /// }
    /// ```
    fn connection_made(&mut self, transport: TcpTransport) {
        let _ = transport;
    }

    /// `dataReceived(data)`: bytes arrived, in pieces of any size.
    ///
    /// ```
    /// use twisted_reactor::Protocol;
    /// struct Count(usize);
    /// impl Protocol for Count {
    ///     fn data_received(&mut self, data: &[u8]) { self.0 += data.len(); }   // self.n += len(data)
    /// }
    /// let mut p = Count(0);
    /// p.data_received(b"abc");
    /// assert_eq!(p.0, 3);
    /// ```
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// `connectionLost(reason)`: the connection is gone. `reason` holds
    /// [`ConnectionDone`](crate::error::ConnectionDone) when it closed
    /// cleanly, [`ConnectionLost`](crate::error::ConnectionLost) (or
    /// [`ConnectionAborted`](crate::error::ConnectionAborted)) otherwise.
    ///
    /// ```
    /// use twisted_deferred::Failure;
    /// use twisted_reactor::{Protocol, error::ConnectionDone};
    /// struct Watch(bool);
    /// impl Protocol for Watch {
    ///     fn connection_lost(&mut self, reason: Failure) {
    ///         self.0 = reason.check::<ConnectionDone>();              // reason.check(ConnectionDone)
    ///     }
    /// }
    /// let mut w = Watch(false);
    /// w.connection_lost(Failure::new(ConnectionDone));
    /// assert!(w.0);
    /// ```
    fn connection_lost(&mut self, reason: Failure) {
        let _ = reason;
    }

    /// True for a protocol that provides `IHalfCloseableProtocol`: when the
    /// peer shuts down its sending side, such a protocol gets
    /// [`read_connection_lost`](Protocol::read_connection_lost) and may keep
    /// writing; any other protocol gets `connection_lost(ConnectionDone)`.
    ///
    /// ```
    /// use twisted_reactor::Protocol;
    /// struct P;
    /// impl Protocol for P {}
    /// assert!(!P.is_half_closeable());                                // not IHalfCloseableProtocol.providedBy(p)
    /// ```
    fn is_half_closeable(&self) -> bool {
        false
    }

    /// `readConnectionLost()`: the peer will send nothing more (half-close);
    /// writing still works. Only called on half-closeable protocols.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, TcpTransport};
    /// struct Reply(Option<TcpTransport>);
    /// impl Protocol for Reply {
    ///     fn is_half_closeable(&self) -> bool { true }
    ///     fn read_connection_lost(&mut self) {
    ///         if let Some(t) = &self.0 {
    ///             t.write(b"bye");                                    // self.transport.write(b"bye")
    ///             t.lose_connection();                                // self.transport.loseConnection()
    ///         }
    ///     }
    /// }
    /// ```
    fn read_connection_lost(&mut self) {}

    /// `writeConnectionLost()`: this side's
    /// [`lose_write_connection`](crate::TcpTransport::lose_write_connection)
    /// has completed. Only called on half-closeable protocols.
    ///
    /// ```
    /// use twisted_reactor::Protocol;
    /// struct P(bool);
    /// impl Protocol for P {
    ///     fn is_half_closeable(&self) -> bool { true }
    ///     fn write_connection_lost(&mut self) { self.0 = true; }
    /// }
    /// ```
    fn write_connection_lost(&mut self) {}
}

/// Twisted's `Factory`: builds the protocol for each new connection.
/// Closures `Fn(SocketAddr) -> P` are factories.
///
/// ```
/// use std::net::SocketAddr;
/// use twisted_reactor::{Factory, Protocol};
///
/// struct Discard;
/// impl Protocol for Discard {}
///
/// /// class Picky(Factory): def buildProtocol(self, addr): ...
/// struct Picky;
/// impl Factory for Picky {
///     type Protocol = Discard;
///     fn build_protocol(&self, addr: SocketAddr) -> Option<Discard> {
///         addr.ip().is_loopback().then_some(Discard)                 // None refuses the connection
///     }
/// }
/// assert!(Picky.build_protocol("127.0.0.1:9".parse().unwrap()).is_some());
/// assert!(Picky.build_protocol("192.0.2.1:9".parse().unwrap()).is_none());
/// ```
pub trait Factory: 'static {
    /// The protocol built.
    type Protocol: Protocol;

    /// `buildProtocol(addr)`: the protocol for a connection with `addr`
    /// (the peer), or `None` to close the connection at once.
    fn build_protocol(&self, addr: SocketAddr) -> Option<Self::Protocol>;

    /// `startFactory()`: the factory starts being used (a port starts
    /// listening, a connection attempt starts).
    ///
    /// ```
    /// use std::{cell::Cell, net::SocketAddr};
    /// use twisted_reactor::{Factory, Protocol};
    /// struct P;
    /// impl Protocol for P {}
    /// struct F(Cell<u32>);
    /// impl Factory for F {
    ///     type Protocol = P;
    ///     fn build_protocol(&self, _: SocketAddr) -> Option<P> { Some(P) }
    ///     fn start_factory(&self) { self.0.set(self.0.get() + 1); }   // def startFactory(self): ...
    /// }
    /// let f = F(Cell::new(0));
    /// f.start_factory();
    /// assert_eq!(f.0.get(), 1);
    /// ```
    fn start_factory(&self) {}

    /// `stopFactory()`: the factory is no longer used (its port stopped
    /// listening, its connection attempt failed or its connection ended).
    ///
    /// ```
    /// use std::{cell::Cell, net::SocketAddr};
    /// use twisted_reactor::{Factory, Protocol};
    /// struct P;
    /// impl Protocol for P {}
    /// struct F(Cell<bool>);
    /// impl Factory for F {
    ///     type Protocol = P;
    ///     fn build_protocol(&self, _: SocketAddr) -> Option<P> { Some(P) }
    ///     fn stop_factory(&self) { self.0.set(true); }                // def stopFactory(self): ...
    /// }
    /// let f = F(Cell::new(false));
    /// f.stop_factory();
    /// assert!(f.0.get());
    /// ```
    fn stop_factory(&self) {}
}

impl<P, F> Factory for F
where
    P: Protocol,
    F: Fn(SocketAddr) -> P + 'static,
{
    type Protocol = P;

    fn build_protocol(&self, addr: SocketAddr) -> Option<P> {
        Some(self(addr))
    }
}
