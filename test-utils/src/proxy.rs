//! A TCP proxy for fault tests (FAULT-MATRIX "per-connection TCP proxies we
//! control"): it listens on a free loopback port (or on every address, for
//! clients in container VMs, which reach the host at their gateway and
//! not on its loopback: [`Proxy::start_on`]), forwards every
//! connection to a target, and can be switched at run time to drop
//! connections, blackhole them, add latency, or lose what the server
//! answers.
//!
//! Each accepted connection is served by two pipes (client → server, the
//! "request" direction, and server → client, the "response" direction),
//! each its own task, which look at the proxy's [`Mode`] whenever it
//! changes:
//!
//! - [`Mode::Pass`]: bytes are forwarded as they come.
//! - [`Mode::Drop`]: open connections are closed and new ones are accepted
//!   and closed at once, so a client sees its connection end (a refused
//!   connect, as far as a client library can tell).
//! - [`Mode::Blackhole`]: connections stay open but nothing moves either
//!   way: the pipes stop reading, so what is sent waits in the kernel's
//!   buffers and arrives late, when the mode changes back — a network
//!   partition under TCP, which retransmits rather than loses. New
//!   connections are accepted (the handshake completes) and held likewise.
//! - [`Mode::Delay`]: each chunk is forwarded that long after it was read,
//!   in order (latency, not a throughput limit).
//! - [`Mode::LoseResponses`]: requests reach the server; what the server
//!   sends back is read and thrown away (a reply lost after the server
//!   acted on the request).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward everything.
    #[default]
    Pass,
    /// Close open connections; accept and close new ones.
    Drop,
    /// Keep connections open, forward nothing until the mode changes.
    Blackhole,
    /// Forward everything this much later.
    Delay(Duration),
    /// Forward requests; read and discard responses.
    LoseResponses,
}

/// What a proxy has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted and forwarded to the target.
    pub accepted: u64,
    /// Connections accepted and closed at once ([`Mode::Drop`]), or whose
    /// target refused them.
    pub refused: u64,
    /// Bytes forwarded client → server.
    pub bytes_up: u64,
    /// Bytes forwarded server → client.
    pub bytes_down: u64,
    /// Bytes of responses discarded ([`Mode::LoseResponses`]).
    pub bytes_lost: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    bytes_lost: AtomicU64,
}

/// A running proxy; stopped (its connections closed) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port, in [`Mode::Pass`].
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        Proxy::start_on(Ipv4Addr::LOCALHOST.into(), target).await
    }

    /// [`Proxy::start`] listening on `bind` (e.g. `0.0.0.0`, so that
    /// container VMs reach it through their gateway) instead of loopback.
    pub async fn start_on(bind: IpAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind((bind, 0)).await?;
        Ok(Proxy::serve(listener, target))
    }

    /// [`Proxy::start`] for callers that cannot await (a hook called from
    /// synchronous code); must run inside a tokio runtime.
    pub fn start_blocking(target: SocketAddr) -> std::io::Result<Proxy> {
        Proxy::start_blocking_on(Ipv4Addr::LOCALHOST.into(), target)
    }

    /// [`Proxy::start_on`] for callers that cannot await.
    pub fn start_blocking_on(bind: IpAddr, target: SocketAddr) -> std::io::Result<Proxy> {
        let std = std::net::TcpListener::bind((bind, 0))?;
        std.set_nonblocking(true)?;
        Ok(Proxy::serve(TcpListener::from_std(std)?, target))
    }

    fn serve(listener: TcpListener, target: SocketAddr) -> Proxy {
        let mut addr = listener.local_addr().expect("a bound listener has an address");
        // Bound to every address: clients on this host connect on loopback
        // (and a URL on loopback is what the local CPI rewrites to a
        // container VM's gateway).
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let (mode, _) = watch::channel(Mode::Pass);
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, target, mode.clone(), counters.clone()));
        Proxy { addr, target, mode, counters, accept }
    }

    /// The address clients on this host connect to (loopback when the
    /// proxy listens on every address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches every connection, open and new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            bytes_lost: c.bytes_lost.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Every pipe watches the mode: this closes the open connections.
        self.mode.send_replace(Mode::Drop);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == Mode::Drop {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let (rx, counters) = (mode.subscribe(), counters.clone());
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(pipe(cr, sw, Direction::Request, rx.clone(), counters.clone()));
            let down = tokio::spawn(pipe(sr, cw, Direction::Response, rx, counters));
            let _ = tokio::join!(up, down);
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client → server.
    Request,
    /// Server → client.
    Response,
}

/// At most this many chunks wait in a pipe's delay queue before it stops
/// reading (backpressure instead of unbounded memory).
const QUEUED: usize = 256;

/// Forwards `from` to `to` as the mode says, until either side closes or
/// the mode is [`Mode::Drop`].
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Direction,
    mut mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut eof = false;
    loop {
        let m = *mode.borrow_and_update();
        if m == Mode::Drop {
            return;
        }
        if eof && queue.is_empty() {
            let _ = to.shutdown().await;
            return;
        }
        let flowing = m != Mode::Blackhole;
        let due = queue.front().map(|(at, _)| *at);
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = from.read(&mut buf), if flowing && !eof && queue.len() < QUEUED => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        eof = true;
                        continue;
                    }
                    Ok(n) => n,
                };
                // The mode may have changed while the read was pending.
                match *mode.borrow() {
                    Mode::LoseResponses if dir == Direction::Response => {
                        counters.bytes_lost.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                    Mode::Delay(d) => queue.push_back((Instant::now() + d, buf[..n].to_vec())),
                    _ => queue.push_back((Instant::now(), buf[..n].to_vec())),
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if flowing && due.is_some() => {
                let (_, chunk) = queue.pop_front().expect("a chunk is due");
                // A write to a peer that reads nothing must not keep the
                // pipe from seeing Drop.
                tokio::select! {
                    written = to.write_all(&chunk) => {
                        if written.is_err() {
                            return;
                        }
                    }
                    _ = mode.wait_for(|m| *m == Mode::Drop) => return,
                }
                let counter = match dir {
                    Direction::Request => &counters.bytes_up,
                    Direction::Response => &counters.bytes_down,
                };
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port; each connection echoes until closed.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads back as many bytes, within `within`.
    async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(within, s.read_exact(&mut got)).await.ok()?.ok()?;
        Some(got)
    }

    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(5);

    /// In Pass mode bytes go both ways and are counted.
    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"hello", LONG).await.unwrap(), b"hello");
        let s = p.stats();
        assert_eq!((s.accepted, s.bytes_up, s.bytes_down), (1, 5, 5));
    }

    /// Drop closes an open connection and turns new ones away; Pass lets
    /// them in again.
    #[tokio::test]
    async fn drop_closes_open_connections_and_refuses_new_ones() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(p.addr()).await.unwrap();
        assert!(round_trip(&mut open, b"x", LONG).await.is_some());
        p.set(Mode::Drop);
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(LONG, open.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "the open connection is closed: {closed:?}");
        let mut new = TcpStream::connect(p.addr()).await.unwrap();
        let n = tokio::time::timeout(LONG, new.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "a new connection is closed at once: {n:?}");
        assert_eq!(p.stats().refused, 1);
        p.set(Mode::Pass);
        let mut again = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back", LONG).await.unwrap(), b"back");
    }

    /// Blackhole keeps the connection open and forwards nothing; what was
    /// sent meanwhile arrives when the mode goes back to Pass.
    #[tokio::test]
    async fn blackhole_holds_bytes_until_healed() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert!(round_trip(&mut c, b"a", LONG).await.is_some());
        p.set(Mode::Blackhole);
        assert!(round_trip(&mut c, b"held", SHORT).await.is_none(), "nothing comes back");
        let before = p.stats();
        assert_eq!(before.bytes_up, 1, "nothing was forwarded either");
        p.set(Mode::Pass);
        let mut got = vec![0u8; 4];
        tokio::time::timeout(LONG, c.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"held", "the held bytes arrive after the partition");
    }

    /// Delay adds about its latency to a round trip (once each way).
    #[tokio::test]
    async fn delay_adds_latency() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        let d = Duration::from_millis(200);
        p.set(Mode::Delay(d));
        let start = std::time::Instant::now();
        assert_eq!(round_trip(&mut c, b"slow", LONG).await.unwrap(), b"slow");
        let took = start.elapsed();
        assert!(took >= 2 * d, "{took:?}");
        assert!(took < 2 * d + Duration::from_secs(2), "{took:?}");
    }

    /// LoseResponses forwards requests (the server acts on them) and
    /// throws the answers away.
    #[tokio::test]
    async fn lose_responses_forwards_requests_and_discards_answers() {
        let p = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        p.set(Mode::LoseResponses);
        assert!(round_trip(&mut c, b"lost", SHORT).await.is_none());
        tokio::time::timeout(LONG, async {
            while p.stats().bytes_lost < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let s = p.stats();
        assert_eq!((s.bytes_up, s.bytes_down, s.bytes_lost), (4, 0, 4));
        p.set(Mode::Pass);
        assert_eq!(round_trip(&mut c, b"ok", LONG).await.unwrap(), b"ok");
    }

    /// A proxy bound to every address is reached on loopback and on the
    /// host's other addresses alike.
    #[tokio::test]
    async fn start_on_every_address_is_reached_on_loopback() {
        let p = Proxy::start_on(Ipv4Addr::UNSPECIFIED.into(), echo_server().await).await.unwrap();
        assert!(p.addr().ip().is_loopback(), "{}", p.addr());
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(round_trip(&mut c, b"any", LONG).await.unwrap(), b"any");
    }

    /// A dropped proxy closes its connections.
    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let p = Proxy::start_blocking(echo_server().await).unwrap();
        let mut c = TcpStream::connect(p.addr()).await.unwrap();
        assert!(round_trip(&mut c, b"x", LONG).await.is_some());
        drop(p);
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(LONG, c.read(&mut buf)).await.unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}
