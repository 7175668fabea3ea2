//! Forwarding the audit log to syslog: a real rsyslogd (Debian's, started
//! here in the foreground on loopback ports) receives every record in RFC
//! 5424 form over UDP and over TCP; a collector that refuses or never reads
//! does not slow `record()`, and what it misses is counted and logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_node::audit::{
    verify, Audit, AuditEvent, AuditSettings, Facility, SyslogProtocol, SyslogSettings,
};
use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian puts rsyslogd (/usr/sbin is not on every PATH).
fn rsyslogd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "rsyslogd is not installed: install it with `apt-get install rsyslog` \
                 (.ci/run installs it); this test needs a real syslog collector"
            )
        })
}

/// An rsyslogd listening on loopback, writing what it receives to a file
/// in RFC 5424 form. Killed (by its PID) when dropped.
struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
    udp_port: u16,
    tcp_port: u16,
}

impl Rsyslogd {
    fn start() -> Rsyslogd {
        let bin = rsyslogd();
        let dir = tempfile::tempdir().unwrap();
        let udp_port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        fs::create_dir(dir.path().join("work")).unwrap();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
*.* action(type="omfile" file="{d}/received.log" template="RSYSLOG_SyslogProtocol23Format")
"#
        );
        let conf_path = dir.path().join("rsyslog.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut r = Rsyslogd {
            child,
            dir,
            udp_port,
            tcp_port,
        };
        r.wait_listening();
        r
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({status}) before listening: {}",
                    fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
                );
            }
            let tcp = TcpStream::connect(("127.0.0.1", self.tcp_port)).is_ok();
            if tcp && udp_bound(self.udp_port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd is not listening after 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn received(&self) -> String {
        fs::read_to_string(self.dir.path().join("received.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        // SIGKILL to this child's PID, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a UDP socket is bound to 127.0.0.1:port (from /proc/net/udp).
fn udp_bound(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

fn events() -> Vec<AuditEvent> {
    vec![
        AuditEvent::new("login", "ok")
            .partition("p1")
            .role("crypto-officer")
            .client("0123456789abcdef"),
        AuditEvent::new("login", "Unauthorized")
            .partition("p1")
            .role("crypto-user"),
        AuditEvent::new("key.create", "ok")
            .partition("p1")
            .key("signer")
            .version("v1"),
        AuditEvent::new("key.use", "ok")
            .partition("p1")
            .key("signer")
            .version("v1")
            .op("sign")
            .detail("ES256"),
        AuditEvent::new("key.delete", "ok")
            .partition("p1")
            .key("signer"),
        AuditEvent::new("zeroize", "ok"),
    ]
}

fn with_syslog(
    protocol: SyslogProtocol,
    address: String,
    app: &str,
    facility: Facility,
) -> AuditSettings {
    AuditSettings {
        syslog: Some(SyslogSettings {
            protocol,
            address,
            app_name: app.into(),
            facility,
        }),
        ..AuditSettings::default()
    }
}

/// Checks that every line of the local log arrived as an RFC 5424 message
/// with the right PRI, APP-NAME, PROCID, MSGID and the record as MSG.
fn assert_forwarded(rs: &Rsyslogd, node: &Path, app: &str, facility: u8) {
    let local: Vec<String> = fs::read_to_string(node.join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(local.len(), events().len());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rs.received();
        let missing: Vec<&String> = local
            .iter()
            .filter(|rec| !got.lines().any(|l| l.ends_with(rec.as_str())))
            .collect();
        if missing.is_empty() {
            for rec in &local {
                let v: serde_json::Value = serde_json::from_str(rec).unwrap();
                let kind = v["kind"].as_str().unwrap();
                let severity = match (v["outcome"].as_str().unwrap(), kind) {
                    ("ok", "login" | "key.use") => 6,
                    ("ok", _) => 5,
                    _ => 4,
                };
                let line = got.lines().find(|l| l.ends_with(rec.as_str())).unwrap();
                let head = format!("<{}>1 ", facility * 8 + severity);
                assert!(line.starts_with(&head), "{line}");
                let fields: Vec<&str> = line.splitn(8, ' ').collect();
                // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
                assert_eq!(fields[1].len(), "2025-01-01T00:00:00.000Z".len(), "{line}");
                assert_eq!(fields[1], v["time"].as_str().unwrap());
                assert!(
                    !fields[2].is_empty() && fields[2] != "-",
                    "hostname: {line}"
                );
                let pid = std::process::id().to_string();
                assert_eq!(fields[3..6], [app, pid.as_str(), kind], "{line}");
                assert_eq!(fields[6], "-");
                assert_eq!(fields[7], rec.as_str());
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not receive {} of {} records; it got:\n{got}\nstderr: {}",
            missing.len(),
            local.len(),
            fs::read_to_string(rs.dir.path().join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn audit_records_reach_a_real_rsyslogd_over_udp_and_tcp_in_rfc5424() {
    let rs = Rsyslogd::start();
    for (protocol, port, app, facility) in [
        (
            SyslogProtocol::Tcp,
            rs.tcp_port,
            "hsm-tcp",
            Facility::Authpriv,
        ),
        (
            SyslogProtocol::Udp,
            rs.udp_port,
            "hsm-udp",
            Facility::Local0,
        ),
    ] {
        let node = tempfile::tempdir().unwrap();
        let s = with_syslog(protocol, format!("127.0.0.1:{port}"), app, facility);
        let audit = Audit::open(node.path(), &s, "node-syslog").unwrap();
        for ev in events() {
            audit.record(ev);
        }
        audit.flush();
        assert_forwarded(&rs, node.path(), app, facility.code());
        assert_eq!(audit.syslog_dropped(), 0);
    }
}

/// A process-wide Prometheus recorder, to read the drop counter.
fn metrics_handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static H: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).unwrap();
        handle
    })
}

fn dropped_metric() -> f64 {
    metrics_handle()
        .render()
        .lines()
        .find(|l| l.starts_with("hsm_node_audit_syslog_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Flushes, failing the test if the local log waits for the collector.
fn flush_within(audit: &Audit, limit: Duration) {
    let (done, wait) = std::sync::mpsc::channel();
    let a = audit.clone();
    std::thread::spawn(move || {
        a.flush();
        let _ = done.send(());
    });
    wait.recv_timeout(limit).unwrap_or_else(|_| {
        panic!("flush() still waiting after {limit:?}: the log waits for syslog")
    });
}

/// Records a burst with a syslog collector that takes nothing, and checks
/// that `record()` kept its pace, that the local log has every record, and
/// that the drops were counted and written down.
fn burst_against(address: String, n: usize) {
    metrics_handle();
    let node = tempfile::tempdir().unwrap();
    let mut s = with_syslog(SyslogProtocol::Tcp, address, "hsm-node", Facility::Authpriv);
    s.syslog_queue = 16;
    let audit = Audit::open(node.path(), &s, "node-dead-collector").unwrap();
    let started = Instant::now();
    for i in 0..n {
        audit.record(
            AuditEvent::new("key.use", "ok")
                .partition("p1")
                .key(format!("k{i}"))
                .op("sign"),
        );
    }
    // A liveness bound, not a speed test: a blocking record() would hang
    // here for the collector's timeouts and backoff, forever.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "record() took {:?} for {n} records",
        started.elapsed()
    );
    // Drops are reported at most once a second: wait for the report.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = node.path().join("audit/audit.log");
    loop {
        flush_within(&audit, Duration::from_secs(30));
        let text = fs::read_to_string(&log).unwrap_or_default();
        if audit.syslog_dropped() > 0 && text.contains("\"kind\":\"audit.syslog-drops\"") {
            assert!(text.contains("records were not forwarded to the syslog collector"));
            break;
        }
        assert!(Instant::now() < deadline, "no audit.syslog-drops record");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(audit.syslog_dropped() > 0);
    assert!(dropped_metric() >= 1.0, "{}", metrics_handle().render());
    // Nothing is missing locally.
    let report = verify(node.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert!(report.records > n as u64);
}

#[test]
fn audit_a_refusing_collector_never_blocks_record_and_drops_are_counted() {
    // A port nobody listens on: every connect is refused, the forwarder
    // backs off, the queue fills.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    burst_against(format!("127.0.0.1:{port}"), 5_000);
}

#[test]
fn audit_a_collector_that_never_reads_never_blocks_record() {
    // Listening but never accepting: the kernel completes the handshake and
    // buffers until the window is full, then the forwarder's writes stall.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    burst_against(addr.to_string(), 100_000);
    drop(silent);
}
