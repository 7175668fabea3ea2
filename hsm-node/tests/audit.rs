//! The audit log on disk: a real log written across rotations and a
//! restart verifies; copies of it with one record edited, deleted or moved,
//! a rotated file removed, or the tail cut off are each caught, pinned to
//! the right record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_node::audit::{verify, Audit, AuditEvent, AuditSettings, Problem, What};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Small files, so a few hundred records make several of them.
fn settings(keep_files: usize) -> AuditSettings {
    AuditSettings {
        max_file_bytes: 8192,
        keep_files,
        ..AuditSettings::default()
    }
}

/// A varied stream of events, as the node would record them.
fn event(i: usize) -> AuditEvent {
    match i % 5 {
        0 => AuditEvent::new("login", if i % 10 == 5 { "Unauthorized" } else { "ok" })
            .partition("p1")
            .role("crypto-user")
            .client("0123456789abcdef"),
        1 => AuditEvent::new("key.create", "ok")
            .partition("p1")
            .key(format!("k{i}"))
            .version("v1")
            .detail("EC P-256"),
        2 => AuditEvent::new("key.use", "ok")
            .partition("p1")
            .key(format!("k{}", i - 1))
            .version("v1")
            .op("sign")
            .detail("ES256"),
        3 => AuditEvent::new("key.delete", "ok")
            .partition("p1")
            .key(format!("k{}", i - 2)),
        _ => AuditEvent::new("role.password", "ok")
            .partition("p1")
            .role("crypto-officer"),
    }
}

fn write(node: &Path, s: &AuditSettings, range: std::ops::Range<usize>) {
    let audit = Audit::open(node, s, "node-test").unwrap();
    for i in range {
        audit.record(event(i));
    }
    audit.flush();
    // Dropping the last handle drains, fsyncs and stops the writer.
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn put_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).unwrap();
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["seq"].as_u64().unwrap()
}

fn copy_node(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    fs::copy(from.join("audit.key"), to.path().join("audit.key")).unwrap();
    fs::create_dir(to.path().join("audit")).unwrap();
    for e in fs::read_dir(from.join("audit")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.path().join("audit").join(e.file_name())).unwrap();
    }
    to
}

/// A log of 300 records written in two runs of the node, across several
/// rotations, none deleted.
fn real_log() -> tempfile::TempDir {
    let node = tempfile::tempdir().unwrap();
    write(node.path(), &settings(100), 0..150);
    write(node.path(), &settings(100), 150..300);
    node
}

fn audit_file(node: &Path, name: &str) -> PathBuf {
    node.join("audit").join(name)
}

/// The only problem found.
fn only_problem(node: &Path) -> Problem {
    let report = verify(node).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}: {:#?}", report.problems);
    report.problems[0].clone()
}

#[test]
fn audit_verify_passes_on_a_real_log_across_rotation_and_restart() {
    let node = real_log();
    let report = verify(node.path()).unwrap();
    assert!(report.is_ok(), "{report}: {:#?}", report.problems);
    assert!(report.files.len() >= 4, "rotated into {:?}", report.files);
    assert_eq!(report.files.last().map(String::as_str), Some("audit.log"));
    // 300 events plus one audit.rotate per rotation, numbered 1..=N.
    let rotations = report.files.len() as u64 - 1;
    assert_eq!(report.records, 300 + rotations);
    assert_eq!(report.first_seq, Some(1));
    assert_eq!(report.last_seq, Some(300 + rotations));
    assert_eq!(report.head_seq, report.last_seq);

    // One chain across the restart: the file order is the sequence order.
    let mut all = Vec::new();
    for f in &report.files {
        all.extend(lines(&audit_file(node.path(), f)));
    }
    let seqs: Vec<u64> = all.iter().map(|l| seq_of(l)).collect();
    assert_eq!(seqs, (1..=report.records).collect::<Vec<_>>());
    let first: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(first["prev"], "0".repeat(64));
    assert_eq!(first["node"], "node-test");
    assert_eq!(first["kind"], "login");
    assert_eq!(first["outcome"], "ok");
    let rotate: serde_json::Value =
        serde_json::from_str(&lines(&audit_file(node.path(), "audit.log"))[0]).unwrap();
    assert_eq!(rotate["kind"], "audit.rotate");
    assert_eq!(rotate["first_kept"], 1);

    // The key is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(node.path().join("audit.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn audit_verify_catches_an_edited_record() {
    let node = real_log();
    let copy = copy_node(node.path());
    let path = audit_file(copy.path(), "audit.log.2");
    let mut l = lines(&path);
    let n = l.len() / 2;
    let seq = seq_of(&l[n]);
    let edited = l[n].replacen("\"p1\"", "\"p2\"", 1);
    assert_ne!(edited, l[n]);
    l[n] = edited;
    put_lines(&path, &l);

    let p = only_problem(copy.path());
    assert_eq!(p.what, What::Edited);
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("audit.log.2", n as u64 + 1, Some(seq))
    );
    assert!(
        p.to_string()
            .contains(&format!("audit.log.2:{} (seq {seq}): edited", n + 1)),
        "{p}"
    );
}

#[test]
fn audit_verify_catches_a_deleted_record() {
    let node = real_log();
    let copy = copy_node(node.path());
    let path = audit_file(copy.path(), "audit.log.1");
    let mut l = lines(&path);
    let n = l.len() / 2;
    let seq = seq_of(&l[n]);
    l.remove(n);
    put_lines(&path, &l);

    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Missing {
            first: seq,
            last: seq
        }
    );
    // Pinned to the record after the gap, which now sits where it was.
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("audit.log.1", n as u64 + 1, Some(seq + 1))
    );
}

#[test]
fn audit_verify_catches_reordered_records() {
    let node = real_log();

    // Two neighbours swapped.
    let copy = copy_node(node.path());
    let path = audit_file(copy.path(), "audit.log.3");
    let mut l = lines(&path);
    let n = l.len() / 2;
    let seq = seq_of(&l[n]);
    l.swap(n, n + 1);
    put_lines(&path, &l);
    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Reordered {
            after_seq: seq + 1,
            after_file: "audit.log.3".into(),
            after_line: n as u64 + 1
        }
    );
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("audit.log.3", n as u64 + 2, Some(seq))
    );

    // One record moved into a later file.
    let copy = copy_node(node.path());
    let from = audit_file(copy.path(), "audit.log.3");
    let to = audit_file(copy.path(), "audit.log.1");
    let mut a = lines(&from);
    let mut b = lines(&to);
    let moved = a.remove(1);
    let moved_seq = seq_of(&moved);
    b.insert(3, moved);
    put_lines(&from, &a);
    put_lines(&to, &b);
    let p = only_problem(copy.path());
    assert!(matches!(p.what, What::Reordered { .. }), "{p}");
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("audit.log.1", 4, Some(moved_seq))
    );
}

#[test]
fn audit_verify_catches_a_removed_rotated_file() {
    let node = real_log();

    // A middle file.
    let copy = copy_node(node.path());
    let gone = lines(&audit_file(copy.path(), "audit.log.2"));
    let (first, last) = (seq_of(&gone[0]), seq_of(gone.last().unwrap()));
    fs::remove_file(audit_file(copy.path(), "audit.log.2")).unwrap();
    let p = only_problem(copy.path());
    assert_eq!(p.what, What::Missing { first, last });
    assert_eq!(
        (p.file.as_str(), p.line, p.seq),
        ("audit.log.1", 1, Some(last + 1))
    );

    // The oldest file: no audit.rotate record ever said it was let go.
    let copy = copy_node(node.path());
    let report = verify(copy.path()).unwrap();
    let oldest = report.files[0].clone();
    let gone = lines(&audit_file(copy.path(), &oldest));
    let last = seq_of(gone.last().unwrap());
    fs::remove_file(audit_file(copy.path(), &oldest)).unwrap();
    let p = only_problem(copy.path());
    assert_eq!(p.what, What::Missing { first: 1, last });
    assert_eq!((p.line, p.seq), (1, Some(last + 1)));
    assert_eq!(p.file, report.files[1]);
}

#[test]
fn audit_rotation_deletes_old_files_and_verify_still_passes_but_not_without_the_oldest_kept() {
    let node = tempfile::tempdir().unwrap();
    write(node.path(), &settings(2), 0..300);
    let report = verify(node.path()).unwrap();
    assert!(report.is_ok(), "{report}: {:#?}", report.problems);
    assert_eq!(report.files, ["audit.log.2", "audit.log.1", "audit.log"]);
    assert!(report.first_seq.unwrap() > 1);
    let last_rotate = lines(&audit_file(node.path(), "audit.log"))[0].clone();
    assert!(last_rotate.contains("\"kind\":\"audit.rotate\""));
    assert!(last_rotate.contains("deleted audit.log.2"), "{last_rotate}");
    let first_kept = report.first_seq.unwrap();
    assert!(last_rotate.contains(&format!("\"first_kept\":{first_kept}")));

    // Removing the oldest kept file is not a rotation.
    let copy = copy_node(node.path());
    let gone = lines(&audit_file(copy.path(), "audit.log.2"));
    fs::remove_file(audit_file(copy.path(), "audit.log.2")).unwrap();
    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Missing {
            first: first_kept,
            last: seq_of(gone.last().unwrap())
        }
    );
}

#[test]
fn audit_verify_catches_a_cut_tail_and_the_restarted_node_keeps_the_gap() {
    let node = real_log();
    let copy = copy_node(node.path());
    let path = audit_file(copy.path(), "audit.log");
    let mut l = lines(&path);
    let total = l.len();
    let last = seq_of(l.last().unwrap());
    l.truncate(total - 3);
    put_lines(&path, &l);
    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Truncated {
            last_seq: last - 3,
            head_seq: last
        }
    );
    assert_eq!((p.file.as_str(), p.line), ("audit.log", total as u64 - 2));

    // A node started on the cut log says so in the log itself, and the gap
    // stays visible after the head moves on.
    write(copy.path(), &settings(100), 0..5);
    let l = lines(&path);
    let note = &l[total - 3];
    assert!(note.contains("\"kind\":\"audit.truncated\""), "{note}");
    assert_eq!(seq_of(note), last + 1);
    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Missing {
            first: last - 2,
            last
        }
    );
    assert_eq!(p.seq, Some(last + 1));
}

#[test]
fn audit_a_torn_last_line_is_reported_then_repaired_on_open() {
    let node = real_log();
    let path = audit_file(node.path(), "audit.log");
    let mut text = fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":99999,\"time\":\"20");
    fs::write(&path, &text).unwrap();
    let p = only_problem(node.path());
    assert_eq!(p.what, What::Incomplete);

    write(node.path(), &settings(100), 0..3);
    let report = verify(node.path()).unwrap();
    assert!(report.is_ok(), "{report}: {:#?}", report.problems);
    assert!(fs::read_to_string(&path)
        .unwrap()
        .contains("\"kind\":\"audit.torn-tail\""));
}

#[test]
fn audit_open_refuses_a_log_without_its_key() {
    let node = real_log();
    fs::remove_file(node.path().join("audit.key")).unwrap();
    let err = Audit::open(node.path(), &settings(100), "node-test")
        .err()
        .unwrap();
    assert!(err.to_string().contains("audit.key is missing"), "{err}");
    assert!(verify(node.path()).is_err());
}

#[test]
fn audit_verify_command_prints_ok_or_the_problem_and_fails() {
    let node = real_log();
    let bin = env!("CARGO_BIN_EXE_hsm-node");
    let out = Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(node.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("audit log OK: "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1);

    let path = audit_file(node.path(), "audit.log.1");
    let mut l = lines(&path);
    let seq = seq_of(&l[2]);
    l.remove(2);
    put_lines(&path, &l);
    let out = Command::new(bin)
        .args(["audit", "verify", "--dir"])
        .arg(node.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("audit log FAILED"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "audit.log.1:3 (seq {}): missing: record {seq} ",
            seq + 1
        )),
        "{stderr}"
    );
}

#[test]
fn audit_verify_catches_a_copied_record_and_one_replaced_from_a_forked_log() {
    let node = real_log();

    // A line copied: the copy is a duplicate.
    let copy = copy_node(node.path());
    let path = audit_file(copy.path(), "audit.log");
    let mut l = lines(&path);
    let seq = seq_of(&l[1]);
    l.push(l[1].clone());
    put_lines(&path, &l);
    let p = only_problem(copy.path());
    assert_eq!(
        p.what,
        What::Duplicate {
            first_file: "audit.log".into(),
            first_line: 2
        }
    );
    assert_eq!((p.line, p.seq), (l.len() as u64, Some(seq)));

    // Two copies of one node go on differently; a record of one put in the
    // other has a valid MAC but breaks the next record's link.
    let a = copy_node(node.path());
    let b = copy_node(node.path());
    write(a.path(), &settings(100), 1000..1003);
    write(b.path(), &settings(100), 2000..2003);
    let pa = audit_file(a.path(), "audit.log");
    let mut la = lines(&pa);
    let lb = lines(&audit_file(b.path(), "audit.log"));
    // The first record after the fork: its own link is to the common past.
    let n = la.len() - 3;
    assert_eq!(seq_of(&la[n]), seq_of(&lb[n]));
    assert_ne!(la[n], lb[n]);
    la[n] = lb[n].clone();
    put_lines(&pa, &la);
    let report = verify(a.path()).unwrap();
    let links: Vec<&Problem> = report
        .problems
        .iter()
        .filter(|p| p.what == What::BadLink)
        .collect();
    assert_eq!(links.len(), 1, "{:#?}", report.problems);
    assert_eq!(links[0].line, n as u64 + 2);
    assert_eq!(links[0].seq, Some(seq_of(&la[n]) + 1));
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
}

#[test]
fn audit_handle_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Audit>();
}

#[test]
fn audit_verify_command_names_a_directory_without_a_log() {
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hsm-node"))
        .args(["audit", "verify", "--dir"])
        .arg(t.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no audit log here"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
