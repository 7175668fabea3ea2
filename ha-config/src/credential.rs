//! The credential file: the role and password the proxy logs in to the
//! members' partition with, for its own background work.
//!
//! Decides: the format of that file and how it is read. Never: when the proxy
//! logs in, or what it does with the session.
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

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}
