//! Network partitions between sites, with real namespaces: the
//! application (this test) and the proxy share the root namespace, as in a
//! pod; each member runs in a namespace of its own (a site), joined to the
//! pod by a veth pair. A partition is an nft rule in the pod that drops
//! every packet to and from a site: no reset, no refusal, only silence,
//! as when a VPN or a datacenter link fails. Needs root (`ip netns`, nft);
//! where namespaces cannot be made the scenario reports itself skipped,
//! with the reason, and passes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::chaos::{self, Ledger, TOTAL};
use hsm_tests::{TestNode, TestPki, TestProxy};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The sites: namespaces, veth pairs, addresses and the nft table; all
/// removed on drop (after the member processes, which drop first).
struct Sites {
    tag: String,
    names: Vec<String>,
}

impl Sites {
    /// Site `i` gets namespace `hsmc{tag}s{i}`, the pod side 10.231.{i}.1
    /// and the member side 10.231.{i}.2.
    /// Err only when namespaces cannot be made at all (no `ip`, no
    /// privilege): the scenario is then skipped. A later failure panics.
    fn make(n: usize) -> Result<Sites, String> {
        let tag = format!("{}", std::process::id() % 10000);
        // Namespaces a killed earlier run of this suite left behind would
        // clash on addresses: they are ours (by name), remove them.
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(ns) = line
                    .split_whitespace()
                    .next()
                    .filter(|n| n.starts_with("hsmc"))
                {
                    let _ = run(&["ip", "netns", "del", ns]);
                }
            }
        }
        let first = format!("hsmc{tag}s0");
        run(&["ip", "netns", "add", &first])?;
        let mut sites = Sites {
            tag,
            names: vec![first],
        };
        if let Err(e) = sites.wire(n) {
            panic!("building the sites: {e}");
        }
        Ok(sites)
    }

    fn wire(&mut self, n: usize) -> Result<(), String> {
        let tag = self.tag.clone();
        for i in 0..n {
            let ns = format!("hsmc{tag}s{i}");
            if i > 0 {
                run(&["ip", "netns", "add", &ns])?;
                self.names.push(ns.clone());
            }
            let (pod, site) = (format!("hc{tag}p{i}"), format!("hc{tag}s{i}"));
            run(&[
                "ip", "link", "add", &pod, "type", "veth", "peer", "name", &site,
            ])?;
            run(&["ip", "link", "set", &site, "netns", &ns])?;
            run(&[
                "ip",
                "addr",
                "add",
                &format!("10.231.{i}.1/30"),
                "dev",
                &pod,
            ])?;
            run(&["ip", "link", "set", &pod, "up"])?;
            let inside = |args: &[&str]| {
                let mut a = vec!["ip", "netns", "exec", &ns];
                a.extend_from_slice(args);
                run(&a)
            };
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("10.231.{i}.2/30"),
                "dev",
                &site,
            ])?;
            inside(&["ip", "link", "set", &site, "up"])?;
            inside(&["ip", "link", "set", "lo", "up"])?;
        }
        run(&["nft", "add", "table", "inet", &self.table()])?;
        for hook in ["input", "output"] {
            run(&[
                "nft",
                &format!(
                    "add chain inet {} {hook} {{ type filter hook {hook} priority 0; policy accept; }}",
                    self.table()
                ),
            ])?;
        }
        Ok(())
    }

    fn table(&self) -> String {
        format!("hsmchaos{}", self.tag)
    }

    fn ip(i: usize) -> String {
        format!("10.231.{i}.2")
    }

    /// Drops every packet between the pod and site `i`.
    fn cut(&self, i: usize) {
        let ip = Sites::ip(i);
        run(&[
            "nft",
            &format!("add rule inet {} output ip daddr {ip} drop", self.table()),
        ])
        .unwrap();
        run(&[
            "nft",
            &format!("add rule inet {} input ip saddr {ip} drop", self.table()),
        ])
        .unwrap();
    }

    /// Heals every partition.
    fn heal(&self) {
        for hook in ["input", "output"] {
            run(&["nft", &format!("flush chain inet {} {hook}", self.table())]).unwrap();
        }
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        let _ = run(&["nft", "delete", "table", "inet", &self.table()]);
        for (i, ns) in self.names.iter().enumerate() {
            // The pod end, in case its pair never reached the namespace.
            let _ = run(&["ip", "link", "del", &format!("hc{}p{i}", self.tag)]);
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_between_sites_fail_no_request_and_heal() {
    let sites = match Sites::make(3) {
        Ok(s) => s,
        Err(e) => {
            println!("chaos summary: scenario=netns-partition SKIPPED: cannot build namespaces here ({e})");
            return;
        }
    };
    let root = Arc::new(tempfile::tempdir().unwrap());
    let pki = Arc::new(TestPki::create(root.path()).unwrap());
    let domain = root.path().join("domain.secret");
    let mut nodes = Vec::new();
    for (i, ns) in sites.names.iter().enumerate() {
        nodes.push(
            TestNode::start_in_netns(
                root.clone(),
                pki.clone(),
                &format!("node{i}"),
                &domain,
                ns,
                &Sites::ip(i),
            )
            .await
            .unwrap(),
        );
    }
    let proxy = TestProxy::start(&nodes, chaos::options()).await.unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    chaos::create(&co, &ledger, "hot").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let signs = chaos::sign_load(&co, "hot", 3, TOTAL, stop.clone());
    let creator = {
        let (co, ledger, stop) = (co.clone(), ledger.clone(), stop.clone());
        tokio::spawn(async move {
            let mut t = chaos::Tally::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let r = chaos::create(&co, &ledger, &format!("n{i}")).await;
                t.record(
                    started.elapsed(),
                    TOTAL + chaos::SLACK,
                    r.err().map(|e| e.to_string()),
                );
                i += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            t
        })
    };
    let mut faults = 0;
    // One site at a time is cut off for 3 s, then the link heals.
    for i in [2, 0, 1] {
        sites.cut(i);
        faults += 1;
        proxy
            .wait_state(&format!("m{i}"), "down", Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        sites.heal();
        proxy
            .wait_state(&format!("m{i}"), "up", Duration::from_secs(30))
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let signs = signs.await.unwrap();
    let creates = creator.await.unwrap();
    let (ok, bad) = chaos::proxy_requests(&proxy, "sign").unwrap();
    assert_eq!(
        ((ok + bad) as u64, ok as u64),
        (signs.requests, signs.requests - signs.failures)
    );
    let mut all = signs;
    all.merge(&creates);
    let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
    let live: Vec<&TestNode> = nodes.iter().collect();
    chaos::finish("netns-partition", &proxy, &live, &ledger, 2, &all, faults)
        .await
        .unwrap();
    drop(proxy);
    drop(nodes);
    drop(sites);
}
