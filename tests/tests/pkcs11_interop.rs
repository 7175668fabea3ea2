//! Real PKCS#11 consumers against our module and against SoftHSM2, side by
//! side: `tests/pkcs11/interop.sh` (OpenSC pkcs11-tool, OpenSSL through
//! libengine-pkcs11-openssl, GnuTLS p11tool, Java SunPKCS11 with keytool and
//! `tests/pkcs11/SignVerify.java`) runs once against a SoftHSM2 token made
//! in a temporary directory and once against `libhsm_pkcs11.so` in front of
//! `hsm-proxy dev` (three members). The test prints the table of both runs
//! and asserts every step passes on each, but the ones listed, with why, in
//! [`NOT_APPLICABLE_ON_SOFTHSM`] and [`NOT_APPLICABLE_ON_OURS`]. The tools come from
//! `.ci/run`; a missing one fails the test (it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::dev_group::{read, repo_root, tail, DevGroup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// One script run, all steps (seconds; SoftHSM2 takes about 3 s).
const SOFTHSM_RUN_SECS: &str = "60";
const OURS_RUN_SECS: &str = "150";
/// Any one command of the script (seconds).
const CMD_TIMEOUT_SECS: &str = "30";

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const ENGINE: &str = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so";
/// Our token's label (the module's one slot).
const OUR_TOKEN: &str = "hsm-ha";

/// Steps SoftHSM2 2.6.1 (Debian 12) cannot pass, and why: shown in the
/// table, not asserted on SoftHSM2; asserted on ours like every step.
const NOT_APPLICABLE_ON_SOFTHSM: &[(&str, &str)] = &[
    (
        "sign-ecdsa-sha256",
        "SoftHSM2 2.6 has CKM_ECDSA only, not CKM_ECDSA_SHA256 (CKR_MECHANISM_INVALID)",
    ),
    (
        "decrypt-rsa-oaep-sha256",
        "SoftHSM2 2.6 takes OAEP with SHA-1 and MGF1-SHA1 only (CKR_ARGUMENTS_BAD)",
    ),
    (
        "pkcs11-tool-test-keys",
        "pkcs11-tool 0.23 --test decrypts RSA-PKCS-OAEP with SHA-256, which SoftHSM2 2.6 \
         refuses (CKR_ARGUMENTS_BAD), and stops there",
    ),
];

/// Steps our module cannot pass by design, and why: shown in the table, not
/// asserted on ours. (`pkcs11-tool-test`, on the fresh token, is asserted.)
const NOT_APPLICABLE_ON_OURS: &[(&str, &str)] = &[(
    "pkcs11-tool-test-keys",
    "pkcs11-tool 0.23 --test signs arbitrary data with CKM_RSA_PKCS (raw PKCS#1 v1.5); \
         hsm-ha's CKM_RSA_PKCS signs a DER DigestInfo of SHA-256/384/512 only \
         (CKR_DATA_INVALID), and --test stops there",
)];

/// One step's outcome: (pass, detail).
type Results = BTreeMap<String, (bool, String)>;

/// One run of the script: its results in step order, and what to show when
/// something failed.
struct Run {
    order: Vec<String>,
    results: Results,
    status: ExitStatus,
    work: PathBuf,
    output: String,
}

impl Run {
    /// The log of each failed step (and the Java log), for a failure message.
    fn failure_logs(&self, failed: &[String]) -> String {
        let mut s = String::new();
        for step in failed {
            let log = self.work.join("logs").join(format!("{step}.log"));
            let log = if log.exists() {
                log
            } else {
                self.work.join("logs/java.log")
            };
            s.push_str(&format!(
                "\n--- {} ({step})\n{}",
                log.display(),
                tail(&read(&log), 40)
            ));
        }
        s
    }
}

/// Runs `tests/pkcs11/interop.sh` against `module`, bounded by `secs`.
fn run_script(
    module: &Path,
    token: &str,
    pin: &str,
    work: &Path,
    envs: &[(&str, &str)],
    secs: &str,
) -> Run {
    let script = repo_root().join("tests/pkcs11/interop.sh");
    let out = Command::new("timeout")
        .args(["-k", "5", secs, "bash"])
        .arg(&script)
        .current_dir(repo_root())
        .env("MODULE", module)
        .env("TOKEN_LABEL", token)
        .env("PIN", pin)
        .env("WORK_DIR", work)
        .env("CMD_TIMEOUT", CMD_TIMEOUT_SECS)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running bash tests/pkcs11/interop.sh");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut order = Vec::new();
    let mut results = Results::new();
    for line in read(&work.join("results.tsv")).lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(step), Some(status), detail) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !results.contains_key(step) {
            order.push(step.to_string());
        }
        results.insert(
            step.to_string(),
            (status == "pass", detail.unwrap_or("").to_string()),
        );
    }
    Run {
        order,
        results,
        status: out.status,
        work: work.to_path_buf(),
        output,
    }
}

/// The tools the script drives, from `.ci/run`: a missing one fails here.
fn check_tools() {
    let mut missing = Vec::new();
    for tool in [
        "pkcs11-tool",
        "softhsm2-util",
        "p11tool",
        "openssl",
        "java",
        "javac",
        "keytool",
        "xxd",
        "timeout",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(tool.to_string());
        }
    }
    for file in [SOFTHSM_MODULE, ENGINE] {
        if !Path::new(file).exists() {
            missing.push(file.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run `bash .ci/run` (it installs opensc, softhsm2, \
         libengine-pkcs11-openssl, gnutls-bin, p11-kit and a JDK)"
    );
}

/// A SoftHSM2 token `interop` in `dir`; returns the SOFTHSM2_CONF file.
fn softhsm_token(dir: &Path, pin: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["30", "softhsm2-util", "--init-token", "--free"])
        .args(["--label", "interop", "--pin", pin])
        .args(["--so-pin", "so-interop-1"])
        .env("SOFTHSM2_CONF", &conf)
        .stdin(Stdio::null())
        .output()
        .expect("running softhsm2-util");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    conf
}

fn cell(r: Option<&(bool, String)>, not_applicable: bool) -> &'static str {
    match r {
        Some((true, _)) => "pass",
        Some((false, _)) if not_applicable => "n/a (fail)",
        Some((false, _)) => "FAIL",
        None => "missing",
    }
}

#[tokio::test]
async fn pkcs11_consumers_work_with_our_module_as_with_softhsm2() {
    check_tools();
    let ours = hsm_tests::bin_dir().join("libhsm_pkcs11.so");
    assert!(
        ours.exists(),
        "{} is missing: build it with `cargo build --workspace --all-targets` \
         (bash .ci/run does)",
        ours.display()
    );
    let tmp = tempfile::tempdir().unwrap();

    // SoftHSM2: a fresh token in a temporary directory.
    let soft_pin = "interop-1234";
    let soft_conf = softhsm_token(&tmp.path().join("softhsm"), soft_pin);
    let soft = run_script(
        Path::new(SOFTHSM_MODULE),
        "interop",
        soft_pin,
        &tmp.path().join("work-softhsm2"),
        &[
            ("SOFTHSM2_CONF", soft_conf.to_str().unwrap()),
            ("TOKEN_KEYS_EXTRACTABLE", "yes"),
        ],
        SOFTHSM_RUN_SECS,
    );

    // Ours: the module in front of a dev group of three members.
    let mut group = DevGroup::start(3).unwrap();
    let info = group.wait_ready().await.unwrap();
    let conf = tmp.path().join("hsm-pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            "url = {:?}\nca = {:?}\n",
            info["url"].as_str().unwrap(),
            info["ca_cert"].as_str().unwrap()
        ),
    )
    .unwrap();
    let pin = info["crypto_officer_password"]
        .as_str()
        .expect("dev.json: crypto_officer_password");
    let mine = run_script(
        &ours,
        OUR_TOKEN,
        pin,
        &tmp.path().join("work-hsm-ha"),
        &[
            ("HSM_PKCS11_CONF", conf.to_str().unwrap()),
            ("TOKEN_KEYS_EXTRACTABLE", "no"),
        ],
        OURS_RUN_SECS,
    );

    // The table: every step either run knows, in the script's order.
    let mut steps = soft.order.clone();
    for s in &mine.order {
        if !steps.contains(s) {
            steps.push(s.clone());
        }
    }
    let na = |s: &str| NOT_APPLICABLE_ON_SOFTHSM.iter().any(|(n, _)| *n == s);
    let na_ours = |s: &str| NOT_APPLICABLE_ON_OURS.iter().any(|(n, _)| *n == s);
    let w = steps.iter().map(String::len).max().unwrap_or(4).max(4);
    let mut table = format!(
        "{:w$} | {:10} | {:10}\n{}-|-{}-|-{}\n",
        "step",
        "softhsm2",
        "hsm-ha",
        "-".repeat(w),
        "-".repeat(10),
        "-".repeat(10)
    );
    for s in &steps {
        table.push_str(&format!(
            "{s:w$} | {:10} | {:10}\n",
            cell(soft.results.get(s), na(s)),
            cell(mine.results.get(s), na_ours(s))
        ));
    }
    let mut details = String::new();
    for (name, run) in [("softhsm2", &soft), ("hsm-ha", &mine)] {
        details.push_str(&format!("\n{name} (script {}):\n", run.status));
        for s in &run.order {
            let (ok, d) = &run.results[s];
            details.push_str(&format!(
                "  {s}: {} {d}\n",
                if *ok { "pass" } else { "FAIL" }
            ));
        }
    }
    for (s, why) in NOT_APPLICABLE_ON_SOFTHSM {
        details.push_str(&format!("n/a on softhsm2: {s}: {why}\n"));
    }
    for (s, why) in NOT_APPLICABLE_ON_OURS {
        details.push_str(&format!("n/a on hsm-ha: {s}: {why}\n"));
    }
    println!("{table}{details}");

    // Every step ran on both sides, and the scripts ended on their own.
    for (name, run) in [("softhsm2", &soft), ("hsm-ha", &mine)] {
        assert!(
            matches!(run.status.code(), Some(0 | 1)),
            "the script against {name} ended with {} (timeout or usage):\n{}\n{table}",
            run.status,
            tail(&run.output, 60)
        );
    }
    let soft_failed: Vec<String> = steps
        .iter()
        .filter(|s| !na(s) && !soft.results.get(*s).is_some_and(|r| r.0))
        .cloned()
        .collect();
    assert!(
        soft_failed.is_empty(),
        "steps failing on SoftHSM2 (the harness or the tools, not our module): \
         {soft_failed:?}\n{table}{details}{}",
        soft.failure_logs(&soft_failed)
    );
    let ours_failed: Vec<String> = steps
        .iter()
        .filter(|s| !na_ours(s) && !mine.results.get(*s).is_some_and(|r| r.0))
        .cloned()
        .collect();
    assert!(
        ours_failed.is_empty(),
        "steps failing on hsm-ha: {ours_failed:?}\n{table}{details}{}\n{}",
        mine.failure_logs(&ours_failed),
        group.logs()
    );
}
