//! The credential file: the role and password the proxy logs in to the
//! members' partition with, for its own background work; and the operator
//! token file (`metrics.admin_token_file`).
//!
//! Decides: the format of those files and how they are read. Never: when the
//! proxy logs in, what it does with the session, or what the token opens.
//!
//! The file is TOML with two keys, kept apart from the configuration so that
//! the configuration can be shown (`check-config`), versioned and templated
//! while the password stays in a file only the proxy's user can read:
//!
//! ```toml
//! role = "replication"
//! password = "…"
//! ```

use crate::error::ConfigError;
use crate::schema::{section, Documented, Kind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

section! {
    /// The contents of the credential file (`group.credential_file`).
    pub struct Credential {
        /// The role the proxy logs in with: `replication` (reads the
        /// inventory and copies clone blobs between members, nothing else:
        /// the least privilege that does the work) or `crypto-officer` (for
        /// a partition created without a replication password). Required.
        pub role: CredentialRole,
        /// The password of that role on the group's partition, the same on
        /// every member. Not empty. Required.
        pub password: Secret,
    }
}

/// The roles the proxy's background work may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialRole {
    /// The partition's replication role.
    Replication,
    /// The partition's crypto officer.
    CryptoOfficer,
}

impl CredentialRole {
    /// The role as the node's login endpoint spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialRole::Replication => "replication",
            CredentialRole::CryptoOfficer => "crypto-officer",
        }
    }
}

impl Documented for CredentialRole {
    const KIND: Kind = Kind::Value {
        name: "`replication` or `crypto-officer`",
        example: "\"replication\"",
    };
}

/// A password: wiped from memory when dropped, never shown by `Debug` and
/// never written back out (it serialises as `"(redacted)"`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }
    /// The password itself, to send in a login request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("(redacted)")
    }
}

impl Documented for Secret {
    const KIND: Kind = Kind::Value {
        name: "string (secret)",
        example: "\"…\"",
    };
}

const FORMAT_FIX: &str = "write a TOML file with `role = \"replication\"` (or \"crypto-officer\") and `password = \"…\"`";

impl Credential {
    /// Reads and checks a credential file. Errors are about `key` (the
    /// configuration key that named the file) and say which file.
    pub fn read(path: &Path, key: &str) -> Result<Credential, ConfigError> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| crate::validate::io_error(key, path, &e))?;
        let cred: Credential = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(&text, s.start)))
                .unwrap_or_default();
            ConfigError::new(
                key,
                format!("{shown}: not a credential file{at}: {}", e.message().trim()),
                FORMAT_FIX,
            )
        })?;
        if cred.password.expose().is_empty() {
            return Err(ConfigError::new(
                key,
                format!("{shown}: the password is empty"),
                "set `password` to the role's password on the partition",
            ));
        }
        Ok(cred)
    }
}

/// The shortest operator token accepted: 32 characters (128 bits as hex).
pub const MIN_TOKEN_LEN: usize = 32;

/// Reads and checks an operator token file: one line of at least
/// [`MIN_TOKEN_LEN`] visible ASCII characters (surrounding whitespace, a
/// trailing newline included, is ignored). Errors are about `key`.
pub fn read_token(path: &Path, key: &str) -> Result<Secret, ConfigError> {
    let shown = path.display();
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| crate::validate::io_error(key, path, &e))?,
    );
    let token = text.trim();
    let fix = "write one line of at least 32 characters, e.g. `openssl rand -hex 32 > FILE`";
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(
            key,
            format!("{shown}: the token holds spaces, control or non-ASCII characters"),
            fix,
        ));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(ConfigError::new(
            key,
            format!(
                "{shown}: the token has {} characters, fewer than {MIN_TOKEN_LEN}",
                token.len()
            ),
            fix,
        ));
    }
    Ok(Secret::new(token.to_string()))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}
