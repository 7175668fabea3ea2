//! `hsm-node audit verify`: the offline check of a node's audit log.
//!
//! Decides: what counts as a problem and which record it is pinned to.
//! Reads `audit/head` first, then every file from the oldest rotated one to
//! `audit.log`, and checks
//!
//! - each line: a record whose MAC matches its content (else *edited*, or
//!   *malformed* when it is not a record at all; an unterminated last line
//!   is *incomplete*);
//! - the sequence: numbers run without a gap from the first kept (1, or
//!   what the latest `audit.rotate` record says) to the last (else
//!   *missing*, named at the record after the gap), never go back (else
//!   *reordered*) or repeat (*duplicate*);
//! - the chain: each record's `prev` is the MAC of the record numbered one
//!   less (else *bad link*: a record was replaced by a validly signed one);
//! - the end: the log reaches the sequence number `head` names and holds the
//!   record it names (else *truncated*, or *head mismatch*).
//!
//! It keeps 60 bytes per record (128-bit MAC prefixes for the links; every
//! MAC itself is checked in full): about 300 MB for the largest log the
//! defaults allow (21 files of 64 MiB, some 5 million records).

use super::writer::{file_name, log_files, read_head};
use super::{io_err, load_key, record_mac, split_line, AuditError};
use serde::Deserialize;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines read (records, good or not).
    pub records: u64,
    /// The files read, oldest first.
    pub files: Vec<String>,
    /// The lowest and highest sequence numbers present.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The sequence number `audit/head` names, when it exists.
    pub head_seq: Option<u64>,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match (self.first_seq, self.last_seq) {
            (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
            _ => String::new(),
        };
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        write!(
            f,
            "audit log {verdict}: {} records{range} in {} files",
            self.records,
            self.files.len()
        )?;
        if !self.is_ok() {
            let n = self.problems.len();
            write!(f, ", {n} problem{}", if n == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// One problem, pinned to a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file's name in `DIR/audit`.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// The record's sequence number (as it claims, for an edited record).
    pub seq: Option<u64>,
    pub what: What,
}

/// The kinds of problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Not a record (unparseable, or no MAC at the end).
    Malformed(String),
    /// The file's last line has no newline: a write cut short (or the log
    /// is being written right now).
    Incomplete,
    /// The MAC does not match the content.
    Edited,
    /// Records `first..=last` are absent; the problem is pinned to the record
    /// right after the gap.
    Missing { first: u64, last: u64 },
    /// This record comes after one with a higher sequence number.
    Reordered {
        after_seq: u64,
        after_file: String,
        after_line: u64,
    },
    /// A second record with this sequence number.
    Duplicate { first_file: String, first_line: u64 },
    /// `prev` is not the MAC of the record numbered one less.
    BadLink,
    /// The log ends before the record `head` names.
    Truncated { last_seq: u64, head_seq: u64 },
    /// The record with head's sequence number is not the one head names.
    HeadMismatch,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::Malformed(why) => write!(f, "not an audit record: {why}"),
            What::Incomplete => write!(
                f,
                "incomplete last line (a write cut short, or the log is being written)"
            ),
            What::Edited => write!(f, "edited: its MAC does not match its content"),
            What::Missing { first, last } if first == last => {
                write!(f, "missing: record {first} before this one was removed")
            }
            What::Missing { first, last } => write!(
                f,
                "missing: records {first}..={last} ({}) before this one were removed",
                last - first + 1
            ),
            What::Reordered {
                after_seq,
                after_file,
                after_line,
            } => write!(
                f,
                "reordered: it comes after seq {after_seq} ({after_file}:{after_line})"
            ),
            What::Duplicate {
                first_file,
                first_line,
            } => write!(f, "duplicate of the record at {first_file}:{first_line}"),
            What::BadLink => write!(
                f,
                "bad chain link: its prev is not the MAC of the record before it (a record was replaced)"
            ),
            What::Truncated { last_seq, head_seq } => write!(
                f,
                "truncated: the log ends at seq {last_seq} but audit/head names seq {head_seq}; \
                 records {}..={head_seq} were cut off",
                last_seq + 1
            ),
            What::HeadMismatch => write!(
                f,
                "head mismatch: audit/head names a different record with this seq (the log was rewritten)"
            ),
        }
    }
}

/// What `verify` keeps of each line: 56 bytes.
struct Entry {
    seq: u64,
    /// The first 16 bytes of its MAC and of its `prev`: enough to match
    /// links (every MAC itself is checked in full).
    mac: [u8; 16],
    prev: [u8; 16],
    file: u32,
    line: u32,
    /// Its MAC matched.
    valid: bool,
    /// A valid record whose seq an earlier valid one already has.
    duplicate: bool,
}

/// The fields `verify` reads; the MAC covers the rest.
#[derive(Deserialize)]
struct Fields {
    seq: u64,
    prev: String,
    kind: String,
    #[serde(default)]
    first_kept: Option<u64>,
}

fn prefix(mac: &[u8; 32]) -> [u8; 16] {
    let mut b = [0u8; 16];
    b.copy_from_slice(&mac[..16]);
    b
}

/// Checks the audit log of the node in `node_dir` (see the module doc).
/// An `Err` means it could not be read at all; problems are in the report.
pub fn verify(node_dir: &Path) -> Result<VerifyReport, AuditError> {
    let dir = node_dir.join("audit");
    if !dir.is_dir() {
        return Err(AuditError::Invalid {
            path: dir,
            message: "no audit log here (is this a node directory?)".into(),
        });
    }
    let key = load_key(node_dir, false)?;
    // Head first: it is written after the records it names are fsynced, so
    // read in this order a live log never looks truncated.
    let head = read_head(&dir.join("head"));
    let paths = log_files(&dir).map_err(io_err(&dir))?;
    let names: Vec<String> = paths.iter().map(|(p, _)| file_name(p)).collect();

    // (file index, line, problem): sorted into file order at the end.
    let mut problems: Vec<(u32, u64, Problem)> = Vec::new();
    let mut problem = |file: u32, line: u64, seq: Option<u64>, what: What| {
        problems.push((
            file,
            line,
            Problem {
                file: names[file as usize].clone(),
                line,
                seq,
                what,
            },
        ))
    };
    let mut entries: Vec<Entry> = Vec::new();
    // The latest `audit.rotate` record: (its seq, first seq kept).
    let mut rotate: Option<(u64, u64)> = None;
    let mut lines_in_last_file = 0u64;

    for (fi, (path, _)) in paths.iter().enumerate() {
        let fi = fi as u32;
        let mut reader = BufReader::new(std::fs::File::open(path).map_err(io_err(path))?);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io_err(path))? == 0 {
                break;
            }
            line_no += 1;
            if buf.pop() != Some(b'\n') {
                problem(fi, line_no, None, What::Incomplete);
                break;
            }
            let Some((unsigned, mac)) = split_line(&buf) else {
                problem(
                    fi,
                    line_no,
                    None,
                    What::Malformed("no MAC at its end".into()),
                );
                continue;
            };
            let mut body = unsigned.to_vec();
            body.push(b'}');
            let fields: Fields = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => {
                    problem(fi, line_no, None, What::Malformed(e.to_string()));
                    continue;
                }
            };
            let mut prev = [0u8; 32];
            if hex::decode_to_slice(&fields.prev, &mut prev).is_err() {
                problem(
                    fi,
                    line_no,
                    Some(fields.seq),
                    What::Malformed("bad prev".into()),
                );
                continue;
            }
            let valid = record_mac(&key, &prev, unsigned) == mac;
            if !valid {
                problem(fi, line_no, Some(fields.seq), What::Edited);
            } else if let (Some(first), "audit.rotate") = (fields.first_kept, fields.kind.as_str())
            {
                if rotate.is_none_or(|(s, _)| fields.seq > s) {
                    rotate = Some((fields.seq, first));
                }
            }
            entries.push(Entry {
                seq: fields.seq,
                file: fi,
                line: line_no as u32,
                mac: prefix(&mac),
                prev: prefix(&prev),
                valid,
                duplicate: false,
            });
        }
        lines_in_last_file = line_no;
    }

    // Every entry by sequence number (a stable sort: equal numbers keep
    // file order). The first valid entry of each number is its primary; a
    // later valid one is a duplicate.
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_by_key(|&i| entries[i as usize].seq);
    let mut primary: Option<usize> = None;
    for &i in &order {
        let i = i as usize;
        let e = &entries[i];
        if !e.valid {
            continue;
        }
        match primary {
            Some(p) if entries[p].seq == e.seq => {
                let first = &entries[p];
                let what = What::Duplicate {
                    first_file: names[first.file as usize].clone(),
                    first_line: first.line as u64,
                };
                problem(e.file, e.line as u64, Some(e.seq), what);
                entries[i].duplicate = true;
            }
            _ => primary = Some(i),
        }
    }

    // Order: every valid record must come after all lower-numbered ones.
    // Report the first of a run of records below the highest seen: one
    // problem per displacement, not one per record.
    let mut max: Option<usize> = None;
    let mut in_run = false;
    for (i, e) in entries.iter().enumerate() {
        if !e.valid || e.duplicate {
            continue;
        }
        match max {
            Some(m) if e.seq < entries[m].seq => {
                if !in_run {
                    let before = &entries[m];
                    let what = What::Reordered {
                        after_seq: before.seq,
                        after_file: names[before.file as usize].clone(),
                        after_line: before.line as u64,
                    };
                    problem(e.file, e.line as u64, Some(e.seq), what);
                    in_run = true;
                }
            }
            _ => {
                max = Some(i);
                in_run = false;
            }
        }
    }

    // Gaps. An edited record still holds its place (it is reported once,
    // as edited), so it counts as present here.
    let first_expected = rotate.map(|(_, first)| first).unwrap_or(1);
    let mut expect = first_expected;
    for &i in &order {
        let e = &entries[i as usize];
        if e.seq > expect {
            let what = What::Missing {
                first: expect,
                last: e.seq - 1,
            };
            problem(e.file, e.line as u64, Some(e.seq), what);
        }
        expect = expect.max(e.seq + 1);
    }

    // Links, between valid neighbours only: record 1 follows the genesis
    // value, every other the record numbered one less.
    let mut before: Option<&Entry> = None;
    for &i in &order {
        let e = &entries[i as usize];
        if !e.valid || e.duplicate {
            continue;
        }
        let expected_prev = match before {
            _ if e.seq == 1 => Some([0u8; 16]),
            Some(b) if b.seq + 1 == e.seq => Some(b.mac),
            _ => None,
        };
        if expected_prev.is_some_and(|p| p != e.prev) {
            problem(e.file, e.line as u64, Some(e.seq), What::BadLink);
        }
        before = Some(e);
    }

    // The end, against head.
    let first_seq = order.first().map(|&i| entries[i as usize].seq);
    let last_seq = order.last().map(|&i| entries[i as usize].seq);
    if let Some(h) = head {
        match last_seq {
            Some(last) if h.seq <= last => {
                let at = order.partition_point(|&i| entries[i as usize].seq < h.seq);
                let named = order[at..]
                    .iter()
                    .map(|&i| &entries[i as usize])
                    .take_while(|e| e.seq == h.seq)
                    .find(|e| e.valid && !e.duplicate);
                if let Some(e) = named {
                    if e.mac != prefix(&h.mac) {
                        problem(e.file, e.line as u64, Some(h.seq), What::HeadMismatch);
                    }
                }
            }
            _ if h.seq > 0 => {
                let what = What::Truncated {
                    last_seq: last_seq.unwrap_or(0),
                    head_seq: h.seq,
                };
                if names.is_empty() {
                    return Err(AuditError::Invalid {
                        path: dir,
                        message: format!(
                            "no log files, but audit/head names record {}: the log was removed",
                            h.seq
                        ),
                    });
                }
                let last_file = (names.len() - 1) as u32;
                problem(last_file, lines_in_last_file + 1, None, what);
            }
            _ => {}
        }
    }

    problems.sort_by_key(|(f, l, _)| (*f, *l));
    Ok(VerifyReport {
        records: entries.len() as u64,
        files: names,
        first_seq,
        last_seq,
        head_seq: head.map(|h| h.seq),
        problems: problems.into_iter().map(|(_, _, p)| p).collect(),
    })
}
