//! Forwarding records to a syslog collector as RFC 5424 messages, over UDP
//! (one datagram each) or TCP (RFC 6587 octet counting).
//!
//! Decides: the message form, the bounded queue between the writer thread
//! and the network, reconnecting. Never: makes the writer (let alone a
//! crypto operation) wait — a record that finds the queue full is dropped
//! from forwarding and counted; it is in the local file regardless.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG
//! PRI = facility × 8 + severity; MSGID = the record's kind; MSG = the record's JSON line
//! ```
//!
//! Known limits: over TCP, records the kernel accepted just before a
//! connection broke may be lost (TCP cannot say which were delivered); over
//! UDP, loss is silent. The local log stays the record of truth.

use super::{AuditEvent, SyslogProtocol, SyslogSettings};
use crate::metrics as m;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

/// Connect timeout to a TCP collector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A collector that takes no bytes for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// RFC 5424 severities used.
pub(crate) const WARNING: u8 = 4;
pub(crate) const NOTICE: u8 = 5;
pub(crate) const INFO: u8 = 6;

/// One record on its way to the collector.
pub(crate) struct Entry {
    pub time: String,
    pub kind: &'static str,
    pub severity: u8,
    /// The record's line, without its newline.
    pub json: String,
}

/// Failures are warnings; routine successes (key use, login, logout) are
/// informational; every other success (a change) is a notice.
pub(crate) fn severity(ev: &AuditEvent) -> u8 {
    if ev.outcome != "ok" {
        WARNING
    } else if matches!(ev.kind, "key.use" | "login" | "logout") {
        INFO
    } else {
        NOTICE
    }
}

/// The writer's end of the forwarding queue.
pub(crate) struct Forwarder {
    tx: mpsc::SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
    /// Set when the writer stops: the forwarder then tries what is queued
    /// once each and gives up on the rest instead of backing off forever.
    closing: Arc<AtomicBool>,
}

impl Forwarder {
    /// Starts the forwarding thread; `queue` bounds the records waiting.
    pub(crate) fn start(
        s: &SyslogSettings,
        queue: usize,
        dropped: Arc<AtomicU64>,
    ) -> io::Result<Forwarder> {
        let (tx, rx) = mpsc::sync_channel(queue);
        let closing = Arc::new(AtomicBool::new(false));
        let sender = Sender {
            protocol: s.protocol,
            address: s.address.clone(),
            header: Header {
                facility: s.facility.code(),
                hostname: hostname(),
                app_name: s.app_name.clone(),
                procid: std::process::id(),
            },
            conn: None,
            failing: false,
        };
        let (d, c) = (dropped.clone(), closing.clone());
        thread::Builder::new()
            .name("audit-syslog".into())
            .spawn(move || sender.run(rx, d, c))?;
        Ok(Forwarder {
            tx,
            dropped,
            closing,
        })
    }

    /// Queues a record unless the queue is full; never waits.
    pub(crate) fn offer(&self, e: Entry) {
        if self.tx.try_send(e).is_err() {
            count_drop(&self.dropped);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

fn count_drop(dropped: &AtomicU64) {
    dropped.fetch_add(1, Ordering::Relaxed);
    m::audit_syslog_dropped();
}

/// The fixed part of every message.
struct Header {
    facility: u8,
    hostname: String,
    app_name: String,
    procid: u32,
}

impl Header {
    /// The RFC 5424 message of one record.
    fn message(&self, e: &Entry) -> String {
        format!(
            "<{}>1 {} {} {} {} {} - {}",
            self.facility * 8 + e.severity,
            e.time,
            self.hostname,
            self.app_name,
            self.procid,
            printable(e.kind, 32),
            e.json
        )
    }
}

/// RFC 5424 header fields are 1 to `max` printable ASCII characters; nil
/// is `-`.
fn printable(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// This machine's name, for HOSTNAME.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    printable(name.trim(), 255)
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// The forwarding thread's state.
struct Sender {
    protocol: SyslogProtocol,
    address: String,
    header: Header,
    conn: Option<Conn>,
    /// The last send failed (log state changes, not every failure).
    failing: bool,
}

impl Sender {
    fn run(mut self, rx: mpsc::Receiver<Entry>, dropped: Arc<AtomicU64>, closing: Arc<AtomicBool>) {
        let mut backoff = BACKOFF_MIN;
        while let Ok(e) = rx.recv() {
            let msg = self.header.message(&e);
            loop {
                match self.send(&msg) {
                    Ok(()) => {
                        if self.failing {
                            tracing::info!(collector = %self.address, "syslog forwarding resumed");
                            self.failing = false;
                        }
                        backoff = BACKOFF_MIN;
                        break;
                    }
                    Err(err) => {
                        self.conn = None;
                        if !self.failing {
                            tracing::warn!(collector = %self.address, error = %err, "syslog forwarding failed; records queue, then drop");
                            self.failing = true;
                        }
                        // UDP does not retry: a datagram lost is lost anyway.
                        if self.protocol == SyslogProtocol::Udp || closing.load(Ordering::Relaxed) {
                            count_drop(&dropped);
                            break;
                        }
                        sleep_unless(backoff, &closing);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    fn send(&mut self, msg: &str) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        match &mut self.conn {
            Some(Conn::Udp(sock, addr)) => sock.send_to(msg.as_bytes(), *addr).map(|_| ()),
            Some(Conn::Tcp(stream)) => {
                // RFC 6587 octet counting: "LEN SP MSG".
                let frame = format!("{} {}", msg.len(), msg);
                stream.write_all(frame.as_bytes())
            }
            None => Err(io::Error::other("not connected")),
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        let addrs: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        let mut last = io::Error::other(format!("{} resolves to no address", self.address));
        for addr in addrs {
            let made = match self.protocol {
                SyslogProtocol::Udp => {
                    let local: SocketAddr = if addr.is_ipv4() {
                        ([0, 0, 0, 0], 0).into()
                    } else {
                        ([0u16; 8], 0).into()
                    };
                    UdpSocket::bind(local).map(|s| Conn::Udp(s, addr))
                }
                SyslogProtocol::Tcp => {
                    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        s.set_nodelay(true)?;
                        Ok(Conn::Tcp(s))
                    })
                }
            };
            match made {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Sleeps `d`, waking early when the writer stops.
fn sleep_unless(d: Duration, closing: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !closing.load(Ordering::Relaxed) {
        let s = left.min(step);
        thread::sleep(s);
        left -= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_rfc5424() {
        let h = Header {
            facility: 10,
            hostname: "host1".into(),
            app_name: "hsm-node".into(),
            procid: 42,
        };
        let e = Entry {
            time: "2025-01-31T12:00:00.123Z".into(),
            kind: "key.use",
            severity: INFO,
            json: r#"{"seq":1}"#.into(),
        };
        assert_eq!(
            h.message(&e),
            r#"<86>1 2025-01-31T12:00:00.123Z host1 hsm-node 42 key.use - {"seq":1}"#
        );
    }

    #[test]
    fn failures_are_warnings() {
        assert_eq!(severity(&AuditEvent::new("login", "ok")), INFO);
        assert_eq!(severity(&AuditEvent::new("login", "Unauthorized")), WARNING);
        assert_eq!(severity(&AuditEvent::new("key.create", "ok")), NOTICE);
        assert_eq!(printable("a b\u{1}c", 32), "abc");
        assert_eq!(printable("", 32), "-");
    }
}
