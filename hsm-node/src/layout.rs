//! The node directory: what files a node has, its settings file and its
//! master key.
//!
//! Decides: the layout of `DIR` and the meaning and defaults of every key of
//! `DIR/node.json`. Never: what is inside the database (see `store`).
//!
//! ```text
//! DIR/node.json        settings (below), written by `init`, edited by hand
//! DIR/master.key       32 random bytes, mode 0600: wraps every partition's KEK
//! DIR/tls/server.pem   server certificate chain
//! DIR/tls/server.key   its private key (0600)
//! DIR/tls/client-ca.pem  CA(s) whose client certificates may connect at all
//! DIR/data.redb        the database (partitions, roles, keys sealed at rest)
//! DIR/audit.key        32 random bytes, mode 0600: the audit chain's HMAC key
//!                      (not the master key; a zeroize keeps it)
//! DIR/audit/           the audit log: audit.log, audit.log.1 …, head (see `audit`)
//! ```

use crate::audit::AuditSettings;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Errors about the node directory, each naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "{0} is not a node directory (no node.json); create one with `hsm-node init --dir {0}`"
    )]
    NotANode(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0} already holds a node; choose an empty directory")]
    AlreadyInitialised(String),
}

/// `DIR/node.json`. Every field has a default, so an old file keeps working
/// when a setting is added.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// A random identifier of this node, fixed at init; shown in logs and health.
    pub node_id: String,
    /// Address the TLS listener binds. Default `127.0.0.1:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The base URL clients reach this node at, used to build every `kid`
    /// (`{public_url}/partitions/{p}/keys/{name}/{version}`). Default
    /// `https://{listen}`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Optional plain-HTTP listener for `GET /health` and `GET /metrics`
    /// only (no key names, no secrets), for probes and Prometheus. Keep it on
    /// loopback unless the network is trusted. Default: none.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request body accepted, in bytes. Default 262144 (256 KiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest header block accepted, in bytes. Default 16384.
    #[serde(default = "default_max_headers")]
    pub max_header_bytes: usize,
    /// Seconds a client has to finish the TLS handshake, to send a request's
    /// headers, and to send its body. Default 10.
    #[serde(default = "default_io_timeout")]
    pub io_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept. Default 120.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Most simultaneous connections; more wait in the kernel's backlog.
    /// Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM. Default 30.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Consecutive failed logins that lock a role. Default 10.
    #[serde(default = "default_lockout_attempts")]
    pub lockout_attempts: u32,
    /// Seconds a locked role stays locked. Default 600.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
    /// Lifetime of a bearer token, in seconds. Default 3600.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// Days a soft-deleted key can be recovered before it is purged.
    /// Key Vault allows 7 to 90. Default 90.
    #[serde(default = "default_recoverable_days")]
    pub recoverable_days: u32,
    /// Days a purge tombstone is kept, so that a member coming back with
    /// stale state cannot bring a purged key back. Must exceed the longest
    /// time a member may be away and still rejoin by resync. Default 90.
    #[serde(default = "default_tombstone_days")]
    pub tombstone_retention_days: u32,
    /// Seconds a pending key version (made or copied here through the
    /// proxy, not yet committed after `min_replicas` durable copies) is
    /// kept before this node drops it by itself: a proxy that died halfway
    /// leaves nothing behind. Must exceed the proxies' longest request
    /// deadline (`requests.keygen_timeout` + `requests.total_timeout`,
    /// 35 s by default). Default 120.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl_secs: u64,
    /// argon2id hash of the node administrator's password, which unlocks
    /// the admin API (`/admin/…`, e.g. zeroize). Set by `hsm-node init
    /// --admin-password`; absent means the admin API is disabled.
    #[serde(default)]
    pub admin_password_hash: Option<String>,
    /// Most key names whose parsed keys stay in memory for fast use (the
    /// cache is cleared when full). Each costs a few KiB (RSA the most);
    /// the default keeps a fully used 328,000-key partition under 512 MiB.
    /// Default 20000.
    #[serde(default = "default_key_cache_entries")]
    pub key_cache_entries: usize,
    /// Most partitions this node holds, as the seed appliance. Default 10.
    #[serde(default = "default_max_partitions")]
    pub max_partitions: usize,
    /// The audit log: rotation and syslog forwarding. Its keys
    /// (`max_file_bytes`, `keep_files`, `syslog`, `syslog_queue`) are
    /// documented on [`AuditSettings`]. Default: every default there.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Keep every key in a PKCS#11 token instead of sealing it in the
    /// database (a token member, docs/MEMBERS.md). Set by `hsm-node init
    /// --pkcs11-module`; its keys are documented on [`TokenSettings`].
    /// Default: none (a software member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenSettings>,
}

/// `node.json` `token`: the PKCS#11 token that holds this node's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Path of the vendor's PKCS#11 library (SoftHSM2:
    /// `/usr/lib/softhsm/libsofthsm2.so`). Required.
    pub module: PathBuf,
    /// The token, by its label. Exactly one of `token_label` and
    /// `token_serial`: slot numbers change when tokens come and go, so a
    /// slot is never named by number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    /// The token, by its serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    /// File holding the token user's PIN (one line). Default: the systemd
    /// credential `token-pin` (`$CREDENTIALS_DIRECTORY/token-pin`). The PIN
    /// is never a flag or a setting itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// PKCS#11 sessions, and so concurrent token calls. Default 8.
    #[serde(default = "default_token_sessions")]
    pub sessions: usize,
    /// Milliseconds one token call may take; a call past it makes the node
    /// report unhealthy until it returns. Default 5000.
    #[serde(default = "default_token_call_timeout")]
    pub call_timeout_ms: u64,
    /// Milliseconds a key generation may take (RSA-4096 takes seconds on
    /// many tokens); past it the creation fails with 503 and the node
    /// reports unhealthy until the call returns. Default 60000.
    #[serde(default = "default_token_keygen_timeout")]
    pub keygen_timeout_ms: u64,
    /// Whether a call that creates or destroys token objects (key
    /// generation, unwrap, create, destroy) runs alone, with no other call
    /// on the token meanwhile. Default: true on SoftHSM2, whose file store
    /// fails a creation that meets another session's object search with
    /// `CKR_GENERAL_ERROR` (SoftHSMv2 issue 573); false on other tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_writes: Option<bool>,
    /// Make keys `CKA_WRAP_WITH_TRUSTED` (exportable only under a
    /// `CKA_TRUSTED` wrapping key, which only the token's security officer
    /// can mark). Default false.
    #[serde(default)]
    pub wrap_with_trusted: bool,
}

fn default_token_sessions() -> usize {
    8
}
fn default_token_call_timeout() -> u64 {
    5000
}
fn default_token_keygen_timeout() -> u64 {
    60_000
}

impl TokenSettings {
    /// The PIN file: `pin_file`, else the systemd credential.
    pub fn pin_path(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.pin_file {
            return Ok(p.clone());
        }
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(d) => Ok(PathBuf::from(d).join("token-pin")),
            None => Err(
                "token.pin_file is not set and there is no systemd credential directory                  ($CREDENTIALS_DIRECTORY) with `token-pin`: set token.pin_file in node.json                  or LoadCredential=token-pin:FILE in the unit"
                    .into(),
            ),
        }
    }

    /// Checks the settings that need no token.
    pub fn check(&self) -> Result<(), String> {
        match (&self.token_label, &self.token_serial) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("token: set exactly one of token_label and token_serial".into()),
        }
        if self.sessions == 0 || self.sessions > 256 {
            return Err(format!(
                "token.sessions must be 1 to 256, got {}",
                self.sessions
            ));
        }
        if !(100..=600_000).contains(&self.call_timeout_ms) {
            return Err(format!(
                "token.call_timeout_ms must be 100 to 600000, got {}",
                self.call_timeout_ms
            ));
        }
        if !(100..=600_000).contains(&self.keygen_timeout_ms) {
            return Err(format!(
                "token.keygen_timeout_ms must be 100 to 600000, got {}",
                self.keygen_timeout_ms
            ));
        }
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_max_body() -> usize {
    256 * 1024
}
fn default_max_headers() -> usize {
    16 * 1024
}
fn default_io_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    120
}
fn default_max_connections() -> usize {
    1024
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_lockout_attempts() -> u32 {
    10
}
fn default_lockout_secs() -> u64 {
    600
}
fn default_token_ttl() -> u64 {
    3600
}
fn default_recoverable_days() -> u32 {
    90
}
fn default_tombstone_days() -> u32 {
    90
}
fn default_pending_ttl() -> u64 {
    120
}
fn default_key_cache_entries() -> usize {
    20_000
}
fn default_max_partitions() -> usize {
    10
}

impl NodeSettings {
    /// Settings with every default (the same functions serde uses).
    pub fn new(node_id: String, listen: SocketAddr) -> NodeSettings {
        NodeSettings {
            node_id,
            listen,
            public_url: None,
            metrics_listen: None,
            max_body_bytes: default_max_body(),
            max_header_bytes: default_max_headers(),
            io_timeout_secs: default_io_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace(),
            lockout_attempts: default_lockout_attempts(),
            lockout_secs: default_lockout_secs(),
            token_ttl_secs: default_token_ttl(),
            recoverable_days: default_recoverable_days(),
            tombstone_retention_days: default_tombstone_days(),
            pending_ttl_secs: default_pending_ttl(),
            admin_password_hash: None,
            key_cache_entries: default_key_cache_entries(),
            max_partitions: default_max_partitions(),
            audit: AuditSettings::default(),
            token: None,
        }
    }

    /// The URL prefix of every kid this node issues.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{}", self.listen),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), LayoutError> {
        let bad = |m: String| {
            Err(LayoutError::Invalid {
                path: path.to_path_buf(),
                message: m,
            })
        };
        if let Some(u) = &self.public_url {
            if !u.starts_with("https://") {
                return bad(format!("public_url `{u}` must start with https://"));
            }
        }
        if !(7..=90).contains(&self.recoverable_days) {
            return bad(format!(
                "recoverable_days must be 7 to 90, got {}",
                self.recoverable_days
            ));
        }
        if self.tombstone_retention_days == 0 {
            return bad("tombstone_retention_days must be at least 1".into());
        }
        if !(10..=86_400).contains(&self.pending_ttl_secs) {
            return bad(format!(
                "pending_ttl_secs must be 10 to 86400, got {}",
                self.pending_ttl_secs
            ));
        }
        if let Some(t) = &self.token {
            t.check().or_else(bad)?;
        }
        if self.lockout_attempts == 0 {
            return bad("lockout_attempts must be at least 1".into());
        }
        if self.max_body_bytes < 1024 || self.max_header_bytes < 1024 {
            return bad("max_body_bytes and max_header_bytes must be at least 1024".into());
        }
        if self.io_timeout_secs == 0 || self.token_ttl_secs == 0 || self.max_connections == 0 {
            return bad(
                "io_timeout_secs, token_ttl_secs and max_connections must be positive".into(),
            );
        }
        self.audit.validate().or_else(bad)?;
        Ok(())
    }
}

/// Paths inside a node directory.
#[derive(Debug, Clone)]
pub struct NodeDir {
    pub root: PathBuf,
}

impl NodeDir {
    pub fn new(root: &Path) -> NodeDir {
        NodeDir {
            root: root.to_path_buf(),
        }
    }
    pub fn settings(&self) -> PathBuf {
        self.root.join("node.json")
    }
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master.key")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.tls_dir().join("server.key")
    }
    pub fn client_ca(&self) -> PathBuf {
        self.tls_dir().join("client-ca.pem")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("data.redb")
    }

    /// Checks that this directory holds a node and reads its settings.
    pub fn load_settings(&self) -> Result<NodeSettings, LayoutError> {
        let path = self.settings();
        if !path.exists() {
            return Err(LayoutError::NotANode(self.root.display().to_string()));
        }
        let text = std::fs::read(&path).map_err(|e| LayoutError::Io {
            path: path.clone(),
            source: e,
        })?;
        let s: NodeSettings = serde_json::from_slice(&text).map_err(|e| LayoutError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        s.validate(&path)?;
        Ok(s)
    }

    /// Writes the settings file (atomically: temp file, fsync, rename).
    pub fn save_settings(&self, s: &NodeSettings) -> Result<(), LayoutError> {
        let path = self.settings();
        let text = serde_json::to_vec_pretty(s).map_err(|e| LayoutError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        hsm_server::private_fs::write_atomic(&path, &text)
            .map_err(|e| LayoutError::Io { path, source: e })
    }

    /// Reads the 32-byte master key.
    pub fn load_master_key(&self) -> Result<Zeroizing<[u8; 32]>, LayoutError> {
        let path = self.master_key();
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| LayoutError::Io {
            path: path.clone(),
            source: e,
        })?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(LayoutError::Invalid {
                path,
                message: format!("master key must be 32 bytes, found {}", bytes.len()),
            });
        }
        key.copy_from_slice(&bytes);
        Ok(key)
    }
}
