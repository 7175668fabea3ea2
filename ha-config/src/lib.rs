//! ha-config: the configuration of an `hsm-proxy` HA group.
//!
//! The listener, the members (1 to 16), the group (partition, `min_replicas`,
//! the proxy's own credential), health checks, passive ejection, request
//! deadlines / retry budget / hedging, recovery backoff, resync and the
//! metrics listener: their schema and defaults ([`schema`]), loading from a
//! TOML or YAML file with `HSM_PROXY__…` environment overrides ([`load`]),
//! validation that reports every problem with its key and its fix
//! ([`validate`]), and the reference documentation generated from the same
//! definitions ([`reference_markdown`], kept in `docs/CONFIG.md`).
//!
//! ```no_run
//! let config = ha_config::Config::load(std::path::Path::new("/etc/hsm-proxy/proxy.toml"))?;
//! println!("{}", config.effective_toml());
//! # Ok::<(), ha_config::ConfigErrors>(())
//! ```
#![forbid(unsafe_code)]

pub mod credential;
pub mod duration;
mod error;
pub mod load;
mod reference;
pub mod schema;
pub mod validate;

pub use credential::{Credential, CredentialRole, Secret};
pub use error::{ConfigError, ConfigErrors};
pub use load::Format;
pub use reference::{reference_markdown, REGENERATE};
pub use schema::{
    Config, Ejection, Group, Health, Hedge, Listener, Member, MemberRole, Metrics, Recovery,
    Requests, Resync, RetryBudget,
};

use std::path::Path;

impl Config {
    /// Loads and validates the file at `path` (TOML or YAML by its
    /// extension), with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        // Lossy rather than skipped: a variable that is not UTF-8 then
        // fails visibly (with its name) instead of being ignored.
        let env = std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        });
        load::load_file(path, env)
    }

    /// As [`Config::load`], with the given variables as the whole
    /// environment (for tests, and for callers that filter it).
    pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        load::load_file(path, env)
    }

    /// Loads and validates configuration text, without environment
    /// overrides; relative paths stay relative to the working directory.
    pub fn from_str(text: &str, format: Format) -> Result<Config, ConfigErrors> {
        load::load_text(
            text,
            format,
            "(configuration text)",
            Path::new(""),
            std::iter::empty::<(String, String)>(),
        )
    }

    /// Loads and validates configuration text with the given environment,
    /// resolving relative paths against `base_dir`.
    pub fn from_str_with_env<I, K, V>(
        text: &str,
        format: Format,
        base_dir: &Path,
        env: I,
    ) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        load::load_text(text, format, "(configuration text)", base_dir, env)
    }

    /// `group.min_replicas` as it applies: the configured value, else 2, or
    /// every member when there are fewer.
    pub fn effective_min_replicas(&self) -> u32 {
        self.group
            .min_replicas
            .unwrap_or_else(|| schema::default_min_replicas(self.members.len()))
    }

    /// The configuration as TOML with every default filled in (paths
    /// resolved, `min_replicas` computed). Secrets are not part of the
    /// configuration, so none can appear here.
    pub fn effective_toml(&self) -> String {
        let mut c = self.clone();
        c.group.min_replicas = Some(self.effective_min_replicas());
        match toml::to_string(&c) {
            Ok(t) => t,
            // Only a path that is not UTF-8 can fail to render.
            Err(e) => format!("# the effective configuration cannot be shown as TOML: {e}\n"),
        }
    }

    /// What is allowed but probably a mistake, in the same `key: problem —
    /// fix` form as errors. Checked now, so a permission fixed since loading
    /// no longer warns.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut w = Vec::new();
        let mut readable = |key: String, path: &Path, what: &str| {
            if validate::world_readable(path) {
                w.push(ConfigError::new(
                    key,
                    format!("{} is readable by everyone", path.display()),
                    format!("it holds {what}: chmod 600 it, owned by the proxy's user"),
                ));
            }
        };
        readable(
            "group.credential_file".into(),
            &self.group.credential_file,
            "the background password",
        );
        readable(
            "listener.key".into(),
            &self.listener.key,
            "the listener's private key",
        );
        for (i, m) in self.members.iter().enumerate() {
            readable(
                format!("members[{i}].client_key"),
                &m.client_key,
                "a client private key",
            );
        }
        if let Some(t) = &self.metrics.admin_token_file {
            readable("metrics.admin_token_file".into(), t, "the operator token");
        } else if self.metrics.enabled {
            w.push(ConfigError::new(
                "metrics.admin_token_file",
                "no operator token: every /admin call (drain, resync, reload) is refused",
                "write a token file (`openssl rand -hex 32`, mode 600) and name it here",
            ));
        }
        if self.metrics.enabled && !self.metrics.address.ip().is_loopback() {
            w.push(ConfigError::new(
                "metrics.address",
                format!(
                    "{} is not loopback: metrics are served to the network, unauthenticated",
                    self.metrics.address
                ),
                "keep 127.0.0.1 unless Prometheus scrapes from another host over a trusted network",
            ));
        }
        if self.members.len() == 1 {
            w.push(ConfigError::new(
                "members",
                "one member: nothing to fail over to",
                "add members for high availability (fine for development)",
            ));
        }
        w
    }
}

impl Group {
    /// Reads the credential file for the proxy's background work.
    pub fn read_credential(&self) -> Result<Credential, ConfigError> {
        Credential::read(&self.credential_file, "group.credential_file")
    }
}

impl Metrics {
    /// Reads the operator token file, if one is configured.
    pub fn read_admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        self.admin_token_file
            .as_deref()
            .map(|p| credential::read_token(p, "metrics.admin_token_file"))
            .transpose()
    }
}

impl Member {
    /// The member's partition base URL: `url` + `/partitions/{partition}`.
    pub fn partition_url(&self, partition: &str) -> String {
        format!("{}/partitions/{partition}", self.url.trim_end_matches('/'))
    }
}

/// What `hsm-proxy check-config FILE` prints, and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Valid: the effective configuration as TOML, preceded by warnings as
    /// `#` comments (so the text is still a valid configuration). Invalid:
    /// every error, one per line. Print to stdout when `exit_code` is 0,
    /// else to stderr.
    pub text: String,
    /// 0 valid (warnings or not), 1 invalid.
    pub exit_code: i32,
}

/// `hsm-proxy check-config FILE`, with the process environment.
pub fn check_config(path: &Path) -> CheckReport {
    report(path, Config::load(path))
}

/// `hsm-proxy check-config FILE`, with the given environment.
pub fn check_config_with_env<I, K, V>(path: &Path, env: I) -> CheckReport
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    report(path, Config::load_with_env(path, env))
}

fn report(path: &Path, loaded: Result<Config, ConfigErrors>) -> CheckReport {
    match loaded {
        Ok(c) => {
            let mut text = format!(
                "# {}: valid. The effective configuration, every default filled in:\n",
                path.display()
            );
            for w in c.warnings() {
                text.push_str(&format!("# warning: {w}\n"));
            }
            text.push('\n');
            text.push_str(&c.effective_toml());
            CheckReport { text, exit_code: 0 }
        }
        Err(errors) => {
            let n = errors.len();
            let plural = if n == 1 { "error" } else { "errors" };
            CheckReport {
                text: format!("{}: {n} {plural}\n{errors}\n", path.display()),
                exit_code: 1,
            }
        }
    }
}
