//! The writer thread: the only code that appends to the log.
//!
//! It takes records off the queue in the order `Audit::record` was called,
//! gives each the next sequence number and the MAC of the one before, writes
//! the batch it has, fsyncs once per batch (group commit), rotates by size,
//! keeps `audit/head`, and hands each written record to the syslog
//! forwarder without waiting for it.
//!
//! Invariants: `last` is the sequence number and MAC of the last record in
//! the files; `size` is the length of `audit.log`, whose bytes end with a
//! newline. A failed write is cut back to `size` and tried again, so a
//! record is either whole in the file or not there.

use super::syslog::{self, Forwarder};
use super::{
    io_err, load_key, record_mac, rfc3339_ms, split_line, AuditError, AuditEvent, AuditSettings,
    Msg, GENESIS,
};
use crate::metrics as m;
use aws_lc_rs::hmac;
use hsm_server::private_fs;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The name of the file being written; rotated ones add `.1`, `.2`, ….
pub(crate) const LOG: &str = "audit.log";
/// Most records taken off the queue before an fsync.
const MAX_BATCH: usize = 4096;
/// Under load, the log is fsynced at most this often (group commit over
/// time as well as over a batch); a flush request syncs at once.
const SYNC_EVERY: Duration = Duration::from_millis(10);
/// How often `head` is rewritten without a flush, and drops are reported.
const PERIOD: Duration = Duration::from_secs(1);
/// How long a failed rotation waits before it is tried again.
const ROTATE_RETRY: Duration = Duration::from_secs(60);

/// A record's place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub seq: u64,
    pub mac: [u8; 32],
}

/// `audit/head`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Head {
    pub seq: u64,
    pub mac: String,
}

/// The record as written, less its `mac`, in field order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: &'a str,
    node: &'a str,
    #[serde(flatten)]
    event: &'a AuditEvent,
    /// Only in `audit.rotate`: the first sequence number still in the files.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_kept: Option<u64>,
    prev: String,
}

pub(crate) struct Writer {
    dir: PathBuf,
    node: String,
    key: hmac::Key,
    max_file_bytes: u64,
    keep_files: usize,
    file: File,
    size: u64,
    last: Link,
    /// Written since the last fsync.
    dirty: bool,
    /// What `head` says now, and when it was written.
    head: Option<Link>,
    head_at: Instant,
    forwarder: Option<Forwarder>,
    dropped: Arc<AtomicU64>,
    /// Drops already reported by an `audit.syslog-drops` record.
    drops_reported: u64,
    drops_reported_at: Instant,
    /// Set when a rotation failed: not before then again.
    rotate_after: Option<Instant>,
}

impl Writer {
    /// Opens the log and finds where the chain stands. Anything found
    /// wrong on the way (a torn last line, a log shorter than `head` says)
    /// is repaired as far as possible and written as a record at once.
    pub(crate) fn open(
        node_dir: &Path,
        settings: &AuditSettings,
        node_id: &str,
        forwarder: Option<Forwarder>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Writer, AuditError> {
        let dir = node_dir.join("audit");
        private_fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let files = log_files(&dir).map_err(io_err(&dir))?;
        let has_log = files
            .iter()
            .any(|(p, _)| fs::metadata(p).map(|md| md.len() > 0).unwrap_or(false));
        if has_log && !node_dir.join("audit.key").exists() {
            return Err(AuditError::KeyMissing {
                key: node_dir.join("audit.key").display().to_string(),
                log: dir.display().to_string(),
            });
        }
        let key = load_key(node_dir, true)?;

        let mut notes: Vec<AuditEvent> = Vec::new();
        let current = dir.join(LOG);
        let mut file = private_fs::options()
            .read(true)
            .append(true)
            .create(true)
            .open(&current)
            .map_err(io_err(&current))?;
        let tail = read_tail(&mut file).map_err(io_err(&current))?;
        if tail.torn > 0 {
            tracing::warn!(
                file = %current.display(),
                bytes = tail.torn,
                "audit log ends with an incomplete line; cutting it off"
            );
            file.set_len(tail.complete_len)
                .and_then(|_| file.sync_all())
                .map_err(io_err(&current))?;
            notes.push(
                AuditEvent::new("audit.torn-tail", "repaired").detail(format!(
                    "removed an incomplete last line of {} bytes from {LOG} (a write cut short)",
                    tail.torn
                )),
            );
        }
        let mut last_line = tail.last_line;
        let mut last_from = current.clone();
        if last_line.is_none() {
            // A rotation just happened: the chain ends in the newest rotated file.
            for (path, n) in files.iter().rev() {
                if n.is_none() {
                    continue;
                }
                let mut f = File::open(path).map_err(io_err(path))?;
                if let Some(l) = read_tail(&mut f).map_err(io_err(path))?.last_line {
                    last_line = Some(l);
                    last_from = path.clone();
                    break;
                }
            }
        }
        let mut last = match &last_line {
            Some(l) => parse_link(l).ok_or_else(|| AuditError::Invalid {
                path: last_from.clone(),
                message: "the last record is unreadable, so the chain cannot be continued; \
                          run `hsm-node audit verify`, then move the audit directory aside \
                          to start a new chain"
                    .into(),
            })?,
            None => Link {
                seq: 0,
                mac: GENESIS,
            },
        };

        let head_path = dir.join("head");
        let head = read_head(&head_path);
        if let Some(h) = head {
            if h.seq > last.seq {
                tracing::error!(
                    log_ends_at = last.seq,
                    head = h.seq,
                    "audit log is shorter than audit/head says: records are missing"
                );
                notes.push(
                    AuditEvent::new("audit.truncated", "missing").detail(format!(
                        "the log ended at seq {} but audit/head recorded seq {}: records {}..={} \
                     are missing; the chain continues from the head",
                        last.seq,
                        h.seq,
                        last.seq + 1,
                        h.seq
                    )),
                );
                // Continuing from the head keeps the gap visible to `verify`.
                last = h;
            } else if h.seq == last.seq && h.mac != last.mac {
                tracing::error!(
                    seq = h.seq,
                    "audit log's last record differs from audit/head"
                );
                notes.push(
                    AuditEvent::new("audit.head-mismatch", "mismatch").detail(format!(
                        "the record with seq {} is not the one audit/head recorded",
                        h.seq
                    )),
                );
            }
        }

        let size = file.metadata().map_err(io_err(&current))?.len();
        let mut w = Writer {
            dir,
            node: node_id.to_string(),
            key,
            max_file_bytes: settings.max_file_bytes,
            keep_files: settings.keep_files,
            file,
            size,
            last,
            dirty: false,
            head,
            head_at: Instant::now(),
            forwarder,
            dropped,
            drops_reported: 0,
            drops_reported_at: Instant::now(),
            rotate_after: None,
        };
        let now = OffsetDateTime::now_utc();
        for ev in notes {
            w.append(&ev, now, None).map_err(io_err(&current))?;
        }
        w.sync(true);
        Ok(w)
    }

    /// The thread's loop: until every `Audit` handle is gone.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch = Vec::new();
        let mut waiters = Vec::new();
        let mut last_sync = std::time::Instant::now();
        loop {
            // While records wait unsynced, wake within SYNC_EVERY to sync them.
            let wait = if self.dirty { SYNC_EVERY } else { PERIOD / 2 };
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let first_was_timeout = first.is_none();
            if let Some(msg) = first {
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Record(ev, t) => batch.push((ev, t)),
                        Msg::Flush(ack) => waiters.push(ack),
                    }
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
            for (ev, t) in batch.drain(..) {
                self.append_retrying(&ev, t);
            }
            self.report_drops(false);
            // Sync when asked, when idle (the receive timed out), or when the
            // last sync is SYNC_EVERY old: not after every small batch.
            if !waiters.is_empty() || first_was_timeout || last_sync.elapsed() >= SYNC_EVERY {
                self.sync(!waiters.is_empty());
                last_sync = std::time::Instant::now();
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
        self.report_drops(true);
        self.sync(true);
        tracing::debug!(seq = self.last.seq, "audit writer stopped");
    }

    /// Appends, retrying once a second while the disk refuses: a record is
    /// never given up, and callers never wait (they only queue).
    fn append_retrying(&mut self, ev: &AuditEvent, t: OffsetDateTime) {
        let mut failures = 0u32;
        while let Err(e) = self.append(ev, t, None) {
            failures += 1;
            tracing::error!(error = %e, failures, dir = %self.dir.display(), "cannot write the audit log; retrying");
            std::thread::sleep(PERIOD);
        }
    }

    /// Writes one record (rotating first if it would not fit) and offers it
    /// to the syslog forwarder.
    fn append(
        &mut self,
        ev: &AuditEvent,
        t: OffsetDateTime,
        first_kept: Option<u64>,
    ) -> io::Result<()> {
        let time = rfc3339_ms(t);
        let mut line = self.line(ev, &time, first_kept)?;
        if self.size > 0
            && self.size + line.0.len() as u64 > self.max_file_bytes
            && self.rotate_after.is_none_or(|at| Instant::now() >= at)
        {
            match self.rotate(t) {
                Ok(()) => self.rotate_after = None,
                Err(e) => {
                    tracing::error!(error = %e, dir = %self.dir.display(), "cannot rotate the audit log; writing on");
                    self.rotate_after = Some(Instant::now() + ROTATE_RETRY);
                }
            }
            line = self.line(ev, &time, first_kept)?;
        }
        let (bytes, link) = line;
        if let Err(e) = self.file.write_all(&bytes) {
            // Leave no partial line behind.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.last = link;
        self.dirty = true;
        m::audit_record();
        if let Some(fw) = &self.forwarder {
            let json = String::from_utf8_lossy(&bytes[..bytes.len() - 1]).into_owned();
            fw.offer(syslog::Entry {
                time,
                kind: ev.kind,
                severity: syslog::severity(ev),
                json,
            });
        }
        Ok(())
    }

    /// The next record's line (with its newline) and link.
    fn line(
        &self,
        ev: &AuditEvent,
        time: &str,
        first_kept: Option<u64>,
    ) -> io::Result<(Vec<u8>, Link)> {
        let seq = self.last.seq + 1;
        let body = Body {
            seq,
            time,
            node: &self.node,
            event: ev,
            first_kept,
            prev: hex::encode(self.last.mac),
        };
        let mut bytes = serde_json::to_vec(&body).map_err(io::Error::other)?;
        // The record without `mac` ends with `}`: the MAC covers it, then
        // `mac` goes in before that brace.
        bytes.pop();
        let mac = record_mac(&self.key, &self.last.mac, &bytes);
        bytes.extend_from_slice(b",\"mac\":\"");
        bytes.extend_from_slice(hex::encode(mac).as_bytes());
        bytes.extend_from_slice(b"\"}\n");
        Ok((bytes, Link { seq, mac }))
    }

    /// audit.log → audit.log.1 → … → audit.log.N → deleted, then an
    /// `audit.rotate` record opens the new file. The new file is created
    /// before anything is renamed; if a step fails, writing goes on in the
    /// file at hand (whatever its name now) and rotation is tried again
    /// after [`ROTATE_RETRY`], so a failing disk never makes it delete file
    /// after file.
    fn rotate(&mut self, t: OffsetDateTime) -> io::Result<()> {
        self.file.sync_all()?;
        self.dirty = false;
        let fresh_path = self.dir.join(".audit.log.new");
        match fs::remove_file(&fresh_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let fresh = private_fs::options()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&fresh_path)?;
        let mut deleted = Vec::new();
        let mut rotated: Vec<(PathBuf, u32)> = log_files(&self.dir)?
            .into_iter()
            .filter_map(|(p, n)| n.map(|n| (p, n)))
            .collect();
        // Highest number first, so each rename goes to a free name.
        rotated.sort_by_key(|r| std::cmp::Reverse(r.1));
        for (path, n) in &rotated {
            if *n as usize >= self.keep_files {
                fs::remove_file(path)?;
                deleted.push(file_name(path));
            } else {
                fs::rename(path, self.dir.join(format!("{LOG}.{}", n + 1)))?;
            }
        }
        let current = self.dir.join(LOG);
        let moved = if self.keep_files == 0 {
            fs::remove_file(&current).map(|_| deleted.push(LOG.to_string()))
        } else {
            fs::rename(&current, self.dir.join(format!("{LOG}.1")))
        };
        match moved {
            // An earlier rotation that failed half-way already moved it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => r?,
        }
        fs::rename(&fresh_path, &current)?;
        sync_dir(&self.dir);
        self.file = fresh;
        self.size = 0;
        let first_kept = oldest_first_seq(&self.dir)?.unwrap_or(self.last.seq + 1);
        let mut detail = format!("rotated at seq {}", self.last.seq);
        if !deleted.is_empty() {
            detail.push_str(&format!("; deleted {}", deleted.join(", ")));
        }
        detail.push_str(&format!("; first seq kept {first_kept}"));
        tracing::info!(
            seq = self.last.seq,
            first_kept,
            deleted = deleted.len(),
            "audit log rotated"
        );
        let ev = AuditEvent::new("audit.rotate", "ok").detail(detail);
        self.append(&ev, t, Some(first_kept))
    }

    /// Writes an `audit.syslog-drops` record when the forwarder gave up on
    /// records since the last one, at most once a [`PERIOD`] (or now, at
    /// shutdown).
    fn report_drops(&mut self, now: bool) {
        let total = self.dropped.load(Ordering::Relaxed);
        if total <= self.drops_reported || !(now || self.drops_reported_at.elapsed() >= PERIOD) {
            return;
        }
        let ev = AuditEvent::new("audit.syslog-drops", "dropped").detail(format!(
            "{} records were not forwarded to the syslog collector ({} since start)",
            total - self.drops_reported,
            total
        ));
        tracing::warn!(
            dropped = total - self.drops_reported,
            total,
            "audit records not forwarded to syslog"
        );
        self.drops_reported = total;
        self.drops_reported_at = Instant::now();
        self.append_retrying(&ev, OffsetDateTime::now_utc());
    }

    /// fsyncs what was written, and rewrites `head` when asked to or when
    /// it is a [`PERIOD`] old.
    fn sync(&mut self, force_head: bool) {
        if self.dirty {
            if let Err(e) = self.file.sync_data() {
                tracing::error!(error = %e, "cannot fsync the audit log");
                return;
            }
            self.dirty = false;
        }
        let stale = self.head != Some(self.last);
        if stale && (force_head || self.head_at.elapsed() >= PERIOD) {
            match write_head(&self.dir, self.last) {
                Ok(()) => {
                    self.head = Some(self.last);
                    self.head_at = Instant::now();
                }
                Err(e) => tracing::error!(error = %e, "cannot write audit/head"),
            }
        }
    }
}

/// The log files of `dir` from the oldest to the newest:
/// `audit.log.N` … `audit.log.1`, then `audit.log` (number `None`).
pub(crate) fn log_files(dir: &Path) -> io::Result<Vec<(PathBuf, Option<u32>)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOG {
            out.push((entry.path(), None));
        } else if let Some(n) = name
            .strip_prefix(LOG)
            .and_then(|r| r.strip_prefix('.'))
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|r| r.parse::<u32>().ok())
        {
            out.push((entry.path(), Some(n)));
        }
    }
    // Higher numbers are older; `audit.log` (None) is the newest.
    out.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(out)
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The sequence number of the first record of the oldest file.
fn oldest_first_seq(dir: &Path) -> io::Result<Option<u64>> {
    for (path, _) in log_files(dir)? {
        let mut line = Vec::new();
        let f = File::open(&path)?;
        io::BufRead::read_until(&mut io::BufReader::new(f), b'\n', &mut line)?;
        if line.last() == Some(&b'\n') {
            line.pop();
            return Ok(parse_link(&line).map(|l| l.seq));
        }
    }
    Ok(None)
}

/// The sequence number and MAC a line carries (not checked here).
pub(crate) fn parse_link(line: &[u8]) -> Option<Link> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    let (_, mac) = split_line(line)?;
    let s: Seq = serde_json::from_slice(line).ok()?;
    Some(Link { seq: s.seq, mac })
}

pub(crate) fn read_head(path: &Path) -> Option<Link> {
    let text = fs::read(path).ok()?;
    let h: Head = serde_json::from_slice(&text).ok()?;
    let mut mac = [0u8; 32];
    hex::decode_to_slice(&h.mac, &mut mac).ok()?;
    Some(Link { seq: h.seq, mac })
}

fn write_head(dir: &Path, l: Link) -> io::Result<()> {
    let text = serde_json::to_vec(&Head {
        seq: l.seq,
        mac: hex::encode(l.mac),
    })?;
    private_fs::write_atomic(&dir.join("head"), &text)?;
    sync_dir(dir);
    Ok(())
}

/// Makes renames and new files in `dir` durable (best effort).
pub(crate) fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync directory");
    }
}

/// The end of a file: its last complete line and what follows it.
struct Tail {
    /// Offset just past the last newline.
    complete_len: u64,
    /// Bytes after the last newline (a write cut short).
    torn: u64,
    last_line: Option<Vec<u8>>,
}

/// Reads backwards from the end in 64 KiB steps until the last complete
/// line is whole.
fn read_tail(f: &mut File) -> io::Result<Tail> {
    const STEP: u64 = 64 * 1024;
    let len = f.metadata()?.len();
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let step = start.min(STEP);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(last_nl) => {
                let torn = (buf.len() - last_nl - 1) as u64;
                let complete_len = len - torn;
                if let Some(prev_nl) = buf[..last_nl].iter().rposition(|&b| b == b'\n') {
                    return Ok(Tail {
                        complete_len,
                        torn,
                        last_line: Some(buf[prev_nl + 1..last_nl].to_vec()),
                    });
                }
                if start == 0 {
                    return Ok(Tail {
                        complete_len,
                        torn,
                        last_line: Some(buf[..last_nl].to_vec()),
                    });
                }
            }
            None if start == 0 => {
                return Ok(Tail {
                    complete_len: 0,
                    torn: len,
                    last_line: None,
                })
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn tail_of(bytes: &[u8]) -> Tail {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, bytes).unwrap();
        read_tail(&mut File::open(&p).unwrap()).unwrap()
    }

    #[test]
    fn tail_finds_the_last_complete_line() {
        let t = tail_of(b"one\ntwo\n");
        assert_eq!(t.last_line.as_deref(), Some(&b"two"[..]));
        assert_eq!((t.complete_len, t.torn), (8, 0));
        let t = tail_of(b"one\ntwo\nthr");
        assert_eq!(t.last_line.as_deref(), Some(&b"two"[..]));
        assert_eq!((t.complete_len, t.torn), (8, 3));
        let t = tail_of(b"only\n");
        assert_eq!(t.last_line.as_deref(), Some(&b"only"[..]));
        let t = tail_of(b"partial");
        assert!(t.last_line.is_none());
        assert_eq!((t.complete_len, t.torn), (0, 7));
        let t = tail_of(b"");
        assert!(t.last_line.is_none());
        assert_eq!(t.torn, 0);
    }

    #[test]
    fn tail_reads_lines_longer_than_a_step() {
        let mut long = vec![b'a'; 200_000];
        long.push(b'\n');
        let mut bytes = b"first\n".to_vec();
        bytes.extend_from_slice(&long);
        bytes.extend_from_slice(&vec![b'b'; 70_000]);
        let t = tail_of(&bytes);
        assert_eq!(t.last_line.unwrap().len(), 200_000);
        assert_eq!(t.torn, 70_000);
    }

    #[test]
    fn files_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "audit.log",
            "audit.log.1",
            "audit.log.10",
            "audit.log.2",
            "audit.log.x",
            "head",
        ] {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        let names: Vec<String> = log_files(dir.path())
            .unwrap()
            .iter()
            .map(|(p, _)| file_name(p))
            .collect();
        assert_eq!(
            names,
            ["audit.log.10", "audit.log.2", "audit.log.1", "audit.log"]
        );
    }
}
