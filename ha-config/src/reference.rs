//! The reference documentation (`docs/CONFIG.md`), generated from the
//! schema's doc comments and the defaults themselves.
//!
//! Decides: the layout of the reference. Never: what a key means (that is
//! written once, on the key, in `schema` and `credential`).
//!
//! A key's default is not copied from its prose: it is found by taking a
//! configuration in which every key is set, removing that one key,
//! deserialising, and reading back what serde filled in. A key whose removal
//! fails to deserialise is required.

use crate::credential::Credential;
use crate::load::ENV_PREFIX;
use crate::schema::*;
use std::fmt::Write;

/// The command that regenerates `docs/CONFIG.md`.
pub const REGENERATE: &str = "cargo run -p ha-config --example gen-docs > docs/CONFIG.md";

const INTRO: &str = r#"The configuration of `hsm-proxy`: one HA group of up to 16 HSM members,
presented to applications as one virtual partition. Check a file, and see
every default filled in, with `hsm-proxy check-config FILE`.

## Files, values and paths

- **Formats.** TOML (`*.toml`) or YAML (`*.yaml`, `*.yml`), chosen by the
  file's extension; the keys are the same in both. In TOML each member is a
  `[[members]]` table; in YAML an item of the `members:` list.
- **Unknown keys are errors**, so that a misspelt key is never silently
  ignored; the error names the nearest known key.
- **Durations** are written with a unit: `150ms`, `2s`, `5m`, `1h`, or
  combined, `1m30s` (units `h`, `m`, `s`, `ms`, `us`, `ns`; whole numbers
  only). A bare number is an error, never a guess at the unit.
- **Relative paths** (certificates, keys, the credential file) are resolved
  against the directory of the configuration file, wherever they were set.
- **Validation** reports every problem at once, one per line, each as
  `key: what is wrong — how to fix it`, e.g.
  `members[3].url: "http://10.0.0.5:8443" must use https — hsm-node serves TLS only: write https://10.0.0.5:8443`.
  `check-config` also prints warnings that do not stop the proxy: a
  credential file or private key that everyone can read, a metrics listener
  off loopback, a group of one member.

## Environment overrides

Every key can be set from the environment, over the file: `HSM_PROXY__`,
then the key path in capitals with `__` between its parts, e.g.
`HSM_PROXY__HEALTH__INTERVAL=2s` or `HSM_PROXY__REQUESTS__HEDGE__ENABLED=false`.
Empty variables are ignored.

Members are addressed **by name**, not by position:
`HSM_PROXY__MEMBERS__<NAME>__<KEY>`, with the member's name in capitals and
`_` for `-`, e.g. `HSM_PROXY__MEMBERS__ON_PREM__URL=https://10.9.0.4:8443`
sets `url` of the member named `on-prem`. Overrides can change the members
the file defines, but cannot add or remove members, nor set the whole list;
an override naming no member of the file is an error. Values from the
environment are parsed like the file's (`"2s"`, `3`, `true`), and an error
about a key set there names the variable.
"#;

const CREDENTIAL_INTRO: &str = r#"`group.credential_file` names a small TOML file that holds the role and
password the proxy itself logs in to every member's partition with, for its
background work. It is kept out of the configuration so that the
configuration can be shown, versioned and templated while the password stays
in a file only the proxy's user can read (mode `0600`; `check-config` warns
when everyone can read it). `check-config` never prints the password.

```toml
role = "replication"
password = "…"
```
"#;

/// The whole reference, as `docs/CONFIG.md` holds it.
pub fn reference_markdown() -> String {
    let full = toml::Value::try_from(sample()).unwrap_or(toml::Value::Table(toml::Table::new()));
    let mut out = String::new();
    out.push_str("# hsm-proxy configuration reference\n\n");
    let _ = writeln!(
        out,
        "<!-- Generated from the doc comments in ha-config/src/schema.rs and\n     ha-config/src/credential.rs by `{REGENERATE}`.\n     Do not edit by hand: a test fails when this file and the code differ. -->\n"
    );
    out.push_str(INTRO);
    out.push_str("\n## Sections\n\n");
    for f in Config::FIELDS {
        let _ = writeln!(
            out,
            "- [`{}`](#{}) — {}",
            heading_name(f.name, f.kind),
            anchor(&heading_name(f.name, f.kind)),
            crate::load::summary(f.doc)
        );
    }
    out.push_str("- [The credential file](#the-credential-file)\n");
    for f in Config::FIELDS {
        table(&mut out, f, "", &full);
    }
    out.push_str("\n## The credential file\n\n");
    out.push_str(CREDENTIAL_INTRO);
    for f in Credential::FIELDS {
        let _ = writeln!(out, "\n### `{}`\n", f.name);
        let _ = writeln!(out, "{} · required\n", kind_name(f.kind));
        out.push_str(&paragraphs(f.doc));
    }
    out.push_str("\n## Example\n\n`ha-config/examples/proxy.toml`: three members, in the cloud, in a peered\nnetwork, and on-premises over a VPN as a standby.\n\n```toml\n");
    out.push_str(include_str!("../examples/proxy.toml"));
    out.push_str("```\n");
    out
}

/// A table's heading, doc and keys, then its subtables.
fn table(out: &mut String, f: &FieldDoc, parent: &str, full: &toml::Value) {
    let path = join(parent, f.name);
    let (fields, list) = match f.kind {
        Kind::Table(fields) => (fields, false),
        Kind::List(fields) => (fields, true),
        Kind::Value { .. } => return,
    };
    let shown = heading_name(&path, f.kind);
    let _ = writeln!(out, "\n## `{shown}`\n");
    let required = default_of(full, &path).is_none();
    out.push_str(&paragraphs(f.doc));
    out.push_str(if list {
        "\nRequired: 1 to 16 members.\n"
    } else if required {
        "\nRequired.\n"
    } else {
        "\nOptional: every key has a default.\n"
    });
    let key_prefix = if list {
        format!("{path}[]")
    } else {
        path.clone()
    };
    let probe_prefix = if list {
        format!("{path}[0]")
    } else {
        path.clone()
    };
    for k in fields {
        if let Kind::Value { name, .. } = k.kind {
            let key = join(&key_prefix, k.name);
            let default = match default_of(full, &join(&probe_prefix, k.name)) {
                None => "required".to_string(),
                Some(None) => "default computed (see below)".to_string(),
                Some(Some(v)) => format!("default `{v}`"),
            };
            let env = if list {
                format!(
                    "{ENV_PREFIX}MEMBERS__<NAME>__{}",
                    k.name.to_ascii_uppercase()
                )
            } else {
                format!(
                    "{ENV_PREFIX}{}",
                    key.replace('.', "__").to_ascii_uppercase()
                )
            };
            let _ = writeln!(out, "\n### `{key}`\n");
            let _ = writeln!(out, "{name} · {default} · `{env}`\n");
            out.push_str(&paragraphs(k.doc));
        }
    }
    for k in fields {
        table(out, k, &path, full);
    }
}

fn heading_name(path: &str, kind: Kind) -> String {
    match kind {
        Kind::List(_) => format!("{path}[]"),
        _ => path.to_string(),
    }
}

/// GitHub's heading anchors: lowercase, punctuation but `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Value { name, .. } => name,
        Kind::Table(_) => "table",
        Kind::List(_) => "list of tables",
    }
}

/// A doc comment as Markdown: `///` lines with their leading space removed.
fn paragraphs(doc: &str) -> String {
    let mut s: String = doc
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    if s.is_empty() {
        s.push('\n');
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The default of the key at `path` (`members[0].role`, `health.rise`):
/// `None` when the key is required, `Some(None)` when it is optional
/// without a fixed default, else the default as shown in the reference.
pub(crate) fn default_of(full: &toml::Value, path: &str) -> Option<Option<String>> {
    let mut without = full.clone();
    remove(&mut without, path)?;
    let parsed: Config = without.try_into().ok()?;
    let back = toml::Value::try_from(parsed).ok()?;
    Some(get(&back, path).map(show))
}

/// A value as the reference shows it: strings without quotes, numbers as
/// Rust prints them (`95`, not `95.0`).
pub(crate) fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => f.to_string(),
        other => other.to_string(),
    }
}

fn segments(path: &str) -> Vec<(&str, Option<usize>)> {
    path.split('.')
        .map(|seg| match seg.split_once('[') {
            Some((name, i)) => (name, i.trim_end_matches(']').parse().ok()),
            None => (seg, None),
        })
        .collect()
}

fn get<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    let mut v = v;
    for (name, index) in segments(path) {
        v = v.get(name)?;
        if let Some(i) = index {
            v = v.get(i)?;
        }
    }
    Some(v)
}

fn remove(v: &mut toml::Value, path: &str) -> Option<()> {
    let segs = segments(path);
    let (last, init) = segs.split_last()?;
    let mut v = v;
    for (name, index) in init {
        v = v.get_mut(*name)?;
        if let Some(i) = index {
            v = v.get_mut(*i)?;
        }
    }
    v.as_table_mut()?.remove(last.0).map(|_| ())
}

/// A configuration with every key set (every optional key too), from which
/// the defaults are probed. The compiler keeps it complete.
pub(crate) fn sample() -> Config {
    Config {
        listener: Listener {
            public_url: Some("https://hsm.example:8443".into()),
            ..Listener::new("tls/proxy.pem".into(), "tls/proxy.key".into())
        },
        group: Group {
            partition: "payments".into(),
            min_replicas: Some(2),
            credential_file: "credential.toml".into(),
        },
        members: vec![Member::new(
            "cloud-a",
            "https://10.0.0.5:8443",
            "tls/member-client.pem".into(),
            "tls/member-client.key".into(),
            "tls/hsm-ca.pem".into(),
        )],
        health: Health::default(),
        ejection: Ejection::default(),
        requests: Requests::default(),
        recovery: Recovery::default(),
        resync: Resync::default(),
        metrics: Metrics {
            admin_token_file: Some("admin-token".into()),
            status_open: false,
            ..Metrics::default()
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::credential::Credential;

    /// Every key path of a TOML value: `health.interval`, `members[].url`.
    fn leaf_paths(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    leaf_paths(v, &join(prefix, k), out);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    leaf_paths(item, &format!("{prefix}[]"), out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn every_field_of_the_serde_types_is_in_the_reference() {
        let doc = reference_markdown();
        let full = toml::Value::try_from(sample()).expect("the sample serialises");
        let mut paths = Vec::new();
        leaf_paths(&full, "", &mut paths);
        assert!(paths.len() >= 35, "the sample sets every key: {paths:?}");
        for p in &paths {
            assert!(
                doc.contains(&format!("\n### `{p}`\n")),
                "{p} is not documented in the reference"
            );
        }
        for f in Credential::FIELDS {
            assert!(doc.contains(&format!("\n### `{}`\n", f.name)));
        }
        // And the other way: every documented key is a key of the sample,
        // so the sample really is complete (every Option set).
        let documented = doc.lines().filter(|l| l.starts_with("### `")).count();
        assert_eq!(documented, paths.len() + Credential::FIELDS.len());
    }

    #[test]
    fn every_key_has_a_doc_comment_and_its_prose_states_the_real_default() {
        let full = toml::Value::try_from(sample()).expect("the sample serialises");
        let mut paths = Vec::new();
        leaf_paths(&full, "", &mut paths);
        for p in paths {
            let doc = crate::load::key_doc(&p).unwrap_or_else(|| panic!("no doc for {p}"));
            assert!(doc.doc.trim().len() > 20, "{p} has no real doc comment");
            match default_of(&full, &p.replace("[]", "[0]")) {
                Some(Some(v)) => {
                    let prose = crate::load::summary_all(doc.doc);
                    assert!(
                        prose.contains(&format!("Default `{v}`")),
                        "the doc of {p} should say \"Default `{v}`\":\n{prose}"
                    )
                }
                Some(None) => assert!(
                    doc.doc.contains("Default"),
                    "{p}: say how its default is computed"
                ),
                None => assert!(
                    doc.doc.contains("Required"),
                    "{p} is required: its doc should say so"
                ),
            }
        }
    }

    #[test]
    fn default_impls_agree_with_the_serde_defaults() {
        fn empty<T: serde::de::DeserializeOwned>() -> T {
            toml::Value::Table(toml::Table::new())
                .try_into()
                .expect("every key has a default")
        }
        assert_eq!(empty::<Health>(), Health::default());
        assert_eq!(empty::<Ejection>(), Ejection::default());
        assert_eq!(empty::<Requests>(), Requests::default());
        assert_eq!(empty::<RetryBudget>(), RetryBudget::default());
        assert_eq!(empty::<Hedge>(), Hedge::default());
        assert_eq!(empty::<Recovery>(), Recovery::default());
        assert_eq!(empty::<Resync>(), Resync::default());
        assert_eq!(empty::<Metrics>(), Metrics::default());
    }

    #[test]
    fn required_and_computed_keys_are_found_by_probing() {
        let full = toml::Value::try_from(sample()).expect("the sample serialises");
        assert_eq!(default_of(&full, "listener.cert"), None);
        assert_eq!(default_of(&full, "members[0].url"), None);
        assert_eq!(default_of(&full, "group.min_replicas"), Some(None));
        assert_eq!(
            default_of(&full, "health.interval"),
            Some(Some("1s".into()))
        );
        assert_eq!(
            default_of(&full, "requests.hedge.percentile"),
            Some(Some("95".into()))
        );
        assert_eq!(
            default_of(&full, "members[0].role"),
            Some(Some("active".into()))
        );
    }
}
