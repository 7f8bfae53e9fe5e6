//! An echo server, as Twisted's `docs/core/examples/echoserv.py`:
//!
//! ```python
//! class Echo(Protocol):
//!     def dataReceived(self, data):
//!         self.transport.write(data)
//!
//! reactor.listenTCP(8000, Factory.forProtocol(Echo))
//! reactor.run()
//! ```
//!
//! ```sh
//! cargo run -p twisted-reactor --example echo                 # serves 127.0.0.1:8000 until Ctrl-C
//! cargo run -p twisted-reactor --example echo -- 9000         # another port
//! cargo run -p twisted-reactor --example echo -- --self-test  # serves, connects to itself, checks, exits
//! ```
//!
//! Try it with `nc 127.0.0.1 8000`.

use std::cell::RefCell;
use std::rc::Rc;

use twisted_deferred::Failure;
use twisted_reactor::{Protocol, Reactor, TcpTransport};

/// `class Echo(Protocol)`.
#[derive(Default)]
struct Echo {
    transport: Option<TcpTransport>,
    /// In the self-test, the reactor to stop once the connection ends.
    stop_when_lost: Option<Reactor>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, transport: TcpTransport) {
        println!("connection from {}", transport.get_peer());
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        // self.transport.write(data)
        if let Some(transport) = &self.transport {
            transport.write(data);
        }
    }

    fn connection_lost(&mut self, reason: Failure) {
        if let Some(transport) = self.transport.take() {
            println!("{} went away: {reason}", transport.get_peer());
        }
        if let Some(reactor) = self.stop_when_lost.take() {
            let _ = reactor.stop();
        }
    }
}

/// The self-test's client: sends a line, checks it comes back, hangs up.
struct Check {
    transport: Option<TcpTransport>,
    received: Rc<RefCell<Vec<u8>>>,
}

const LINE: &[u8] = b"hello, echo\r\n";

impl Protocol for Check {
    fn connection_made(&mut self, transport: TcpTransport) {
        transport.write(LINE);
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.received.borrow_mut().extend_from_slice(data);
        if self.received.borrow().len() >= LINE.len()
            && let Some(t) = &self.transport
        {
            t.lose_connection();
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let self_test = args.iter().any(|a| a == "--self-test");
    let port: u16 = match args.iter().find(|a| !a.starts_with("--")) {
        Some(p) => p.parse()?,
        None if self_test => 0,
        None => 8000,
    };

    let reactor = Reactor::new()?;
    // reactor.listenTCP(8000, Factory.forProtocol(Echo), interface="127.0.0.1")
    let stop_when_lost = self_test.then(|| reactor.clone());
    let listening = reactor.listen_tcp_with(
        port,
        move |_addr| Echo {
            transport: None,
            stop_when_lost: stop_when_lost.clone(),
        },
        "127.0.0.1",
        50,
    )?;
    println!("echo server on {}", listening.get_host());

    let received = Rc::new(RefCell::new(Vec::new()));
    if self_test {
        let (r, got) = (reactor.clone(), received.clone());
        let check = RefCell::new(Some(Check {
            transport: None,
            received: got,
        }));
        let d = reactor.connect_tcp("127.0.0.1", listening.get_host().port(), move |_| {
            check.borrow_mut().take().unwrap_or(Check {
                transport: None,
                received: Rc::default(),
            })
        });
        d.add_errback(move |f: Failure| {
            eprintln!("could not connect: {f}");
            let _ = r.stop();
            Err(f)
        });
    }
    reactor.run()?;

    if self_test {
        if received.borrow().as_slice() != LINE {
            return Err(format!("echoed {:?}", String::from_utf8_lossy(&received.borrow())).into());
        }
        println!(
            "self-test passed: {:?} came back",
            String::from_utf8_lossy(LINE)
        );
    }
    Ok(())
}
