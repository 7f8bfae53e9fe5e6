//! `cargo run --release -p benches --bin soak [-- OPTIONS]`: a soak test of
//! the HTTP demo server (`compat/examples/http_demo.rs`). The server runs as
//! a child process (so that the memory and file descriptors measured are its
//! own, from `/proc/PID/status` and `/proc/PID/fd`); client threads on
//! loopback send it a mix of requests for minutes, a share of them closing
//! their socket mid-request; then the server is left to settle and its
//! `GET /stats` is checked against what the clients did.
//!
//! The mix: fast requests that complete, on keep-alive connections
//! (`GET /shared/k{0..7}` whose gates are open, `GET /state`,
//! `GET /sleep/0`, now and then with `Connection: close`), and disconnects
//! on fresh connections: `GET /sleep/5` (a `#[cancellable]` handler,
//! cancelled at once), `POST /delayed/d{epoch}` (cancelled behind
//! `delay_cancellation`: its 499 comes once the gate opens) and
//! `GET /shared/s{epoch}` (an observer of a shared computation, cancelled
//! alone). The gates of epoch `e` (one a second of load) are opened by a
//! thread of their own a few seconds after the epoch ends, so that the
//! server has seen every disconnect of the epoch first and the gates it
//! keeps number two a second, not one a request.
//!
//! Options:
//!   --seconds S            load duration (60)
//!   --clients N            client threads (16)
//!   --disconnect-share P   share of operations that disconnect mid-request (0.3)
//!   --server PATH          the demo binary (default: built with cargo, same profile)
//!   --rss-tolerance-mib M  allowed RSS growth from the warm-up mark to the end (2)
//!   --rss-tolerance-pct P  ... or this share of the warm-up RSS, whichever is larger (10)
//!   --fd-slack N           allowed extra descriptors at the end (2)
//!   --settle S             longest wait for the server to settle (30)
//!
//! It exits non-zero if the server's RSS grew beyond the tolerance after the
//! warm-up (the first 20% of the load), it holds more descriptors at the end
//! than at the start (plus the slack), the handlers it cancelled are not the
//! disconnects from cancellable endpoints, a request's logging context or a
//! background process's was left unfinished, an error was logged or a
//! failure went unhandled, or a request that should have completed did not.
//! Linux only (`/proc`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a client waits on the server before calling it a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after an epoch ends its gates are opened.
const GATE_DELAY: Duration = Duration::from_secs(3);
/// The warm-up: this share of the load comes before the RSS baseline.
const WARM_UP: f64 = 0.2;
/// The keys of the fast `/shared` requests (their gates opened first).
const FAST_KEYS: u64 = 8;

#[derive(Debug)]
struct Options {
    seconds: u64,
    clients: usize,
    disconnect_share: f64,
    server: Option<PathBuf>,
    rss_tolerance_mib: f64,
    rss_tolerance_pct: f64,
    fd_slack: usize,
    settle: u64,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        seconds: 60,
        clients: 16,
        disconnect_share: 0.3,
        server: None,
        rss_tolerance_mib: 2.0,
        rss_tolerance_pct: 10.0,
        fd_slack: 2,
        settle: 30,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        let bad = || format!("{flag}: bad value {value:?}");
        let int = |v: &str| v.parse::<u64>().map_err(|_| bad());
        let float = |v: &str| v.parse::<f64>().map_err(|_| bad());
        match flag.as_str() {
            "--seconds" => opts.seconds = int(&value)?,
            "--clients" => opts.clients = int(&value)? as usize,
            "--disconnect-share" => opts.disconnect_share = float(&value)?,
            "--server" => opts.server = Some(PathBuf::from(&value)),
            "--rss-tolerance-mib" => opts.rss_tolerance_mib = float(&value)?,
            "--rss-tolerance-pct" => opts.rss_tolerance_pct = float(&value)?,
            "--fd-slack" => opts.fd_slack = int(&value)? as usize,
            "--settle" => opts.settle = int(&value)?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if opts.seconds == 0 || opts.clients == 0 || !(0.0..=1.0).contains(&opts.disconnect_share) {
        return Err("need --seconds > 0, --clients > 0, 0 <= --disconnect-share <= 1".into());
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------
// The server process

/// The demo server, killed when dropped (also when the soak panics).
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The demo binary: `--server`, or built here with the soak's own profile.
fn server_binary(opts: &Options) -> Result<PathBuf, String> {
    if let Some(path) = &opts.server {
        return Ok(path.clone());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(workspace).args([
        "build",
        "-q",
        "-p",
        "twisted-compat",
        "--example",
        "http_demo",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the demo failed: {status}"));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory for the soak binary")?;
    Ok(dir.join("examples").join("http_demo"))
}

/// What the server printed, counted by [`drain_output`].
#[derive(Debug, Default)]
struct OutputCounts {
    lines: AtomicU64,
    logged_499: AtomicU64,
    errors: AtomicU64,
    logcontext_warnings: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

/// Starts the server on a port of its choosing and reads the port from its
/// first lines.
fn start_server(path: &Path, counts: Arc<OutputCounts>) -> Result<Server, String> {
    let mut child = Command::new(path)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let address = loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the server exited before serving".into());
            }
            Ok(_) => {}
        }
        if let Some(rest) = line.trim().strip_prefix("serving on http://") {
            match rest.parse() {
                Ok(a) => break a,
                Err(e) => return Err(format!("bad address {rest:?}: {e}")),
            }
        }
    };
    thread::spawn(move || drain_output(reader, &counts));
    Ok(Server { child, address })
}

/// Reads the server's output to its end (a full pipe would stall it),
/// counting access-log `499!` lines, errors and logcontext warnings.
fn drain_output(reader: BufReader<ChildStdout>, counts: &OutputCounts) {
    for line in reader.lines() {
        let Ok(line) = line else { break };
        counts.lines.fetch_add(1, Ordering::Relaxed);
        if line.contains(" 499! \"") {
            counts.logged_499.fetch_add(1, Ordering::Relaxed);
        }
        if line.starts_with("ERROR") {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = counts.first_errors.lock()
                && first.len() < 5
            {
                first.push(line.clone());
            }
        }
        if line.starts_with("WARN synapse.logging.context") {
            counts.logcontext_warnings.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// How many descriptors `pid` holds.
fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// HTTP over std::net

fn connect(address: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn send(stream: &mut TcpStream, method: &str, path: &str, close: bool) -> io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: soak\r\nUser-Agent: soak\r\n{connection}Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes())
}

/// Reads one response (status and body; `Content-Length` framing, which is
/// all the server sends). Bytes after it stay in `buf`.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, Vec<u8>)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| invalid("no Content-Length"))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok((status, body))
}

/// One request on a connection of its own.
fn request(address: SocketAddr, method: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = connect(address)?;
    send(&mut stream, method, path, true)?;
    let (status, body) = read_response(&mut stream, &mut Vec::new())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The integer at `"key":` in a JSON body (the demo's are compact, keys
/// unique enough for this).
fn json_int(body: &str, key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let start = body.find(&needle)? + needle.len();
    let digits: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The object at `"key":{…}` (no nested objects inside).
fn json_object<'a>(body: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\":{{");
    body.find(&needle)
        .map(|i| {
            let rest = &body[i + needle.len()..];
            &rest[..rest.find('}').unwrap_or(rest.len())]
        })
        .unwrap_or("")
}

/// The server's `GET /stats`, the fields the soak checks.
#[derive(Debug, Default, Clone, PartialEq)]
struct Stats {
    received: u64,
    processed: u64,
    in_flight: u64,
    disconnects: u64,
    dropped: u64,
    logged_499: u64,
    cancelled_sleep: u64,
    cancelled_shared: u64,
    cancelled_delayed: u64,
    cancelled_total: u64,
    background_started: u64,
    background_finished: u64,
    unhandled_errors: u64,
    logcontext_errors: u64,
    error_logs: u64,
    gates: u64,
}

fn fetch_stats(address: SocketAddr) -> Result<Stats, String> {
    let (status, body) = request(address, "GET", "/stats").map_err(|e| format!("/stats: {e}"))?;
    if status != 200 {
        return Err(format!("/stats: {status} {body}"));
    }
    let get = |scope: &str, key: &str| {
        json_int(scope, key).ok_or_else(|| format!("/stats: no {key} in {body}"))
    };
    let requests = json_object(&body, "requests");
    let cancelled = json_object(&body, "cancelled");
    let background = json_object(&body, "background_contexts");
    Ok(Stats {
        received: get(requests, "received")?,
        processed: get(requests, "processed")?,
        in_flight: get(requests, "in_flight")?,
        disconnects: get(&body, "disconnects")?,
        dropped: get(&body, "responses_dropped")?,
        logged_499: get(&body, "access_log_499")?,
        cancelled_sleep: get(cancelled, "sleep")?,
        cancelled_shared: get(cancelled, "shared")?,
        cancelled_delayed: get(cancelled, "delayed")?,
        cancelled_total: get(cancelled, "total")?,
        background_started: get(background, "started")?,
        background_finished: get(background, "finished")?,
        unhandled_errors: get(&body, "unhandled_errors")?,
        logcontext_errors: get(&body, "logcontext_errors")?,
        error_logs: get(&body, "error_logs")?,
        gates: get(&body, "gates")?,
    })
}

// ---------------------------------------------------------------------------
// The load

/// What the clients did.
#[derive(Debug, Default)]
struct Tally {
    /// Every request written to a socket (gate opens too; not the final
    /// stats polls, counted by [`settle`]).
    sent: AtomicU64,
    fast_sent: AtomicU64,
    fast_completed: AtomicU64,
    fast_failed: AtomicU64,
    disconnect_sleep: AtomicU64,
    disconnect_delayed: AtomicU64,
    disconnect_shared: AtomicU64,
    /// Operations that failed before their request was written.
    connect_failed: AtomicU64,
    gates_opened: AtomicU64,
    gate_failures: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn disconnects(&self) -> u64 {
        Tally::get(&self.disconnect_sleep)
            + Tally::get(&self.disconnect_delayed)
            + Tally::get(&self.disconnect_shared)
    }

    fn note_failure(&self, what: String) {
        if let Ok(mut first) = self.first_failures.lock()
            && first.len() < 5
        {
            first.push(what);
        }
    }
}

/// A small xorshift generator: the mix needs no more.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The clock of the load: gate epochs count seconds from its start.
#[derive(Debug, Clone, Copy)]
struct Load {
    address: SocketAddr,
    start: Instant,
    end: Instant,
    disconnect_share: f64,
}

impl Load {
    fn epoch(&self) -> u64 {
        self.start.elapsed().as_secs()
    }
}

/// One client thread: operations until the end of the load.
fn client(load: Load, index: u64, tally: &Tally) {
    let mut rng = Rng::new(index + 1);
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    while Instant::now() < load.end {
        if rng.unit() < load.disconnect_share {
            disconnect(load, &mut rng, tally);
        } else {
            fast(load, &mut rng, &mut conn, tally);
        }
    }
}

/// A request to a slow cancellable endpoint on a fresh connection, closed
/// a few milliseconds later.
fn disconnect(load: Load, rng: &mut Rng, tally: &Tally) {
    let pick = rng.below(10);
    let epoch = load.epoch();
    let (method, path, counter) = match pick {
        0..=5 => ("GET", "/sleep/5".to_owned(), &tally.disconnect_sleep),
        6 | 7 => (
            "POST",
            format!("/delayed/d{epoch}"),
            &tally.disconnect_delayed,
        ),
        _ => ("GET", format!("/shared/s{epoch}"), &tally.disconnect_shared),
    };
    let mut stream = match connect(load.address) {
        Ok(s) => s,
        Err(e) => {
            Tally::add(&tally.connect_failed);
            tally.note_failure(format!("connect: {e}"));
            return;
        }
    };
    if let Err(e) = send(&mut stream, method, &path, false) {
        Tally::add(&tally.connect_failed);
        tally.note_failure(format!("{method} {path}: {e}"));
        return;
    }
    Tally::add(&tally.sent);
    Tally::add(counter);
    thread::sleep(Duration::from_millis(5 + rng.below(75)));
    drop(stream);
}

/// A request that completes, on the thread's keep-alive connection.
fn fast(load: Load, rng: &mut Rng, conn: &mut Option<(TcpStream, Vec<u8>)>, tally: &Tally) {
    let path = match rng.below(3) {
        0 => format!("/shared/k{}", rng.below(FAST_KEYS)),
        1 => "/state".to_owned(),
        _ => "/sleep/0".to_owned(),
    };
    let close = rng.below(20) == 0;
    if conn.is_none() {
        match connect(load.address) {
            Ok(s) => *conn = Some((s, Vec::new())),
            Err(e) => {
                Tally::add(&tally.connect_failed);
                tally.note_failure(format!("connect: {e}"));
                return;
            }
        }
    }
    let Some((stream, buf)) = conn.as_mut() else {
        return;
    };
    let result = send(stream, "GET", &path, close).and_then(|()| {
        Tally::add(&tally.sent);
        Tally::add(&tally.fast_sent);
        read_response(stream, buf)
    });
    let completed = matches!(result, Ok((200, _)));
    match result {
        Ok((200, _)) => Tally::add(&tally.fast_completed),
        Ok((status, body)) => {
            Tally::add(&tally.fast_failed);
            tally.note_failure(format!(
                "GET {path}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Err(e) => {
            Tally::add(&tally.fast_failed);
            tally.note_failure(format!("GET {path}: {e}"));
        }
    }
    if close || !completed {
        *conn = None;
    }
}

/// Opens the gates of the epochs that ended [`GATE_DELAY`] ago, until told
/// to stop; then, after that delay, the rest.
fn gate_opener(load: Load, stop: &AtomicBool, tally: &Tally) {
    let mut next = 0;
    let open_until = |last: u64, next: &mut u64| {
        while *next <= last {
            for gate in [format!("d{next}"), format!("s{next}")] {
                Tally::add(&tally.sent);
                match request(load.address, "POST", &format!("/gates/{gate}/open")) {
                    Ok((200, _)) => Tally::add(&tally.gates_opened),
                    other => {
                        Tally::add(&tally.gate_failures);
                        tally.note_failure(format!("open {gate}: {other:?}"));
                    }
                }
            }
            *next += 1;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        // Epoch e ends at e + 1 s.
        let settled = load.start.elapsed().saturating_sub(GATE_DELAY).as_secs();
        if settled >= 1 {
            open_until(settled - 1, &mut next);
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(GATE_DELAY);
    let last = load.end.saturating_duration_since(load.start).as_secs();
    open_until(last, &mut next);
}

// ---------------------------------------------------------------------------
// The run

/// One second's sample of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    fds: usize,
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    Some(Sample {
        at: start.elapsed(),
        rss_kib,
        hwm_kib,
        fds: fd_count(pid)?,
    })
}

/// Samples the server every second until told to stop.
fn sampler(
    pid: u32,
    load: Load,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> JoinHandle<Vec<Sample>> {
    thread::spawn(move || {
        let mut samples = Vec::new();
        let mut next = load.start;
        let mut last_report = 0;
        while !stop.load(Ordering::Relaxed) {
            next += Duration::from_secs(1);
            thread::sleep(next.saturating_duration_since(Instant::now()));
            let Some(s) = sample(pid, load.start) else {
                break;
            };
            let secs = s.at.as_secs();
            if secs / 10 > last_report / 10 {
                last_report = secs;
                println!(
                    "  {secs:>4}s  rss {:>6.1} MiB  fds {:>4}  fast {:>8}  disconnects {:>6}",
                    mib(s.rss_kib),
                    s.fds,
                    Tally::get(&tally.fast_completed),
                    tally.disconnects()
                );
            }
            samples.push(s);
        }
        samples
    })
}

/// Polls `/stats` until the server has nothing in flight, every background
/// context finished and every expected cancellation happened, and two
/// polls agree; or until `limit`. Returns the last stats and the number of
/// polls.
fn settle(
    address: SocketAddr,
    expected_cancelled: u64,
    limit: Duration,
) -> Result<(Stats, u64), String> {
    let deadline = Instant::now() + limit;
    let mut previous: Option<Stats> = None;
    let mut polls = 0;
    loop {
        let stats = fetch_stats(address)?;
        polls += 1;
        let quiet = stats.in_flight == 0
            && stats.background_started == stats.background_finished
            && stats.cancelled_total >= expected_cancelled;
        // Between two polls only the poll itself is new.
        let steady = previous.as_ref().is_some_and(|p| {
            p.cancelled_total == stats.cancelled_total && p.received + 1 == stats.received
        });
        if (quiet && steady) || Instant::now() >= deadline {
            return Ok((stats, polls));
        }
        previous = Some(stats);
        thread::sleep(Duration::from_millis(500));
    }
}

/// A check's verdict, printed.
struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failed += 1;
        }
        println!("  [{}] {what}", if ok { " ok " } else { "FAIL" });
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}\n(see the header of benches/src/bin/soak.rs for the options)");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<bool, String> {
    let binary = server_binary(opts)?;
    let output = Arc::new(OutputCounts::default());
    let server = start_server(&binary, output.clone())?;
    let pid = server.pid();
    let address = server.address;
    println!(
        "soak: {} (pid {pid}) on {address}: {} s, {} clients, {:.0}% disconnecting",
        binary.display(),
        opts.seconds,
        opts.clients,
        opts.disconnect_share * 100.0
    );

    // The gates of the fast /shared requests, then the baseline.
    let tally = Arc::new(Tally::default());
    for k in 0..FAST_KEYS {
        Tally::add(&tally.sent);
        let (status, body) = request(address, "POST", &format!("/gates/k{k}/open"))
            .map_err(|e| format!("opening k{k}: {e}"))?;
        if status != 200 {
            return Err(format!("opening k{k}: {status} {body}"));
        }
    }
    thread::sleep(Duration::from_millis(200));
    let start_sample = sample(pid, Instant::now()).ok_or("cannot read /proc for the server")?;

    let start = Instant::now();
    let load = Load {
        address,
        start,
        end: start + Duration::from_secs(opts.seconds),
        disconnect_share: opts.disconnect_share,
    };
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampling = sampler(pid, load, stop_sampling.clone(), tally.clone());
    let stop_gates = Arc::new(AtomicBool::new(false));
    let gates = {
        let (stop, tally) = (stop_gates.clone(), tally.clone());
        thread::spawn(move || gate_opener(load, &stop, &tally))
    };
    let clients: Vec<JoinHandle<()>> = (0..opts.clients as u64)
        .map(|i| {
            let tally = tally.clone();
            thread::spawn(move || client(load, i, &tally))
        })
        .collect();
    for c in clients {
        c.join().map_err(|_| "a client thread panicked")?;
    }
    let load_time = start.elapsed();
    let end_of_load = sample(pid, start);
    stop_gates.store(true, Ordering::Relaxed);
    gates.join().map_err(|_| "the gate thread panicked")?;

    // Settle, then the final figures.
    let expected = tally.disconnects();
    let (stats, polls) = settle(address, expected, Duration::from_secs(opts.settle))?;
    // The stats polls are requests too.
    let sent = Tally::get(&tally.sent) + polls;
    stop_sampling.store(true, Ordering::Relaxed);
    let mut samples = sampling.join().map_err(|_| "the sampler panicked")?;
    let settled = sample(pid, start).ok_or("the server is gone")?;
    // Our last /stats connection closes asynchronously: give the server a
    // moment before judging its descriptors.
    let mut end_fds = settled.fds;
    for _ in 0..20 {
        if end_fds <= start_sample.fds {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        end_fds = fd_count(pid).unwrap_or(end_fds);
    }
    samples.extend(end_of_load);
    samples.push(settled);
    let end_rss = memory_kib(pid).map_or(settled.rss_kib, |m| m.0);
    let peak_hwm = memory_kib(pid).map_or(settled.hwm_kib, |m| m.1);
    drop(server);
    // The output drains to its end once the server is gone.
    thread::sleep(Duration::from_millis(200));

    let warm_mark = load_time.mul_f64(WARM_UP);
    let warm = samples
        .iter()
        .find(|s| s.at >= warm_mark)
        .copied()
        .unwrap_or(settled);
    let sampled_peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // VmHWM is brought up to date lazily: a sample may be above it.
    let peak_rss = sampled_peak.max(peak_hwm);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let t = |c: &AtomicU64| Tally::get(c);
    let fast_sent = t(&tally.fast_sent);
    let fast_completed = t(&tally.fast_completed);
    let seconds = load_time.as_secs_f64();

    println!("\nload: {seconds:.1} s");
    println!(
        "  requests sent {sent} ({} fast: {} completed = {:.0}/s, {} failed; {} disconnecting; {} gate opens)",
        fast_sent,
        fast_completed,
        fast_completed as f64 / seconds,
        t(&tally.fast_failed),
        tally.disconnects(),
        t(&tally.gates_opened) + FAST_KEYS,
    );
    println!(
        "  disconnects {} (/sleep/5 {}, /delayed {}, /shared {}); connects failed {}",
        tally.disconnects(),
        t(&tally.disconnect_sleep),
        t(&tally.disconnect_delayed),
        t(&tally.disconnect_shared),
        t(&tally.connect_failed)
    );
    println!("server:");
    println!(
        "  requests received {} processed {} in flight {}; disconnects handled {}; responses dropped {}",
        stats.received, stats.processed, stats.in_flight, stats.disconnects, stats.dropped
    );
    println!(
        "  handlers cancelled {} (sleep {}, shared {}, delayed {}); access log 499! {} (output: {})",
        stats.cancelled_total,
        stats.cancelled_sleep,
        stats.cancelled_shared,
        stats.cancelled_delayed,
        stats.logged_499,
        output.logged_499.load(Ordering::Relaxed)
    );
    println!(
        "  background contexts started {} finished {}; gates {}",
        stats.background_started, stats.background_finished, stats.gates
    );
    println!(
        "  unhandled errors {}, logcontext errors {}, error logs {} (output: {} errors, {} logcontext warnings, {} lines)",
        stats.unhandled_errors,
        stats.logcontext_errors,
        stats.error_logs,
        output.errors.load(Ordering::Relaxed),
        output.logcontext_warnings.load(Ordering::Relaxed),
        output.lines.load(Ordering::Relaxed)
    );
    println!(
        "  RSS start {:.1} MiB, after warm-up ({:.0} s) {:.1} MiB, peak {:.1} MiB, end {:.1} MiB",
        mib(start_sample.rss_kib),
        warm.at.as_secs_f64(),
        mib(warm.rss_kib),
        mib(peak_rss),
        mib(end_rss)
    );
    println!(
        "  fds start {}, peak {}, end {}",
        start_sample.fds, max_fds, end_fds
    );
    for failure in tally.first_failures.lock().iter().flat_map(|f| f.iter()) {
        println!("  client failure: {failure}");
    }
    for error in output.first_errors.lock().iter().flat_map(|f| f.iter()) {
        println!("  server error: {error}");
    }

    println!("checks:");
    let mut checks = Checks { failed: 0 };
    let tolerance_kib =
        (opts.rss_tolerance_mib * 1024.0).max(warm.rss_kib as f64 * opts.rss_tolerance_pct / 100.0);
    let growth = end_rss as f64 - warm.rss_kib as f64;
    checks.check(
        growth <= tolerance_kib,
        format!(
            "RSS after warm-up to end {:+.2} MiB (tolerance {:.2} MiB)",
            growth / 1024.0,
            tolerance_kib / 1024.0
        ),
    );
    checks.check(
        end_fds <= start_sample.fds + opts.fd_slack,
        format!(
            "fds at end {end_fds} <= start {} + {}",
            start_sample.fds, opts.fd_slack
        ),
    );
    checks.check(
        stats.disconnects == expected,
        format!(
            "disconnects handled {} == disconnects made {expected}",
            stats.disconnects
        ),
    );
    checks.check(
        stats.cancelled_sleep == t(&tally.disconnect_sleep)
            && stats.cancelled_delayed == t(&tally.disconnect_delayed)
            && stats.cancelled_shared == t(&tally.disconnect_shared),
        format!(
            "handlers cancelled {} == disconnects from cancellable endpoints {expected}, per endpoint",
            stats.cancelled_total
        ),
    );
    checks.check(
        stats.logged_499 == expected,
        format!("access-log 499! lines {} == {expected}", stats.logged_499),
    );
    checks.check(
        stats.received == sent,
        format!("requests received {} == sent {sent}", stats.received),
    );
    // The last poll is still in flight when it reads the counters.
    checks.check(
        stats.in_flight == 0 && stats.received == stats.processed + 1,
        format!(
            "request contexts started {} == finished (access-log line written) {} + the stats request",
            stats.received, stats.processed
        ),
    );
    checks.check(
        stats.background_started == stats.background_finished,
        format!(
            "background contexts started {} == finished {}",
            stats.background_started, stats.background_finished
        ),
    );
    checks.check(
        stats.unhandled_errors == 0
            && stats.logcontext_errors == 0
            && stats.error_logs == 0
            && output.errors.load(Ordering::Relaxed) == 0
            && output.logcontext_warnings.load(Ordering::Relaxed) == 0,
        "no unhandled error, logcontext misuse or error logged".to_owned(),
    );
    checks.check(
        t(&tally.fast_failed) == 0 && t(&tally.connect_failed) == 0 && t(&tally.gate_failures) == 0,
        format!(
            "every fast request completed ({fast_completed} of {fast_sent}), every connect and gate open succeeded"
        ),
    );
    if checks.failed == 0 {
        println!("soak: PASS");
    } else {
        println!("soak: FAIL ({} checks)", checks.failed);
    }
    Ok(checks.failed == 0)
}
