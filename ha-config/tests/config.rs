//! Loading and validating whole configuration files, as an operator writes
//! them: the examples, every class of error (each with its exact key and its
//! fix), environment overrides, and `check-config`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ha_config::{check_config_with_env, Config, ConfigErrors, Format, MemberRole};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3Rz\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

/// A directory holding the files a configuration points at, and the
/// configurations under test.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        let d = Dir(tempfile::tempdir().unwrap());
        for cert in [
            "tls/proxy.pem",
            "tls/member-client.pem",
            "tls/hsm-ca.pem",
            "tls/onprem-ca.pem",
        ] {
            d.write(cert, CERT);
        }
        for key in ["tls/proxy.key", "tls/member-client.key"] {
            d.write_private(key, KEY);
        }
        d.write_private(
            "credential.toml",
            "role = \"replication\"\npassword = \"correct horse\"\n",
        );
        d.write_private("admin-token", &format!("{}\n", "ab".repeat(32)));
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn write_private(&self, name: &str, text: &str) -> PathBuf {
        let p = self.write(name, text);
        set_mode(&p, 0o600);
        p
    }

    fn load(&self, text: &str) -> Result<Config, ConfigErrors> {
        self.load_env(text, &[])
    }

    fn load_env(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let p = self.write("proxy.toml", text);
        Config::load_with_env(&p, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// Loads, expecting failure, and returns the errors.
    fn errors(&self, text: &str) -> ConfigErrors {
        match self.load(text) {
            Ok(c) => panic!("expected errors, loaded {c:#?}"),
            Err(e) => e,
        }
    }
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}
#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

/// A member table in TOML.
fn member(name: &str, url: &str) -> String {
    format!(
        "[[members]]\nname = \"{name}\"\nurl = \"{url}\"\nclient_cert = \"tls/member-client.pem\"\nclient_key = \"tls/member-client.key\"\nca = \"tls/hsm-ca.pem\"\n"
    )
}

/// `n` distinct valid members.
fn members(n: usize) -> String {
    (0..n)
        .map(|i| member(&format!("m{i}"), &format!("https://10.0.0.{}:8443", i + 1)))
        .collect::<Vec<_>>()
        .join("\n")
}

const HEAD: &str = "[listener]\ncert = \"tls/proxy.pem\"\nkey = \"tls/proxy.key\"\n\n[group]\npartition = \"payments\"\ncredential_file = \"credential.toml\"\n\n";

/// A valid configuration of three members, plus `extra` TOML after them.
fn with(extra: &str) -> String {
    format!("{HEAD}{}\n{extra}", members(3))
}

/// Asserts that there is exactly one error about `key`, that its problem
/// contains `problem` and its fix contains `fix`.
#[track_caller]
fn assert_error(errors: &ConfigErrors, key: &str, problem: &str, fix: &str) {
    let about = errors.about(key);
    assert_eq!(about.len(), 1, "one error about {key}, got:\n{errors}");
    let e = about[0];
    assert!(
        e.problem.contains(problem),
        "problem of {key}: {:?} should contain {problem:?}",
        e.problem
    );
    assert!(
        e.fix.contains(fix),
        "fix of {key}: {:?} should contain {fix:?}",
        e.fix
    );
}

// The examples.

#[test]
fn the_toml_and_yaml_examples_load_and_are_the_same_configuration() {
    let d = Dir::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let toml = d.write(
        "proxy.toml",
        &std::fs::read_to_string(examples.join("proxy.toml")).unwrap(),
    );
    let yaml = d.write(
        "proxy.yaml",
        &std::fs::read_to_string(examples.join("proxy.yaml")).unwrap(),
    );
    let none: [(String, String); 0] = [];
    let a = Config::load_with_env(&toml, none.clone()).unwrap_or_else(|e| panic!("{e}"));
    let b = Config::load_with_env(&yaml, none).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
    assert_eq!(a.members.len(), 3);
    assert_eq!(a.members[2].name, "on-prem");
    assert_eq!(a.members[2].role, MemberRole::Standby);
    assert_eq!(a.members[1].location, "peered");
    assert_eq!(a.requests.hedge.max_delay, Duration::from_millis(300));
    // Relative paths were resolved against the file's directory.
    assert_eq!(a.members[0].ca, d.path("tls/hsm-ca.pem"));
    assert_eq!(a.group.credential_file, d.path("credential.toml"));
    assert_eq!(
        a.members[0].partition_url(&a.group.partition),
        "https://10.0.0.5:8443/partitions/payments"
    );
    assert!(a.warnings().is_empty(), "{:?}", a.warnings());
}

#[test]
fn a_minimal_file_gets_every_default() {
    let d = Dir::new();
    let c = d.load(&with("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listener.address.to_string(), "127.0.0.1:8443");
    assert_eq!(c.health.interval, Duration::from_secs(1));
    assert_eq!(c.health.timeout, Duration::from_millis(500));
    assert_eq!((c.health.rise, c.health.fall), (2, 2));
    assert_eq!(c.ejection.consecutive_failures, 3);
    assert_eq!(c.ejection.base_time, Duration::from_secs(5));
    assert_eq!(c.ejection.max_time, Duration::from_secs(120));
    assert_eq!(
        (
            c.ejection.max_ejected_percent,
            c.ejection.panic_threshold_percent
        ),
        (50, 50)
    );
    assert_eq!(c.requests.attempt_timeout, Duration::from_secs(2));
    assert_eq!(c.requests.total_timeout, Duration::from_secs(5));
    assert_eq!(c.requests.retry_budget.ratio, 0.2);
    assert_eq!(c.requests.retry_budget.min_per_second, 10);
    assert!(c.requests.hedge.enabled);
    assert_eq!(c.requests.hedge.percentile, 95.0);
    assert_eq!(c.requests.hedge.min_delay, Duration::from_millis(10));
    assert_eq!(c.requests.hedge.max_delay, Duration::from_millis(500));
    assert_eq!(c.recovery.min_backoff, Duration::from_millis(200));
    assert_eq!(c.recovery.max_backoff, Duration::from_secs(30));
    assert_eq!(c.resync.interval, Duration::from_secs(30));
    assert_eq!(c.metrics.address.to_string(), "127.0.0.1:9464");
    assert_eq!(c.members[0].role, MemberRole::Active);
    assert_eq!(c.members[0].weight, 1);
    assert_eq!(c.members[0].location, "local");
    assert_eq!(c.effective_min_replicas(), 2);
    assert_eq!(
        c.group.min_replicas,
        Some(2),
        "the loaded config holds the effective value"
    );
}

#[test]
fn the_public_url_is_the_listener_address_unless_set_and_required_on_every_interface() {
    let d = Dir::new();
    let c = d.load(&with("")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.listener.public_url.as_deref(),
        Some("https://127.0.0.1:8443")
    );
    assert!(c
        .effective_toml()
        .contains("public_url = \"https://127.0.0.1:8443\""));
    // Port 0: known once bound.
    let text = with("").replace("[listener]\n", "[listener]\naddress = \"[::1]:0\"\n");
    let c = d.load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listener.public_url, None);
    assert_eq!(
        c.listener
            .effective_public_url("[::1]:4711".parse().unwrap()),
        "https://[::1]:4711"
    );
    // Set: used as written, without a trailing slash.
    let set = |extra: &str| with("").replace("[listener]\n", &format!("[listener]\n{extra}\n"));
    let c = d
        .load(&set("public_url = \"https://hsm.example:8443/\""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.listener
            .effective_public_url("127.0.0.1:1".parse().unwrap()),
        "https://hsm.example:8443"
    );
    // Every interface: refused without it, fine with it.
    for any in ["0.0.0.0:8443", "[::]:8443"] {
        let e = d.errors(&set(&format!("address = \"{any}\"")));
        assert_error(
            &e,
            "listener.public_url",
            "binds every interface",
            "public_url = \"https://hsm-proxy.example:8443\"",
        );
        d.load(&set(&format!(
            "address = \"{any}\"\npublic_url = \"https://hsm.example:8443\""
        )))
        .unwrap_or_else(|e| panic!("{e}"));
    }
    for (bad, problem, fix) in [
        (
            "http://hsm.example:8443",
            "must use https",
            "the proxy's listener serves TLS only",
        ),
        (
            "https://hsm.example:8443/keys",
            "has a path",
            "serves the partition at its root",
        ),
        (
            "https://hsm.example",
            "has no port",
            "https://hsm.example:8443",
        ),
        (
            "https://u@hsm.example:8443",
            "holds a user name",
            "POST /login",
        ),
    ] {
        let e = d.errors(&set(&format!("public_url = \"{bad}\"")));
        assert_error(&e, "listener.public_url", problem, fix);
    }
}

#[test]
fn effective_min_replicas_with_one_member_is_one() {
    let d = Dir::new();
    let c = d
        .load(&format!("{HEAD}{}", members(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.effective_min_replicas(), 1);
    assert!(c.effective_toml().contains("min_replicas = 1"));
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.key == "members" && w.problem.contains("nothing to fail over to")));
}

#[test]
fn the_effective_toml_loads_back_to_the_same_configuration() {
    let d = Dir::new();
    let c = d.load(&with("[health]\nrise = 4\n")).unwrap();
    let text = c.effective_toml();
    assert!(text.contains("interval = \"1s\""), "{text}");
    assert!(text.contains("[[members]]"), "{text}");
    let again = Config::from_str(&text, Format::Toml).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, c);
}

// Every class of error, with its key and its fix.

#[test]
fn seventeen_members_are_too_many() {
    let d = Dir::new();
    let e = d.errors(&format!("{HEAD}{}", members(17)));
    assert_error(&e, "members", "17 members", "at most 16");
    assert_eq!(e.len(), 1, "{e}");
    assert!(
        e.to_string()
            .starts_with("members: 17 members — at most 16"),
        "{e}"
    );
}

#[test]
fn no_members_at_all() {
    let d = Dir::new();
    assert_error(
        &d.errors(HEAD),
        "members",
        "no members",
        "add 1 to 16 members",
    );
    assert_error(
        &d.errors(&format!("{HEAD}members = []\n")),
        "members",
        "no members",
        "add 1 to 16",
    );
}

#[test]
fn duplicate_names_and_urls() {
    let d = Dir::new();
    let text = format!(
        "{HEAD}{}\n{}\n{}\n{}",
        member("a", "https://10.0.0.1:8443"),
        member("b", "https://10.0.0.2:8443"),
        member("b", "https://10.0.0.3:8443"),
        member("c", "https://10.0.0.1:8443/"),
    );
    let e = d.errors(&text);
    assert_error(
        &e,
        "members[2].name",
        "\"b\" is used twice (also members[1].name)",
        "names must be unique",
    );
    assert_error(
        &e,
        "members[3].url",
        "is used twice (also members[0].url)",
        "URLs must be unique",
    );
    assert_eq!(e.len(), 2, "{e}");
}

#[test]
fn urls_must_be_https_host_port() {
    let d = Dir::new();
    let text = format!(
        "{HEAD}{}\n{}\n{}\n{}",
        member("a", "http://10.0.0.5:8443"),
        member("b", "not a url"),
        member("c", "https://10.0.0.7"),
        member("d", "https://10.0.0.8:8443/partitions/payments"),
    );
    let e = d.errors(&text);
    assert_error(
        &e,
        "members[0].url",
        "\"http://10.0.0.5:8443\" must use https",
        "hsm-node serves TLS only: write https://10.0.0.5:8443",
    );
    assert_error(&e, "members[1].url", "is not a URL", "https://host:port");
    assert_error(&e, "members[2].url", "has no port", "https://10.0.0.7:8443");
    assert_error(
        &e,
        "members[3].url",
        "has a path",
        "the proxy adds /partitions/",
    );
    assert_eq!(e.len(), 4, "{e}");
}

#[test]
fn names_weights_roles_and_locations() {
    let d = Dir::new();
    let text = with(&format!(
        "{}weight = 0\n\n{}weight = 101\nrole = \"actve\"\n\n{}location = \"\"\n",
        member("Bad_Name", "https://10.1.0.1:8443"),
        member("x", "https://10.1.0.2:8443"),
        member("y", "https://10.1.0.3:8443"),
    ));
    let e = d.errors(&text);
    assert_error(
        &e,
        "members[3].name",
        "\"Bad_Name\" is not a member name",
        "a-z, 0-9 and -",
    );
    assert_error(&e, "members[3].weight", "0 is out of range", "use 1 to 100");
    assert_error(
        &e,
        "members[4].role",
        "`actve` is not allowed",
        "use `active` or `standby`",
    );
    assert_error(
        &e,
        "members[5].location",
        "is not a location label",
        "1 to 64 printable characters",
    );
    // members[4] did not parse, so its weight is not checked; all else is.
    assert_eq!(e.len(), 4, "{e}");
}

#[test]
fn every_member_standby_is_an_error() {
    let d = Dir::new();
    let e = d.errors(&format!(
        "{HEAD}{}role = \"standby\"\n",
        member("a", "https://10.0.0.1:8443")
    ));
    assert_error(
        &e,
        "members",
        "every member is standby",
        "role = \"active\"",
    );
}

#[test]
fn missing_certificate_files_are_named_with_the_fix() {
    let d = Dir::new();
    let text = format!(
        "{HEAD}[[members]]\nname = \"a\"\nurl = \"https://10.0.0.1:8443\"\nclient_cert = \"tls/nope.pem\"\nclient_key = \"tls/member-client.key\"\nca = \"/nonexistent/ca.pem\"\n"
    );
    let e = d.errors(&text);
    let nope = d.path("tls/nope.pem").display().to_string();
    assert_error(
        &e,
        "members[0].client_cert",
        &format!("{nope}: no such file"),
        "check the path",
    );
    assert!(
        e.about("members[0].client_cert")[0]
            .fix
            .contains("relative paths are resolved against"),
        "{e}"
    );
    assert_error(
        &e,
        "members[0].ca",
        "/nonexistent/ca.pem: no such file",
        "check the path",
    );
}

#[test]
fn garbage_swapped_and_unreadable_pem_files() {
    let d = Dir::new();
    d.write("tls/garbage.pem", "this is not PEM at all\n");
    d.write(
        "tls/broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    d.write_private("tls/two.key", &format!("{KEY}{KEY}"));
    std::fs::create_dir_all(d.path("tls/a-directory.pem")).unwrap();
    let text = "[listener]\ncert = \"tls/proxy.key\"\nkey = \"tls/proxy.pem\"\n\n[group]\npartition = \"payments\"\ncredential_file = \"credential.toml\"\n\n\
         [[members]]\nname = \"a\"\nurl = \"https://10.0.0.1:8443\"\nclient_cert = \"tls/garbage.pem\"\nclient_key = \"tls/two.key\"\nca = \"tls/broken.pem\"\n\n\
         [[members]]\nname = \"b\"\nurl = \"https://10.0.0.2:8443\"\nclient_cert = \"tls/a-directory.pem\"\nclient_key = \"tls/member-client.key\"\nca = \"tls/hsm-ca.pem\"\n";
    let e = d.errors(text);
    assert_error(
        &e,
        "listener.cert",
        "holds a private key but no CERTIFICATE",
        "were the certificate and the key swapped?",
    );
    assert_error(
        &e,
        "listener.key",
        "holds certificates but no private key",
        "were the certificate and the key swapped?",
    );
    assert_error(
        &e,
        "members[0].client_cert",
        "garbage.pem holds no PEM data",
        "-----BEGIN CERTIFICATE-----",
    );
    assert_error(
        &e,
        "members[0].client_key",
        "holds 2 private keys",
        "keep only the key of the certificate",
    );
    assert_error(
        &e,
        "members[0].ca",
        "broken.pem: malformed PEM",
        "intact PEM file",
    );
    assert_error(
        &e,
        "members[1].client_cert",
        "is a directory",
        "give the file",
    );
    assert_eq!(e.len(), 6, "{e}");
}

#[test]
fn a_file_the_proxy_cannot_read() {
    let d = Dir::new();
    let p = d.path("tls/proxy.pem");
    set_mode(&p, 0o000);
    if std::fs::read(&p).is_ok() {
        // Running as root: permissions do not stop reading, nothing to test.
        return;
    }
    let e = d.errors(&with(""));
    assert_error(
        &e,
        "listener.cert",
        "permission denied",
        "let the proxy's user read it",
    );
}

#[test]
fn the_credential_file_must_exist_and_make_sense() {
    let d = Dir::new();
    let text = with("").replace("credential.toml", "missing.toml");
    assert_error(
        &d.errors(&text),
        "group.credential_file",
        "missing.toml: no such file",
        "check the path",
    );

    d.write_private("credential.toml", "role = \"admin\"\npassword = \"x\"\n");
    assert_error(
        &d.errors(&with("")),
        "group.credential_file",
        "not a credential file (line 1)",
        "role = \"replication\"",
    );
    d.write_private(
        "credential.toml",
        "role = \"crypto-officer\"\npassword = \"\"\n",
    );
    assert_error(
        &d.errors(&with("")),
        "group.credential_file",
        "the password is empty",
        "set `password`",
    );

    d.write_private(
        "credential.toml",
        "role = \"crypto-officer\"\npassword = \"s3cret\"\n",
    );
    let c = d.load(&with("")).unwrap();
    let cred = c.group.read_credential().unwrap();
    assert_eq!(cred.role, ha_config::CredentialRole::CryptoOfficer);
    assert_eq!(cred.password.expose(), "s3cret");
    assert!(
        !format!("{cred:?}").contains("s3cret"),
        "Debug must not show the password"
    );
}

#[test]
fn a_world_readable_credential_file_warns_but_loads() {
    let d = Dir::new();
    set_mode(&d.path("credential.toml"), 0o644);
    let c = d.load(&with("")).unwrap();
    let w = c.warnings();
    if cfg!(unix) {
        assert!(
            w.iter().any(|w| w.key == "group.credential_file"
                && w.problem.contains("readable by everyone")
                && w.fix.contains("chmod 600")),
            "{w:?}"
        );
    }
}

#[test]
fn the_operator_token_file_is_checked_and_its_absence_warns() {
    let d = Dir::new();
    // No token: loads, with a warning that /admin is closed.
    let c = d.load(&with("")).unwrap();
    assert!(c
        .warnings()
        .iter()
        .any(|w| w.key == "metrics.admin_token_file" && w.problem.contains("every /admin call")));
    assert_eq!(c.metrics.read_admin_token().unwrap(), None);
    // A good token, relative to the file, trailing newline ignored.
    let c = d
        .load(&with("[metrics]\nadmin_token_file = \"admin-token\"\n"))
        .unwrap();
    assert_eq!(c.metrics.admin_token_file, Some(d.path("admin-token")));
    assert_eq!(
        c.metrics.read_admin_token().unwrap().unwrap().expose(),
        "ab".repeat(32)
    );
    assert!(!c
        .warnings()
        .iter()
        .any(|w| w.key == "metrics.admin_token_file"));
    assert!(!c.effective_toml().contains(&"ab".repeat(32)));
    // Too short, spaces inside, missing: refused, naming the key.
    for (text, problem) in [
        ("short\n", "fewer than 32"),
        ("aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbb\n", "spaces"),
    ] {
        d.write_private("bad-token", text);
        let e = d.errors(&with("[metrics]\nadmin_token_file = \"bad-token\"\n"));
        assert!(
            e.about("metrics.admin_token_file")
                .iter()
                .any(|e| e.problem.contains(problem)),
            "{e}"
        );
    }
    let e = d.errors(&with("[metrics]\nadmin_token_file = \"nowhere\"\n"));
    assert_eq!(e.about("metrics.admin_token_file").len(), 1, "{e}");
    // Readable by everyone: a warning.
    if cfg!(unix) {
        set_mode(&d.path("admin-token"), 0o644);
        let c = d
            .load(&with("[metrics]\nadmin_token_file = \"admin-token\"\n"))
            .unwrap();
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.key == "metrics.admin_token_file"
                && w.problem.contains("readable by everyone")));
    }
}

#[test]
fn min_replicas_above_the_member_count() {
    let d = Dir::new();
    let e = d.errors(&with("").replace("[group]\n", "[group]\nmin_replicas = 4\n"));
    assert_error(
        &e,
        "group.min_replicas",
        "4 exceeds the 3 members",
        "at most 3, or add members",
    );
    assert_eq!(
        e.to_string(),
        "group.min_replicas: 4 exceeds the 3 members — at most 3, or add members"
    );
    let e = d.errors(&with("").replace("[group]\n", "[group]\nmin_replicas = 0\n"));
    assert_error(
        &e,
        "group.min_replicas",
        "0 would acknowledge keys that exist nowhere",
        "at least 1",
    );
}

#[test]
fn zero_and_negative_durations() {
    let d = Dir::new();
    let e = d.errors(&with("[health]\ninterval = \"0s\"\n\n[resync]\ninterval = \"-1s\"\n\n[ejection]\nbase_time = \"0ms\"\n"));
    assert_error(
        &e,
        "health.interval",
        "is 0",
        "set more than 0 (the default is 1s)",
    );
    assert_error(
        &e,
        "resync.interval",
        "\"-1s\" is negative",
        "write a whole number and a unit",
    );
    assert_error(&e, "ejection.base_time", "is 0", "the default is 5s");
    // A 0s interval also makes the 500ms timeout exceed it.
    assert_error(
        &e,
        "health.timeout",
        "500ms exceeds health.interval 0s",
        "at most the interval",
    );
    assert_eq!(e.len(), 4, "{e}");
}

#[test]
fn negative_numbers() {
    let d = Dir::new();
    let e = d.errors(&with("[health]\nrise = -1\n"));
    assert_error(
        &e,
        "health.rise",
        "expected a whole number, 0 or more, found -1",
        "write it like `rise = 3` (integer)",
    );
}

#[test]
fn an_attempt_cannot_outlast_the_request() {
    let d = Dir::new();
    let e = d.errors(&with(
        "[requests]\nattempt_timeout = \"10s\"\ntotal_timeout = \"5s\"\n",
    ));
    assert_error(
        &e,
        "requests.attempt_timeout",
        "10s exceeds requests.total_timeout 5s",
        "at most the total timeout",
    );
    assert_eq!(e.len(), 1, "{e}");
}

#[test]
fn hedging_must_start_before_the_attempt_gives_up() {
    let d = Dir::new();
    let e = d.errors(&with("[requests]\nattempt_timeout = \"400ms\"\n"));
    assert_error(
        &e,
        "requests.hedge.max_delay",
        "500ms is not less than requests.attempt_timeout 400ms",
        "less than the attempt timeout",
    );
    let c = d.load(&with(
        "[requests]\nattempt_timeout = \"400ms\"\n[requests.hedge]\nenabled = false\n",
    ));
    assert!(c.is_ok(), "no hedging, no constraint");
}

#[test]
fn rise_fall_and_failures_of_zero() {
    let d = Dir::new();
    let e = d.errors(&with("[health]\nrise = 0\nfall = 0\n\n[ejection]\nconsecutive_failures = 0\nmax_ejected_percent = 101\n"));
    assert_error(
        &e,
        "health.rise",
        "is 0",
        "set at least 1 (the default is 2)",
    );
    assert_error(
        &e,
        "health.fall",
        "is 0",
        "set at least 1 (the default is 2)",
    );
    assert_error(
        &e,
        "ejection.consecutive_failures",
        "is 0",
        "the default is 3",
    );
    assert_error(
        &e,
        "ejection.max_ejected_percent",
        "101 is not a percentage",
        "use 0 to 100",
    );
    assert_eq!(e.len(), 4, "{e}");
}

#[test]
fn a_misspelt_key_is_named_with_the_key_meant() {
    let d = Dir::new();
    let e = d.errors(&with(
        "[health]\nintervl = \"2s\"\n\n[helth]\nrise = 1\n\n[requests.hedge]\nenable = false\n",
    ));
    assert_error(
        &e,
        "health.intervl",
        "unknown key",
        "did you mean `interval`?",
    );
    assert_error(&e, "helth", "unknown key", "did you mean `health`?");
    assert_error(
        &e,
        "requests.hedge.enable",
        "unknown key",
        "did you mean `enabled`?",
    );
    let e = d.errors(&format!("{HEAD}{}colour = \"blue\"\n", members(1)));
    assert_error(
        &e,
        "members[0].colour",
        "unknown key",
        "remove it; the keys of members[0] are: name, url, role",
    );
}

#[test]
fn bad_duration_strings() {
    let d = Dir::new();
    let e = d.errors(&with(
        "[health]\ninterval = \"2 seconds\"\ntimeout = 2\n\n[recovery]\nmax_backoff = \"1.5s\"\n",
    ));
    assert_error(
        &e,
        "health.interval",
        "\"2 seconds\": `seconds` is not a unit",
        "\"150ms\", \"2s\", \"5m\"",
    );
    // Every bad value of a table, though serde stops at the first one.
    assert_error(&e, "health.timeout", "the number 2 has no unit", "\"2s\"");
    assert_error(
        &e,
        "recovery.max_backoff",
        "has a fraction",
        "write a whole number and a unit",
    );
    let e = d.errors(&with("[resync]\ninterval = 30\n"));
    assert_error(
        &e,
        "resync.interval",
        "the number 30 has no unit (write \"30s\" or \"30ms\")",
        "\"2s\"",
    );
}

#[test]
fn missing_required_keys_are_all_named() {
    let d = Dir::new();
    let e = d.errors("[group]\npartition = \"payments\"\ncredential_file = \"credential.toml\"\n\n[[members]]\nname = \"a\"\n");
    assert_error(
        &e,
        "listener.cert",
        "is missing",
        "it is required: PEM file with the listener's certificate chain",
    );
    assert_error(&e, "listener.key", "is missing", "it is required");
    for k in ["url", "client_cert", "client_key", "ca"] {
        assert_error(
            &e,
            &format!("members[0].{k}"),
            "is missing",
            "it is required",
        );
    }
    assert_eq!(e.len(), 6, "{e}");
}

#[test]
fn wrong_shapes() {
    let d = Dir::new();
    let e = d.errors(&format!(
        "{HEAD}[members.a]\nurl = \"https://10.0.0.1:8443\"\n\n[health]\n"
    ));
    assert_error(&e, "members", "is a table, not a list", "[[members]]");
    let e = d.errors(&format!("health = 3\n{}", with("")));
    assert_error(
        &e,
        "health",
        "is the number 3, not a table",
        "interval, timeout, rise, fall",
    );
}

#[test]
fn errors_are_all_collected_in_one_pass() {
    let d = Dir::new();
    let text = format!(
        "{}\n{}[group]\npartition = \"Payments\"\nmin_replicas = 9\ncredential_file = \"nope.toml\"\n\n{}\n{}\n[health]\nfall = 0\n[requests]\nattempt_timeout = \"6s\"\n[metrics]\naddress = \"127.0.0.1:8443\"\n",
        "[listener]\ncert = \"tls/proxy.pem\"\nkey = \"tls/proxy.key\"\n",
        "",
        member("a", "http://10.0.0.1:8443"),
        member("a", "https://10.0.0.2:8443"),
    );
    let e = d.errors(&text);
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    for k in [
        "members[0].url",
        "members[1].name",
        "group.partition",
        "group.min_replicas",
        "group.credential_file",
        "health.fall",
        "requests.attempt_timeout",
        "metrics.address",
    ] {
        assert!(keys.contains(&k), "{k} missing from:\n{e}");
    }
    assert_eq!(e.to_string().lines().count(), e.len(), "one error per line");
}

#[test]
fn the_file_itself() {
    let d = Dir::new();
    let p = d.write("proxy.json", "{}");
    let e = Config::load_with_env(&p, Vec::<(String, String)>::new()).unwrap_err();
    assert_error(
        &e,
        &p.display().to_string(),
        "neither TOML nor YAML",
        "*.toml or *.yaml",
    );
    let e = d.errors("[listener\ncert = 1\n");
    let p = d.path("proxy.toml").display().to_string();
    assert_error(
        &e,
        &p,
        "not valid TOML: TOML parse error at line 1, column 10: unclosed table",
        "fix the TOML syntax",
    );
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    let p = d.write("proxy.yaml", "listener:\n  cert: [unclosed\n");
    let e = Config::load_with_env(&p, Vec::<(String, String)>::new()).unwrap_err();
    assert_error(
        &e,
        &p.display().to_string(),
        "not valid YAML",
        "fix the YAML syntax",
    );
    let missing = d.path("absent.toml");
    let e = Config::load_with_env(&missing, Vec::<(String, String)>::new()).unwrap_err();
    assert_error(
        &e,
        &missing.display().to_string(),
        "no such file",
        "check the path",
    );
}

// Environment overrides.

#[test]
fn environment_overrides_a_scalar_and_nested_keys() {
    let d = Dir::new();
    let c = d
        .load_env(
            &with(""),
            &[
                ("HSM_PROXY__HEALTH__RISE", "5"),
                ("HSM_PROXY__HEALTH__INTERVAL", "3s"),
                ("HSM_PROXY__REQUESTS__HEDGE__ENABLED", "false"),
                ("HSM_PROXY__REQUESTS__RETRY_BUDGET__RATIO", "0.5"),
                ("HSM_PROXY__GROUP__MIN_REPLICAS", "3"),
                ("HSM_PROXY__METRICS__ADDRESS", "127.0.0.1:9999"),
                ("HSM_PROXY__LISTENER__CERT", "tls/proxy.pem"),
                ("HSM_PROXY__EMPTY_IS_IGNORED", ""),
                ("UNRELATED", "1"),
                ("HSM_PROXY_LOG", "debug"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.health.rise, 5);
    assert_eq!(c.health.interval, Duration::from_secs(3));
    assert!(!c.requests.hedge.enabled);
    assert_eq!(c.requests.retry_budget.ratio, 0.5);
    assert_eq!(c.group.min_replicas, Some(3));
    assert_eq!(c.metrics.address.to_string(), "127.0.0.1:9999");
    // A relative path from the environment resolves like the file's.
    assert_eq!(c.listener.cert, d.path("tls/proxy.pem"));
    // Untouched keys keep the file's values and the defaults.
    assert_eq!(c.health.fall, 2);
    assert_eq!(c.members.len(), 3);
}

#[test]
fn environment_overrides_a_member_by_name() {
    let d = Dir::new();
    let text = format!(
        "{HEAD}{}\n{}",
        member("cloud", "https://10.0.0.1:8443"),
        member("on-prem", "https://10.0.0.2:8443")
    );
    let c = d
        .load_env(
            &text,
            &[
                (
                    "HSM_PROXY__MEMBERS__ON_PREM__URL",
                    "https://192.168.1.9:9443",
                ),
                ("HSM_PROXY__MEMBERS__ON_PREM__ROLE", "standby"),
                ("HSM_PROXY__MEMBERS__CLOUD__WEIGHT", "7"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.members[1].url, "https://192.168.1.9:9443");
    assert_eq!(c.members[1].role, MemberRole::Standby);
    assert_eq!(c.members[0].weight, 7);
    assert_eq!(c.members[0].url, "https://10.0.0.1:8443");
}

#[test]
fn environment_errors_name_the_variable() {
    let d = Dir::new();
    let e = d
        .load_env(
            &with(""),
            &[
                ("HSM_PROXY__HEALTH__FALL", "many"),
                ("HSM_PROXY__HEALTH__INTERVL", "2s"),
                ("HSM_PROXY__MEMBERS__NOBODY__URL", "https://10.0.0.9:8443"),
                ("HSM_PROXY__MEMBERS__M1__URL", "http://10.0.0.9:8443"),
                ("HSM_PROXY__MEMBERS__M2", "x"),
            ],
        )
        .unwrap_err();
    assert_error(
        &e,
        "health.fall",
        "(set by HSM_PROXY__HEALTH__FALL)",
        "write it like `fall = 3`",
    );
    assert_error(
        &e,
        "health.intervl",
        "unknown key (set by HSM_PROXY__HEALTH__INTERVL)",
        "did you mean `interval`?",
    );
    assert_error(
        &e,
        "members[1].url",
        "must use https (set by HSM_PROXY__MEMBERS__M1__URL)",
        "TLS only",
    );
    let about_members = e.about("members");
    assert_eq!(about_members.len(), 2, "{e}");
    assert!(
        about_members.iter().any(|m| m
            .problem
            .contains("HSM_PROXY__MEMBERS__NOBODY__URL: no member is named \"nobody\"")
            && m.fix.contains("cannot add one")),
        "{e}"
    );
    assert!(
        about_members.iter().any(|m| m
            .problem
            .contains("HSM_PROXY__MEMBERS__M2 names no member key")),
        "{e}"
    );
}

// check-config.

#[test]
fn check_config_prints_the_effective_configuration_or_the_errors() {
    let d = Dir::new();
    let p = d.write("proxy.toml", &format!("{HEAD}{}", members(2)));
    set_mode(&d.path("tls/proxy.key"), 0o644);
    let ok = check_config_with_env(&p, Vec::<(String, String)>::new());
    assert_eq!(ok.exit_code, 0, "{}", ok.text);
    assert!(ok.text.contains("valid"), "{}", ok.text);
    assert!(ok.text.contains("[requests.hedge]"), "{}", ok.text);
    assert!(ok.text.contains("percentile = 95.0"), "{}", ok.text);
    assert!(
        !ok.text.contains("correct horse"),
        "the password never appears"
    );
    if cfg!(unix) {
        assert!(ok.text.contains("# warning: listener.key:"), "{}", ok.text);
    }
    // What it prints is itself a valid configuration.
    let body: String = ok
        .text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    Config::from_str(&body, Format::Toml).unwrap_or_else(|e| panic!("{e}"));

    let p = d.write(
        "bad.toml",
        &format!("{HEAD}{}[health]\nrise = 0\nfall = 0\n", members(2)),
    );
    let bad = check_config_with_env(&p, Vec::<(String, String)>::new());
    assert_eq!(bad.exit_code, 1);
    assert!(
        bad.text
            .starts_with(&format!("{}: 2 errors\n", p.display())),
        "{}",
        bad.text
    );
    assert!(
        bad.text
            .contains("\nhealth.rise: is 0 — set at least 1 (the default is 2)\n"),
        "{}",
        bad.text
    );
}
