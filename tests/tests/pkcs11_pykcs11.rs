//! A scripted PyKCS11 session over every mechanism, against SoftHSM2 and
//! against our module, side by side: `tests/pkcs11/pykcs11_session.py` runs
//! once on a SoftHSM2 token made in a temporary directory and once on
//! `libhsm_pkcs11.so` in front of `hsm-proxy dev` (three members). The test
//! prints the table of both runs (check | softhsm2 | hsm-ha) and asserts that
//! every check passes on both, but for the N/A lines the script documents
//! (its `DOCUMENTED_NA`, mirrored in [`NA_SOFTHSM`] and [`NA_HSM_HA`]).
//! Where the two modules legitimately differ (non-extractable token keys,
//! the AES-GCM IV the token generates, no SHA-1 signatures, ...) the script
//! checks each side's documented behaviour. PyKCS11 lives in the repository's
//! `.venv` and SoftHSM2 comes from Debian, both installed by `.ci/run`; a
//! missing one fails the test (it never skips).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_tests::dev_group::{repo_root, DevGroup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Liveness bounds of one script run (seconds): SoftHSM2 takes about 1 s,
/// ours some seconds (RSA keys are made on three members); both are kept
/// under nextest's terminate-after.
const SOFTHSM_RUN_SECS: &str = "60";
const OURS_RUN_SECS: &str = "200";

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SOFTHSM_LABEL: &str = "softhsm";
const SOFTHSM_PIN: &str = "1234";
/// Our token's label (the module's one slot).
const OUR_TOKEN: &str = "hsm-ha";

/// The N/A lines the script may print on SoftHSM2 2.6.1 (Debian 12).
const NA_SOFTHSM: &[&str] = &[
    // SoftHSM2 does not implement CKM_SP800_108_COUNTER_KDF.
    "sp800-108-counter-kdf",
    // SoftHSM2 2.6 has CKM_ECDSA only, no CKM_ECDSA_SHA*.
    "ecdsa-sha256-p256",
    "ecdsa-sha384-p384",
    "ecdsa-sha512-p521",
    "ecdsa-sha256-multipart",
    // SoftHSM2 2.6 does OAEP with SHA-1 only.
    "rsa-oaep-sha256",
    "rsa-oaep-wrap-sha256",
];
/// The N/A lines the script may print on our module: none.
const NA_HSM_HA: &[&str] = &[];
/// Fewer lines than this means the script stopped early.
const MIN_CHECKS: usize = 60;

/// One script run: its exit status, and the check lines in order.
struct Run {
    out: Output,
    checks: Vec<(String, String, String)>,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn report(&self, who: &str) -> String {
        format!(
            "--- {who}: pykcs11_session.py ({})\n{}\n--- {who}: stderr\n{}",
            self.out.status,
            self.stdout(),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    fn get(&self, name: &str) -> Option<&(String, String, String)> {
        self.checks.iter().find(|(n, _, _)| n == name)
    }

    /// What is wrong with this run: FAIL lines, N/A lines outside `na`, too
    /// few checks, a non-zero exit.
    fn problems(&self, na: &[&str]) -> Vec<String> {
        let mut bad: Vec<String> = self
            .checks
            .iter()
            .filter(|(name, status, _)| {
                !(status == "PASS" || (status == "N/A" && na.contains(&name.as_str())))
            })
            .map(|(name, status, detail)| format!("{status} {name}: {detail}"))
            .collect();
        if self.checks.len() < MIN_CHECKS {
            bad.push(format!(
                "only {} checks (want at least {MIN_CHECKS})",
                self.checks.len()
            ));
        }
        if !self.out.status.success() && bad.is_empty() {
            bad.push(format!("the script exited with {}", self.out.status));
        }
        bad
    }
}

fn run_script(module: &Path, label: &str, pin: &str, secs: &str, envs: &[(&str, &Path)]) -> Run {
    let root = repo_root();
    let mut cmd = Command::new("timeout");
    cmd.arg(secs)
        .arg(root.join(".venv/bin/python"))
        .arg(root.join("tests/pkcs11/pykcs11_session.py"))
        .arg("--module")
        .arg(module)
        .args(["--token-label", label, "--pin", pin])
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running pykcs11_session.py");
    let checks = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (status, rest) = ["PASS ", "FAIL ", "N/A "]
                .iter()
                .find_map(|p| line.strip_prefix(p).map(|r| (p.trim(), r)))?;
            let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            Some((name.to_string(), status.to_string(), detail.to_string()))
        })
        .collect();
    Run { out, checks }
}

/// A SoftHSM2 token labelled `softhsm` (PIN 1234) in a temporary directory;
/// returns the directory and its `SOFTHSM2_CONF`.
fn softhsm_token() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", SOFTHSM_LABEL])
        .args(["--pin", SOFTHSM_PIN, "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("softhsm2-util: {e}: run `bash .ci/run` (it installs the softhsm2 package)")
        });
    assert!(
        out.status.success(),
        "softhsm2-util --init-token: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, conf)
}

fn table(soft: &Run, ours: &Run) -> String {
    let mut names: Vec<&str> = soft.checks.iter().map(|(n, _, _)| n.as_str()).collect();
    for (n, _, _) in &ours.checks {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(5).max(5);
    let cell = |r: &Run, n: &str| r.get(n).map(|c| c.1.clone()).unwrap_or("-".into());
    let mut s = format!("{:width$} | softhsm2 | hsm-ha\n", "check");
    s.push_str(&format!("{}-|----------|-------\n", "-".repeat(width)));
    let mut counts: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for n in &names {
        let (a, b) = (cell(soft, n), cell(ours, n));
        s.push_str(&format!("{n:width$} | {a:8} | {b}\n"));
        *counts.entry(("softhsm2", a)).or_default() += 1;
        *counts.entry(("hsm-ha", b)).or_default() += 1;
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|((who, st), c)| format!("{who} {st} {c}"))
        .collect();
    s.push_str(&format!("{} checks: {}\n", names.len(), summary.join(", ")));
    s
}

#[tokio::test]
async fn pykcs11_session_passes_on_softhsm2_and_on_our_module() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash .ci/run` (it creates .venv with PyKCS11 and cryptography)",
        python.display()
    );
    let import = Command::new(&python)
        .args(["-c", "import PyKCS11, cryptography"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "PyKCS11 or cryptography is missing from .venv: run `bash .ci/run` \
         (tests/pkcs11/requirements.txt)\n{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        Path::new(SOFTHSM_MODULE).exists(),
        "{SOFTHSM_MODULE} is missing: run `bash .ci/run` (it installs softhsm2)"
    );
    let module = hsm_tests::bin_dir().join("libhsm_pkcs11.so");
    assert!(
        module.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`, as `bash .ci/run` does)",
        module.display()
    );

    // SoftHSM2 direct.
    let (_soft_dir, soft_conf) = softhsm_token();
    let soft = run_script(
        Path::new(SOFTHSM_MODULE),
        SOFTHSM_LABEL,
        SOFTHSM_PIN,
        SOFTHSM_RUN_SECS,
        &[("SOFTHSM2_CONF", &soft_conf)],
    );

    // Ours, in front of a three-member dev group.
    let mut group = DevGroup::start(3).unwrap();
    let info = group.wait_ready().await.unwrap();
    let conf = group.root.path().join("pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            // PyKCS11 keeps CK_GCM_PARAMS.pIv (mech._source_iv) until the
            // encryption ends, so the partition's IV may be written back.
            "url = \"{}\"\nca = \"{}\"\ngcm_iv_write_back = true\n",
            info["url"].as_str().unwrap(),
            info["ca_cert"].as_str().unwrap()
        ),
    )
    .unwrap();
    let pin = info["crypto_officer_password"]
        .as_str()
        .expect("dev.json: crypto_officer_password")
        .to_string();
    let ours = run_script(
        &module,
        OUR_TOKEN,
        &pin,
        OURS_RUN_SECS,
        &[("HSM_PKCS11_CONF", &conf)],
    );
    group.check_running("during the PyKCS11 session").unwrap();

    println!("{}", table(&soft, &ours));
    for (who, run) in [("softhsm2", &soft), ("hsm-ha", &ours)] {
        for line in run.stdout().lines().filter(|l| l.starts_with("INFO ")) {
            println!("{who}: {line}");
        }
    }
    let soft_bad = soft.problems(NA_SOFTHSM);
    let ours_bad = ours.problems(NA_HSM_HA);
    if !soft_bad.is_empty() || !ours_bad.is_empty() {
        panic!(
            "PyKCS11 session failed\nsofthsm2: {soft_bad:#?}\nhsm-ha: {ours_bad:#?}\n{}\n{}\n{}",
            soft.report("softhsm2"),
            ours.report("hsm-ha"),
            if ours_bad.is_empty() {
                String::new()
            } else {
                group.logs()
            }
        );
    }
    let soft_names: Vec<&String> = soft.checks.iter().map(|c| &c.0).collect();
    let our_names: Vec<&String> = ours.checks.iter().map(|c| &c.0).collect();
    assert_eq!(soft_names, our_names, "both runs make the same checks");
}
