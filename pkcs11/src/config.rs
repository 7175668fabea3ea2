//! Where the module finds the proxy: a TOML file and environment variables.
//!
//! Decides the configuration keys, their defaults and which source wins:
//! the file named by `HSM_PKCS11_CONF` (else `/etc/hsm-ha/pkcs11.toml` when
//! it exists), then `HSM_PKCS11_*` variables over it. Every key is
//! documented on its field; `docs/PKCS11.md` repeats them for operators.

use crate::error::{Error, Result};
use hsm_api::Role;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file read when `HSM_PKCS11_CONF` is not set (if it exists).
pub const DEFAULT_FILE: &str = "/etc/hsm-ha/pkcs11.toml";

/// The module's configuration, as read from the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `url`: the proxy's listener, `https://host:port` (env
    /// `HSM_PKCS11_URL`). Required.
    #[serde(default)]
    pub url: String,
    /// `ca`: PEM file of the CA that signed the proxy's certificate (env
    /// `HSM_PKCS11_CA`). Required.
    #[serde(default)]
    pub ca: PathBuf,
    /// `cert` and `key`: a client certificate and key (PEM) for mutual TLS,
    /// when the proxy's listener asks for one (env `HSM_PKCS11_CERT`,
    /// `HSM_PKCS11_KEY`). Both or neither.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `token_label`: the token's label, at most 32 bytes (env
    /// `HSM_PKCS11_TOKEN_LABEL`). Default `hsm-ha`.
    #[serde(default = "default_label")]
    pub token_label: String,
    /// `slot_id`: the one slot's id. It never changes unless this is
    /// changed (env `HSM_PKCS11_SLOT_ID`). Default 0.
    #[serde(default)]
    pub slot_id: u64,
    /// `serial`: the token's serial number, at most 16 characters (env
    /// `HSM_PKCS11_SERIAL`). Default: 16 hex digits of the SHA-256 of
    /// `url`, so it is the same for every member, restart and failover.
    #[serde(default)]
    pub serial: Option<String>,
    /// `user_role`: the partition role `C_Login(CKU_USER)` logs in as:
    /// `crypto-officer` (creates and uses keys; the default) or
    /// `crypto-user` (uses keys). `C_Login(CKU_CRYPTO_USER = 0x80000001)`,
    /// the Luna user type, is always `crypto-user` (env
    /// `HSM_PKCS11_USER_ROLE`).
    #[serde(default = "default_role")]
    pub user_role: Role,
    /// `timeout_ms`: deadline for one request to the proxy (env
    /// `HSM_PKCS11_TIMEOUT_MS`). Default 10000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// `retry_ms`: how long a call keeps retrying while the proxy cannot
    /// be reached or answers 503 (a proxy restart, every member down) before
    /// it fails with `CKR_DEVICE_ERROR` (env `HSM_PKCS11_RETRY_MS`).
    /// Default 15000.
    #[serde(default = "default_retry")]
    pub retry_ms: u64,
    /// `gcm_iv_write_back`: allow AES-GCM encryption (env
    /// `HSM_PKCS11_GCM_IV_WRITE_BACK`, `true` or `false`). The partition
    /// makes the IV and the module writes it into the caller's
    /// `CK_GCM_PARAMS.pIv` when the encryption ends — after `C_EncryptInit`
    /// has returned — so this is safe only for callers that keep that
    /// buffer until then (C programs that do, PyKCS11, the `cryptoki`
    /// crate); Java's SunPKCS11 frees it at once and must not enable this.
    /// Default `false`: AES-GCM encryption is refused
    /// (`CKR_MECHANISM_PARAM_INVALID`); decryption always works.
    #[serde(default)]
    pub gcm_iv_write_back: bool,
    /// `log`: what the module logs to standard error, as a tracing filter
    /// (`warn`, `debug`, `hsm_pkcs11=trace`; env `HSM_PKCS11_LOG`).
    /// Default `warn`.
    #[serde(default = "default_log")]
    pub log: String,
}

fn default_label() -> String {
    "hsm-ha".into()
}
fn default_role() -> Role {
    Role::CryptoOfficer
}
fn default_timeout() -> u64 {
    10_000
}
fn default_retry() -> u64 {
    15_000
}
fn default_log() -> String {
    "warn".into()
}

impl Config {
    /// Reads the file (if any) and applies the environment over it.
    pub fn load() -> Result<Config> {
        Self::load_from(|k| std::env::var(k).ok())
    }

    /// [`Config::load`] with the environment given as a lookup (tests).
    pub fn load_from(env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file = match env("HSM_PKCS11_CONF") {
            Some(p) => Some(PathBuf::from(p)),
            None if Path::new(DEFAULT_FILE).exists() => Some(PathBuf::from(DEFAULT_FILE)),
            None => None,
        };
        let mut c: Config = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::Config(format!("{}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))?
            }
            None => toml::from_str("").map_err(|e| Error::Config(e.to_string()))?,
        };
        let num = |k: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| Error::Config(format!("{k}=`{v}` is not a whole number")))
        };
        if let Some(v) = env("HSM_PKCS11_URL") {
            c.url = v;
        }
        if let Some(v) = env("HSM_PKCS11_CA") {
            c.ca = v.into();
        }
        if let Some(v) = env("HSM_PKCS11_CERT") {
            c.cert = Some(v.into());
        }
        if let Some(v) = env("HSM_PKCS11_KEY") {
            c.key = Some(v.into());
        }
        if let Some(v) = env("HSM_PKCS11_TOKEN_LABEL") {
            c.token_label = v;
        }
        if let Some(v) = env("HSM_PKCS11_SLOT_ID") {
            c.slot_id = num("HSM_PKCS11_SLOT_ID", v)?;
        }
        if let Some(v) = env("HSM_PKCS11_SERIAL") {
            c.serial = Some(v);
        }
        if let Some(v) = env("HSM_PKCS11_USER_ROLE") {
            c.user_role = v
                .parse()
                .map_err(|e| Error::Config(format!("HSM_PKCS11_USER_ROLE: {e}")))?;
        }
        if let Some(v) = env("HSM_PKCS11_TIMEOUT_MS") {
            c.timeout_ms = num("HSM_PKCS11_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("HSM_PKCS11_RETRY_MS") {
            c.retry_ms = num("HSM_PKCS11_RETRY_MS", v)?;
        }
        if let Some(v) = env("HSM_PKCS11_GCM_IV_WRITE_BACK") {
            c.gcm_iv_write_back = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(Error::Config(format!(
                        "HSM_PKCS11_GCM_IV_WRITE_BACK=`{v}` is not true or false"
                    )))
                }
            };
        }
        if let Some(v) = env("HSM_PKCS11_LOG") {
            c.log = v;
        }
        c.validate(file.as_deref())?;
        Ok(c)
    }

    fn validate(&self, file: Option<&Path>) -> Result<()> {
        let from = match file {
            Some(p) => format!(" (file {})", p.display()),
            None => format!(" (no file: set HSM_PKCS11_CONF or write {DEFAULT_FILE})"),
        };
        if !self.url.starts_with("https://") {
            return Err(Error::Config(format!(
                "url `{}` must be https://host:port{from}",
                self.url
            )));
        }
        if self.ca.as_os_str().is_empty() {
            return Err(Error::Config(format!(
                "ca (the proxy's CA PEM) is required{from}"
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::Config("cert and key go together".into()));
        }
        if self.token_label.is_empty() || self.token_label.len() > 32 {
            return Err(Error::Config("token_label must be 1 to 32 bytes".into()));
        }
        if let Some(s) = &self.serial {
            if s.is_empty() || s.len() > 16 || !s.is_ascii() {
                return Err(Error::Config(
                    "serial must be 1 to 16 ASCII characters".into(),
                ));
            }
        }
        if !matches!(self.user_role, Role::CryptoOfficer | Role::CryptoUser) {
            return Err(Error::Config(
                "user_role must be crypto-officer or crypto-user".into(),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(Error::Config("timeout_ms must be above 0".into()));
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn retry_for(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }

    /// The token's serial: configured, or derived from the URL.
    pub fn serial(&self) -> String {
        use sha2::{Digest, Sha256};
        match &self.serial {
            Some(s) => s.clone(),
            None => hex::encode(&Sha256::digest(self.url.as_bytes())[..8]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(|k| m.get(k).cloned())
    }

    #[test]
    fn environment_alone_is_enough_and_defaults_apply() {
        let c = load(&[
            ("HSM_PKCS11_CONF", "/nonexistent/but/overridden"),
            ("HSM_PKCS11_URL", "https://127.0.0.1:8443"),
            ("HSM_PKCS11_CA", "/tmp/ca.pem"),
        ]);
        // The named file must exist: a typo in HSM_PKCS11_CONF is an error.
        assert!(matches!(c, Err(Error::Config(m)) if m.contains("/nonexistent")));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "url = \"https://h:1\"\nca = \"/ca.pem\"\nslot_id = 7\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = load(&[
            ("HSM_PKCS11_CONF", f.to_str().unwrap_or_default()),
            ("HSM_PKCS11_URL", "https://127.0.0.1:8443"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.url, "https://127.0.0.1:8443");
        assert_eq!(c.slot_id, 7);
        assert_eq!(c.token_label, "hsm-ha");
        assert_eq!(c.user_role, Role::CryptoOfficer);
        assert_eq!(c.serial().len(), 16);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let base = [
            ("HSM_PKCS11_URL", "https://127.0.0.1:8443"),
            ("HSM_PKCS11_CA", "/tmp/ca.pem"),
        ];
        for (k, v, want) in [
            ("HSM_PKCS11_URL", "http://x", "https://"),
            ("HSM_PKCS11_SLOT_ID", "x", "HSM_PKCS11_SLOT_ID"),
            ("HSM_PKCS11_USER_ROLE", "security-officer", "user_role"),
            ("HSM_PKCS11_TOKEN_LABEL", &"x".repeat(33), "token_label"),
        ] {
            let mut vars = base.to_vec();
            vars.push((k, v));
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let f = dir.path().join("empty.toml");
            std::fs::write(&f, "").unwrap_or_else(|e| panic!("{e}"));
            let fs = f.to_string_lossy().into_owned();
            vars.push(("HSM_PKCS11_CONF", &fs));
            match load(&vars) {
                Err(Error::Config(m)) => assert!(m.contains(want), "{k}: {m}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }
}
