//! TCP: Twisted's `IReactorTCP` (`listenTCP`, `connectTCP`) and
//! `twisted.internet.tcp` (`Port`, `Server`, `Client`, `Connection`).
//!
//! A [`Port`] accepts connections and gives each a protocol built by its
//! [`Factory`]; [`Reactor::connect_tcp`] makes an outgoing connection and
//! returns a Deferred that fires with its protocol once connected (the
//! shape of Twisted's `TCP4ClientEndpoint.connect`), or fails with
//! [`ConnectionRefusedError`], [`ConnectTimeoutError`], … . Each connection's
//! [`TcpTransport`] buffers what the protocol writes and sends it as the
//! socket accepts it, so writes larger than the socket buffer are fine.
//!
//! How a connection ends, as Twisted reports it to `connectionLost`:
//!
//! | what happened | `reason` |
//! |---|---|
//! | the peer closed (EOF), the protocol is not half-closeable | [`ConnectionDone`] |
//! | [`lose_connection`](TcpTransport::lose_connection), once the buffer is sent | [`ConnectionDone`] |
//! | the peer reset the connection, a read or write failed | [`ConnectionLost`] (with the OS error) |
//! | [`abort_connection`](TcpTransport::abort_connection) (sends a reset) | [`ConnectionAborted`] |
//! | the reactor shut down | [`ConnectionLost`] |
//! | a protocol method panicked | the panic's [`PanicError`](twisted_deferred::PanicError) |
//!
//! ```
//! use twisted_reactor::{Protocol, Reactor, TcpTransport};
//!
//! /// Sends a greeting to whoever connects, then hangs up.
//! struct Greeter;
//! impl Protocol for Greeter {
//!     fn connection_made(&mut self, transport: TcpTransport) {
//!         transport.write(b"hello\r\n");                             // self.transport.write(b"hello\r\n")
//!         transport.lose_connection();                                // self.transport.loseConnection()
//!     }
//! }
//!
//! let reactor = Reactor::new().unwrap();
//! // reactor.listenTCP(0, Factory.forProtocol(Greeter), interface="127.0.0.1")
//! let port = reactor.listen_tcp_with(0, |_addr| Greeter, "127.0.0.1", 50).unwrap();
//! let address = port.get_host();
//! let handle = reactor.handle();
//! let client = std::thread::spawn(move || {
//!     use std::io::Read;
//!     let mut received = String::new();
//!     std::net::TcpStream::connect(address).unwrap().read_to_string(&mut received).unwrap();
//!     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
//!     received
//! });
//! reactor.run().unwrap();
//! assert_eq!(client.join().unwrap(), "hello\r\n");
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};

use polling::Event;
use socket2::{Domain, SockRef, Socket, Type};
use twisted_deferred::time::DelayedCall;
use twisted_deferred::{Deferred, Failure, succeed};

use crate::error::{
    CannotListenError, ConnectError, ConnectTimeoutError, ConnectingCancelledError,
    ConnectionAborted, ConnectionDone, ConnectionLost, ConnectionRefusedError, DNSLookupError,
    NoProtocol,
};
use crate::fdset::{Registration, Selectable};
use crate::protocol::{Factory, Protocol};
use crate::reactor::{Reactor, ReactorInner};

/// How much one `recv` reads (Twisted's `bufferSize`).
const READ_SIZE: usize = 64 * 1024;
/// How much one `send` offers (Twisted's `SEND_LIMIT`).
const SEND_LIMIT: usize = 128 * 1024;
/// The most one write event sends before letting other sockets run.
const WRITE_BUDGET: usize = 1024 * 1024;
/// How many connections one read event on a port accepts at most.
const ACCEPTS_PER_EVENT: usize = 100;
/// `connectTCP`'s default timeout, in seconds (what
/// [`Reactor::connect_tcp`] uses).
///
/// ```
/// assert_eq!(twisted_reactor::tcp::DEFAULT_CONNECT_TIMEOUT, 30.0);   // connectTCP(..., timeout=30)
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 30.0;

type DynProtocol = Rc<RefCell<dyn Protocol>>;

/// Calls `f` on the protocol, turning a panic into a failure.
fn call_protocol(protocol: &DynProtocol, f: impl FnOnce(&mut dyn Protocol)) -> Result<(), Failure> {
    let mut guard = match protocol.try_borrow_mut() {
        Ok(guard) => guard,
        Err(_) => {
            log::error!("a protocol was borrowed while the reactor delivered an event to it");
            return Ok(());
        }
    };
    catch_unwind(AssertUnwindSafe(|| f(&mut *guard))).map_err(Failure::from_panic)
}

/// Bytes waiting to be sent (`dataBuffer` and `offset`).
#[derive(Default)]
struct WriteBuffer {
    data: Vec<u8>,
    offset: usize,
}

impl WriteBuffer {
    fn pending(&self) -> &[u8] {
        &self.data[self.offset..]
    }

    fn is_empty(&self) -> bool {
        self.offset == self.data.len()
    }

    fn len(&self) -> usize {
        self.data.len() - self.offset
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.offset > 0 && self.offset * 2 >= self.data.len() {
            self.data.drain(..self.offset);
            self.offset = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    fn consume(&mut self, n: usize) {
        self.offset += n;
        if self.is_empty() {
            self.data.clear();
            self.offset = 0;
        }
    }

    fn clear(&mut self) {
        self.data = Vec::new();
        self.offset = 0;
    }
}

/// One established TCP connection (Twisted's `tcp.Connection`).
struct Connection {
    reactor: Weak<ReactorInner>,
    key: usize,
    registration: RefCell<Option<Registration<TcpStream>>>,
    protocol: RefCell<Option<DynProtocol>>,
    buffer: RefCell<WriteBuffer>,
    connected: Cell<bool>,
    disconnecting: Cell<bool>,
    disconnected: Cell<bool>,
    write_disconnecting: Cell<bool>,
    write_disconnected: Cell<bool>,
    aborting: Cell<bool>,
    host: SocketAddr,
    peer: SocketAddr,
    /// Runs after `connectionLost` (a client's `factory.doStop()`).
    on_lost: RefCell<Option<Box<dyn FnOnce()>>>,
    me: Weak<Connection>,
}

impl Connection {
    /// Wraps a registered, connected socket and introduces the protocol to
    /// its transport (`makeConnection`).
    fn establish(
        reactor: &Reactor,
        registration: Registration<TcpStream>,
        protocol: DynProtocol,
        on_lost: Option<Box<dyn FnOnce()>>,
    ) -> Rc<Connection> {
        let key = registration.key();
        let stream = registration.socket();
        let host = stream
            .local_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let peer = stream
            .peer_addr()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        registration.set_writing(false);
        registration.set_reading(true);
        let conn = Rc::new_cyclic(|me| Connection {
            reactor: reactor.downgrade(),
            key,
            registration: RefCell::new(Some(registration)),
            protocol: RefCell::new(Some(protocol.clone())),
            buffer: RefCell::new(WriteBuffer::default()),
            connected: Cell::new(true),
            disconnecting: Cell::new(false),
            disconnected: Cell::new(false),
            write_disconnecting: Cell::new(false),
            write_disconnected: Cell::new(false),
            aborting: Cell::new(false),
            host,
            peer,
            on_lost: RefCell::new(on_lost),
            me: me.clone(),
        });
        reactor.add_source(key, conn.clone());
        let transport = TcpTransport { conn: conn.clone() };
        if let Err(failure) = call_protocol(&protocol, |p| p.connection_made(transport)) {
            log::error!("Unhandled error in connectionMade: {failure}");
            conn.connection_lost(failure);
        }
        conn
    }

    fn reactor(&self) -> Option<Reactor> {
        Reactor::upgrade(&self.reactor)
    }

    fn with_registration(&self, f: impl FnOnce(&Registration<TcpStream>)) {
        if let Some(r) = &*self.registration.borrow() {
            f(r);
        }
    }

    fn start_reading(&self) {
        self.with_registration(|r| r.set_reading(true));
    }

    fn stop_reading(&self) {
        self.with_registration(|r| r.set_reading(false));
    }

    fn start_writing(&self) {
        self.with_registration(|r| r.set_writing(true));
    }

    fn stop_writing(&self) {
        self.with_registration(|r| r.set_writing(false));
    }

    fn protocol(&self) -> Option<DynProtocol> {
        self.protocol.borrow().clone()
    }

    /// `doRead()`: one `recv`, handed to `dataReceived`. Returns why the
    /// connection ends, if it does.
    fn do_read(&self, reactor: &Reactor) -> Option<Failure> {
        let mut buf = reactor.borrow_read_buffer(READ_SIZE);
        let outcome = self.read_into(&mut buf);
        reactor.return_read_buffer(buf);
        outcome
    }

    fn read_into(&self, buf: &mut [u8]) -> Option<Failure> {
        let read = {
            let registration = self.registration.borrow();
            let registration = registration.as_ref()?;
            let mut stream = registration.socket();
            stream.read(buf)
        };
        match read {
            Ok(0) => Some(Failure::new(ConnectionDone)),
            Ok(n) => {
                let protocol = self.protocol()?;
                call_protocol(&protocol, |p| p.data_received(&buf[..n])).err()
            }
            Err(e) if is_transient(&e) => None,
            Err(e) => Some(Failure::new(ConnectionLost::from_io(e))),
        }
    }

    /// `doWrite()`: sends what the socket accepts; once the buffer is
    /// empty, finishes a pending `loseConnection` or `loseWriteConnection`.
    fn do_write(&self) -> Option<Failure> {
        let mut sent = 0;
        loop {
            let written = {
                let buffer = self.buffer.borrow();
                if buffer.is_empty() {
                    break;
                }
                let registration = self.registration.borrow();
                let registration = registration.as_ref()?;
                let chunk = &buffer.pending()[..buffer.len().min(SEND_LIMIT)];
                let mut stream = registration.socket();
                stream.write(chunk)
            };
            match written {
                Ok(n) => {
                    self.buffer.borrow_mut().consume(n);
                    sent += n;
                    if sent >= WRITE_BUDGET {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient(&e) => return None,
                Err(e) => return Some(Failure::new(ConnectionLost::from_io(e))),
            }
        }
        self.stop_writing();
        if self.disconnecting.get() {
            // _postLoseConnection()
            return Some(Failure::new(ConnectionDone));
        }
        if self.write_disconnecting.get() && !self.write_disconnected.get() {
            self.write_disconnected.set(true);
            return self.close_write_connection();
        }
        None
    }

    /// `_closeWriteConnection()`: shuts down sending and tells a
    /// half-closeable protocol.
    fn close_write_connection(&self) -> Option<Failure> {
        self.with_registration(|r| {
            let _ = r.socket().shutdown(Shutdown::Write);
        });
        let protocol = self.protocol()?;
        if !protocol.borrow().is_half_closeable() {
            return None;
        }
        call_protocol(&protocol, |p| p.write_connection_lost()).err()
    }

    /// `_disconnectSelectable(selectable, why, isRead)`.
    fn disconnect_selectable(&self, why: Failure, in_read: bool) {
        self.stop_reading();
        let half_closeable = self.protocol().is_some_and(|p| {
            p.try_borrow()
                .map(|p| p.is_half_closeable())
                .unwrap_or(false)
        });
        if in_read && why.check::<ConnectionDone>() && half_closeable {
            // readConnectionLost()
            if let Some(protocol) = self.protocol()
                && let Err(failure) = call_protocol(&protocol, |p| p.read_connection_lost())
            {
                log::error!("Unhandled error in readConnectionLost: {failure}");
                self.connection_lost(failure);
            }
        } else {
            self.stop_writing();
            self.connection_lost(why);
        }
    }

    /// `connectionLost(reason)`: closes the socket (with a reset if it was
    /// aborted) and tells the protocol.
    fn connection_lost(&self, reason: Failure) {
        if self.disconnected.get() {
            return;
        }
        self.disconnected.set(true);
        self.connected.set(false);
        if let Some(reactor) = self.reactor() {
            reactor.remove_source(self.key);
        }
        let registration = self.registration.borrow_mut().take();
        if let Some(registration) = registration {
            let stream = registration.socket();
            if reason.check::<ConnectionAborted>() {
                let _ = SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
            } else {
                let _ = stream.shutdown(Shutdown::Both);
            }
            drop(registration);
        }
        self.buffer.borrow_mut().clear();
        let protocol = self.protocol.borrow_mut().take();
        if let Some(protocol) = protocol
            && let Err(failure) = call_protocol(&protocol, |p| p.connection_lost(reason))
        {
            log::error!("Unhandled error in connectionLost: {failure}");
        }
        let on_lost = self.on_lost.borrow_mut().take();
        if let Some(on_lost) = on_lost {
            on_lost();
        }
    }

    /// Runs `connectionLost(reason)` on the next iteration
    /// (`reactor.callLater(0, self.connectionLost, reason)`).
    fn connection_lost_soon(&self, reason: Failure) {
        let (Some(reactor), Some(me)) = (self.reactor(), self.me.upgrade()) else {
            self.connection_lost(reason);
            return;
        };
        let scheduled = reactor.call_later(0.0, move || me.connection_lost(reason));
        if scheduled.is_err() {
            log::error!("could not schedule the end of a connection");
        }
    }
}

impl Selectable for Connection {
    fn handle_event(self: Rc<Self>, reactor: &Reactor, event: Event) {
        if self.disconnected.get() || self.aborting.get() {
            return;
        }
        let (reading, writing) = match &*self.registration.borrow() {
            Some(r) => (r.reading(), r.writing()),
            None => return,
        };
        let mut why = None;
        let mut in_read = false;
        if event.readable && reading {
            why = self.do_read(reactor);
            in_read = true;
        }
        if why.is_none() && event.writable && writing && !self.disconnected.get() {
            why = self.do_write();
            in_read = false;
        }
        if why.is_none()
            && !(event.readable && reading)
            && !(event.writable && writing)
            && (event.is_interrupt() || event.is_err() == Some(true))
        {
            // A hang-up or error while watching for nothing.
            why = Some(Failure::new(ConnectionLost::new()));
        }
        if let Some(why) = why
            && !self.disconnected.get()
            && !self.aborting.get()
        {
            self.disconnect_selectable(why, in_read);
        }
    }

    fn disconnect(self: Rc<Self>, _reactor: &Reactor, reason: Failure) {
        self.connection_lost(reason);
    }

    fn release(&self) {
        self.disconnected.set(true);
        self.connected.set(false);
        let registration = self.registration.borrow_mut().take();
        drop(registration);
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol);
        let on_lost = self.on_lost.borrow_mut().take();
        drop(on_lost);
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A connection's transport: Twisted's `ITCPTransport`, what a protocol
/// writes to. A cheap handle; clones are the same connection.
///
/// Every method is safe to call at any time: on a closed connection,
/// writes are dropped and closing does nothing, as in Twisted.
///
/// ```
/// use twisted_reactor::{Protocol, TcpTransport};
/// /// Keeps the transport, as Twisted's `makeConnection` sets `self.transport`.
/// struct Talker { transport: Option<TcpTransport> }
/// impl Protocol for Talker {
///     fn connection_made(&mut self, transport: TcpTransport) {
///         transport.write(b"hi");                                     // self.transport.write(b"hi")
///         self.transport = Some(transport);
///     }
/// }
/// ```
#[derive(Clone)]
pub struct TcpTransport {
    conn: Rc<Connection>,
}

impl TcpTransport {
    /// `write(data)`: queues `data` to be sent, in order, as soon as the
    /// socket accepts it (any amount: what the socket cannot take yet stays
    /// buffered). Ignored once the connection is closed or its writing side
    /// shut down.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Big;
    /// impl Protocol for Big {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.write(&vec![b'x'; 10_000_000]);                       // self.transport.write(b"x" * 10**7)
    ///         t.lose_connection();                                    // closes once all is sent
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Big, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// #     v.len()
    /// # });
    /// # reactor.run().unwrap();
    /// # assert_eq!(client.join().unwrap(), 10_000_000);
    /// ```
    pub fn write(&self, data: &[u8]) {
        let c = &self.conn;
        if !c.connected.get() || c.write_disconnected.get() || data.is_empty() {
            return;
        }
        c.buffer.borrow_mut().push(data);
        c.start_writing();
    }

    /// `writeSequence(iovec)`: writes each piece in turn.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Parts;
    /// impl Protocol for Parts {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.write_sequence(&[b"ab", b"cd"]);                      // self.transport.writeSequence([b"ab", b"cd"])
    ///         t.lose_connection();
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Parts, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// #     v
    /// # });
    /// # reactor.run().unwrap();
    /// # assert_eq!(client.join().unwrap(), b"abcd");
    /// ```
    pub fn write_sequence(&self, iovec: &[&[u8]]) {
        for data in iovec {
            self.write(data);
        }
    }

    /// `loseConnection()`: closes the connection once everything written so
    /// far has been sent; the protocol then gets
    /// `connection_lost(ConnectionDone)`. Reading stops at once.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Bye;
    /// impl Protocol for Bye {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.write(b"bye");
    ///         t.lose_connection();                                    // self.transport.loseConnection()
    ///         assert!(t.disconnecting());
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Bye, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// #     v
    /// # });
    /// # reactor.run().unwrap();
    /// # assert_eq!(client.join().unwrap(), b"bye");
    /// ```
    pub fn lose_connection(&self) {
        let c = &self.conn;
        if !c.connected.get() || c.disconnecting.get() {
            return;
        }
        if c.write_disconnected.get() {
            c.stop_reading();
            c.stop_writing();
            c.disconnecting.set(true);
            c.connection_lost_soon(Failure::new(ConnectionDone));
        } else {
            c.stop_reading();
            c.start_writing();
            c.disconnecting.set(true);
        }
    }

    /// `abortConnection()`: closes the connection now, dropping anything
    /// not sent yet and sending a reset; the protocol gets
    /// `connection_lost(ConnectionAborted)` on the next iteration.
    ///
    /// ```
    /// use twisted_deferred::Failure;
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport, error::ConnectionAborted};
    /// struct Rude;
    /// impl Protocol for Rude {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.abort_connection();                                   // self.transport.abortConnection()
    ///     }
    ///     fn connection_lost(&mut self, reason: Failure) {
    ///         assert!(reason.check::<ConnectionAborted>());
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Rude, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     let r = std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v);
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// #     r.is_err()
    /// # });
    /// # reactor.run().unwrap();
    /// # assert!(client.join().unwrap());                            // the client saw a reset
    /// ```
    pub fn abort_connection(&self) {
        let c = &self.conn;
        if c.disconnected.get() || c.aborting.get() {
            return;
        }
        c.aborting.set(true);
        c.stop_reading();
        c.stop_writing();
        c.connection_lost_soon(Failure::new(ConnectionAborted));
    }

    /// `loseWriteConnection()`: shuts down the sending side once the buffer
    /// is sent (the peer reads EOF); reading goes on. A half-closeable
    /// protocol then gets
    /// [`write_connection_lost`](crate::Protocol::write_connection_lost).
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Ask;
    /// impl Protocol for Ask {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.write(b"question");
    ///         t.lose_write_connection();                              // self.transport.loseWriteConnection()
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Ask, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// #     v
    /// # });
    /// # reactor.run().unwrap();
    /// # assert_eq!(client.join().unwrap(), b"question");           // EOF arrived: the write side is shut
    /// ```
    pub fn lose_write_connection(&self) {
        let c = &self.conn;
        if !c.connected.get() || c.write_disconnecting.get() {
            return;
        }
        c.write_disconnecting.set(true);
        c.start_writing();
    }

    /// `pauseProducing()`: stops reading from the socket (back-pressure);
    /// nothing is delivered until [`resume_producing`](TcpTransport::resume_producing).
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Slow(Option<TcpTransport>);
    /// impl Protocol for Slow {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         t.pause_producing();                                    // self.transport.pauseProducing()
    ///         assert!(!t.reading());
    ///         t.resume_producing();                                   // self.transport.resumeProducing()
    ///         assert!(t.reading());
    ///         t.lose_connection();
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Slow(None), "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// # });
    /// # reactor.run().unwrap();
    /// # client.join().unwrap();
    /// ```
    pub fn pause_producing(&self) {
        self.conn.stop_reading();
    }

    /// `resumeProducing()`: reads again after
    /// [`pause_producing`](TcpTransport::pause_producing) (not once the
    /// connection is closing).
    ///
    /// See [`pause_producing`](TcpTransport::pause_producing) for an
    /// example.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn resume(t: &TcpTransport) { t.resume_producing(); }              // self.transport.resumeProducing()
    /// # let _ = resume;
    /// ```
    pub fn resume_producing(&self) {
        let c = &self.conn;
        if c.connected.get() && !c.disconnecting.get() {
            c.start_reading();
        }
    }

    /// True while the reactor reads from this connection.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn paused(t: &TcpTransport) -> bool { !t.reading() }
    /// # let _ = paused;
    /// ```
    pub fn reading(&self) -> bool {
        self.conn
            .registration
            .borrow()
            .as_ref()
            .is_some_and(Registration::reading)
    }

    /// `getPeer()`: the address of the other side.
    ///
    /// ```
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    /// struct Who;
    /// impl Protocol for Who {
    ///     fn connection_made(&mut self, t: TcpTransport) {
    ///         assert!(t.get_peer().ip().is_loopback());               // self.transport.getPeer()
    ///         assert_ne!(t.get_peer().port(), t.get_host().port());   // self.transport.getHost()
    ///         t.lose_connection();
    ///     }
    /// }
    /// # let reactor = Reactor::new().unwrap();
    /// # let address = reactor.listen_tcp_with(0, |_| Who, "127.0.0.1", 50).unwrap().get_host();
    /// # let handle = reactor.handle();
    /// # let client = std::thread::spawn(move || {
    /// #     let mut v = Vec::new();
    /// #     std::io::Read::read_to_end(&mut std::net::TcpStream::connect(address).unwrap(), &mut v).unwrap();
    /// #     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    /// # });
    /// # reactor.run().unwrap();
    /// # client.join().unwrap();
    /// ```
    pub fn get_peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// `getHost()`: this side's address.
    ///
    /// See [`get_peer`](TcpTransport::get_peer) for an example.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn local_port(t: &TcpTransport) -> u16 { t.get_host().port() }     // self.transport.getHost().port
    /// # let _ = local_port;
    /// ```
    pub fn get_host(&self) -> SocketAddr {
        self.conn.host
    }

    /// `connected`: true until the connection is lost.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn is_up(t: &TcpTransport) -> bool { t.connected() }              // self.transport.connected
    /// # let _ = is_up;
    /// ```
    pub fn connected(&self) -> bool {
        self.conn.connected.get()
    }

    /// `disconnecting`: `lose_connection` was called and the connection is
    /// closing.
    ///
    /// See [`lose_connection`](TcpTransport::lose_connection) for an
    /// example.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn closing(t: &TcpTransport) -> bool { t.disconnecting() }        // self.transport.disconnecting
    /// # let _ = closing;
    /// ```
    pub fn disconnecting(&self) -> bool {
        self.conn.disconnecting.get()
    }

    /// How many written bytes wait to be sent (`len(dataBuffer)`).
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn backlog(t: &TcpTransport) -> usize { t.buffered() }
    /// # let _ = backlog;
    /// ```
    pub fn buffered(&self) -> usize {
        self.conn.buffer.borrow().len()
    }

    /// `setTcpNoDelay(enabled)`: turns Nagle's algorithm off (`true`) or
    /// on.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn interactive(t: &TcpTransport) { t.set_tcp_no_delay(true).unwrap(); }  // self.transport.setTcpNoDelay(True)
    /// # let _ = interactive;
    /// ```
    pub fn set_tcp_no_delay(&self, enabled: bool) -> io::Result<()> {
        match &*self.conn.registration.borrow() {
            Some(r) => r.socket().set_nodelay(enabled),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// `setTcpKeepAlive(enabled)`.
    ///
    /// ```
    /// # use twisted_reactor::TcpTransport;
    /// fn keep(t: &TcpTransport) { t.set_tcp_keep_alive(true).unwrap(); }  // self.transport.setTcpKeepAlive(True)
    /// # let _ = keep;
    /// ```
    pub fn set_tcp_keep_alive(&self, enabled: bool) -> io::Result<()> {
        match &*self.conn.registration.borrow() {
            Some(r) => SockRef::from(r.socket()).set_keepalive(enabled),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("host", &self.conn.host)
            .field("peer", &self.conn.peer)
            .field("connected", &self.conn.connected.get())
            .field("disconnecting", &self.conn.disconnecting.get())
            .finish()
    }
}

/// A listening socket (Twisted's `tcp.Port`, what `listenTCP` returns).
/// A cheap handle; dropping it does not stop listening.
///
/// ```
/// # struct Discard; impl twisted_reactor::Protocol for Discard {}
/// let reactor = twisted_reactor::Reactor::new().unwrap();
/// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();  // port = reactor.listenTCP(...)
/// assert!(port.listening() && port.get_host().ip().is_loopback());
/// ```
#[derive(Clone)]
pub struct Port {
    inner: Rc<PortInner>,
}

type BuildFn = Box<dyn Fn(SocketAddr) -> Result<Option<DynProtocol>, Failure>>;

struct PortInner {
    reactor: Weak<ReactorInner>,
    key: usize,
    registration: RefCell<Option<Registration<TcpListener>>>,
    build: BuildFn,
    stop_factory: RefCell<Option<Box<dyn FnOnce()>>>,
    host: SocketAddr,
    interface: String,
    disconnecting: Cell<bool>,
    waiting: RefCell<Vec<Deferred<()>>>,
    me: Weak<PortInner>,
}

impl PortInner {
    /// `doRead()`: accepts the connections waiting.
    fn do_read(&self, reactor: &Reactor) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let accepted = match &*self.registration.borrow() {
                Some(r) => r.socket().accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(reactor, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: try again on the
                    // next event, as Twisted does.
                    log::error!("Could not accept new connection ({e})");
                    return;
                }
            }
        }
    }

    fn serve(&self, reactor: &Reactor, stream: TcpStream, peer: SocketAddr) {
        if let Err(e) = stream.set_nonblocking(true) {
            log::error!("could not make an accepted socket non-blocking: {e}");
            return;
        }
        let protocol = match (self.build)(peer) {
            Ok(Some(protocol)) => protocol,
            // buildProtocol returned None: close the connection.
            Ok(None) => return,
            Err(failure) => {
                log::error!("Unhandled error in buildProtocol: {failure}");
                return;
            }
        };
        let key = reactor.allocate_key();
        match Registration::new(reactor.poller(), key, stream, true, false) {
            Ok(registration) => {
                Connection::establish(reactor, registration, protocol, None);
            }
            Err(e) => log::error!("could not watch an accepted socket: {e}"),
        }
    }

    /// `connectionLost(reason)`: closes the socket, stops the factory, fires
    /// the Deferreds of `stopListening`.
    fn connection_lost(&self) {
        let registration = self.registration.borrow_mut().take();
        if registration.is_none() {
            return;
        }
        if let Some(reactor) = Reactor::upgrade(&self.reactor) {
            reactor.remove_source(self.key);
        }
        drop(registration);
        let stop = self.stop_factory.borrow_mut().take();
        if let Some(stop) = stop {
            stop();
        }
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for d in waiting {
            let _ = d.callback(());
        }
    }
}

impl Selectable for PortInner {
    fn handle_event(self: Rc<Self>, reactor: &Reactor, event: Event) {
        if event.readable && !self.disconnecting.get() {
            self.do_read(reactor);
        }
    }

    fn disconnect(self: Rc<Self>, _reactor: &Reactor, _reason: Failure) {
        self.connection_lost();
    }

    fn release(&self) {
        let registration = self.registration.borrow_mut().take();
        drop(registration);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        drop(waiting);
    }
}

impl Port {
    /// `getHost()`: the address listened on (with the port the OS chose
    /// when asked for port 0).
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();
    /// assert_ne!(port.get_host().port(), 0);                          // port.getHost().port
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// ```
    pub fn get_host(&self) -> SocketAddr {
        self.inner.host
    }

    /// `stopListening()`: stops accepting connections and closes the
    /// socket on the next iteration; the Deferred fires once it is closed
    /// (at once if it already is). Connections already accepted go on.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// let reactor = Reactor::new().unwrap();
    /// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();
    /// let d = port.stop_listening();                                  // d = port.stopListening()
    /// let r = reactor.clone();
    /// d.add_callback(move |()| r.stop().map_err(Into::into));
    /// reactor.run().unwrap();
    /// assert!(!port.listening());
    /// ```
    pub fn stop_listening(&self) -> Deferred<()> {
        let inner = &self.inner;
        if inner.registration.borrow().is_none() {
            return succeed(());
        }
        let d = Deferred::new();
        inner.waiting.borrow_mut().push(d.clone());
        if !inner.disconnecting.get() {
            inner.disconnecting.set(true);
            if let Some(r) = &*inner.registration.borrow() {
                r.set_reading(false);
            }
            let me = inner.me.clone();
            let close = move || {
                if let Some(port) = me.upgrade() {
                    port.connection_lost();
                }
            };
            match Reactor::upgrade(&inner.reactor) {
                Some(reactor) => {
                    if reactor.call_later(0.0, close).is_err() {
                        log::error!("could not schedule closing a port");
                    }
                }
                None => close(),
            }
        }
        d
    }

    /// True until the port's socket is closed.
    ///
    /// ```
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();
    /// assert!(port.listening());
    /// ```
    pub fn listening(&self) -> bool {
        self.inner.registration.borrow().is_some()
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("interface", &self.inner.interface)
            .field("host", &self.inner.host)
            .field("listening", &self.listening())
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptState {
    Resolving,
    Connecting,
    Done,
}

/// An outgoing connection attempt (Twisted's `tcp.Client` before it is
/// connected, and its `Connector`).
struct Attempt<F: Factory> {
    reactor: Weak<ReactorInner>,
    factory: Rc<F>,
    deferred: Deferred<Rc<RefCell<F::Protocol>>>,
    state: Cell<AttemptState>,
    key: Cell<Option<usize>>,
    registration: RefCell<Option<Registration<TcpStream>>>,
    address: Cell<Option<SocketAddr>>,
    timer: RefCell<Option<DelayedCall>>,
}

impl<F: Factory> Attempt<F> {
    /// `_setRealAddress(address)` / `doConnect()`: starts connecting.
    fn connect_to(self: &Rc<Self>, address: SocketAddr) {
        if self.state.get() != AttemptState::Resolving {
            return;
        }
        let Some(reactor) = Reactor::upgrade(&self.reactor) else {
            return;
        };
        self.state.set(AttemptState::Connecting);
        self.address.set(Some(address));
        let socket = match Socket::new(Domain::for_address(address), Type::STREAM, None)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
        {
            Ok(socket) => socket,
            Err(e) => return self.fail(connect_failure(e, address)),
        };
        match socket.connect(&address.into()) {
            Ok(()) => {}
            Err(e) if connect_in_progress(&e) => {}
            Err(e) => return self.fail(connect_failure(e, address)),
        }
        let stream = TcpStream::from(socket);
        let key = reactor.allocate_key();
        match Registration::new(reactor.poller(), key, stream, false, true) {
            Ok(registration) => {
                *self.registration.borrow_mut() = Some(registration);
                self.key.set(Some(key));
                reactor.add_source(key, self.clone());
            }
            Err(e) => self.fail(connect_failure(e, address)),
        }
    }

    /// The socket became writable (or failed): did the connect succeed?
    fn finish_connecting(self: &Rc<Self>, reactor: &Reactor) {
        if self.state.get() != AttemptState::Connecting {
            return;
        }
        let address = self
            .address
            .get()
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let outcome = match &*self.registration.borrow() {
            Some(r) => match r.socket().take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => r.socket().peer_addr().map(|_| ()),
            },
            None => return,
        };
        match outcome {
            Err(e) if is_transient(&e) || e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.fail(connect_failure(e, address)),
            Ok(()) => self.connected(reactor, address),
        }
    }

    fn connected(self: &Rc<Self>, reactor: &Reactor, address: SocketAddr) {
        self.state.set(AttemptState::Done);
        self.cancel_timer();
        if let Some(key) = self.key.take() {
            reactor.remove_source(key);
        }
        let Some(registration) = self.registration.borrow_mut().take() else {
            return;
        };
        let factory = self.factory.clone();
        let built = catch_unwind(AssertUnwindSafe(|| factory.build_protocol(address)));
        let protocol = match built {
            Ok(Some(protocol)) => Rc::new(RefCell::new(protocol)),
            Ok(None) => {
                drop(registration);
                factory.stop_factory();
                let _ = self.deferred.errback(Failure::new(NoProtocol));
                return;
            }
            Err(panic) => {
                drop(registration);
                factory.stop_factory();
                let _ = self.deferred.errback(Failure::from_panic(panic));
                return;
            }
        };
        let dynamic: DynProtocol = protocol.clone();
        let on_lost: Box<dyn FnOnce()> = Box::new(move || factory.stop_factory());
        Connection::establish(reactor, registration, dynamic, Some(on_lost));
        let _ = self.deferred.callback(protocol);
    }

    /// `failIfNotConnected(err)`.
    fn fail(self: &Rc<Self>, failure: Failure) {
        if self.state.get() == AttemptState::Done {
            return;
        }
        self.state.set(AttemptState::Done);
        self.cancel_timer();
        if let (Some(key), Some(reactor)) = (self.key.take(), Reactor::upgrade(&self.reactor)) {
            reactor.remove_source(key);
        }
        let registration = self.registration.borrow_mut().take();
        drop(registration);
        self.factory.stop_factory();
        let _ = self.deferred.errback(failure);
    }

    fn cancel_timer(&self) {
        let timer = self.timer.borrow_mut().take();
        if let Some(timer) = timer
            && timer.active()
        {
            let _ = timer.cancel();
        }
    }
}

impl<F: Factory> Selectable for Attempt<F> {
    fn handle_event(self: Rc<Self>, reactor: &Reactor, event: Event) {
        if event.writable || event.readable {
            self.finish_connecting(reactor);
        }
    }

    fn disconnect(self: Rc<Self>, _reactor: &Reactor, reason: Failure) {
        self.fail(Failure::new(ConnectError {
            os_error: None,
            detail: reason.message(),
        }));
    }

    fn release(&self) {
        self.state.set(AttemptState::Done);
        let registration = self.registration.borrow_mut().take();
        drop(registration);
        let timer = self.timer.borrow_mut().take();
        drop(timer);
    }
}

/// `EINPROGRESS` (or, on Windows, `WSAEWOULDBLOCK`): a non-blocking
/// connect under way.
fn connect_in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

/// The failure a connect error becomes (Twisted's `errnoMapping`).
fn connect_failure(e: io::Error, address: SocketAddr) -> Failure {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Failure::new(ConnectionRefusedError { address })
    } else {
        Failure::new(ConnectError {
            os_error: Some(e),
            detail: String::new(),
        })
    }
}

/// The address `listenTCP` binds for `interface` (`""`: every IPv4
/// interface, as Twisted's default).
fn bind_address(interface: &str, port: u16) -> io::Result<SocketAddr> {
    if interface.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    let trimmed = interface.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (interface, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address for the interface"))
}

fn open_listener(address: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from(socket))
}

/// Picks the address to connect to among a name's addresses: the first
/// IPv4 one, as Twisted's `connectTCP` (which resolves with
/// `gethostbyname`), else the first.
fn pick_address(addresses: Vec<SocketAddr>) -> Option<SocketAddr> {
    addresses
        .iter()
        .copied()
        .find(SocketAddr::is_ipv4)
        .or_else(|| addresses.first().copied())
}

impl Reactor {
    /// `listenTCP(port, factory)`: listens on `port` on every IPv4
    /// interface. See [`listen_tcp_with`](Reactor::listen_tcp_with).
    ///
    /// ```
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let port = reactor.listen_tcp(0, |_addr| Discard).unwrap();      // reactor.listenTCP(0, factory)
    /// assert!(port.get_host().ip().is_unspecified());
    /// ```
    pub fn listen_tcp<F: Factory>(&self, port: u16, factory: F) -> Result<Port, CannotListenError> {
        self.listen_tcp_with(port, factory, "", 50)
    }

    /// `listenTCP(port, factory, backlog, interface)`: listens on `port`
    /// (0: one the OS picks) on `interface` (an address, or `""` for every
    /// IPv4 interface) and builds a protocol with `factory` for each
    /// connection. Fails with [`CannotListenError`] when the port is in use
    /// or cannot be bound.
    ///
    /// ```
    /// use twisted_reactor::{Reactor, error::CannotListenError};
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// let reactor = Reactor::new().unwrap();
    /// // reactor.listenTCP(0, factory, interface="127.0.0.1")
    /// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();
    /// let taken = port.get_host().port();
    /// let err: CannotListenError = reactor.listen_tcp_with(taken, |_| Discard, "127.0.0.1", 50).unwrap_err();
    /// assert_eq!(err.socket_error.kind(), std::io::ErrorKind::AddrInUse);
    /// ```
    pub fn listen_tcp_with<F: Factory>(
        &self,
        port: u16,
        factory: F,
        interface: &str,
        backlog: u32,
    ) -> Result<Port, CannotListenError> {
        let cannot = |socket_error| CannotListenError {
            interface: interface.to_owned(),
            port,
            socket_error,
        };
        let address = bind_address(interface, port).map_err(cannot)?;
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        let listener = open_listener(address, backlog).map_err(cannot)?;
        let host = listener.local_addr().map_err(cannot)?;
        let key = self.allocate_key();
        let registration =
            Registration::new(self.poller(), key, listener, true, false).map_err(cannot)?;
        let factory = Rc::new(factory);
        factory.start_factory();
        let builder = factory.clone();
        let build: BuildFn = Box::new(move |addr| {
            match catch_unwind(AssertUnwindSafe(|| builder.build_protocol(addr))) {
                Ok(Some(p)) => Ok(Some(Rc::new(RefCell::new(p)) as DynProtocol)),
                Ok(None) => Ok(None),
                Err(panic) => Err(Failure::from_panic(panic)),
            }
        });
        let inner = Rc::new_cyclic(|me| PortInner {
            reactor: self.downgrade(),
            key,
            registration: RefCell::new(Some(registration)),
            build,
            stop_factory: RefCell::new(Some(Box::new(move || factory.stop_factory()))),
            host,
            interface: interface.to_owned(),
            disconnecting: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
            me: me.clone(),
        });
        self.add_source(key, inner.clone());
        Ok(Port { inner })
    }

    /// `connectTCP(host, port, factory)` with Twisted's default 30-second
    /// timeout. See [`connect_tcp_with_timeout`](Reactor::connect_tcp_with_timeout).
    ///
    /// ```
    /// use twisted_reactor::{Reactor, error::ConnectionRefusedError};
    /// # struct Discard; impl twisted_reactor::Protocol for Discard {}
    /// let reactor = Reactor::new().unwrap();
    /// // A port nobody listens on: bind one, note it, close it.
    /// let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// let d = reactor.connect_tcp("127.0.0.1", free, |_| Discard);     // reactor.connectTCP("127.0.0.1", port, f)
    /// let r = reactor.clone();
    /// let refused = d.add_errback(move |f| {
    ///     r.stop().unwrap();
    ///     Err(f)
    /// });
    /// reactor.run().unwrap();
    /// assert!(refused.result().failure().unwrap().check::<ConnectionRefusedError>());
    /// # refused.add_errback(|_| Ok(std::rc::Rc::new(std::cell::RefCell::new(Discard))));
    /// ```
    pub fn connect_tcp<F: Factory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
    ) -> Deferred<Rc<RefCell<F::Protocol>>> {
        self.connect_tcp_with_timeout(host, port, factory, DEFAULT_CONNECT_TIMEOUT)
    }

    /// `connectTCP(host, port, factory, timeout)`, in the shape of
    /// `TCP4ClientEndpoint.connect`: returns a Deferred that fires with the
    /// protocol (shared, as `Rc<RefCell<P>>`) once it is connected and its
    /// `connection_made` has run, or fails with [`ConnectionRefusedError`],
    /// [`ConnectTimeoutError`] after `timeout` seconds, [`DNSLookupError`]
    /// (a name is resolved on the reactor's thread pool), [`NoProtocol`] or
    /// [`ConnectError`]. Cancelling it stops the attempt with
    /// [`ConnectingCancelledError`]. The attempt starts on the next
    /// iteration of the loop.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use twisted_reactor::{Protocol, Reactor, TcpTransport};
    ///
    /// #[derive(Default)]
    /// struct Client { transport: Option<TcpTransport> }
    /// impl Protocol for Client {
    ///     fn connection_made(&mut self, t: TcpTransport) { self.transport = Some(t); }
    /// }
    /// # struct Discard; impl Protocol for Discard {}
    /// let reactor = Reactor::new().unwrap();
    /// let port = reactor.listen_tcp_with(0, |_| Discard, "127.0.0.1", 50).unwrap();
    /// let d = reactor.connect_tcp_with_timeout("127.0.0.1", port.get_host().port(), |_| Client::default(), 5.0);
    /// let r = reactor.clone();
    /// d.add_callback(move |client: Rc<RefCell<Client>>| {
    ///     assert!(client.borrow().transport.as_ref().unwrap().connected());
    ///     r.stop().map_err(Into::into)
    /// });
    /// reactor.run().unwrap();
    /// ```
    pub fn connect_tcp_with_timeout<F: Factory>(
        &self,
        host: &str,
        port: u16,
        factory: F,
        timeout: f64,
    ) -> Deferred<Rc<RefCell<F::Protocol>>> {
        let target = format!("{host}:{port}");
        let attempt_slot: Rc<RefCell<Weak<Attempt<F>>>> = Rc::new(RefCell::new(Weak::new()));
        let for_canceller = attempt_slot.clone();
        let deferred = Deferred::with_canceller(move |_d: &Deferred<Rc<RefCell<F::Protocol>>>| {
            let attempt = for_canceller.borrow().upgrade();
            if let Some(attempt) = attempt {
                attempt.fail(Failure::new(ConnectingCancelledError {
                    address: target.clone(),
                }));
            }
        });
        let factory = Rc::new(factory);
        factory.start_factory();
        let attempt = Rc::new(Attempt {
            reactor: self.downgrade(),
            factory,
            deferred: deferred.clone(),
            state: Cell::new(AttemptState::Resolving),
            key: Cell::new(None),
            registration: RefCell::new(None),
            address: Cell::new(None),
            timer: RefCell::new(None),
        });
        *attempt_slot.borrow_mut() = Rc::downgrade(&attempt);

        if timeout.is_finite() && timeout >= 0.0 {
            let timed_out = attempt.clone();
            if let Ok(timer) = self.call_later(timeout, move || {
                timed_out.fail(Failure::new(ConnectTimeoutError { timeout }));
            }) {
                *attempt.timer.borrow_mut() = Some(timer);
            }
        }

        let trimmed = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            let starting = attempt.clone();
            let address = SocketAddr::new(ip, port);
            if self
                .call_later(0.0, move || starting.connect_to(address))
                .is_err()
            {
                log::error!("could not schedule a connection attempt");
            }
        } else {
            let name = host.to_owned();
            let lookup = name.clone();
            let resolved = crate::threads::defer_to_thread(self, move || {
                (lookup.as_str(), port)
                    .to_socket_addrs()
                    .map(|addresses| addresses.collect::<Vec<_>>())
            });
            let resolving = attempt.clone();
            resolved.add_both(move |outcome: Result<Vec<SocketAddr>, Failure>| {
                match outcome.map(pick_address) {
                    Ok(Some(address)) => resolving.connect_to(address),
                    Ok(None) => resolving.fail(Failure::new(DNSLookupError {
                        host: name,
                        detail: "no address".into(),
                    })),
                    Err(f) => resolving.fail(Failure::new(DNSLookupError {
                        host: name,
                        detail: f.message(),
                    })),
                }
                Ok::<(), Failure>(())
            });
        }
        deferred
    }
}
