//! TCP over real loopback sockets: `listenTCP`, `connectTCP`, protocols and
//! transports.
//!
//! Mirrors Twisted's `internet/test/test_tcp.py` (`TCPClientTestsBuilder`,
//! `TCPPortTestsBuilder`, `TCPConnectionTestsBuilder`, `AbortConnectionMixin`,
//! `WriteSequenceTestsMixin`, `HalfCloseTests`), and `test/test_tcp.py`
//! (`LoopbackTests`, `ConnectionLosingTests`, `ProperlyCloseFilesTests`).
//! Only 127.0.0.1 is ever contacted. Every run has a generous watchdog; the
//! tests assert outcomes and orders, never durations.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::thread;

use twisted_deferred::{Deferred, Failure, PanicError};
use twisted_reactor::error::{
    CannotListenError, ConnectTimeoutError, ConnectingCancelledError, ConnectionAborted,
    ConnectionDone, ConnectionLost, ConnectionRefusedError, NoProtocol, is_connection_lost,
};
use twisted_reactor::{Factory, Port, Protocol, Reactor, TcpTransport};

const WATCHDOG: f64 = 60.0;
const LOCALHOST: &str = "127.0.0.1";

fn run(reactor: &Reactor) {
    let timed_out = Rc::new(Cell::new(false));
    let (r, flag) = (reactor.clone(), timed_out.clone());
    reactor
        .call_later(WATCHDOG, move || {
            flag.set(true);
            r.crash();
        })
        .unwrap();
    reactor.run().unwrap();
    assert!(!timed_out.get(), "the reactor did not stop by itself");
}

fn stop(reactor: &Reactor) {
    if reactor.running() {
        let _ = reactor.stop();
    }
}

/// Where a protocol's `connectionLost` reason lands.
type Reason = Rc<RefCell<Option<Failure>>>;

fn new_reason() -> Reason {
    Rc::new(RefCell::new(None))
}

fn kind(reason: &Reason) -> &'static str {
    match &*reason.borrow() {
        None => "not lost",
        Some(f) if f.check::<ConnectionDone>() => "ConnectionDone",
        Some(f) if f.check::<ConnectionAborted>() => "ConnectionAborted",
        Some(f) if f.check::<ConnectionLost>() => "ConnectionLost",
        Some(f) if f.check::<PanicError>() => "PanicError",
        Some(_) => "other",
    }
}

/// `class Echo(Protocol)`, recording how its connection ended.
struct Echo {
    transport: Option<TcpTransport>,
    lost: Reason,
    on_lost: Option<Box<dyn FnOnce()>>,
}

impl Echo {
    fn new(lost: &Reason) -> Echo {
        Echo {
            transport: None,
            lost: lost.clone(),
            on_lost: None,
        }
    }
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: TcpTransport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data);
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        if let Some(f) = self.on_lost.take() {
            f();
        }
    }
}

/// A client that sends `payload`, collects what comes back, closes once it
/// has `close_after` bytes, and runs `on_lost` when its connection ends.
#[derive(Default)]
struct Client {
    transport: Option<TcpTransport>,
    payload: Vec<u8>,
    close_after: Option<usize>,
    received: Rc<RefCell<Vec<u8>>>,
    lost: Reason,
    on_lost: Option<Box<dyn FnOnce()>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, transport: TcpTransport) {
        transport.write(&self.payload);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
        if let (Some(n), Some(t)) = (self.close_after, &self.transport)
            && self.received.borrow().len() >= n
        {
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        if let Some(f) = self.on_lost.take() {
            f();
        }
    }
}

fn listen<F: Factory>(reactor: &Reactor, factory: F) -> Port {
    reactor.listen_tcp_with(0, factory, LOCALHOST, 50).unwrap()
}

/// A function to call `n` times: the last call stops the reactor (once
/// both ends of every connection have seen it close).
fn countdown(reactor: &Reactor, n: usize) -> impl Fn() + Clone + 'static {
    let (left, r) = (Rc::new(Cell::new(n)), reactor.clone());
    move || {
        left.set(left.get() - 1);
        if left.get() == 0 {
            stop(&r);
        }
    }
}

/// A port on 127.0.0.1 nobody listens on (bound, noted, closed).
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// Twisted: test_tcp: LoopbackTests; TCPConnectionTestsBuilder (echo)
#[test]
fn an_echo_server_echoes_and_both_sides_see_connection_done() {
    let reactor = Reactor::new().unwrap();
    let server_lost = new_reason();
    let ends = countdown(&reactor, 2);
    let (sl, e) = (server_lost.clone(), ends.clone());
    let port = listen(&reactor, move |_| Echo {
        on_lost: Some(Box::new(e.clone())),
        ..Echo::new(&sl)
    });
    let client = Client {
        payload: b"hello, world".to_vec(),
        close_after: Some(12),
        on_lost: Some(Box::new(ends)),
        ..Client::default()
    };
    let (received, client_lost) = (client.received.clone(), client.lost.clone());
    let client = RefCell::new(Some(client));
    let d = reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| {
        client.borrow_mut().take().unwrap_or_default()
    });
    run(&reactor);
    assert!(d.called());
    assert_eq!(&*received.borrow(), b"hello, world");
    assert_eq!(kind(&client_lost), "ConnectionDone");
    assert_eq!(kind(&server_lost), "ConnectionDone");
}

// Twisted: test_tcp: TCPConnectionTestsBuilder.test_connectionLostAfterPausedTransport,
// ManyConnections (many connections at once)
#[test]
fn two_hundred_connections_at_once_each_get_their_own_echo() {
    const N: usize = 200;
    let reactor = Reactor::new().unwrap();
    let server_reasons: Rc<RefCell<Vec<Reason>>> = Rc::default();
    let ends = countdown(&reactor, 2 * N);
    let (sr, e) = (server_reasons.clone(), ends.clone());
    let port = listen(&reactor, move |_| {
        let lost = new_reason();
        sr.borrow_mut().push(lost.clone());
        Echo {
            on_lost: Some(Box::new(e.clone())),
            ..Echo::new(&lost)
        }
    });
    let mut results = Vec::new();
    for i in 0..N {
        let payload: Vec<u8> = format!("connection {i}: ")
            .bytes()
            .cycle()
            .take(4096)
            .collect();
        let client = Client {
            payload: payload.clone(),
            close_after: Some(payload.len()),
            on_lost: Some(Box::new(ends.clone())),
            ..Client::default()
        };
        results.push((payload, client.received.clone(), client.lost.clone()));
        let client = RefCell::new(Some(client));
        reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| {
            client.borrow_mut().take().unwrap_or_default()
        });
    }
    run(&reactor);
    for (payload, received, lost) in results {
        assert_eq!(*received.borrow(), payload);
        assert_eq!(kind(&lost), "ConnectionDone");
    }
    assert_eq!(server_reasons.borrow().len(), N);
    for reason in server_reasons.borrow().iter() {
        assert_eq!(kind(reason), "ConnectionDone");
    }
}

/// Sends `size` patterned bytes on connect, then closes.
struct Flood {
    size: usize,
    buffered_after_write: Rc<Cell<usize>>,
}

impl Protocol for Flood {
    fn connection_made(&mut self, t: TcpTransport) {
        let data: Vec<u8> = (0..self.size).map(|i| (i % 251) as u8).collect();
        t.write(&data);
        self.buffered_after_write.set(t.buffered());
        t.lose_connection();
    }
}

/// A client that reads nothing for a while (paused), then everything.
struct SlowReader {
    reactor: Reactor,
    received: Rc<RefCell<Vec<u8>>>,
    lost: Reason,
}

impl Protocol for SlowReader {
    fn connection_made(&mut self, t: TcpTransport) {
        t.pause_producing();
        self.reactor
            .call_later(0.1, move || t.resume_producing())
            .unwrap();
    }

    fn data_received(&mut self, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        stop(&self.reactor);
    }
}

// Twisted: test_tcp: TCPConnectionTestsBuilder (large writes);
// LargeBufferTests (a write much larger than the socket buffer, flushed
// before the connection closes)
#[test]
fn a_write_much_larger_than_the_socket_buffer_arrives_whole_before_the_close() {
    const SIZE: usize = 32 * 1024 * 1024;
    let reactor = Reactor::new().unwrap();
    let buffered = Rc::new(Cell::new(0));
    let b = buffered.clone();
    let port = listen(&reactor, move |_| Flood {
        size: SIZE,
        buffered_after_write: b.clone(),
    });
    let (received, lost) = (Rc::new(RefCell::new(Vec::new())), new_reason());
    let (rc, l, r) = (received.clone(), lost.clone(), reactor.clone());
    let reader = RefCell::new(Some(SlowReader {
        reactor: r,
        received: rc,
        lost: l,
    }));
    reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| {
        reader.borrow_mut().take().unwrap()
    });
    run(&reactor);
    assert_eq!(
        buffered.get(),
        SIZE,
        "the write was buffered, not sent synchronously"
    );
    let received = received.borrow();
    assert_eq!(received.len(), SIZE);
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8)
    );
    assert_eq!(kind(&lost), "ConnectionDone");
}

/// `IHalfCloseableProtocol`: answers once the peer has finished sending.
struct Replier {
    transport: Option<TcpTransport>,
    got: Vec<u8>,
    events: Rc<RefCell<Vec<String>>>,
    /// Stops the reactor when the connection ends.
    reactor: Option<Reactor>,
}

impl Protocol for Replier {
    fn connection_made(&mut self, t: TcpTransport) {
        self.transport = Some(t);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.got.extend_from_slice(data);
    }
    fn is_half_closeable(&self) -> bool {
        true
    }
    fn read_connection_lost(&mut self) {
        self.events.borrow_mut().push("read connection lost".into());
        if let Some(t) = &self.transport {
            t.write(b"reply to ");
            t.write(&self.got);
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        let ended = if reason.check::<ConnectionDone>() {
            "done"
        } else {
            "other"
        };
        self.events
            .borrow_mut()
            .push(format!("connection lost: {ended}"));
        if let Some(r) = &self.reactor {
            stop(r);
        }
    }
}

// Twisted: test_tcp: HalfCloseTests.testCloseWriteCloser,
// HalfCloseNoNotificationAndShutdownExceptionTests; ITCPTransport.loseWriteConnection
#[test]
fn a_half_closeable_server_answers_after_the_peer_half_closes() {
    let reactor = Reactor::new().unwrap();
    let events = Rc::new(RefCell::new(Vec::new()));
    let (e, r) = (events.clone(), reactor.clone());
    let port = listen(&reactor, move |_| Replier {
        transport: None,
        got: Vec::new(),
        events: e.clone(),
        reactor: Some(r.clone()),
    });
    let address = port.get_host();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(b"question").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap(); // half-close
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        answer
    });
    run(&reactor);
    assert_eq!(peer.join().unwrap(), b"reply to question");
    assert_eq!(
        *events.borrow(),
        ["read connection lost", "connection lost: done"]
    );
}

// Twisted: test_tcp: HalfCloseTests (a protocol that is not half-closeable
// sees the peer's half-close as the end of the connection)
#[test]
fn a_peer_half_close_ends_a_plain_protocol_with_connection_done() {
    let reactor = Reactor::new().unwrap();
    let lost = new_reason();
    let received = Rc::new(RefCell::new(Vec::new()));
    let (l, rc, r) = (lost.clone(), received.clone(), reactor.clone());
    let port = listen(&reactor, move |_| Client {
        received: rc.clone(),
        lost: l.clone(),
        on_lost: Some(Box::new({
            let r = r.clone();
            move || stop(&r)
        })),
        ..Client::default()
    });
    let address = port.get_host();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(b"last words").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    run(&reactor);
    peer.join().unwrap();
    assert_eq!(&*received.borrow(), b"last words");
    assert_eq!(kind(&lost), "ConnectionDone");
}

/// A half-closeable client that sends, shuts down its write side, and
/// records the order of what follows.
struct Asker {
    transport: Option<TcpTransport>,
    events: Rc<RefCell<Vec<String>>>,
    reactor: Reactor,
}

impl Protocol for Asker {
    fn connection_made(&mut self, t: TcpTransport) {
        t.write(b"ping");
        t.lose_write_connection();
        self.transport = Some(t);
    }
    fn is_half_closeable(&self) -> bool {
        true
    }
    fn write_connection_lost(&mut self) {
        self.events
            .borrow_mut()
            .push("write connection lost".into());
    }
    fn data_received(&mut self, data: &[u8]) {
        self.events
            .borrow_mut()
            .push(format!("received {}", String::from_utf8_lossy(data)));
    }
    fn read_connection_lost(&mut self) {
        self.events.borrow_mut().push("read connection lost".into());
        // Both directions are shut: close (HalfCloseTests' readConnectionLost).
        if let Some(t) = &self.transport {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, reason: Failure) {
        let ended = if reason.check::<ConnectionDone>() {
            "done"
        } else {
            "other"
        };
        self.events
            .borrow_mut()
            .push(format!("connection lost: {ended}"));
        stop(&self.reactor);
    }
}

// Twisted: test_tcp: HalfCloseTests.testWriteCloseNotification
#[test]
fn lose_write_connection_half_closes_and_the_answer_still_arrives() {
    let reactor = Reactor::new().unwrap();
    let server_events = Rc::new(RefCell::new(Vec::new()));
    let e = server_events.clone();
    let port = listen(&reactor, move |_| Replier {
        transport: None,
        got: Vec::new(),
        events: e.clone(),
        reactor: None,
    });
    let events = Rc::new(RefCell::new(Vec::new()));
    let (e, r) = (events.clone(), reactor.clone());
    let asker = RefCell::new(Some(Asker {
        transport: None,
        events: e,
        reactor: r,
    }));
    reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| {
        asker.borrow_mut().take().unwrap()
    });
    run(&reactor);
    let events = events.borrow();
    assert_eq!(events[0], "write connection lost");
    let received: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("received "))
        .collect();
    assert_eq!(received, "reply to ping");
    // The server's lose_connection reaches this side as EOF: a
    // half-closeable protocol hears of it as a lost read side, and its own
    // lose_connection then ends the connection cleanly.
    assert_eq!(
        events[events.len() - 2..],
        ["read connection lost", "connection lost: done"]
    );
    assert_eq!(
        *server_events.borrow(),
        ["read connection lost", "connection lost: done"]
    );
}

/// Aborts its connection as soon as it is made.
struct Aborter {
    lost: Reason,
}

impl Protocol for Aborter {
    fn connection_made(&mut self, t: TcpTransport) {
        t.write(b"this is never sent");
        t.abort_connection();
    }
    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
    }
}

// Twisted: test_tcp: AbortConnectionMixin.test_abortConnectionBeforeWrite (a
// peer that resets: the other side sees ConnectionLost, the aborting side
// ConnectionAborted)
#[test]
fn a_peer_that_resets_is_seen_as_connection_lost() {
    let reactor = Reactor::new().unwrap();
    let server_lost = new_reason();
    let received = Rc::new(RefCell::new(Vec::new()));
    let (sl, rc, r) = (server_lost.clone(), received.clone(), reactor.clone());
    let port = listen(&reactor, move |_| Client {
        received: rc.clone(),
        lost: sl.clone(),
        on_lost: Some(Box::new({
            let r = r.clone();
            move || stop(&r)
        })),
        ..Client::default()
    });
    let client_lost = new_reason();
    let cl = client_lost.clone();
    reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| Aborter {
        lost: cl.clone(),
    });
    run(&reactor);
    assert_eq!(kind(&client_lost), "ConnectionAborted");
    assert_eq!(kind(&server_lost), "ConnectionLost");
    assert!(is_connection_lost(server_lost.borrow().as_ref().unwrap()));
    assert!(
        received.borrow().is_empty(),
        "an aborted connection sent its buffer"
    );
}

// Twisted: test_tcp: ConnectionLosingTests.testLoseConnection /
// ProperlyCloseFilesTests (a client going away is seen promptly)
#[test]
fn a_client_that_goes_away_is_seen_as_connection_lost_promptly() {
    let reactor = Reactor::new().unwrap();
    let lost = new_reason();
    let (l, r) = (lost.clone(), reactor.clone());
    let port = listen(&reactor, move |_| Client {
        lost: l.clone(),
        on_lost: Some(Box::new({
            let r = r.clone();
            move || stop(&r)
        })),
        ..Client::default()
    });
    let address = port.get_host();
    // The client connects and closes; nothing else would wake the reactor
    // before the watchdog.
    let peer = thread::spawn(move || drop(TcpStream::connect(address).unwrap()));
    run(&reactor);
    peer.join().unwrap();
    assert_eq!(kind(&lost), "ConnectionDone");
}

// Twisted: test_tcp: TCPClientTestsBuilder.test_connectionRefused (via the
// connecting Deferred: ConnectionRefusedError)
#[test]
fn a_refused_connection_fails_the_deferred_with_connection_refused_error() {
    let reactor = Reactor::new().unwrap();
    let port = free_port();
    let d = reactor.connect_tcp(LOCALHOST, port, |_| Client::default());
    let r = reactor.clone();
    let d = d.add_both(move |outcome| {
        stop(&r);
        outcome
    });
    run(&reactor);
    let f = d.result().failure().unwrap();
    let refused = f.downcast_ref::<ConnectionRefusedError>().unwrap();
    assert_eq!(refused.address, SocketAddr::from(([127, 0, 0, 1], port)));
    d.add_errback(|_| Ok(Rc::new(RefCell::new(Client::default()))));
}

// Twisted: test_tcp: TCPPortTestsBuilder.test_portGetHostOnIPv4 /
// test_listenOnAlreadyUsedPort (CannotListenError)
#[test]
fn listening_on_a_port_in_use_fails_with_cannot_listen_error() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Client::default());
    let taken = port.get_host().port();
    let err: CannotListenError = reactor
        .listen_tcp_with(taken, |_| Client::default(), LOCALHOST, 50)
        .unwrap_err();
    assert_eq!(err.port, taken);
    assert_eq!(err.interface, LOCALHOST);
    assert_eq!(err.socket_error.kind(), std::io::ErrorKind::AddrInUse);
    assert!(
        err.to_string()
            .starts_with(&format!("Couldn't listen on 127.0.0.1:{taken}: "))
    );
}

#[test]
fn transports_know_both_addresses() {
    let reactor = Reactor::new().unwrap();
    let server_view: Rc<RefCell<Option<(SocketAddr, SocketAddr)>>> = Rc::default();
    let sv = server_view.clone();
    struct Note(Rc<RefCell<Option<(SocketAddr, SocketAddr)>>>);
    impl Protocol for Note {
        fn connection_made(&mut self, t: TcpTransport) {
            *self.0.borrow_mut() = Some((t.get_host(), t.get_peer()));
        }
    }
    let port = listen(&reactor, move |_| Note(sv.clone()));
    let client_view: Rc<RefCell<Option<(SocketAddr, SocketAddr)>>> = Rc::default();
    let cv = client_view.clone();
    let d = reactor.connect_tcp(LOCALHOST, port.get_host().port(), move |_| Note(cv.clone()));
    let r = reactor.clone();
    d.add_callback(move |_| {
        stop(&r);
        Ok(())
    });
    run(&reactor);
    let (server_host, server_peer) = server_view.borrow().unwrap();
    let (client_host, client_peer) = client_view.borrow().unwrap();
    assert_eq!(server_host, port.get_host());
    assert_eq!(client_peer, port.get_host());
    assert_eq!(server_peer, client_host);
}

// Twisted: test_tcp: TCPPortTestsBuilder (stopListening's Deferred, then
// connections are refused)
#[test]
fn stop_listening_closes_the_port_then_connections_are_refused() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Client::default());
    let number = port.get_host().port();
    let (r, p) = (reactor.clone(), port.clone());
    let refused = Rc::new(RefCell::new(None));
    let rf = refused.clone();
    port.stop_listening().add_callback(move |()| {
        assert!(!p.listening());
        let d = r.connect_tcp(LOCALHOST, number, |_| Client::default());
        let r2 = r.clone();
        d.add_errback(move |f| {
            *rf.borrow_mut() = Some(f.check::<ConnectionRefusedError>());
            stop(&r2);
            Err(f)
        })
        .add_errback(|_| Ok(Rc::new(RefCell::new(Client::default()))));
        Ok(())
    });
    run(&reactor);
    assert_eq!(*refused.borrow(), Some(true));
    assert!(port.stop_listening().called());
}

// Twisted: test_core: test_shutdownDisconnectsCleanly; ReactorBase.disconnectAll
#[test]
fn shutdown_disconnects_every_connection_with_connection_lost() {
    let reactor = Reactor::new().unwrap();
    let lost = new_reason();
    let (l, r) = (lost.clone(), reactor.clone());
    let port = listen(&reactor, move |_| {
        // Stop the reactor once a connection is up.
        let r2 = r.clone();
        r.call_later(0.0, move || stop(&r2)).unwrap();
        Client {
            lost: l.clone(),
            ..Client::default()
        }
    });
    let address = port.get_host();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // EOF once the server side closes
        wait.recv().ok();
    });
    run(&reactor);
    release.send(()).unwrap();
    peer.join().unwrap();
    assert_eq!(kind(&lost), "ConnectionLost");
    assert!(!port.listening());
}

/// Panics on the first data.
struct Fragile {
    lost: Reason,
    reactor: Reactor,
}

impl Protocol for Fragile {
    fn data_received(&mut self, _data: &[u8]) {
        panic!("protocol bug");
    }
    fn connection_lost(&mut self, reason: Failure) {
        *self.lost.borrow_mut() = Some(reason);
        stop(&self.reactor);
    }
}

// Twisted: test_tcp: an exception in dataReceived disconnects (posixbase
// _doReadOrWrite: "Any exception from application code ... will cause us to
// disconnect the selectable")
#[test]
fn a_panicking_protocol_method_closes_its_connection_with_that_failure() {
    let reactor = Reactor::new().unwrap();
    let lost = new_reason();
    let (l, r) = (lost.clone(), reactor.clone());
    let port = listen(&reactor, move |_| Fragile {
        lost: l.clone(),
        reactor: r.clone(),
    });
    let address = port.get_host();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(b"trigger").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    run(&reactor);
    peer.join().unwrap();
    assert_eq!(kind(&lost), "PanicError");
    assert_eq!(lost.borrow().as_ref().unwrap().message(), "protocol bug");
}

/// A client factory that builds nothing.
struct Nothing;

impl Factory for Nothing {
    type Protocol = Client;
    fn build_protocol(&self, _addr: SocketAddr) -> Option<Client> {
        None
    }
}

// Twisted: test_endpoints: a factory returning None from buildProtocol fails
// the connect Deferred with NoProtocol
#[test]
fn a_client_factory_that_builds_nothing_fails_with_no_protocol() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Client::default());
    let d = reactor.connect_tcp(LOCALHOST, port.get_host().port(), Nothing);
    let r = reactor.clone();
    let d = d.add_both(move |o| {
        stop(&r);
        o
    });
    run(&reactor);
    assert!(d.result().failure().unwrap().check::<NoProtocol>());
    d.add_errback(|_| Ok(Rc::new(RefCell::new(Client::default()))));
}

// Twisted: test_endpoints: cancelling a connection attempt fails it with
// ConnectingCancelledError
#[test]
fn cancelling_a_connection_attempt_fails_it_with_connecting_cancelled_error() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Client::default());
    let d = reactor.connect_tcp(LOCALHOST, port.get_host().port(), |_| Client::default());
    d.cancel().unwrap();
    let f = d.result().failure().unwrap();
    let cancelled = f.downcast_ref::<ConnectingCancelledError>().unwrap();
    assert_eq!(
        cancelled.address,
        format!("127.0.0.1:{}", port.get_host().port())
    );
    d.add_errback(|_| Ok(Rc::new(RefCell::new(Client::default()))));
    // Nothing was left behind: the reactor stops with no connection made.
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.stop()
    });
    run(&reactor);
}

// Twisted: test_tcp: TCPClientTestsBuilder (a host name is resolved first)
#[test]
fn a_host_name_is_resolved_before_connecting() {
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Client::default());
    let d = reactor.connect_tcp("localhost", port.get_host().port(), |_| Client::default());
    let r = reactor.clone();
    let d = d.add_both(move |o| {
        stop(&r);
        o.map(|_| ())
    });
    run(&reactor);
    assert_eq!(d.result().value(), Some(()));
}

// Twisted: test_tcp: TCPClientTestsBuilder.test_connectTimeout-like: a
// listener whose backlog is full drops SYNs, so the attempt times out.
#[test]
fn a_connection_attempt_that_never_completes_times_out() {
    let reactor = Reactor::new().unwrap();
    // A listener that never accepts, with its tiny backlog filled.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&address.into());
        fillers.push(s);
    }
    let d = reactor.connect_tcp_with_timeout(LOCALHOST, address.port(), |_| Client::default(), 0.5);
    let r = reactor.clone();
    let d: Deferred<_> = d.add_both(move |o| {
        stop(&r);
        o
    });
    run(&reactor);
    match d.result().failure() {
        Some(f) => assert!(f.check::<ConnectTimeoutError>(), "{f}"),
        // Some kernels accept past the backlog; then there is nothing to time out.
        None => eprintln!("the connection was accepted despite the full backlog"),
    }
    d.add_errback(|_| Ok(Rc::new(RefCell::new(Client::default()))));
    drop(fillers);
}

// Twisted: test_tcp: WriteSequenceTestsMixin.test_writeSequenceWithoutWrite
#[test]
fn write_sequence_sends_the_pieces_in_order() {
    struct Sequence;
    impl Protocol for Sequence {
        fn connection_made(&mut self, t: TcpTransport) {
            t.write_sequence(&[b"Some ", b"sequence ", b"splitted"]);
            t.lose_connection();
        }
    }
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, |_| Sequence);
    let address = port.get_host();
    let handle = reactor.handle();
    let peer = thread::spawn(move || {
        let mut got = Vec::new();
        TcpStream::connect(address)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
        got
    });
    run(&reactor);
    assert_eq!(peer.join().unwrap(), b"Some sequence splitted");
}

/// Counts factory starts and stops.
struct Counting {
    starts: Rc<Cell<u32>>,
    stops: Rc<Cell<u32>>,
}

impl Factory for Counting {
    type Protocol = Client;
    fn build_protocol(&self, _addr: SocketAddr) -> Option<Client> {
        Some(Client::default())
    }
    fn start_factory(&self) {
        self.starts.set(self.starts.get() + 1);
    }
    fn stop_factory(&self) {
        self.stops.set(self.stops.get() + 1);
    }
}

// Twisted: test_factories / test_tcp: FactoryTests (doStart on listen, doStop
// when the port stops)
#[test]
fn a_ports_factory_is_started_and_stopped_with_the_port() {
    let reactor = Reactor::new().unwrap();
    let (starts, stops) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let port = listen(
        &reactor,
        Counting {
            starts: starts.clone(),
            stops: stops.clone(),
        },
    );
    assert_eq!((starts.get(), stops.get()), (1, 0));
    let r = reactor.clone();
    port.stop_listening()
        .add_callback(move |()| r.stop().map_err(Failure::from));
    run(&reactor);
    assert_eq!((starts.get(), stops.get()), (1, 1));
}

// A server factory returning None refuses the connection (closes it).
#[test]
fn a_server_factory_that_builds_nothing_closes_the_connection() {
    struct Refuse;
    impl Factory for Refuse {
        type Protocol = Client;
        fn build_protocol(&self, _addr: SocketAddr) -> Option<Client> {
            None
        }
    }
    let reactor = Reactor::new().unwrap();
    let port = listen(&reactor, Refuse);
    let address = port.get_host();
    let handle = reactor.handle();
    let peer = thread::spawn(move || {
        let mut got = Vec::new();
        let outcome = TcpStream::connect(address).unwrap().read_to_end(&mut got);
        handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
        (outcome.is_ok(), got.len())
    });
    run(&reactor);
    assert_eq!(peer.join().unwrap(), (true, 0));
}

// Dropping a reactor (without running it to a stop) closes its sockets:
// a connection and its protocol, which holds the transport, do not keep
// each other alive.
#[test]
fn dropping_a_reactor_closes_its_connections() {
    let reactor = Reactor::new().unwrap();
    let made = Rc::new(Cell::new(false));
    let m = made.clone();
    let port = listen(&reactor, move |_| {
        m.set(true);
        Client::default()
    });
    let address = port.get_host();
    let peer = thread::spawn(move || {
        let mut s = TcpStream::connect(address).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map(|_| rest.len())
    });
    while !made.get() {
        reactor.iterate(1.0).unwrap();
    }
    drop(port);
    drop(reactor);
    assert_eq!(peer.join().unwrap().unwrap(), 0);
}
