//! A fault relay: a TCP forwarder on loopback between the proxy and one
//! member, whose behaviour the test sets at any time. `tc netem` is not
//! available on these machines; this is what stands in for it.
//!
//! Decides: what each fault does to new and to open connections.
//! - `Pass`: bytes flow.
//! - `Delay { base, jitter }`: every chunk waits `base` plus up to
//!   `jitter` before it is forwarded, in each direction (a far site).
//! - `Blackhole`: new connections are accepted and then nothing: no
//!   upstream, no answer, no close; open connections stop forwarding and
//!   hold what they have, delivering it when the fault clears (as TCP
//!   retransmits across a partition that heals).
//! - `Reset`: new connections are reset at once; open ones are reset.
//! - `Drip { every }`: one byte at a time, `every` apart (a slow link).
//! - `HalfOpen`: requests reach the member, answers are lost; the
//!   connection stays open (a peer that lost its state without closing).
//!   Such a connection is dead for good: when the fault clears it is
//!   reset, as the peer would answer a stray segment. No byte is ever
//!   lost from a connection that goes on: TLS would see it as tampering.
//!
//! The relay lives in the test process; it stops when dropped. It counts
//! the bytes it forwards each way ([`Relay::bytes`]): the traffic between
//! the proxy and the member, TLS records and handshakes included.

use anyhow::{Context, Result};
use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the relay does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay { base: Duration, jitter: Duration },
    Blackhole,
    Reset,
    Drip { every: Duration },
    HalfOpen,
}

impl Fault {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Delay { .. } => "delay",
            Fault::Blackhole => "blackhole",
            Fault::Reset => "reset",
            Fault::Drip { .. } => "drip",
            Fault::HalfOpen => "half-open",
        }
    }
}

/// A running relay to one target.
pub struct Relay {
    addr: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
    /// Bytes forwarded: `[to the member, to the client]`.
    bytes: Arc<[AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: &str) -> Result<Relay> {
        let target: SocketAddr = target.parse().context("relay target")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(Fault::Pass);
        let bytes: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = bytes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    // Out of descriptors or similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let rx = rx.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = handle(conn, target, rx, counted).await;
                });
            }
        });
        Ok(Relay {
            addr,
            fault: Arc::new(tx),
            bytes,
            task,
        })
    }

    /// `host:port` to give the proxy instead of the member's.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Sets the fault for new and open connections.
    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Bytes forwarded since the relay started: (to the member, to the
    /// client), counted when written on.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes[0].load(Ordering::Relaxed),
            self.bytes[1].load(Ordering::Relaxed),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reset(s: &TcpStream) {
    let _ = s.set_zero_linger();
}

async fn handle(
    conn: TcpStream,
    target: SocketAddr,
    rx: watch::Receiver<Fault>,
    bytes: Arc<[AtomicU64; 2]>,
) -> Result<()> {
    let _ = conn.set_nodelay(true);
    let now = *rx.borrow();
    match now {
        Fault::Reset => {
            reset(&conn);
            return Ok(());
        }
        Fault::Blackhole => return swallow(conn, rx).await,
        _ => {}
    }
    let up = TcpStream::connect(target).await?;
    let _ = up.set_nodelay(true);
    // Second handles on both sockets, to reset them whatever the pumps do.
    let (conn, conn_handle) = twin(conn)?;
    let (up, up_handle) = twin(up)?;
    let (cr, cw) = conn.into_split();
    let (ur, uw) = up.into_split();
    let mut to_member = tokio::spawn(pump(cr, uw, rx.clone(), false, bytes.clone()));
    let mut to_client = tokio::spawn(pump(ur, cw, rx.clone(), true, bytes));
    let mut watch = rx;
    // A direction ends (peer closed, or a reset fault hands its halves
    // back), or the fault turns to reset.
    let (mut a, mut b) = (None, None);
    loop {
        tokio::select! {
            r = &mut to_member, if a.is_none() => { a = Some(r); break; }
            r = &mut to_client, if b.is_none() => { b = Some(r); break; }
            changed = watch.changed() => {
                if changed.is_err() || *watch.borrow() == Fault::Reset {
                    break;
                }
            }
        }
    }
    let reset_now = *watch.borrow() == Fault::Reset
        || matches!(&a, Some(Ok(Some(_))))
        || matches!(&b, Some(Ok(Some(_))));
    if reset_now {
        reset(&conn_handle);
        reset(&up_handle);
    }
    if !reset_now {
        // One side closed: let the other finish forwarding what it has.
        if a.is_none() {
            a = Some(to_member.await);
        } else {
            b = Some(to_client.await);
        }
    } else {
        to_member.abort();
        to_client.abort();
        if a.is_none() {
            a = Some(to_member.await);
        }
        if b.is_none() {
            b = Some(to_client.await);
        }
    }
    drop((a, b));
    Ok(())
}

/// Accepts and reads whatever comes, answers nothing, never closes (until
/// the fault changes to something that closes, or the peer leaves).
async fn swallow(mut conn: TcpStream, mut rx: watch::Receiver<Fault>) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            n = conn.read(&mut buf) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            changed = rx.changed() => {
                if changed.is_err() || *rx.borrow() == Fault::Reset {
                    reset(&conn);
                    return Ok(());
                }
            }
        }
    }
}

/// The stream and a second handle on the same socket.
fn twin(s: TcpStream) -> Result<(TcpStream, TcpStream)> {
    let std = s.into_std()?;
    let other = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, TcpStream::from_std(other)?))
}

type Halves = (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Forwards one direction under the current fault. Returns the halves
/// when it stopped because of a reset (so the caller can reset them).
/// What is written on is counted in `bytes` (index 1 for answers) once
/// the write returned; what a fault swallows is not.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rx: watch::Receiver<Fault>,
    answers: bool,
    bytes: Arc<[AtomicU64; 2]>,
) -> Option<Halves> {
    let mut buf = vec![0u8; 16 * 1024];
    let counter = &bytes[usize::from(answers)];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return None;
            }
            Ok(n) => n,
        };
        let fault = *rx.borrow();
        match fault {
            Fault::Pass => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return None;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Fault::Delay { base, jitter } => {
                let extra = if jitter.is_zero() {
                    Duration::ZERO
                } else {
                    rand::thread_rng().gen_range(Duration::ZERO..jitter)
                };
                tokio::time::sleep(base + extra).await;
                if to.write_all(&buf[..n]).await.is_err() {
                    return None;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Fault::Drip { every } => {
                for b in &buf[..n] {
                    if to.write_all(std::slice::from_ref(b)).await.is_err() {
                        return None;
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(every).await;
                }
            }
            Fault::HalfOpen if answers => {
                // The answer is lost, and so is the connection: swallow
                // until the fault clears, then have it reset.
                let mut rx = rx.clone();
                while *rx.borrow() == Fault::HalfOpen {
                    tokio::select! {
                        r = from.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return None },
                        c = rx.changed() => if c.is_err() { return None },
                    }
                }
                return Some((from, to));
            }
            Fault::HalfOpen => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return None;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Fault::Blackhole => {
                // Hold the chunk (and stop reading) until the fault clears.
                let mut rx = rx.clone();
                while *rx.borrow() == Fault::Blackhole {
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
                if *rx.borrow() == Fault::Reset {
                    return Some((from, to));
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return None;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            Fault::Reset => return Some((from, to)),
        }
    }
}
