//! Test members whose keys live in SoftHSM2 tokens (issue 18): every
//! suite that starts members through [`crate::TestNode`] runs with token
//! members when `HSM_TEST_TOKEN_MEMBERS` says so, without a change to the
//! suite itself:
//!
//! - unset, `0` or `none`: software members (the default);
//! - `1` or `all`: every member on a token of its own;
//! - `mixed`: members whose name ends in an even number (`node0`,
//!   `node2`, …, and a lone `node`) on tokens, the others software — one
//!   group, one cloning domain, both kinds.
//!
//! A benchmark that is about token members (`compare --only tokens`) holds
//! [`all_tokens`]'s guard while it makes its members: every member
//! initialised meanwhile is a token member, whatever the variable says.
//!
//! Each token is SoftHSM2's, in a directory of the test's own with its own
//! `SOFTHSM2_CONF` (`<node dir>.softhsm2.conf`), which the member process
//! gets in its environment; the PIN is in a 0600 file beside it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// SoftHSM2's module as Debian installs it (`.ci/run` installs softhsm2).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const TOKEN_PIN: &str = "token-pin-1";
const TOKEN_SO_PIN: &str = "token-so-pin-1";

/// Live [`AllTokens`] guards.
static FORCED: AtomicUsize = AtomicUsize::new(0);

/// While it lives, every member initialised in this process is a token
/// member. A member that restarts later stays what it was made (its token
/// files say so).
pub struct AllTokens(());

/// Makes every member initialised until the guard drops a token member.
pub fn all_tokens() -> AllTokens {
    FORCED.fetch_add(1, Ordering::SeqCst);
    AllTokens(())
}

impl Drop for AllTokens {
    fn drop(&mut self) {
        FORCED.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether member `name` keeps its keys in a token in this run.
pub fn is_token_member(name: &str) -> bool {
    if FORCED.load(Ordering::SeqCst) > 0 {
        return true;
    }
    let mode = std::env::var("HSM_TEST_TOKEN_MEMBERS").unwrap_or_default();
    match mode.as_str() {
        "1" | "all" => true,
        "mixed" => {
            let digits: String = name
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            digits.parse::<u64>().map(|n| n % 2 == 0).unwrap_or(true)
        }
        _ => false,
    }
}

/// Whether every member of this run's groups is a software member. Token
/// members hold no Ed25519 or X25519 keys and do not derive: they answer
/// 400 `NotSupported`, naming the mechanism (docs/MEMBERS.md, "Known
/// limits"). Suites that make every key type or derive leave those out on
/// a token run and check that answer instead.
pub fn software_only() -> bool {
    !is_token_member("node0")
}

/// A member's token files.
pub struct TokenFiles {
    /// Its `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// The directory SoftHSM2 keeps the token in.
    pub token_dir: PathBuf,
    /// The file with the user PIN.
    pub pin_file: PathBuf,
    /// The token's label.
    pub label: String,
}

/// Where the token files of the member whose directory is `dir` are.
pub fn token_files(dir: &Path) -> TokenFiles {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label: String = format!("hsm-{name}").chars().take(32).collect();
    TokenFiles {
        conf: dir.with_extension("softhsm2.conf"),
        token_dir: dir.with_extension("tokens"),
        pin_file: dir.with_extension("token-pin"),
        label,
    }
}

/// Makes (again) an empty SoftHSM2 token for the member at `dir`.
pub fn make_token(dir: &Path) -> Result<TokenFiles> {
    if !Path::new(SOFTHSM_MODULE).exists() {
        bail!("{SOFTHSM_MODULE} is missing: run `bash .ci/run` (it installs softhsm2)");
    }
    let f = token_files(dir);
    if f.token_dir.exists() {
        std::fs::remove_dir_all(&f.token_dir)?;
    }
    std::fs::create_dir_all(&f.token_dir)?;
    std::fs::write(
        &f.conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            f.token_dir.display()
        ),
    )?;
    let out = Command::new("timeout")
        .args(["30", "softhsm2-util", "--init-token", "--free"])
        .args([
            "--label",
            &f.label,
            "--pin",
            TOKEN_PIN,
            "--so-pin",
            TOKEN_SO_PIN,
        ])
        .env("SOFTHSM2_CONF", &f.conf)
        .stdin(Stdio::null())
        .output()
        .context("running softhsm2-util")?;
    if !out.status.success() {
        bail!("softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
    }
    crate::write_mode(&f.pin_file, &format!("{TOKEN_PIN}\n"), 0o600)?;
    Ok(f)
}

/// `pkcs11-tool` on the member's token, logged in: its output, or why not.
pub fn pkcs11_tool(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    let f = token_files(dir);
    let out = Command::new("timeout")
        .args(["30", "pkcs11-tool", "--module", SOFTHSM_MODULE])
        .args(["--token-label", &f.label, "--login", "--pin", TOKEN_PIN])
        .args(args)
        .env("SOFTHSM2_CONF", &f.conf)
        .stdin(Stdio::null())
        .output()
        .context("running pkcs11-tool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}
