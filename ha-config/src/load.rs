//! Loading: the file (TOML or YAML) plus `HSM_PROXY__…` environment
//! overrides, read into the typed sections with every error's exact key.
//!
//! Decides: where values come from and in which order (file, then
//! environment), how environment variables name keys, where relative paths
//! point. Never: whether values are sensible (see `validate`).
//!
//! The steps, each collecting errors rather than stopping at the first:
//! 1. the `config` crate merges the file and the environment (except member
//!    overrides, step 2) into one tree of values;
//! 2. `HSM_PROXY__MEMBERS__<NAME>__<KEY>` variables are applied to the
//!    member of that name (the `config` crate can only address list items
//!    by index, and an index is not a stable name for a member);
//! 3. the tree is walked against the schema: unknown keys are reported
//!    (with the nearest known key) and dropped, non-tables where tables
//!    belong are reported;
//! 4. each section, and each member, is deserialised on its own, and after
//!    a bad value the rest is tried again without it, so every bad value is
//!    reported; a section or member with a bad value is not validated
//!    further (its other checks would be against stand-in defaults);
//! 5. relative paths are resolved against the file's directory;
//! 6. `validate` checks what parsed.

use crate::duration;
use crate::error::{ConfigError, ConfigErrors};
use crate::schema::*;
use crate::validate::{self, Parts};
use config::{Map, Value, ValueKind};
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The prefix of every environment variable that sets a key.
pub const ENV_PREFIX: &str = "HSM_PROXY__";
/// The origin `config` gives values from the environment.
const ENV_ORIGIN: &str = "the environment";

/// The formats a configuration can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// The format a file's extension says: `.toml`, or `.yaml` / `.yml`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            Format::Toml => config::FileFormat::Toml,
            Format::Yaml => config::FileFormat::Yaml,
        }
    }
}

/// Loads the file at `path` with the given environment.
pub(crate) fn load_file<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let shown = path.display().to_string();
    let Some(format) = Format::from_path(path) else {
        return Err(ConfigError::new(
            shown,
            "the file's extension says neither TOML nor YAML",
            "name it *.toml or *.yaml (*.yml) after its contents",
        )
        .into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| validate::io_error(&shown, path, &e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Absolute, so that the loaded paths do not depend on the working
    // directory the proxy later runs in (no file system access here).
    let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    load_text(&text, format, &shown, &base_dir, env)
}

/// Loads configuration text. `origin` names the text in errors about it as
/// a whole; relative paths are resolved against `base_dir`.
pub(crate) fn load_text<I, K, V>(
    text: &str,
    format: Format,
    origin: &str,
    base_dir: &Path,
    env: I,
) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let mut errors = Vec::new();
    let env = EnvOverrides::new(env);

    // 1. File and environment, merged by the `config` crate.
    let built = config::Config::builder()
        .add_source(config::File::from_str(text, format.file_format()))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                .prefix_separator("__")
                .separator("__")
                .ignore_empty(true)
                .source(Some(env.general.clone())),
        )
        .build();
    let mut root = match built {
        Ok(c) => c.cache,
        Err(e) => return Err(source_error(origin, format, e).into()),
    };
    let ValueKind::Table(table) = &mut root.kind else {
        return Err(ConfigError::new(
            origin,
            "the top level is not a table of sections",
            "start with the [listener], [group] and [[members]] sections (see docs/CONFIG.md)",
        )
        .into());
    };

    // 2. Member overrides, by member name.
    let mut origins = env.origins.clone();
    env.apply_members(table, &mut origins, &mut errors);

    // 3. Unknown keys, misplaced values.
    let mut reported = HashSet::new();
    check_keys(table, Config::FIELDS, "", &mut reported, &mut errors);

    // 4. Each section, each member.
    let mut parts = Parts {
        listener: section(table, "listener", &reported, &mut errors),
        group: section(table, "group", &reported, &mut errors),
        health: section(table, "health", &reported, &mut errors),
        ejection: section(table, "ejection", &reported, &mut errors),
        requests: section(table, "requests", &reported, &mut errors),
        recovery: section(table, "recovery", &reported, &mut errors),
        resync: section(table, "resync", &reported, &mut errors),
        metrics: section(table, "metrics", &reported, &mut errors),
        ..Parts::default()
    };
    match table.shift_remove("members") {
        None if reported.contains("members") => {}
        None => errors.push(ConfigError::new(
            "members",
            "no members",
            "add 1 to 16 members ([[members]] tables in TOML, `members:` list items in YAML)",
        )),
        Some(Value {
            kind: ValueKind::Array(items),
            ..
        }) => {
            parts.member_count = Some(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("members[{i}]");
                if !reported.contains(&path) {
                    if let Some(m) = deserialize_at::<Member>(item, &path, &mut errors) {
                        parts.members.push((i, m));
                    }
                }
            }
        }
        Some(_) => {} // not a list: reported by check_keys
    }

    // 5. Relative paths.
    resolve_paths(&mut parts, base_dir);

    // 6. Values and combinations.
    validate::validate(&parts, base_dir, &mut errors);

    // Report in the order of the reference: listener, group, members, …
    errors.sort_by_cached_key(|e| schema_order(&e.key));
    for e in &mut errors {
        if let Some(var) = origins.get(&e.key) {
            e.problem.push_str(&format!(" (set by {var})"));
        }
    }
    if let Some(errors) = ConfigErrors::from_vec(errors) {
        return Err(errors);
    }
    assemble(parts).ok_or_else(|| {
        ConfigError::new(
            origin,
            "a section failed to load without an error saying why",
            "report this as a bug in ha-config",
        )
        .into()
    })
}

fn assemble(p: Parts) -> Option<Config> {
    let members: Vec<Member> = p.members.into_iter().map(|(_, m)| m).collect();
    let mut group = p.group?;
    group.min_replicas = Some(
        group
            .min_replicas
            .unwrap_or(default_min_replicas(members.len())),
    );
    let mut listener = p.listener?;
    // Like min_replicas, the loaded configuration holds the effective
    // public URL, when the address alone gives it (port 0 is only known
    // once bound; every interface names no host and is refused earlier).
    if listener.public_url.is_none() && listener.address.port() != 0 {
        listener.public_url = Some(listener.effective_public_url(listener.address));
    }
    Some(Config {
        listener,
        group,
        members,
        health: p.health?,
        ejection: p.ejection?,
        requests: p.requests?,
        recovery: p.recovery?,
        resync: p.resync?,
        metrics: p.metrics?,
    })
}

fn resolve_paths(p: &mut Parts, base: &Path) {
    let resolve = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    };
    if let Some(l) = &mut p.listener {
        resolve(&mut l.cert);
        resolve(&mut l.key);
    }
    if let Some(g) = &mut p.group {
        resolve(&mut g.credential_file);
    }
    if let Some(t) = p.metrics.as_mut().and_then(|m| m.admin_token_file.as_mut()) {
        resolve(t);
    }
    for (_, m) in &mut p.members {
        resolve(&mut m.client_cert);
        resolve(&mut m.client_key);
        resolve(&mut m.ca);
    }
}

/// The environment, split into what the `config` crate applies and the
/// member overrides applied here.
struct EnvOverrides {
    /// `HSM_PROXY__…` variables other than member overrides.
    general: Map<String, String>,
    /// `(variable, member name, key, value)`.
    members: Vec<(String, String, String, String)>,
    /// Key path → the variable that set it, to say so in errors.
    origins: HashMap<String, String>,
}

impl EnvOverrides {
    fn new<I, K, V>(env: I) -> EnvOverrides
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut o = EnvOverrides {
            general: Map::new(),
            members: Vec::new(),
            origins: HashMap::new(),
        };
        for (var, value) in env {
            let (var, value): (String, String) = (var.into(), value.into());
            let lower = var.to_ascii_lowercase();
            let Some(rest) = lower.strip_prefix(&ENV_PREFIX.to_ascii_lowercase()) else {
                continue;
            };
            if value.is_empty() {
                continue; // as the `config` crate does with ignore_empty
            }
            if let Some(member) = rest
                .strip_prefix("members__")
                .or(rest.strip_prefix("members").filter(|r| r.is_empty()))
            {
                // The member's name token is everything before the last
                // `__`: member keys have no `__`, names may (`a--b`).
                let (name, key) = member.rsplit_once("__").unwrap_or((member, ""));
                o.members
                    .push((var.clone(), name.replace('_', "-"), key.to_string(), value));
            } else {
                o.origins.insert(rest.replace("__", "."), var.clone());
                o.general.insert(var, value);
            }
        }
        o
    }

    fn apply_members(
        &self,
        root: &mut Map<String, Value>,
        origins: &mut HashMap<String, String>,
        errors: &mut Vec<ConfigError>,
    ) {
        const FIX: &str = "write HSM_PROXY__MEMBERS__<NAME>__<KEY>, the member's name in capitals with _ for -, e.g. HSM_PROXY__MEMBERS__CLOUD_A__URL";
        for (var, name, key, value) in &self.members {
            if name.is_empty() || key.is_empty() {
                errors.push(ConfigError::new(
                    "members",
                    format!("{var} names no member key"),
                    FIX,
                ));
                continue;
            }
            let found = match root.get_mut("members").map(|v| &mut v.kind) {
                Some(ValueKind::Array(items)) => {
                    items
                        .iter_mut()
                        .enumerate()
                        .find_map(|(i, item)| match &mut item.kind {
                            ValueKind::Table(t)
                                if t.get("name")
                                    .and_then(|n| n.clone().into_string().ok())
                                    .as_deref()
                                    == Some(name) =>
                            {
                                Some((i, t))
                            }
                            _ => None,
                        })
                }
                _ => None,
            };
            let Some((i, member)) = found else {
                errors.push(ConfigError::new(
                    "members",
                    format!("{var}: no member is named {name:?}"),
                    "environment overrides change the members the file defines and cannot add one: add the member to the file, or correct the name",
                ));
                continue;
            };
            member.insert(
                key.clone(),
                Value::new(
                    Some(&ENV_ORIGIN.to_string()),
                    ValueKind::String(value.clone()),
                ),
            );
            origins.insert(format!("members[{i}].{key}"), var.clone());
        }
    }
}

/// Reports unknown keys and non-tables where tables belong, and removes
/// them, so that deserialisation reports only what is left.
fn check_keys(
    table: &mut Map<String, Value>,
    fields: &[FieldDoc],
    path: &str,
    reported: &mut HashSet<String>,
    errors: &mut Vec<ConfigError>,
) {
    let mut unknown: Vec<String> = table
        .keys()
        .filter(|k| !fields.iter().any(|f| f.name == k.as_str()))
        .cloned()
        .collect();
    unknown.sort();
    for key in unknown {
        table.shift_remove(&key);
        let here = if path.is_empty() {
            "sections".to_string()
        } else {
            format!("keys of {path}")
        };
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        let fix = match nearest(&key, &names) {
            Some(n) => format!("did you mean `{n}`?"),
            None => format!("remove it; the {here} are: {}", names.join(", ")),
        };
        let full = join(path, &key);
        reported.insert(full.clone());
        errors.push(ConfigError::new(full, "unknown key", fix));
    }
    for f in fields {
        let p = join(path, f.name);
        let Some(value) = table.get_mut(f.name) else {
            continue;
        };
        let ok = match (f.kind, &mut value.kind) {
            (Kind::Table(sub), ValueKind::Table(t)) => {
                check_keys(t, sub, &p, reported, errors);
                true
            }
            (Kind::List(sub), ValueKind::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let pi = format!("{p}[{i}]");
                    if let ValueKind::Table(t) = &mut item.kind {
                        check_keys(t, sub, &pi, reported, errors);
                    } else {
                        errors.push(ConfigError::new(
                            pi.clone(),
                            format!("is {}, not a table", describe(&item.kind)),
                            format!("write each member as a table of keys ({})", names(sub)),
                        ));
                        reported.insert(pi);
                    }
                }
                true
            }
            (Kind::Table(sub), other) => {
                errors.push(ConfigError::new(
                    p.clone(),
                    format!("is {}, not a table", describe(other)),
                    format!("write it as a table of keys ({})", names(sub)),
                ));
                false
            }
            (Kind::List(_), other) => {
                errors.push(ConfigError::new(
                    p.clone(),
                    format!("is {}, not a list", describe(other)),
                    "write a list of member tables ([[members]] in TOML, `- name: …` items in YAML)",
                ));
                false
            }
            (Kind::Value { .. }, _) => true,
        };
        if !ok {
            table.shift_remove(f.name);
            reported.insert(p);
        }
    }
}

fn names(fields: &[FieldDoc]) -> String {
    fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

fn describe(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Nil => "empty".into(),
        ValueKind::Boolean(b) => format!("the boolean {b}"),
        ValueKind::I64(_)
        | ValueKind::I128(_)
        | ValueKind::U64(_)
        | ValueKind::U128(_)
        | ValueKind::Float(_) => {
            format!("the number {kind}")
        }
        ValueKind::String(s) => format!("the string {s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The known name closest to a misspelt one, if it is close enough to be
/// what was meant.
fn nearest<'a>(key: &str, names: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    names
        .iter()
        .map(|n| (edit_distance(&key, n), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4) && *d < n.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Deserialises one section; absent sections deserialise from an empty
/// table, which gives the defaults or says which required keys are missing.
fn section<T: DeserializeOwned>(
    root: &mut Map<String, Value>,
    key: &str,
    reported: &HashSet<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if reported.contains(key) {
        return None;
    }
    let value = root
        .shift_remove(key)
        .unwrap_or_else(|| Value::new(None, ValueKind::Table(Map::new())));
    deserialize_at(value, key, errors)
}

/// Deserialises `value` found at `prefix`, reporting every error in it with
/// its full key path. Serde stops at the first error, so after each one the
/// bad value is taken out (a missing required key is filled with a
/// placeholder) and the attempt repeated; whatever parses after that is
/// discarded, since it is not what the file says.
fn deserialize_at<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut failed = false;
    // Relative paths of values taken out, so that their absence is not
    // reported again as "missing".
    let mut removed: HashSet<String> = HashSet::new();
    // Bounded: each round takes out or fills one key.
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return (!failed).then_some(v),
            Err(e) => e,
        };
        failed = true;
        let at = err.path().to_string();
        let key = if at == "." {
            prefix.to_string()
        } else {
            join(prefix, &at)
        };
        let inner = err.into_inner();
        if let Some(field) = missing_field(&inner) {
            let rel = if at == "." {
                field.clone()
            } else {
                format!("{at}.{field}")
            };
            if !removed.contains(&rel) {
                let full = join(&key, &field);
                let summary = key_doc(&full).map(|f| summary(f.doc)).unwrap_or_default();
                errors.push(ConfigError::new(
                    full,
                    "is missing",
                    format!("it is required: {summary}"),
                ));
            }
            let placeholder = Value::new(None, ValueKind::String(String::new()));
            if !set_at(&mut value, &rel, Some(placeholder)) {
                return None;
            }
            continue;
        }
        if removed.contains(&at) {
            return None; // the placeholder itself did not fit: nothing more to learn
        }
        let found = get_at(&value, &at).map(|v| quote(&v.kind));
        errors.push(type_error(&key, &inner, found.as_deref()));
        if at == "." || !set_at(&mut value, &at, None) {
            return None;
        }
        removed.insert(at);
    }
    None
}

/// The value at a relative path (serde's display: `a.b`, `.` for the root).
fn get_at<'a>(value: &'a Value, at: &str) -> Option<&'a Value> {
    if at == "." {
        return Some(value);
    }
    let mut v = value;
    for seg in at.split('.') {
        let ValueKind::Table(t) = &v.kind else {
            return None;
        };
        v = t.get(seg)?;
    }
    Some(v)
}

/// Sets (or with `None` removes) the value at a relative path whose parent
/// tables exist.
fn set_at(value: &mut Value, at: &str, new: Option<Value>) -> bool {
    let (parent, last) = match at.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, at),
    };
    let mut v = value;
    for seg in parent.into_iter().flat_map(|p| p.split('.')) {
        let ValueKind::Table(t) = &mut v.kind else {
            return false;
        };
        let Some(next) = t.get_mut(seg) else {
            return false;
        };
        v = next;
    }
    let ValueKind::Table(t) = &mut v.kind else {
        return false;
    };
    match new {
        Some(n) => {
            t.insert(last.to_string(), n);
        }
        None => {
            t.shift_remove(last);
        }
    }
    true
}

/// A value as an error quotes it: strings in quotes, the rest as written.
fn quote(kind: &ValueKind) -> String {
    match kind {
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
        ValueKind::Nil => "nothing".into(),
        other => other.to_string(),
    }
}

/// The field a "missing field" error is about, as the `config` crate or
/// serde words it.
fn missing_field(e: &config::ConfigError) -> Option<String> {
    match e {
        config::ConfigError::At { error, .. } => missing_field(error),
        config::ConfigError::NotFound(field) => {
            Some(field.rsplit('.').next().unwrap_or(field).to_string())
        }
        config::ConfigError::Message(m) => m
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
            .map(str::to_string),
        _ => None,
    }
}

/// An error about the value at `key` (`found`, quoted, when known), with
/// the fix the key's type calls for.
fn type_error(key: &str, e: &config::ConfigError, found: Option<&str>) -> ConfigError {
    let (kind_name, example) = match key_doc(key).map(|f| f.kind) {
        Some(Kind::Value { name, example }) => (name, example),
        _ => ("see docs/CONFIG.md", "…"),
    };
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let write_it = format!("write it like `{leaf} = {example}` ({kind_name})");
    match e {
        config::ConfigError::At { error, .. } => type_error(key, error, found),
        config::ConfigError::Type {
            unexpected,
            expected,
            ..
        } => {
            let expected = if expected.contains("unsigned") {
                "a whole number, 0 or more"
            } else if expected.contains("integer") {
                "a whole number"
            } else {
                expected
            };
            let found = found.map_or_else(|| unexpected.to_string(), str::to_string);
            ConfigError::new(key, format!("expected {expected}, found {found}"), write_it)
        }
        config::ConfigError::Message(m) => {
            if let Some(d) = m.strip_prefix(duration::DURATION_MARK) {
                ConfigError::new(key, d, duration::HOW)
            } else if let Some((_, variant)) = m.split_once(" does not have variant constructor ") {
                // The `config` crate's wording of an unknown enum value.
                ConfigError::new(
                    key,
                    format!("`{variant}` is not allowed"),
                    format!("use {kind_name}"),
                )
            } else if let Some((variant, expected)) = m
                .strip_prefix("unknown variant ")
                .and_then(|r| r.split_once(", expected "))
            {
                ConfigError::new(
                    key,
                    format!("{variant} is not allowed"),
                    format!("use {expected}"),
                )
            } else {
                let problem = match found {
                    Some(f) => format!("{f}: {m}"),
                    None => m.clone(),
                };
                ConfigError::new(key, problem, write_it)
            }
        }
        other => ConfigError::new(key, other.to_string(), write_it),
    }
}

/// An error of the `config` crate about the file as a whole.
fn source_error(origin: &str, format: Format, e: config::ConfigError) -> ConfigError {
    let name = match format {
        Format::Toml => "TOML",
        Format::Yaml => "YAML",
    };
    match e {
        config::ConfigError::FileParse { cause, .. } => ConfigError::new(
            origin,
            format!("not valid {name}: {}", one_line(&cause.to_string())),
            format!("fix the {name} syntax at the place shown"),
        ),
        other => ConfigError::new(
            origin,
            other.to_string(),
            "fix the file or the HSM_PROXY__… variables",
        ),
    }
}

/// A parser's message on one line: the source snippet it draws (lines of
/// `|`, line numbers and `^`) left out.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            let body = l
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !l.is_empty() && !body.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// A doc comment on one line.
pub(crate) fn summary_all(doc: &str) -> String {
    doc.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The first sentence of a doc comment, on one line.
pub(crate) fn summary(doc: &str) -> String {
    let flat = summary_all(doc);
    match flat.find(". ") {
        Some(i) => flat[..=i].to_string(),
        None => flat.trim().to_string(),
    }
}

/// Where a key comes in the schema, to sort errors by: the position of
/// each part among its siblings, list indices as they are. Unknown parts
/// sort after known ones; the file itself (no key) comes first.
fn schema_order(path: &str) -> Vec<usize> {
    let mut fields: &'static [FieldDoc] = Config::FIELDS;
    let mut order = Vec::new();
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        match fields.iter().position(|f| f.name == name) {
            Some(p) => {
                order.push(p);
                fields = match fields[p].kind {
                    Kind::Table(sub) | Kind::List(sub) => sub,
                    Kind::Value { .. } => &[],
                };
            }
            None if order.is_empty() && path.contains(['/', '(']) => return Vec::new(),
            None => {
                order.push(usize::MAX);
                fields = &[];
            }
        }
        order.extend(index);
    }
    order
}

/// The documentation of the key at a path like `members[2].url`.
pub(crate) fn key_doc(path: &str) -> Option<&'static FieldDoc> {
    let mut fields: &'static [FieldDoc] = Config::FIELDS;
    let mut found = None;
    for seg in path.split('.') {
        let name = seg.split('[').next().unwrap_or(seg);
        let f = fields.iter().find(|f| f.name == name)?;
        fields = match f.kind {
            Kind::Table(sub) | Kind::List(sub) => sub,
            Kind::Value { .. } => &[],
        };
        found = Some(f);
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key() {
        let names = ["interval", "timeout", "rise", "fall"];
        assert_eq!(nearest("intervl", &names), Some("interval"));
        assert_eq!(nearest("Timeout", &names), Some("timeout"));
        assert_eq!(nearest("fal", &names), Some("fall"));
        assert_eq!(nearest("colour", &names), None);
    }

    #[test]
    fn doc_lookup_by_path() {
        assert_eq!(key_doc("members[3].url").map(|f| f.name), Some("url"));
        assert_eq!(
            key_doc("requests.hedge.max_delay").map(|f| f.name),
            Some("max_delay")
        );
        assert!(key_doc("health.nope").is_none());
    }
}
