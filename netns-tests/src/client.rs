//! The clients of the tests: HTTP over a new connection per request or one kept-alive
//! connection, UDP exchanges, each bound to a chosen source address; and background traffic
//! that counts what broke. Call them on a thread inside the client namespace
//! ([`crate::netns::Netns::run`]).
use crate::netns::Netns;
use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one connect, read or write may take before the request counts as failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Consecutive failures after which a request loop stops trying (a dead path would otherwise
/// cost [`IO_TIMEOUT`] per request).
const GIVE_UP_AFTER: u32 = 10;

/// Opens a TCP connection from `src` (any port) to `dst`.
pub fn connect(src: Ipv4Addr, dst: SocketAddrV4) -> Result<TcpStream> {
    connect_from(SocketAddrV4::new(src, 0), dst)
}

/// Opens a TCP connection from `src` (port 0: any) to `dst`.
pub fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(src))?;
    socket
        .connect_timeout(&SockAddr::from(dst), IO_TIMEOUT)
        .with_context(|| format!("connect {src} -> {dst}"))?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.set_write_timeout(Some(IO_TIMEOUT))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// One HTTP GET on a new connection (`Connection: close`); returns the body.
pub fn http_get(src: Ipv4Addr, dst: SocketAddrV4) -> Result<String> {
    let mut stream = connect(src, dst)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
    read_response(&mut stream, &mut Vec::new())
}

/// [`http_get`] from port `src`, waiting for the back-end to close first: the client keeps
/// no TIME_WAIT, so the port can open another connection to `dst` at once.
pub fn http_get_from(src: SocketAddrV4, dst: SocketAddrV4) -> Result<String> {
    let mut stream = connect_from(src, dst)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")?;
    let body = read_response(&mut stream, &mut Vec::new())?;
    let mut rest = [0u8; 256];
    while stream.read(&mut rest)? > 0 {}
    Ok(body)
}

/// A kept-alive HTTP connection: every request goes to the same back-end, as long as the
/// gateway keeps the connection's entry.
pub struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    /// Opens the connection.
    pub fn connect(src: Ipv4Addr, dst: SocketAddrV4) -> Result<Self> {
        Self::connect_from(SocketAddrV4::new(src, 0), dst)
    }

    /// Opens the connection from `src` (port 0: any).
    pub fn connect_from(src: SocketAddrV4, dst: SocketAddrV4) -> Result<Self> {
        Ok(Self {
            stream: connect_from(src, dst)?,
            buf: Vec::new(),
        })
    }

    /// The connection's local port.
    pub fn local_port(&self) -> Result<u16> {
        Ok(self.stream.local_addr()?.port())
    }

    /// One request on the connection; returns the body.
    pub fn get(&mut self) -> Result<String> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        read_response(&mut self.stream, &mut self.buf)
    }
}

/// Reads one response (status 200, `Content-Length` body); bytes after it stay in `buf`.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if !head.starts_with("HTTP/1.1 200") {
                bail!("bad response: {head}");
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("response without Content-Length")?;
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    bail!("connection closed inside the body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            buf.drain(..end + 4 + length);
            return Ok(body);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `payload` from `src` to `dst` over UDP and waits for one reply; returns where the
/// reply came from and its text.
pub fn udp_exchange(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    payload: &str,
) -> Result<(SocketAddr, String)> {
    let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.send_to(payload.as_bytes(), dst)?;
    let mut buf = [0u8; 2048];
    let (n, from) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP reply {src} -> {dst}"))?;
    Ok((from, String::from_utf8_lossy(&buf[..n]).into_owned()))
}

/// Outcomes of many requests: successes per answer (back-end name) and failures.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Successful requests per body.
    pub by_backend: BTreeMap<String, u64>,
    /// Failed requests.
    pub failures: u64,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

impl Tally {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: Result<String>) {
        match outcome {
            Ok(body) => *self.by_backend.entry(body).or_default() += 1,
            Err(e) => {
                self.failures += 1;
                if self.errors.len() < 5 {
                    self.errors.push(format!("{e:#}"));
                }
            }
        }
    }

    /// Adds another tally's counts.
    pub fn merge(&mut self, other: Tally) {
        for (backend, n) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += n;
        }
        self.failures += other.failures;
        self.errors.extend(other.errors);
        self.errors.truncate(5);
    }

    /// Successful requests.
    pub fn successes(&self) -> u64 {
        self.by_backend.values().sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (backend, n) in &self.by_backend {
            write!(f, "{backend}={n} ")?;
        }
        write!(f, "failures={}", self.failures)?;
        if !self.errors.is_empty() {
            write!(f, " (first: {})", self.errors[0])?;
        }
        Ok(())
    }
}

/// Sends `count` HTTP requests, each on a new connection, from the client addresses in turn,
/// over `threads` parallel threads inside `netns`.
pub fn run_requests(
    netns: &Netns,
    srcs: &[Ipv4Addr],
    dst: SocketAddrV4,
    count: usize,
    threads: usize,
) -> Result<Tally> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let srcs = srcs.to_vec();
            netns.spawn(move || {
                let mut tally = Tally::default();
                let mut consecutive = 0;
                for i in (t..count).step_by(threads) {
                    if consecutive >= GIVE_UP_AFTER {
                        // The path is down; count the rest as failed instead of timing out.
                        tally.failures += 1;
                        continue;
                    }
                    let outcome = http_get(srcs[i % srcs.len()], dst);
                    consecutive = if outcome.is_ok() { 0 } else { consecutive + 1 };
                    tally.record(outcome);
                }
                Ok(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        total.merge(handle.join().expect("client thread panicked")?);
    }
    Ok(total)
}

/// One long-lived connection's record in [`TrafficReport`].
#[derive(Clone, Debug)]
pub struct LongLived {
    /// The back-end of the first answer.
    pub backend: String,
    /// Answers from the same back-end.
    pub requests: u64,
    /// Errors, or answers from another back-end.
    pub failures: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// What background traffic saw.
#[derive(Debug)]
pub struct TrafficReport {
    /// Requests on new connections.
    pub new: Tally,
    /// The long-lived connections.
    pub long_lived: Vec<LongLived>,
    /// How long the traffic ran.
    pub duration: Duration,
}

impl TrafficReport {
    /// Panics, naming `when`, if a kept-alive connection broke.
    pub fn assert_none_broke(&self, when: &str) {
        for (k, l) in self.long_lived.iter().enumerate() {
            assert_eq!(
                l.failures, 0,
                "{when}: kept-alive connection #{k} broke: {:?}",
                l.first_error
            );
        }
    }

    /// Failed requests over all connections.
    pub fn failures(&self) -> u64 {
        self.new.failures + self.long_lived.iter().map(|l| l.failures).sum::<u64>()
    }
}

impl std::fmt::Display for TrafficReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "traffic for {:.1?}:", self.duration)?;
        writeln!(f, "  new connections: {}", self.new)?;
        for (i, l) in self.long_lived.iter().enumerate() {
            writeln!(
                f,
                "  long-lived #{i}: {} requests to {}, {} failures{}",
                l.requests,
                l.backend,
                l.failures,
                l.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Continuous traffic through the VIP: `long_lived` kept-alive connections (one request every
/// 10 ms each, which must all reach the connection's first back-end) and a stream of new
/// connections, until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    new: JoinHandle<Result<Tally>>,
    long_lived: Vec<JoinHandle<Result<LongLived>>>,
    started: Instant,
}

impl Traffic {
    /// Starts the traffic; returns once every long-lived connection has had its first answer.
    pub fn start(
        netns: &Netns,
        srcs: &[Ipv4Addr],
        dst: SocketAddrV4,
        long_lived: usize,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let long_lived = (0..long_lived)
            .map(|i| {
                let (stop, src, ready) = (stop.clone(), srcs[i % srcs.len()], ready_tx.clone());
                netns.spawn(move || {
                    let mut conn = KeepAlive::connect(src, dst)?;
                    let backend = conn.get()?;
                    let _ = ready.send(());
                    let mut record = LongLived {
                        backend,
                        requests: 1,
                        failures: 0,
                        first_error: None,
                    };
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                        let error = match conn.get() {
                            Ok(body) if body == record.backend => {
                                record.requests += 1;
                                continue;
                            }
                            Ok(body) => format!("answered by {body}"),
                            Err(e) => format!("{e:#}"),
                        };
                        record.failures += 1;
                        record.first_error.get_or_insert(error);
                        if record.failures >= u64::from(GIVE_UP_AFTER) {
                            // The connection is broken for good; reconnecting would hide it.
                            break;
                        }
                    }
                    Ok(record)
                })
            })
            .collect::<Vec<_>>();
        for _ in 0..long_lived.len() {
            if ready_rx.recv_timeout(IO_TIMEOUT * 2).is_err() {
                stop.store(true, Ordering::Relaxed);
                bail!("a long-lived connection did not get its first answer");
            }
        }
        let (stop_new, srcs) = (stop.clone(), srcs.to_vec());
        let new = netns.spawn(move || {
            let mut tally = Tally::default();
            let mut i = 0;
            while !stop_new.load(Ordering::Relaxed) {
                tally.record(http_get(srcs[i % srcs.len()], dst));
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(tally)
        });
        Ok(Self {
            stop,
            new,
            long_lived,
            started: Instant::now(),
        })
    }

    /// Stops the traffic and reports.
    pub fn stop(self) -> Result<TrafficReport> {
        self.stop.store(true, Ordering::Relaxed);
        let duration = self.started.elapsed();
        let new = self.new.join().expect("traffic thread panicked")?;
        let long_lived = self
            .long_lived
            .into_iter()
            .map(|h| h.join().expect("traffic thread panicked"))
            .collect::<Result<_>>()?;
        Ok(TrafficReport {
            new,
            long_lived,
            duration,
        })
    }
}

/// A [`Storm`] connection that failed.
#[derive(Clone, Debug)]
pub struct StormFailure {
    /// When it was opened.
    pub opened: Instant,
    /// The client address.
    pub src: Ipv4Addr,
    /// At open (connect or first request) or at close (the second request).
    pub phase: &'static str,
    /// What went wrong.
    pub error: String,
}

/// What a [`Storm`] saw.
#[derive(Clone, Debug)]
pub struct StormOutcome {
    /// When each connection was opened, in order.
    pub opened: Vec<Instant>,
    /// The ones that failed.
    pub failures: Vec<StormFailure>,
}

/// New connections at a steady rate, each on a thread of its own and held open for a while: a
/// request when it opens and one more before it closes (answered by the same back-end), so a
/// connection opened just before a fault still has a request to make after it (issue 11, item
/// 6: the connections opened after the last copy). A connection that hangs delays no other.
pub struct Storm {
    stop: Arc<AtomicBool>,
    spawner: JoinHandle<Result<Vec<Instant>>>,
    outcomes: std::sync::mpsc::Receiver<Option<StormFailure>>,
}

/// Stack of a storm connection's thread: it only connects, asks twice and sleeps.
const STORM_STACK: usize = 128 * 1024;

impl Storm {
    /// Opens `per_s` connections per second to `dst` from the client addresses in turn, each
    /// held for `hold`, inside `netns`, until [`Storm::stop`].
    pub fn start(
        netns: &Netns,
        srcs: &[Ipv4Addr],
        dst: SocketAddrV4,
        per_s: u64,
        hold: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, outcomes) = std::sync::mpsc::channel();
        let (stopping, srcs) = (stop.clone(), srcs.to_vec());
        // The spawner runs in the client namespace; the threads it starts share it.
        let spawner = netns.spawn(move || {
            let started = Instant::now();
            let mut opened = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let n = opened.len() as u64;
                let due = started + Duration::from_micros(n * 1_000_000 / per_s.max(1));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let src = srcs[n as usize % srcs.len()];
                let tx = tx.clone();
                let at = Instant::now();
                std::thread::Builder::new()
                    .stack_size(STORM_STACK)
                    .spawn(move || {
                        let failure =
                            hold_one(src, dst, hold)
                                .err()
                                .map(|(phase, error)| StormFailure {
                                    opened: at,
                                    src,
                                    phase,
                                    error,
                                });
                        let _ = tx.send(failure);
                    })
                    .context("starting a storm connection")?;
                opened.push(at);
            }
            Ok(opened)
        });
        Self {
            stop,
            spawner,
            outcomes,
        }
    }

    /// Stops opening connections, waits for every one to end, and reports.
    pub fn stop(self) -> Result<StormOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        let opened = self.spawner.join().expect("storm spawner panicked")?;
        // Every connection's thread sends once; the channel ends when the last one has.
        let mut failures: Vec<StormFailure> = self.outcomes.iter().flatten().collect();
        failures.sort_by_key(|f| f.opened);
        Ok(StormOutcome { opened, failures })
    }
}

/// One storm connection: open and ask, hold, ask again, close.
fn hold_one(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    hold: Duration,
) -> Result<(), (&'static str, String)> {
    let mut conn = KeepAlive::connect(src, dst).map_err(|e| ("open", format!("{e:#}")))?;
    let backend = conn.get().map_err(|e| ("open", format!("{e:#}")))?;
    std::thread::sleep(hold);
    match conn.get() {
        Ok(body) if body == backend => Ok(()),
        Ok(body) => Err(("close", format!("answered by {body}, opened on {backend}"))),
        Err(e) => Err(("close", format!("{e:#}"))),
    }
}

/// One UDP flow kept going through a VIP (one socket, one source port): a `peer?` datagram
/// every 10 ms, each answered by the back-end with the address it saw, so the report shows
/// whether the flow kept its back-end and its translated source port (its NAT entry).
pub struct UdpFlow {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<UdpFlowReport>>,
}

/// What a [`UdpFlow`] saw.
#[derive(Clone, Debug, Default)]
pub struct UdpFlowReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Every distinct answer (`backend-2: 10.0.9.1:20013`) in the order first seen, with how
    /// many times it came: more than one means the flow was translated anew.
    pub answers: Vec<(String, u64)>,
}

impl UdpFlow {
    /// Starts the flow from `src` (a fresh port) to `dst` in `netns`; returns after its first
    /// answer.
    pub fn start(netns: &Netns, src: Ipv4Addr, dst: SocketAddrV4) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = netns.spawn(move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
            socket.set_read_timeout(Some(Duration::from_millis(100)))?;
            let mut report = UdpFlowReport::default();
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                socket.send_to(b"peer?", dst)?;
                report.sent += 1;
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    report.answered += 1;
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    match report.answers.iter_mut().find(|(a, _)| *a == text) {
                        Some((_, count)) => *count += 1,
                        None => report.answers.push((text, 1)),
                    }
                    let _ = ready_tx.send(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(report)
        });
        if ready_rx.recv_timeout(IO_TIMEOUT * 2).is_err() {
            stop.store(true, Ordering::Relaxed);
            bail!("the UDP flow {src} -> {dst} got no first answer");
        }
        Ok(Self { stop, thread })
    }

    /// One flow from each of the first `count` of `srcs` (cycling) to `dst`.
    pub fn start_many(
        netns: &Netns,
        srcs: &[Ipv4Addr],
        dst: SocketAddrV4,
        count: usize,
    ) -> Result<Vec<Self>> {
        (0..count)
            .map(|k| Self::start(netns, srcs[k % srcs.len()], dst))
            .collect()
    }

    /// Stops the flow and reports.
    pub fn stop(self) -> Result<UdpFlowReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("UDP flow thread panicked")
    }
}

/// Datagrams to a VIP at a steady rate, each socket (source port) used for a short flow of
/// [`UdpBlast::FLOW_LEN`] datagrams: traffic that follows a VIP when it moves, as short
/// connections do. Answers are read and dropped.
pub struct UdpBlast {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64>>,
}

impl UdpBlast {
    /// Datagrams per flow.
    pub const FLOW_LEN: u64 = 20;

    /// Starts sending about `per_s` datagrams a second from `src` to `dst` in `netns`.
    pub fn start(netns: &Netns, src: Ipv4Addr, dst: SocketAddrV4, per_s: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = netns.spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))?;
                socket.set_nonblocking(true)?;
                for _ in 0..Self::FLOW_LEN {
                    // Paced against the start, so the rate holds whatever a sleep overshoots.
                    let due = started + Duration::from_micros(sent * 1_000_000 / per_s);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let _ = socket.send_to(b"load", dst);
                    sent += 1;
                    while socket.recv_from(&mut buf).is_ok() {}
                }
            }
            Ok(sent)
        });
        Self { stop, thread }
    }

    /// Stops; returns the datagrams sent.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("UDP blast thread panicked")
    }
}
