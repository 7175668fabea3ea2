//! Durable state: partitions, their roles and registered clients, and keys
//! with their versions, in one embedded ACID database (redb).
//!
//! Decides: the tables and record shapes, and which changes commit together
//! (every mutation is one write transaction; redb fsyncs before `commit`
//! returns, so an acknowledged write survives SIGKILL and power loss, and a
//! half-done one is never visible). Never: cryptography (key material arrives
//! already sealed), authorisation, or the HTTP dialect.

use hsm_api::{JsonWebKey, KeyOperation, Tags, B64};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Partition name → [`PartitionRecord`] (JSON).
const PARTITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("partitions");
/// (partition, key name) → [`NameRecord`] (JSON).
const NAMES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("names");
/// (partition, key name, version) → [`VersionRecord`] (JSON).
const VERSIONS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("versions");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database is in use by another process (is the node running?)")]
    InUse,
    #[error("database: {0}")]
    Db(String),
    #[error("corrupt record {what}: {message}")]
    Corrupt { what: String, message: String },
    #[error("partition `{0}` does not exist")]
    NoPartition(String),
    #[error("partition `{0}` already exists")]
    PartitionExists(String),
    #[error("key `{0}` not found")]
    NoKey(String),
    #[error("key `{name}` has no version `{version}`")]
    NoVersion { name: String, version: String },
    #[error("deleted key `{0}` not found")]
    NoDeletedKey(String),
    #[error("key `{0}` is deleted and awaiting purge; recover or purge it first")]
    KeyIsDeleted(String),
    #[error("a key named `{0}` already exists (live or deleted); restore needs a free name")]
    NameTaken(String),
}

macro_rules! db_err {
    ($($t:ty),+) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )+};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Db(other.to_string()),
        }
    }
}

/// A role's password hash and lockout state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRecord {
    /// argon2id PHC string.
    pub password_hash: String,
    /// Consecutive failed logins since the last success or lockout.
    pub failures: u32,
    /// Unix seconds until which the role is locked.
    pub locked_until: Option<i64>,
}

/// A TLS client registered to a partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub label: String,
    pub added: i64,
}

/// A partition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub name: String,
    pub created: i64,
    /// The partition's key-encryption key, sealed under the master key.
    pub kek_sealed: B64,
    /// The cloning-domain secret, sealed under the master key.
    pub domain_sealed: B64,
    /// Role wire name (`crypto-officer`…) → record.
    pub roles: BTreeMap<String, RoleRecord>,
    /// Client certificate SHA-256 fingerprint (hex) → record.
    pub clients: BTreeMap<String, ClientRecord>,
}

/// A key name: its versions in creation order (the last is current) and
/// its soft-delete state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NameRecord {
    pub versions: Vec<String>,
    pub deleted: Option<DeletedInfo>,
}

impl NameRecord {
    pub fn current(&self) -> Option<&str> {
        self.versions.last().map(String::as_str)
    }
}

/// When a key was soft-deleted and when it will be purged.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct DeletedInfo {
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// One version of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The public JWK (no kid, no key_ops): shown without decrypting.
    pub public_jwk: JsonWebKey,
    pub key_ops: Vec<KeyOperation>,
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub tags: Option<Tags>,
    /// Serialised key material sealed with AES-256-GCM under the partition
    /// KEK, bound to (partition, name, version).
    pub sealed: B64,
}

fn decode<T: DeserializeOwned>(what: &dyn Fn() -> String, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Db(format!("encode: {e}")))
}

/// The database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let w = db.begin_write()?;
        {
            w.open_table(PARTITIONS)?;
            w.open_table(NAMES)?;
            w.open_table(VERSIONS)?;
        }
        w.commit()?;
        Ok(Store { db })
    }

    // ---- partitions ----

    pub fn partitions(&self) -> Result<Vec<PartitionRecord>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PARTITIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode(&|| format!("partition {}", k.value()), v.value())?);
        }
        Ok(out)
    }

    pub fn partition(&self, name: &str) -> Result<PartitionRecord, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PARTITIONS)?;
        let v = t
            .get(name)?
            .ok_or_else(|| StoreError::NoPartition(name.into()))?;
        decode(&|| format!("partition {name}"), v.value())
    }

    pub fn create_partition(&self, rec: &PartitionRecord) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PARTITIONS)?;
            if t.get(rec.name.as_str())?.is_some() {
                return Err(StoreError::PartitionExists(rec.name.clone()));
            }
            t.insert(rec.name.as_str(), encode(rec)?.as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    /// Reads, changes and writes back one partition in one transaction. The
    /// change is committed even when `f` returns `Err` (a failed login
    /// must still count); return `Ok` to carry a value out.
    pub fn update_partition<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut PartitionRecord) -> T,
    ) -> Result<T, StoreError> {
        let w = self.db.begin_write()?;
        let out = {
            let mut t = w.open_table(PARTITIONS)?;
            let mut rec: PartitionRecord = {
                let v = t
                    .get(name)?
                    .ok_or_else(|| StoreError::NoPartition(name.into()))?;
                decode(&|| format!("partition {name}"), v.value())?
            };
            let out = f(&mut rec);
            t.insert(name, encode(&rec)?.as_slice())?;
            out
        };
        w.commit()?;
        Ok(out)
    }

    /// Deletes a partition with every key in it.
    pub fn delete_partition(&self, name: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut p = w.open_table(PARTITIONS)?;
            if p.remove(name)?.is_none() {
                return Err(StoreError::NoPartition(name.into()));
            }
            let mut names = w.open_table(NAMES)?;
            names.retain_in((name, "")..(name, "\u{10FFFF}"), |_, _| false)?;
            let mut versions = w.open_table(VERSIONS)?;
            versions.retain_in((name, "", "")..(name, "\u{10FFFF}", ""), |_, _| false)?;
        }
        w.commit()?;
        Ok(())
    }

    // ---- keys ----

    pub fn name(&self, p: &str, name: &str) -> Result<Option<NameRecord>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(NAMES)?;
        match t.get((p, name))? {
            Some(v) => Ok(Some(decode(&|| format!("name {p}/{name}"), v.value())?)),
            None => Ok(None),
        }
    }

    pub fn version(&self, p: &str, name: &str, version: &str) -> Result<VersionRecord, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(VERSIONS)?;
        let v = t
            .get((p, name, version))?
            .ok_or_else(|| StoreError::NoVersion {
                name: name.into(),
                version: version.into(),
            })?;
        decode(&|| format!("version {p}/{name}/{version}"), v.value())
    }

    /// The live (not deleted) name and the record of `version`, or of the
    /// current version when `version` is `None`.
    pub fn live_version(
        &self,
        p: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<(String, VersionRecord), StoreError> {
        let n = self
            .name(p, name)?
            .filter(|n| n.deleted.is_none())
            .ok_or_else(|| StoreError::NoKey(name.into()))?;
        let v = match version {
            Some(v) if n.versions.iter().any(|x| x == v) => v.to_string(),
            Some(v) => {
                return Err(StoreError::NoVersion {
                    name: name.into(),
                    version: v.into(),
                })
            }
            None => n
                .current()
                .ok_or_else(|| StoreError::NoKey(name.into()))?
                .to_string(),
        };
        let rec = self.version(p, name, &v)?;
        Ok((v, rec))
    }

    /// Adds a version to a key, creating the name if `may_create`. Refused
    /// when the name is soft-deleted.
    /// Returns whether the name was created.
    pub fn add_version(
        &self,
        p: &str,
        name: &str,
        version: &str,
        rec: &VersionRecord,
        may_create: bool,
    ) -> Result<bool, StoreError> {
        let w = self.db.begin_write()?;
        let created;
        {
            let mut names = w.open_table(NAMES)?;
            let existing: Option<NameRecord> = match names.get((p, name))? {
                Some(v) => Some(decode(&|| format!("name {p}/{name}"), v.value())?),
                None => None,
            };
            created = existing.is_none();
            let mut n = match existing {
                Some(n) => n,
                None if may_create => NameRecord::default(),
                None => return Err(StoreError::NoKey(name.into())),
            };
            if n.deleted.is_some() {
                return Err(StoreError::KeyIsDeleted(name.into()));
            }
            n.versions.push(version.to_string());
            names.insert((p, name), encode(&n)?.as_slice())?;
            let mut versions = w.open_table(VERSIONS)?;
            versions.insert((p, name, version), encode(rec)?.as_slice())?;
        }
        w.commit()?;
        Ok(created)
    }

    /// Restores a whole key (every version) under a name that is free,
    /// live or deleted names alike refused.
    pub fn restore(
        &self,
        p: &str,
        name: &str,
        versions_in: &[(String, VersionRecord)],
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut names = w.open_table(NAMES)?;
            if names.get((p, name))?.is_some() {
                return Err(StoreError::NameTaken(name.into()));
            }
            let n = NameRecord {
                versions: versions_in.iter().map(|(v, _)| v.clone()).collect(),
                deleted: None,
            };
            names.insert((p, name), encode(&n)?.as_slice())?;
            let mut versions = w.open_table(VERSIONS)?;
            for (v, rec) in versions_in {
                versions.insert((p, name, v.as_str()), encode(rec)?.as_slice())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Changes one version of a live key in one transaction.
    pub fn update_version(
        &self,
        p: &str,
        name: &str,
        version: &str,
        f: impl FnOnce(&mut VersionRecord),
    ) -> Result<VersionRecord, StoreError> {
        let w = self.db.begin_write()?;
        let rec = {
            let names = w.open_table(NAMES)?;
            let live = match names.get((p, name))? {
                Some(v) => decode::<NameRecord>(&|| format!("name {p}/{name}"), v.value())?,
                None => return Err(StoreError::NoKey(name.into())),
            };
            if live.deleted.is_some() {
                return Err(StoreError::NoKey(name.into()));
            }
            let mut versions = w.open_table(VERSIONS)?;
            let mut rec: VersionRecord = match versions.get((p, name, version))? {
                Some(v) => decode(&|| format!("version {p}/{name}/{version}"), v.value())?,
                None => {
                    return Err(StoreError::NoVersion {
                        name: name.into(),
                        version: version.into(),
                    })
                }
            };
            f(&mut rec);
            versions.insert((p, name, version), encode(&rec)?.as_slice())?;
            rec
        };
        w.commit()?;
        Ok(rec)
    }

    /// Names of a partition after `after` (exclusive), in order, that are
    /// live (`deleted == false`) or soft-deleted (`deleted == true`), with
    /// their current version. Returns up to `limit` and whether more exist.
    #[allow(clippy::type_complexity)]
    pub fn list_names(
        &self,
        p: &str,
        after: Option<&str>,
        limit: usize,
        deleted: bool,
    ) -> Result<(Vec<(String, NameRecord, VersionRecord)>, bool), StoreError> {
        let r = self.db.begin_read()?;
        let names = r.open_table(NAMES)?;
        let versions = r.open_table(VERSIONS)?;
        let start = after.unwrap_or("");
        let mut out = Vec::new();
        for row in names.range((p, start)..(p, "\u{10FFFF}"))? {
            let (k, v) = row?;
            let (_, name) = k.value();
            if Some(name) == after {
                continue;
            }
            let n: NameRecord = decode(&|| format!("name {p}/{name}"), v.value())?;
            if n.deleted.is_some() != deleted {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let Some(cur) = n.current() else { continue };
            let vr = versions
                .get((p, name, cur))?
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("name {p}/{name}"),
                    message: format!("current version {cur} missing"),
                })?;
            let vr: VersionRecord = decode(&|| format!("version {p}/{name}/{cur}"), vr.value())?;
            out.push((name.to_string(), n, vr));
        }
        Ok((out, false))
    }

    /// Every version of a live key, in creation order.
    pub fn list_versions(
        &self,
        p: &str,
        name: &str,
    ) -> Result<Vec<(String, VersionRecord)>, StoreError> {
        let n = self
            .name(p, name)?
            .filter(|n| n.deleted.is_none())
            .ok_or_else(|| StoreError::NoKey(name.into()))?;
        n.versions
            .iter()
            .map(|v| Ok((v.clone(), self.version(p, name, v)?)))
            .collect()
    }

    /// Soft-deletes a live key.
    pub fn soft_delete(
        &self,
        p: &str,
        name: &str,
        info: DeletedInfo,
    ) -> Result<(NameRecord, VersionRecord), StoreError> {
        self.change_name(p, name, |n| {
            if n.deleted.is_some() {
                return Err(StoreError::NoKey(name.into()));
            }
            n.deleted = Some(info);
            Ok(())
        })
    }

    /// Recovers a soft-deleted key.
    pub fn recover(&self, p: &str, name: &str) -> Result<(NameRecord, VersionRecord), StoreError> {
        self.change_name(p, name, |n| {
            if n.deleted.is_none() {
                return Err(StoreError::NoDeletedKey(name.into()));
            }
            n.deleted = None;
            Ok(())
        })
        .map_err(|e| match e {
            StoreError::NoKey(n) => StoreError::NoDeletedKey(n),
            other => other,
        })
    }

    fn change_name(
        &self,
        p: &str,
        name: &str,
        f: impl FnOnce(&mut NameRecord) -> Result<(), StoreError>,
    ) -> Result<(NameRecord, VersionRecord), StoreError> {
        let w = self.db.begin_write()?;
        let out = {
            let mut names = w.open_table(NAMES)?;
            let mut n: NameRecord = match names.get((p, name))? {
                Some(v) => decode(&|| format!("name {p}/{name}"), v.value())?,
                None => return Err(StoreError::NoKey(name.into())),
            };
            f(&mut n)?;
            names.insert((p, name), encode(&n)?.as_slice())?;
            let cur = n.current().unwrap_or_default().to_string();
            let versions = w.open_table(VERSIONS)?;
            let vr = versions
                .get((p, name, cur.as_str()))?
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("name {p}/{name}"),
                    message: "current version missing".into(),
                })?;
            let vr: VersionRecord = decode(&|| format!("version {p}/{name}/{cur}"), vr.value())?;
            (n, vr)
        };
        w.commit()?;
        Ok(out)
    }

    /// Purges a soft-deleted key: every version is gone for good.
    pub fn purge(&self, p: &str, name: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut names = w.open_table(NAMES)?;
            let n: NameRecord = match names.get((p, name))? {
                Some(v) => decode(&|| format!("name {p}/{name}"), v.value())?,
                None => return Err(StoreError::NoDeletedKey(name.into())),
            };
            if n.deleted.is_none() {
                return Err(StoreError::NoDeletedKey(name.into()));
            }
            names.remove((p, name))?;
            let mut versions = w.open_table(VERSIONS)?;
            for v in &n.versions {
                versions.remove((p, name, v.as_str()))?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Soft-deleted keys whose purge date has passed, as (partition, name).
    pub fn due_for_purge(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        let r = self.db.begin_read()?;
        let names = r.open_table(NAMES)?;
        let mut out = Vec::new();
        for row in names.iter()? {
            let (k, v) = row?;
            let (p, name) = k.value();
            let n: NameRecord = decode(&|| format!("name {p}/{name}"), v.value())?;
            if n.deleted.is_some_and(|d| d.scheduled_purge_date <= now) {
                out.push((p.to_string(), name.to_string()));
            }
        }
        Ok(out)
    }

    /// Number of live keys in each partition.
    pub fn live_key_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let r = self.db.begin_read()?;
        let names = r.open_table(NAMES)?;
        let mut out = BTreeMap::new();
        for row in names.iter()? {
            let (k, v) = row?;
            let (p, name) = k.value();
            let n: NameRecord = decode(&|| format!("name {p}/{name}"), v.value())?;
            if n.deleted.is_none() {
                *out.entry(p.to_string()).or_insert(0) += 1;
            }
        }
        Ok(out)
    }
}
