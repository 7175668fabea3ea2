//! The audit log: one hash-chained JSON line per security-relevant event,
//! rotated by size, checked offline by `hsm-node audit verify`, and
//! optionally forwarded to a syslog collector.
//!
//! Decides: the record format and its chain, where the log lives and when it
//! rotates, what `verify` checks, and how records reach a collector. Never:
//! which events are worth recording (the callers decide, with [`AuditEvent`]),
//! and never makes a caller wait for a disk or a network: [`Audit::record`]
//! only queues.
//!
//! ```text
//! DIR/audit.key            32 random bytes, mode 0600: the HMAC key of the chain.
//!                          Not the master key, and kept by a zeroize, so the
//!                          trail of a zeroized node still verifies.
//! DIR/audit/audit.log      the file being written
//! DIR/audit/audit.log.1    the newest rotated file … audit.log.N the oldest
//! DIR/audit/head           {"seq":N,"mac":"…"}: the last record known durable,
//!                          rewritten at every flush and at most once a second
//! ```
//!
//! A record is one line:
//! `{"seq":N,"time":…,"node":…,"kind":…,…,"prev":"<hex>","mac":"<hex>"}` where
//! `mac` = HMAC-SHA256(audit key, prev ‖ the line without its `,"mac":"…"`)
//! and `prev` is the `mac` of the record before (64 zeros before the first).
//! `docs/AUDIT.md` describes the format, what `verify` detects and what it
//! cannot.
//!
//! | submodule | decides |
//! |---|---|
//! | `writer` | the writer thread: sequencing, the chain, rotation, fsync, `head` |
//! | `syslog` | RFC 5424 framing and the bounded forwarding queue |
//! | `verify` | the offline check of a log |

mod syslog;
mod verify;
mod writer;

pub use verify::{verify, Problem, VerifyReport, What};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Errors opening or reading an audit log, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{key} is missing but {log} holds an audit log: restore the key from a backup \
         of the node directory, or move {log} aside to start a new chain"
    )]
    KeyMissing { key: String, log: String },
    #[error("audit settings: {0}")]
    Settings(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `node.json` key `audit`: the audit log and its syslog forwarding. Every
/// field has a default, so `"audit": {}` (or no key at all) is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Rotate `audit.log` when the next record would take it past this many
    /// bytes. At least 4096. Default 67108864 (64 MiB).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.log.1` … `audit.log.N`); older ones are
    /// deleted, and each rotation writes an `audit.rotate` record naming the
    /// first sequence number still kept. Default 20.
    #[serde(default = "default_keep_files")]
    pub keep_files: usize,
    /// Forward every record to this syslog collector as RFC 5424. Default:
    /// none (local file only).
    #[serde(default)]
    pub syslog: Option<SyslogSettings>,
    /// Records waiting for the syslog collector, at most. A record that finds
    /// the queue full is not forwarded (it is still in the local file); drops
    /// are counted in `hsm_node_audit_syslog_dropped_total` and reported by an
    /// `audit.syslog-drops` record at most once a second. Default 10000.
    #[serde(default = "default_syslog_queue")]
    pub syslog_queue: usize,
}

/// `audit.syslog` in `node.json`: where and how records are forwarded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSettings {
    /// `udp` (one datagram per record) or `tcp` (RFC 6587 octet counting,
    /// reconnecting with backoff).
    pub protocol: SyslogProtocol,
    /// The collector, `host:port` (a name is resolved at each connect).
    pub address: String,
    /// APP-NAME of every message: 1 to 48 printable ASCII characters, no
    /// spaces. Default `hsm-node`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Syslog facility: `authpriv` (default), `auth`, `daemon`, `user` or
    /// `local0` … `local7`.
    #[serde(default)]
    pub facility: Facility,
}

/// The transport to the syslog collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    Udp,
    Tcp,
}

/// RFC 5424 facilities an HSM's audit trail sensibly goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    User,
    Daemon,
    Auth,
    #[default]
    Authpriv,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number (PRI = number × 8 + severity).
    pub fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

fn default_max_file_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_keep_files() -> usize {
    20
}
fn default_syslog_queue() -> usize {
    10_000
}
fn default_app_name() -> String {
    "hsm-node".into()
}

impl Default for AuditSettings {
    /// Every default (the same functions serde uses).
    fn default() -> AuditSettings {
        AuditSettings {
            max_file_bytes: default_max_file_bytes(),
            keep_files: default_keep_files(),
            syslog: None,
            syslog_queue: default_syslog_queue(),
        }
    }
}

impl AuditSettings {
    /// Checks the values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_file_bytes < 4096 {
            return Err(format!(
                "audit.max_file_bytes must be at least 4096, got {}",
                self.max_file_bytes
            ));
        }
        if self.syslog_queue == 0 {
            return Err("audit.syslog_queue must be at least 1".into());
        }
        if let Some(s) = &self.syslog {
            let name_ok = (1..=48).contains(&s.app_name.len())
                && s.app_name.bytes().all(|b| (33..=126).contains(&b));
            if !name_ok {
                return Err(format!(
                    "audit.syslog.app_name `{}` must be 1 to 48 printable ASCII characters without spaces",
                    s.app_name
                ));
            }
            if s.address
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!(
                    "audit.syslog.address `{}` must be host:port",
                    s.address
                ));
            }
        }
        Ok(())
    }
}

/// What happened, as the caller knows it. The log adds `seq`, `time`,
/// `node`, `prev` and `mac`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// What kind of event: `login`, `key.create`, `key.import`, `key.delete`,
    /// `key.purge`, `key.recover`, `key.restore`, `key.update`, `key.rotate`,
    /// `key.use`, `key.backup`, `partition.create`, `partition.delete`,
    /// `role.password`, `client.register`, `client.unregister`,
    /// `clone.export`, `clone.import`, `zeroize`, `node.start`, `node.stop`;
    /// the log itself writes `audit.rotate`, `audit.syslog-drops`,
    /// `audit.torn-tail`, `audit.truncated` and `audit.head-mismatch`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The client certificate's fingerprint (its first 16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `key.use`: `sign`, `verify`, `encrypt`, … (the algorithm may go
    /// in `detail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// `ok`, or the error code of a failure.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: &'static str, outcome: impl Into<String>) -> AuditEvent {
        AuditEvent {
            kind,
            partition: None,
            role: None,
            client: None,
            key: None,
            version: None,
            op: None,
            outcome: outcome.into(),
            detail: None,
        }
    }
    pub fn partition(mut self, v: impl Into<String>) -> Self {
        self.partition = Some(v.into());
        self
    }
    pub fn role(mut self, v: impl Into<String>) -> Self {
        self.role = Some(v.into());
        self
    }
    pub fn client(mut self, v: impl Into<String>) -> Self {
        self.client = Some(v.into());
        self
    }
    pub fn key(mut self, v: impl Into<String>) -> Self {
        self.key = Some(v.into());
        self
    }
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = Some(v.into());
        self
    }
    pub fn op(mut self, v: impl Into<String>) -> Self {
        self.op = Some(v.into());
        self
    }
    pub fn detail(mut self, v: impl Into<String>) -> Self {
        self.detail = Some(v.into());
        self
    }
}

/// What the callers send the writer thread.
// Nearly every message is a record: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(AuditEvent, OffsetDateTime),
    /// Answer on the channel once everything queued before is fsynced.
    Flush(mpsc::SyncSender<()>),
}

/// The audit log of a running node. Cheap to clone; the last clone dropped
/// writes what is queued, fsyncs and stops the writer thread.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    /// The writer thread's queue. The lock makes "take the time, enqueue"
    /// one step, so sequence numbers and timestamps increase together; it
    /// is held for an enqueue only, never across I/O. `None` once closing.
    queue: Mutex<Option<mpsc::Sender<Msg>>>,
    /// Joined when the last handle goes, so nothing queued is lost.
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    /// Records the syslog forwarding gave up on, since start.
    syslog_dropped: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Audit {
    /// Opens (creating if needed) `DIR/audit/` and the HMAC key
    /// `DIR/audit.key`, continues the chain from the last record of the
    /// existing log, and starts the writer thread (and the syslog forwarder
    /// when configured).
    pub fn open(
        node_dir: &Path,
        settings: &AuditSettings,
        node_id: &str,
    ) -> Result<Audit, AuditError> {
        settings.validate().map_err(AuditError::Settings)?;
        let dropped = Arc::new(AtomicU64::new(0));
        let forwarder = match &settings.syslog {
            Some(s) => Some(
                syslog::Forwarder::start(s, settings.syslog_queue, dropped.clone())
                    .map_err(io_err(&node_dir.join("audit")))?,
            ),
            None => None,
        };
        let w = writer::Writer::open(node_dir, settings, node_id, forwarder, dropped.clone())?;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))
            .map_err(io_err(node_dir))?;
        Ok(Audit {
            inner: Arc::new(Inner {
                queue: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                syslog_dropped: dropped,
            }),
        })
    }

    /// Appends one record: takes the time and queues it for the writer
    /// thread, which gives it the next sequence number (in call order),
    /// writes it, and hands it to the syslog forwarder. Never waits for the
    /// disk or the network.
    pub fn record(&self, ev: AuditEvent) {
        let q = lock(&self.inner.queue);
        if let Some(tx) = q.as_ref() {
            if tx.send(Msg::Record(ev, OffsetDateTime::now_utc())).is_err() {
                tracing::error!("audit writer has stopped; record lost");
            }
        }
    }

    /// Waits until every record so far is written and fsynced, and
    /// `audit/head` names the last one (at shutdown, before a zeroize).
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        {
            let q = lock(&self.inner.queue);
            match q.as_ref() {
                Some(tx) if tx.send(Msg::Flush(ack)).is_ok() => {}
                _ => return,
            }
        }
        let _ = done.recv();
    }

    /// Records not forwarded to the syslog collector since start (the value
    /// of `hsm_node_audit_syslog_dropped_total` for this log).
    pub fn syslog_dropped(&self) -> u64 {
        self.inner.syslog_dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it, fsync and stop.
        drop(lock(&self.queue).take());
        if let Some(h) = lock(&self.writer).take() {
            if h.join().is_err() {
                tracing::error!("audit writer thread panicked");
            }
        }
    }
}

/// `prev` of the first record ever written.
pub(crate) const GENESIS: [u8; 32] = [0; 32];

/// What ends every line after the record proper: `,"mac":"` + 64 hex + `"}`.
pub(crate) const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;

/// The MAC of a record: HMAC-SHA256(key, prev ‖ record without `mac`),
/// where `unsigned` is the line up to (not including) `,"mac":"…"}` and the
/// record without `mac` is `unsigned` followed by its closing `}`.
pub(crate) fn record_mac(key: &hmac::Key, prev: &[u8; 32], unsigned: &[u8]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(prev);
    ctx.update(unsigned);
    ctx.update(b"}");
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Splits a line (without its newline) into the part the MAC covers
/// (without the closing `}`) and the MAC it carries.
pub(crate) fn split_line(line: &[u8]) -> Option<(&[u8], [u8; 32])> {
    let cut = line.len().checked_sub(MAC_SUFFIX_LEN)?;
    let (unsigned, suffix) = line.split_at(cut);
    let hex_part = suffix.strip_prefix(b",\"mac\":\"")?.strip_suffix(b"\"}")?;
    let mut mac = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut mac).ok()?;
    Some((unsigned, mac))
}

/// `DIR/audit.key`: read it, or create it when no log exists yet.
pub(crate) fn load_key(node_dir: &Path, create: bool) -> Result<hmac::Key, AuditError> {
    let path = node_dir.join("audit.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            return create_key(&path);
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    if bytes.len() != 32 {
        return Err(AuditError::Invalid {
            path,
            message: format!("audit key must be 32 bytes, found {}", bytes.len()),
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

fn create_key(path: &Path) -> Result<hmac::Key, AuditError> {
    use std::io::Write;
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut key[..]).map_err(|_| AuditError::Invalid {
        path: path.to_path_buf(),
        message: "random generator failed".into(),
    })?;
    let mut f = hsm_server::private_fs::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(&key[..]).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        writer::sync_dir(parent);
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key[..]))
}

/// RFC 3339 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`.
pub(crate) fn rfc3339_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339_ms(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn settings_default_and_validate() {
        let s: AuditSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, AuditSettings::default());
        assert_eq!(s.max_file_bytes, 64 * 1024 * 1024);
        assert_eq!(s.keep_files, 20);
        assert_eq!(s.syslog_queue, 10_000);
        s.validate().unwrap();
        let s: AuditSettings =
            serde_json::from_str(r#"{"syslog":{"protocol":"tcp","address":"127.0.0.1:514"}}"#)
                .unwrap();
        let sys = s.syslog.as_ref().unwrap();
        assert_eq!(sys.app_name, "hsm-node");
        assert_eq!(sys.facility, Facility::Authpriv);
        s.validate().unwrap();
        let bad: AuditSettings =
            serde_json::from_str(r#"{"syslog":{"protocol":"udp","address":"nowhere"}}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("host:port"));
        assert!(serde_json::from_str::<AuditSettings>(r#"{"max_files":3}"#).is_err());
    }

    #[test]
    fn split_line_finds_the_mac() {
        let mac = [0xabu8; 32];
        let line = format!(r#"{{"seq":1,"prev":"00","mac":"{}"}}"#, hex::encode(mac));
        let (unsigned, m) = split_line(line.as_bytes()).unwrap();
        assert_eq!(unsigned, br#"{"seq":1,"prev":"00""#);
        assert_eq!(m, mac);
        assert!(split_line(b"{}").is_none());
    }
}
