//! `hsm-proxy dev --pkcs11-module`: every member of the dev group keeps its
//! keys in a PKCS#11 token of that module.
//!
//! Decides which token each member gets and how the member reaches it:
//!
//! - with `--token-labels L0,L1,…` (one per member) and `--token-pin-file`,
//!   tokens that already exist (a vendor's partitions, made with the
//!   vendor's tools), all logged in with that PIN;
//! - without them, new SoftHSM2 tokens made here by `softhsm2-util`: each
//!   member `mN` gets `members/mN.tokens/` (the token directory),
//!   `members/mN.softhsm2.conf` (its `SOFTHSM2_CONF`, given to every
//!   `hsm-node` command on that member) and random PINs in
//!   `members/mN.token-pin` and `members/mN.token-so-pin` (mode 0600), so
//!   no two members share a token and the user's own SoftHSM2 tokens are
//!   never touched.
//!
//! Chosen at first start and kept in `dev-state.json`; later starts reuse it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `--pkcs11-module` and its companions asked for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub module: PathBuf,
    pub labels: Option<Vec<String>>,
    pub pin_file: Option<PathBuf>,
}

/// The members' tokens, as first start made or found them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevTokens {
    pub module: PathBuf,
    /// By member, in the order of the group's members.
    pub members: Vec<MemberToken>,
}

/// One member's token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberToken {
    pub label: String,
    pub pin_file: PathBuf,
    /// The member's own `SOFTHSM2_CONF`, for a token made here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softhsm2_conf: Option<PathBuf>,
}

impl MemberToken {
    /// The environment every `hsm-node` command on this member needs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.softhsm2_conf
            .iter()
            .map(|c| ("SOFTHSM2_CONF", c.display().to_string()))
            .collect()
    }

    /// `hsm-node init`'s arguments that put the member on this token.
    pub fn init_args(&self, module: &Path) -> Vec<String> {
        vec![
            "--pkcs11-module".into(),
            module.display().to_string(),
            "--token-label".into(),
            self.label.clone(),
            "--pin-file".into(),
            self.pin_file.display().to_string(),
        ]
    }
}

/// Checks the request and makes (SoftHSM2) or names (existing) one token
/// per member of `names`, under `members_dir`.
pub fn prepare(
    req: &TokenRequest,
    members_dir: &Path,
    names: &[String],
) -> Result<DevTokens, String> {
    let module = std::path::absolute(&req.module)
        .map_err(|e| format!("--pkcs11-module {}: {e}", req.module.display()))?;
    if !module.is_file() {
        return Err(format!(
            "--pkcs11-module {}: no such file (the vendor's PKCS#11 module, e.g. \
             /usr/lib/softhsm/libsofthsm2.so)",
            module.display()
        ));
    }
    let members = match &req.labels {
        Some(labels) => {
            if labels.len() != names.len() {
                return Err(format!(
                    "--token-labels names {} tokens for {} members: give one per member",
                    labels.len(),
                    names.len()
                ));
            }
            let pin_file = req.pin_file.as_ref().ok_or(
                "--token-labels needs --token-pin-file, the file with the tokens' user PIN",
            )?;
            let pin_file = std::path::absolute(pin_file)
                .map_err(|e| format!("--token-pin-file {}: {e}", pin_file.display()))?;
            if !pin_file.is_file() {
                return Err(format!(
                    "--token-pin-file {}: no such file",
                    pin_file.display()
                ));
            }
            labels
                .iter()
                .map(|label| MemberToken {
                    label: label.clone(),
                    pin_file: pin_file.clone(),
                    softhsm2_conf: None,
                })
                .collect()
        }
        None => {
            let members_dir = std::path::absolute(members_dir)
                .map_err(|e| format!("{}: {e}", members_dir.display()))?;
            names
                .iter()
                .map(|name| make_softhsm_token(&members_dir, name))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(DevTokens { module, members })
}

/// A new SoftHSM2 token for member `name`, in files of its own.
fn make_softhsm_token(members_dir: &Path, name: &str) -> Result<MemberToken, String> {
    let token_dir = members_dir.join(format!("{name}.tokens"));
    let conf = members_dir.join(format!("{name}.softhsm2.conf"));
    let pin_file = members_dir.join(format!("{name}.token-pin"));
    let so_pin_file = members_dir.join(format!("{name}.token-so-pin"));
    hsm_server::private_fs::create_dir_all(&token_dir)
        .map_err(|e| format!("{}: {e}", token_dir.display()))?;
    let write = |path: &Path, text: &str| {
        hsm_server::private_fs::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        &conf,
        &format!(
            "# Written by `hsm-proxy dev`: member {name}'s own SoftHSM2 token.\n\
             directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            token_dir.display()
        ),
    )?;
    let (pin, so_pin) = (super::password()?, super::password()?);
    write(&pin_file, &format!("{pin}\n"))?;
    write(&so_pin_file, &format!("{so_pin}\n"))?;
    let label = format!("hsm-dev-{name}");
    // softhsm2-util takes PINs only as arguments: these are a fresh dev
    // token's, seen by this machine's `ps` for the call's moment.
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--pin", &pin, "--so-pin", &so_pin])
        .env("SOFTHSM2_CONF", &conf)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "running softhsm2-util: {e} (without --token-labels, dev makes SoftHSM2 \
                 tokens: install softhsm2, or name existing tokens with --token-labels)"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "softhsm2-util --init-token for member {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(MemberToken {
        label,
        pin_file,
        softhsm2_conf: Some(conf),
    })
}
