//! Validation: which values and combinations of values are allowed.
//!
//! Decides: every rule beyond "the value has the right type" — ranges,
//! uniqueness, the shape of member URLs, that certificate and credential
//! files exist and hold what they should. Never: defaults (see `schema`) or
//! how the file is read (see `load`).
//!
//! Every check pushes a [`ConfigError`] and carries on, so one run reports
//! everything that is wrong. Sections that did not even parse are `None`
//! and skipped; rules that span sections run only when both parsed.

use crate::credential::Credential;
use crate::duration;
use crate::error::ConfigError;
use crate::schema::*;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Most members in a group.
pub const MAX_MEMBERS: usize = 16;

/// The sections as far as they parsed.
#[derive(Default)]
pub(crate) struct Parts {
    pub listener: Option<Listener>,
    pub group: Option<Group>,
    /// `members[i]` for every member that parsed, by index in the file.
    pub members: Vec<(usize, Member)>,
    /// How many members the file lists (parsed or not); `None` when
    /// `members` is missing or not a list.
    pub member_count: Option<usize>,
    pub health: Option<Health>,
    pub ejection: Option<Ejection>,
    pub requests: Option<Requests>,
    pub recovery: Option<Recovery>,
    pub resync: Option<Resync>,
    pub metrics: Option<Metrics>,
}

pub(crate) fn validate(p: &Parts, base_dir: &Path, e: &mut Vec<ConfigError>) {
    if let Some(l) = &p.listener {
        check_pem(e, "listener.cert", &l.cert, Pem::Certificates, base_dir);
        check_pem(e, "listener.key", &l.key, Pem::PrivateKey, base_dir);
        check_public_url(e, l);
    }
    if let Some(n) = p.member_count {
        check_members(e, &p.members, n, base_dir);
    }
    if let Some(g) = &p.group {
        check_group(e, g, p.member_count, base_dir);
    }
    if let Some(h) = &p.health {
        check_health(e, h);
    }
    if let Some(j) = &p.ejection {
        check_ejection(e, j);
    }
    if let Some(r) = &p.requests {
        check_requests(e, r);
    }
    if let Some(r) = &p.recovery {
        let d = Recovery::default();
        positive(e, "recovery.min_backoff", r.min_backoff, d.min_backoff);
        positive(e, "recovery.max_backoff", r.max_backoff, d.max_backoff);
        if r.max_backoff < r.min_backoff {
            e.push(ConfigError::new(
                "recovery.max_backoff",
                format!(
                    "{} is less than recovery.min_backoff {}",
                    duration::format(r.max_backoff),
                    duration::format(r.min_backoff)
                ),
                "make it at least recovery.min_backoff",
            ));
        }
    }
    if let Some(r) = &p.resync {
        positive(e, "resync.interval", r.interval, Resync::default().interval);
    }
    if let Some(t) = p.metrics.as_ref().and_then(|m| m.admin_token_file.as_ref()) {
        if let Err(err) = crate::credential::read_token(t, "metrics.admin_token_file") {
            e.push(relative_hint(err, t, base_dir));
        }
    }
    if let (Some(m), Some(l)) = (&p.metrics, &p.listener) {
        if m.enabled && m.address == l.address && m.address.port() != 0 {
            e.push(ConfigError::new(
                "metrics.address",
                format!("{} is also listener.address", m.address),
                "give the metrics listener a port of its own (the default is 127.0.0.1:9464)",
            ));
        }
    }
}

/// `listener.public_url`: a plain `https://host:port`, and required when
/// the listener binds every interface (its address names no host).
fn check_public_url(e: &mut Vec<ConfigError>, l: &Listener) {
    match &l.public_url {
        Some(url) => {
            if let Err((problem, fix)) = check_url(url, UrlOf::Proxy) {
                e.push(ConfigError::new(
                    "listener.public_url",
                    format!("{url:?} {problem}"),
                    fix,
                ));
            }
        }
        None if l.address.ip().is_unspecified() => e.push(ConfigError::new(
            "listener.public_url",
            format!(
                "is required: listener.address {} binds every interface, so it names no URL for kids and the login challenge",
                l.address
            ),
            format!(
                "set the URL applications use, e.g. public_url = \"https://hsm-proxy.example:{}\" (a name of listener.cert)",
                l.address.port()
            ),
        )),
        None => {}
    }
}

fn check_group(e: &mut Vec<ConfigError>, g: &Group, member_count: Option<usize>, base_dir: &Path) {
    if !is_partition_name(&g.partition) {
        e.push(ConfigError::new(
            "group.partition",
            format!("{:?} is not a partition name", g.partition),
            "use 1 to 32 characters of a-z, 0-9 and -, starting with a letter, as the members' partition is named",
        ));
    }
    if let Some(m) = g.min_replicas {
        if m == 0 {
            e.push(ConfigError::new(
                "group.min_replicas",
                "0 would acknowledge keys that exist nowhere",
                "set at least 1, or remove it for the default (2, or every member when fewer)",
            ));
        } else if let Some(n) = member_count.filter(|n| (1..=MAX_MEMBERS).contains(n)) {
            if m as usize > n {
                let members = if n == 1 { "member" } else { "members" };
                e.push(ConfigError::new(
                    "group.min_replicas",
                    format!("{m} exceeds the {n} {members}"),
                    format!("at most {n}, or add members"),
                ));
            }
        }
    }
    if let Err(err) = Credential::read(&g.credential_file, "group.credential_file") {
        e.push(relative_hint(err, &g.credential_file, base_dir));
    }
}

fn check_members(
    e: &mut Vec<ConfigError>,
    members: &[(usize, Member)],
    count: usize,
    base_dir: &Path,
) {
    if count == 0 {
        e.push(ConfigError::new(
            "members",
            "no members",
            "add 1 to 16 members ([[members]] tables in TOML, `members:` list items in YAML)",
        ));
    } else if count > MAX_MEMBERS {
        e.push(ConfigError::new(
            "members",
            format!("{count} members"),
            format!("at most {MAX_MEMBERS}: split them into groups, one proxy each"),
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut urls: HashMap<String, usize> = HashMap::new();
    for (i, m) in members {
        let at = |k: &str| format!("members[{i}].{k}");
        if !is_member_name(&m.name) {
            e.push(ConfigError::new(
                at("name"),
                format!("{:?} is not a member name", m.name),
                "use 1 to 32 characters of a-z, 0-9 and -",
            ));
        }
        if let Some(first) = names.insert(&m.name, *i) {
            names.insert(&m.name, first);
            e.push(ConfigError::new(
                at("name"),
                format!("{:?} is used twice (also members[{first}].name)", m.name),
                "names must be unique: rename one of them",
            ));
        }
        match check_url(&m.url, UrlOf::Member) {
            Ok(normal) => {
                if let Some(first) = urls.get(&normal) {
                    e.push(ConfigError::new(
                        at("url"),
                        format!("{:?} is used twice (also members[{first}].url)", m.url),
                        "URLs must be unique: each member is a different node",
                    ));
                } else {
                    urls.insert(normal, *i);
                }
            }
            Err((problem, fix)) => e.push(ConfigError::new(
                at("url"),
                format!("{:?} {problem}", m.url),
                fix,
            )),
        }
        if !(1..=100).contains(&m.weight) {
            e.push(ConfigError::new(
                at("weight"),
                format!("{} is out of range", m.weight),
                "use 1 to 100 (the default is 1)",
            ));
        }
        let len = m.location.chars().count();
        if len == 0 || len > 64 || m.location.chars().any(char::is_control) {
            e.push(ConfigError::new(
                at("location"),
                format!("{:?} is not a location label", m.location),
                "use 1 to 64 printable characters, e.g. cloud, peered or on-prem",
            ));
        }
        check_pem(
            e,
            &at("client_cert"),
            &m.client_cert,
            Pem::Certificates,
            base_dir,
        );
        check_pem(
            e,
            &at("client_key"),
            &m.client_key,
            Pem::PrivateKey,
            base_dir,
        );
        check_pem(e, &at("ca"), &m.ca, Pem::Certificates, base_dir);
    }
    // Only meaningful when every member parsed: one that did not might be active.
    if count > 0
        && members.len() == count
        && members.iter().all(|(_, m)| m.role == MemberRole::Standby)
    {
        e.push(ConfigError::new(
            "members",
            "every member is standby, so none takes traffic in normal operation",
            "make at least one member `role = \"active\"`",
        ));
    }
}

fn check_health(e: &mut Vec<ConfigError>, h: &Health) {
    let d = Health::default();
    positive(e, "health.interval", h.interval, d.interval);
    positive(e, "health.timeout", h.timeout, d.timeout);
    if h.timeout > h.interval {
        e.push(ConfigError::new(
            "health.timeout",
            format!(
                "{} exceeds health.interval {}",
                duration::format(h.timeout),
                duration::format(h.interval)
            ),
            "make it at most the interval, so that checks of one member never overlap",
        ));
    }
    at_least_one(e, "health.rise", h.rise, d.rise);
    at_least_one(e, "health.fall", h.fall, d.fall);
}

fn check_ejection(e: &mut Vec<ConfigError>, j: &Ejection) {
    let d = Ejection::default();
    at_least_one(
        e,
        "ejection.consecutive_failures",
        j.consecutive_failures,
        d.consecutive_failures,
    );
    positive(e, "ejection.base_time", j.base_time, d.base_time);
    positive(e, "ejection.max_time", j.max_time, d.max_time);
    if j.max_time < j.base_time {
        e.push(ConfigError::new(
            "ejection.max_time",
            format!(
                "{} is less than ejection.base_time {}",
                duration::format(j.max_time),
                duration::format(j.base_time)
            ),
            "make it at least ejection.base_time",
        ));
    }
    percent(
        e,
        "ejection.max_ejected_percent",
        j.max_ejected_percent,
        d.max_ejected_percent,
    );
    percent(
        e,
        "ejection.panic_threshold_percent",
        j.panic_threshold_percent,
        d.panic_threshold_percent,
    );
}

fn check_requests(e: &mut Vec<ConfigError>, r: &Requests) {
    let d = Requests::default();
    positive(
        e,
        "requests.attempt_timeout",
        r.attempt_timeout,
        d.attempt_timeout,
    );
    positive(
        e,
        "requests.total_timeout",
        r.total_timeout,
        d.total_timeout,
    );
    if r.keygen_timeout < r.attempt_timeout {
        e.push(ConfigError::new(
            "requests.keygen_timeout",
            format!(
                "{} is less than requests.attempt_timeout {}",
                duration::format(r.keygen_timeout),
                duration::format(r.attempt_timeout)
            ),
            "make it at least the attempt timeout (key generation is the slowest operation)",
        ));
    }
    if r.attempt_timeout > r.total_timeout {
        e.push(ConfigError::new(
            "requests.attempt_timeout",
            format!(
                "{} exceeds requests.total_timeout {}",
                duration::format(r.attempt_timeout),
                duration::format(r.total_timeout)
            ),
            "make it at most the total timeout (one attempt cannot outlast the whole request)",
        ));
    }
    let b = &r.retry_budget;
    if !(0.0..=1.0).contains(&b.ratio) {
        e.push(ConfigError::new(
            "requests.retry_budget.ratio",
            format!("{} is out of range", b.ratio),
            format!("use 0 to 1 (the default is {})", d.retry_budget.ratio),
        ));
    }
    positive(
        e,
        "requests.retry_budget.window",
        b.window,
        d.retry_budget.window,
    );
    let h = &r.hedge;
    if !(h.percentile > 0.0 && h.percentile < 100.0) {
        e.push(ConfigError::new(
            "requests.hedge.percentile",
            format!("{} is out of range", h.percentile),
            format!(
                "use more than 0 and less than 100 (the default is {})",
                d.hedge.percentile
            ),
        ));
    }
    positive(
        e,
        "requests.hedge.min_delay",
        h.min_delay,
        d.hedge.min_delay,
    );
    positive(
        e,
        "requests.hedge.max_delay",
        h.max_delay,
        d.hedge.max_delay,
    );
    if h.max_delay < h.min_delay {
        e.push(ConfigError::new(
            "requests.hedge.max_delay",
            format!(
                "{} is less than requests.hedge.min_delay {}",
                duration::format(h.max_delay),
                duration::format(h.min_delay)
            ),
            "make it at least the minimum delay",
        ));
    }
    if h.enabled && h.max_delay >= r.attempt_timeout && r.attempt_timeout > Duration::ZERO {
        e.push(ConfigError::new(
            "requests.hedge.max_delay",
            format!(
                "{} is not less than requests.attempt_timeout {}",
                duration::format(h.max_delay),
                duration::format(r.attempt_timeout)
            ),
            "make it less than the attempt timeout, or a hedge could never start before the attempt is abandoned",
        ));
    }
}

fn positive(e: &mut Vec<ConfigError>, key: &str, d: Duration, default: Duration) {
    if d.is_zero() {
        e.push(ConfigError::new(
            key,
            "is 0",
            format!(
                "set more than 0 (the default is {})",
                duration::format(default)
            ),
        ));
    }
}

fn at_least_one(e: &mut Vec<ConfigError>, key: &str, v: u32, default: u32) {
    if v == 0 {
        e.push(ConfigError::new(
            key,
            "is 0",
            format!("set at least 1 (the default is {default})"),
        ));
    }
}

fn percent(e: &mut Vec<ConfigError>, key: &str, v: u32, default: u32) {
    if v > 100 {
        e.push(ConfigError::new(
            key,
            format!("{v} is not a percentage"),
            format!("use 0 to 100 (the default is {default})"),
        ));
    }
}

/// Partition names, as the node checks them: 1-32 characters of `a-z`,
/// `0-9` and `-`, starting with a letter.
pub fn is_partition_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Member names: 1-32 characters of `a-z`, `0-9` and `-`.
pub fn is_member_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whose URL [`check_url`] checks: the fixes differ.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum UrlOf {
    /// `members[].url`: an hsm-node.
    Member,
    /// `listener.public_url`: this proxy.
    Proxy,
}

impl UrlOf {
    fn server(self) -> &'static str {
        match self {
            UrlOf::Member => "hsm-node",
            UrlOf::Proxy => "the proxy's listener",
        }
    }
}

/// Checks a member's or the proxy's URL: `https://host:port` and nothing
/// more. Returns the normalised form (lowercase host) to compare members
/// by, or what is wrong (to follow the quoted URL) and the fix.
pub(crate) fn check_url(url: &str, of: UrlOf) -> Result<String, (String, String)> {
    let bad = |p: &str, f: String| Err((p.to_string(), f));
    if url.contains('#') || url.contains('?') {
        return bad(
            "has a query or fragment",
            "give only https://host:port".into(),
        );
    }
    let Ok(uri) = url.parse::<http::Uri>() else {
        return bad(
            "is not a URL",
            "write https://host:port, e.g. https://10.0.0.5:8443".into(),
        );
    };
    let Some(authority) = uri.authority() else {
        return bad("has no https:// scheme", format!("write https://{url}"));
    };
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => {}
        Some(s) if s.eq_ignore_ascii_case("http") => {
            return bad(
                "must use https",
                format!("{} serves TLS only: write https://{authority}", of.server()),
            )
        }
        Some(s) => {
            return bad(
                &format!("has scheme {s}"),
                format!(
                    "{} serves HTTPS only: write https://{authority}",
                    of.server()
                ),
            )
        }
        None => return bad("has no https:// scheme", format!("write https://{url}")),
    }
    if authority.as_str().contains('@') {
        return bad(
            "holds a user name",
            match of {
                UrlOf::Member => "remove it: the proxy authenticates with the member's client certificate and the credential file",
                UrlOf::Proxy => "remove it: applications log in with POST /login",
            }
            .into(),
        );
    }
    let host = authority.host();
    if host.is_empty() {
        return bad("has no host", "write https://host:port".into());
    }
    let Some(port) = uri.port_u16() else {
        return bad(
            "has no port",
            format!("add the port, e.g. https://{host}:8443"),
        );
    };
    if port == 0 {
        return bad(
            "has port 0",
            format!("give the port {} listens on", of.server()),
        );
    }
    if !matches!(uri.path(), "" | "/") {
        return bad(
            "has a path",
            match of {
                UrlOf::Member => format!("give only https://{host}:{port}; the proxy adds /partitions/{{group.partition}} itself"),
                UrlOf::Proxy => format!("give only https://{host}:{port}: the proxy serves the partition at its root"),
            },
        );
    }
    Ok(format!("https://{}:{port}", host.to_ascii_lowercase()))
}

/// What a PEM file must hold.
#[derive(Clone, Copy, PartialEq)]
enum Pem {
    /// At least one `CERTIFICATE` block (a chain, or CA certificates).
    Certificates,
    /// Exactly one private key block.
    PrivateKey,
}

fn check_pem(e: &mut Vec<ConfigError>, key: &str, path: &Path, want: Pem, base_dir: &Path) {
    if let Err(err) = read_pem(key, path, want) {
        e.push(relative_hint(err, path, base_dir));
    }
}

fn read_pem(key: &str, path: &Path, want: Pem) -> Result<(), ConfigError> {
    use rustls_pemfile::Item;
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|err| io_error(key, path, &err))?;
    let mut certs = 0;
    let mut keys = 0;
    let mut others = 0;
    for item in rustls_pemfile::read_all(&mut bytes.as_slice()) {
        match item {
            Ok(Item::X509Certificate(_)) => certs += 1,
            Ok(Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_)) => keys += 1,
            Ok(_) => others += 1,
            Err(err) => {
                return Err(ConfigError::new(
                    key,
                    format!("{shown}: malformed PEM ({err:?})"),
                    "replace it with an intact PEM file (a block was damaged or truncated)",
                ))
            }
        }
    }
    let nothing = certs + keys + others == 0;
    match want {
        Pem::Certificates if certs == 0 => Err(ConfigError::new(
            key,
            if keys > 0 {
                format!("{shown} holds a private key but no CERTIFICATE")
            } else if nothing {
                format!("{shown} holds no PEM data")
            } else {
                format!("{shown} holds no CERTIFICATE block")
            },
            if keys > 0 {
                "give the certificate file here (were the certificate and the key swapped?)"
            } else {
                "give a PEM certificate file (-----BEGIN CERTIFICATE-----); convert DER with `openssl x509 -inform der -in FILE -out FILE.pem`"
            },
        )),
        Pem::PrivateKey if keys == 0 => Err(ConfigError::new(
            key,
            if certs > 0 {
                format!("{shown} holds certificates but no private key")
            } else if nothing {
                format!("{shown} holds no PEM data")
            } else {
                format!("{shown} holds no private key block")
            },
            if certs > 0 {
                "give the private key file here (were the certificate and the key swapped?)"
            } else {
                "give a PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
            },
        )),
        Pem::PrivateKey if keys > 1 => Err(ConfigError::new(
            key,
            format!("{shown} holds {keys} private keys"),
            "keep only the key of the certificate in this file",
        )),
        _ => Ok(()),
    }
}

/// An error about a file that could not be read, naming the file.
pub(crate) fn io_error(key: &str, path: &Path, err: &io::Error) -> ConfigError {
    let shown = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => {
            ConfigError::new(key, format!("{shown}: no such file"), "check the path")
        }
        io::ErrorKind::PermissionDenied => ConfigError::new(
            key,
            format!("{shown}: permission denied"),
            "let the proxy's user read it (e.g. owned by that user, mode 0600)",
        ),
        io::ErrorKind::IsADirectory => ConfigError::new(
            key,
            format!("{shown} is a directory"),
            "give the file inside it",
        ),
        io::ErrorKind::InvalidData => {
            ConfigError::new(key, format!("{shown}: not UTF-8 text"), "give a text file")
        }
        _ => ConfigError::new(
            key,
            format!("{shown}: {err}"),
            "check the file and its directory",
        ),
    }
}

/// Adds, to the fix of an error about a relative path, where relative paths
/// are resolved from.
fn relative_hint(mut err: ConfigError, original: &Path, base_dir: &Path) -> ConfigError {
    if err.problem.ends_with("no such file")
        && original.starts_with(base_dir)
        && !base_dir.as_os_str().is_empty()
    {
        err.fix.push_str(&format!(
            " (relative paths are resolved against {}, the configuration file's directory)",
            base_dir.display()
        ));
    }
    err
}

/// Whether everyone on the machine may read the file (Unix mode bit o+r).
#[cfg(unix)]
pub(crate) fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(not(unix))]
pub(crate) fn world_readable(_path: &Path) -> bool {
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn member_urls() {
        assert_eq!(
            check_url("https://10.0.0.5:8443", UrlOf::Member),
            Ok("https://10.0.0.5:8443".into())
        );
        assert_eq!(
            check_url("https://HSM-A.example:8443/", UrlOf::Member),
            Ok("https://hsm-a.example:8443".into())
        );
        assert_eq!(
            check_url("https://[::1]:8443", UrlOf::Member),
            Ok("https://[::1]:8443".into())
        );
        for (url, problem) in [
            ("http://10.0.0.5:8443", "must use https"),
            ("10.0.0.5:8443", "has no https:// scheme"),
            ("https://10.0.0.5", "has no port"),
            ("https://10.0.0.5:8443/partitions/p", "has a path"),
            ("https://u:p@10.0.0.5:8443", "holds a user name"),
            ("https://10.0.0.5:8443?x=1", "has a query or fragment"),
            ("https://10.0.0.5:0", "has port 0"),
            ("not a url", "is not a URL"),
            ("ftp://h:21", "has scheme ftp"),
        ] {
            match check_url(url, UrlOf::Member) {
                Err((p, _)) => assert_eq!(p, problem, "{url}"),
                Ok(n) => panic!("{url} accepted as {n}"),
            }
        }
    }

    #[test]
    fn names() {
        assert!(is_member_name("cloud-a"));
        assert!(is_member_name("0"));
        assert!(!is_member_name("Cloud"));
        assert!(!is_member_name(""));
        assert!(!is_member_name(&"a".repeat(33)));
        assert!(is_partition_name("payments"));
        assert!(!is_partition_name("1payments"));
    }
}
