//! Durable state: partitions, their roles and registered clients, and keys
//! with their versions, in one embedded ACID database (redb).
//!
//! Decides: the tables and record shapes, and which changes commit together
//! (every mutation is one write transaction; redb fsyncs before `commit`
//! returns, so an acknowledged write survives SIGKILL and power loss, and a
//! half-done one is never visible). Never: cryptography (key material arrives
//! already sealed), authorisation, or the HTTP dialect.
//!
//! Keys are replicated between the members of a group as *objects*: one key
//! name with all its versions, its soft-delete state, or a purge tombstone.
//! An object is a grow-only set of versions plus two registers, merged the
//! same way on every member whatever the order (`replication`):
//! - a version is made *pending* (not listed, not usable, not current, not
//!   in the inventory, never exported by resync) and becomes *committed*
//!   when the proxy tells the member it is durable on `min_replicas`
//!   members ([`Store::commit`]); a pending version not committed by its
//!   deadline is dropped by the member itself ([`Store::drop_expired`]);
//! - committed versions are ordered by (stamp, id): the last is current;
//! - each version's attributes are a register ordered by `attr_stamp`;
//! - the soft-delete state is a register ordered by `life_stamp`;
//! - a purge is a range tombstone: every version stamped at or below
//!   `purged_through` is gone for good.
//!
//! Stamps come from the node's hybrid logical clock (`clock::Hlc`).
//! Every change to an object goes through [`Store::with_object`], which in the
//! same transaction recomputes the object's digest and keeps the inventory
//! (one entry per object, XOR-of-hashes per bucket) in step, so two members
//! compare in one round trip.

use hsm_api::{JsonWebKey, KeyOperation, RequestStamp, Tags, B64};
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
/// (partition, bucket, key name) → [`InventoryEntry`] (JSON): the inventory,
/// ordered by bucket so one bucket is one range scan.
const INVENTORY: TableDefinition<(&str, u8, &str), &[u8]> = TableDefinition::new("inventory");
/// (partition, bucket) → XOR of the entry hashes (32 bytes) ‖ entry count (u64 BE).
const BUCKETS: TableDefinition<(&str, u8), &[u8]> = TableDefinition::new("buckets");
/// (partition, key name, version) → deadline (Unix ms) of a pending version:
/// what the expiry sweep reads, without scanning every key.
const PENDING: TableDefinition<(&str, &str, &str), i64> = TableDefinition::new("pending");
/// Partition → [`SyncRecord`] (JSON): the member's own sync state.
const SYNC: TableDefinition<&str, &[u8]> = TableDefinition::new("sync");
/// `"schema"` → the record layout's version ([`SCHEMA`]).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The record layout this build writes. 1 (no `meta` table): versions in
/// creation order, objects merged whole by generation. 2: stamped versions,
/// pending versions, per-version merge. A store of schema 1 is migrated in
/// place when opened ([`Store::open`]).
pub const SCHEMA: u64 = 2;

/// A write transaction that waited for the writer's turn and committed for
/// this long is logged (see [`Store::write`]): a disk or lock stall.
const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(250);

/// redb's page cache, in bytes.
const STORE_CACHE_BYTES: usize = 64 << 20;

/// Buckets of the inventory: the first byte of SHA-256(name).
pub const BUCKET_COUNT: usize = 256;

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
    #[error("key `{name}` version `{version}` holds other key material here; refusing the clone")]
    VersionConflict { name: String, version: String },
    #[error("key `{name}` has no pending version `{version}` (never made here, committed with other material, or dropped after its deadline)")]
    NoPending { name: String, version: String },
    #[error("the database was written by a newer hsm-node (schema {0}); run that version")]
    NewerSchema(u64),
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

/// A key name: its committed versions ordered by (stamp, id) (the last is
/// current), its pending versions, its soft-delete state, and its
/// replication state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NameRecord {
    pub versions: Vec<String>,
    /// Versions made or copied here and not yet committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    pub deleted: Option<DeletedInfo>,
    /// Stamp of the last delete, recover or purge: the later one wins.
    #[serde(default)]
    pub life_stamp: u64,
    /// Unix seconds of the last purge. With no version left, the record is
    /// a tombstone, kept so a stale member cannot bring the key back.
    #[serde(default)]
    pub purged: Option<i64>,
    /// Every version stamped at or below this was purged.
    #[serde(default)]
    pub purged_through: u64,
    /// The highest stamp in the object (informational: merges do not pick
    /// a winner by it).
    #[serde(default)]
    pub generation: u64,
    /// SHA-256 (hex) of the replicated state: see [`object_digest`].
    #[serde(default)]
    pub digest: String,
    /// Unix seconds of the last change.
    #[serde(default)]
    pub updated: i64,
}

impl NameRecord {
    pub fn current(&self) -> Option<&str> {
        self.versions.last().map(String::as_str)
    }
    /// A live key: not soft-deleted, with a committed version.
    pub fn is_live(&self) -> bool {
        self.deleted.is_none() && !self.versions.is_empty()
    }
    /// Soft-deleted and awaiting purge.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some() && !self.versions.is_empty()
    }
    /// A purge tombstone: purged, no committed version since.
    pub fn is_tombstone(&self) -> bool {
        self.purged.is_some() && self.versions.is_empty()
    }
}

/// When a key was soft-deleted and when it will be purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedInfo {
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// A key version held in a PKCS#11 token: the object's `CKA_ID` (what the
/// token finds it by) and what kind of key it is, with its size in bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenObject {
    pub id: B64,
    pub kind: crate::crypto::WrapKind,
    pub bits: u32,
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
    /// On a token member (`keystore`): the token object that holds the
    /// key; `sealed` is then empty. The node keeps no key bytes of such a
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenObject>,
    /// A keyed digest (hex) of the key material, equal on every member of
    /// the cloning domain and revealing nothing of the key: how two members
    /// tell the same key version from a different one.
    #[serde(default)]
    pub material_digest: String,
    /// The request that made the version (see `hsm_api::request`): two
    /// copies of one version made by two attempts of that request are told
    /// apart by its stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestStamp>,
    /// When the version was made (HLC, `clock::Hlc`): orders versions.
    #[serde(default)]
    pub stamp: u64,
    /// When the attributes (enabled, nbf, exp, key_ops, tags) last changed
    /// (HLC): the later change wins.
    #[serde(default)]
    pub attr_stamp: u64,
    /// Set while the version is pending: the Unix milliseconds after which
    /// this member drops it unless committed (this member's own clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until: Option<i64>,
}

impl VersionRecord {
    /// Pending and past its deadline at `now_ms`: as if absent.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.pending_until.is_some_and(|t| t <= now_ms)
    }
    /// The attribute register's value, for comparing two copies.
    pub fn attrs_view(&self) -> impl PartialEq + Ord + '_ {
        (
            self.enabled,
            self.nbf,
            self.exp,
            self.key_ops.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
            self.tags.as_ref().map(|t| {
                t.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>()
            }),
            self.updated,
        )
    }
}

/// One object of the inventory: the member protocol's wire type, stored as is.
pub type InventoryEntry = hsm_api::InventoryItem;

/// The replicated view of an object: what its digest covers. Sealed
/// material and local times of the record are not part of it.
#[derive(Serialize)]
struct ObjectView<'a> {
    name: &'a str,
    versions: Vec<VersionView<'a>>,
    deleted: Option<DeletedInfo>,
    life_stamp: u64,
    purged_through: u64,
}

#[derive(Serialize)]
struct VersionView<'a> {
    version: &'a str,
    material: &'a str,
    key_ops: &'a [KeyOperation],
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    tags: &'a Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: &'a Option<RequestStamp>,
    stamp: u64,
    attr_stamp: u64,
}

/// The digest of an object's replicated state (hex SHA-256 of its
/// canonical JSON view): committed versions and the registers; pending
/// versions and local times are not part of it.
pub fn object_digest(
    name: &str,
    rec: &NameRecord,
    versions: &BTreeMap<String, VersionRecord>,
) -> String {
    use sha2::{Digest, Sha256};
    let view = ObjectView {
        name,
        versions: rec
            .versions
            .iter()
            .filter_map(|v| versions.get(v).map(|r| (v, r)))
            .map(|(v, r)| VersionView {
                version: v,
                material: &r.material_digest,
                key_ops: &r.key_ops,
                enabled: r.enabled,
                nbf: r.nbf,
                exp: r.exp,
                created: r.created,
                tags: &r.tags,
                request: &r.request,
                stamp: r.stamp,
                attr_stamp: r.attr_stamp,
            })
            .collect(),
        deleted: rec.deleted,
        life_stamp: rec.life_stamp,
        purged_through: rec.purged_through,
    };
    let bytes = serde_json::to_vec(&view).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// The inventory bucket of a name.
pub fn bucket_of(name: &str) -> u8 {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())[0]
}

/// The slice of a name within its bucket (`hsm_api::InventorySlices`).
pub fn slice_of(name: &str) -> u8 {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())[1]
}

/// The slice hashes of one bucket's entries, in the wire form of
/// `hsm_api::InventorySlices::slices`: for each slice, the first 8 bytes
/// of the XOR of its entries' hashes (the bucket hash's entry hashes), hex.
pub fn slice_hashes(entries: &[InventoryEntry]) -> String {
    let mut slices = vec![[0u8; 8]; hsm_api::SLICES];
    for e in entries {
        let h = entry_hash(e);
        for (x, y) in slices[usize::from(slice_of(&e.name))].iter_mut().zip(h) {
            *x ^= y;
        }
    }
    slices.iter().map(hex::encode).collect()
}

fn entry_hash(e: &InventoryEntry) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(e.name.as_bytes());
    h.update([0]);
    h.update(e.generation.to_be_bytes());
    h.update(e.digest.as_bytes());
    h.update([u8::from(e.tombstone)]);
    h.finalize().into()
}

/// A key object inside a write transaction, as [`Store::with_object`]
/// hands it to a change.
pub struct Object {
    pub name: String,
    /// The name record; `Default` when the name is unknown here.
    pub rec: NameRecord,
    /// Every version record of the name, pending ones included.
    pub versions: BTreeMap<String, VersionRecord>,
    /// A stamp from the node's clock, above every stamp in the object:
    /// what a change made now is stamped with.
    pub now: u64,
}

impl Object {
    /// Whether the name is known to the group here (live, deleted or
    /// tombstone): what the inventory lists. Pending versions alone do not
    /// make it known.
    pub fn exists(&self) -> bool {
        !self.rec.versions.is_empty() || self.rec.purged.is_some()
    }
    /// The current version's record.
    pub fn current(&self) -> Option<(&str, &VersionRecord)> {
        let v = self.rec.current()?;
        self.versions.get(v).map(|r| (v, r))
    }

    /// Adds a version record: pending when it has a deadline, committed
    /// otherwise (its place among the versions is set when the change
    /// ends, by stamp).
    pub fn insert(&mut self, version: &str, rec: VersionRecord) {
        self.rec.versions.retain(|v| v != version);
        self.rec.pending.retain(|v| v != version);
        if rec.pending_until.is_some() {
            self.rec.pending.push(version.to_string());
        } else {
            self.rec.versions.push(version.to_string());
        }
        self.versions.insert(version.to_string(), rec);
    }

    /// Replaces every version with `versions` (committed, in their order),
    /// stamped anew from now on, and makes the key live: a restore.
    pub fn restore_versions(&mut self, versions: Vec<(String, VersionRecord)>) {
        self.rec.versions.clear();
        self.rec.pending.clear();
        self.versions.clear();
        self.rec.deleted = None;
        self.rec.life_stamp = self.now;
        for (i, (v, mut rec)) in versions.into_iter().enumerate() {
            rec.stamp = self.now + i as u64;
            rec.attr_stamp = rec.stamp;
            rec.pending_until = None;
            self.insert(&v, rec);
        }
    }

    /// Brings the record in line with its versions after a change: drops
    /// what a purge covers and what no list names, orders the committed
    /// versions by (stamp, id), and derives the generation.
    fn normalise(&mut self) {
        let through = self.rec.purged_through;
        let versions = &self.versions;
        let keep = |v: &String| {
            versions
                .get(v)
                .is_some_and(|r| through == 0 || r.stamp > through)
        };
        self.rec.versions.retain(keep);
        self.rec.pending.retain(keep);
        let (listed, pending) = (&self.rec.versions, &self.rec.pending);
        self.versions
            .retain(|v, _| listed.contains(v) || pending.contains(v));
        let versions = &self.versions;
        self.rec
            .versions
            .sort_by_key(|v| (versions.get(v).map(|r| r.stamp), v.clone()));
        self.rec.versions.dedup();
        self.rec.pending.sort();
        self.rec.pending.dedup();
        self.rec.generation = self
            .versions
            .values()
            .flat_map(|r| [r.stamp, r.attr_stamp])
            .chain([self.rec.life_stamp, self.rec.purged_through])
            .max()
            .unwrap_or(0);
    }
}

/// What [`Store::add_version`] did.
#[derive(Debug)]
pub enum Added {
    /// A new version; `created` when the key appeared with it.
    New { created: bool },
    /// The version existed (a retried request): its record, confirmed.
    Replayed(Box<VersionRecord>),
}

/// Re-stamps an existing version with a later attempt's stamp.
fn confirm_in(
    o: &mut Object,
    version: &str,
    request: Option<&RequestStamp>,
) -> Result<VersionRecord, StoreError> {
    let rec = o
        .versions
        .get_mut(version)
        .ok_or_else(|| StoreError::NoKey(o.name.clone()))?;
    if let (Some(mine), Some(theirs)) = (rec.request.as_mut(), request) {
        if mine.id == theirs.id && theirs.stamp > mine.stamp {
            mine.stamp = theirs.stamp;
        }
    }
    Ok(rec.clone())
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
    /// Stamps every change (see `clock`); it observes every object it
    /// changes, so a change is stamped after all it replaces.
    hlc: crate::clock::Hlc,
}

/// A partition's sync state as the member keeps it (`hsm_api::SyncState`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub behind: u64,
    pub synced: u64,
    /// Unix seconds of the last completed round (or of the record's making).
    pub last_synced: i64,
}

impl Store {
    /// Opens (or creates) the database and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // redb's default page cache is 1 GiB; a node keeps its own cache of
        // parsed keys, so a modest page cache bounds memory at large sizes.
        // redb makes a missing file with the umask's mode: make it 0600
        // first (redb initialises an empty file as a new database).
        hsm_server::private_fs::precreate(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)?;
        let w = db.begin_write()?;
        let migrated = {
            w.open_table(PARTITIONS)?;
            w.open_table(INVENTORY)?;
            w.open_table(BUCKETS)?;
            w.open_table(PENDING)?;
            w.open_table(SYNC)?;
            let names = w.open_table(NAMES)?;
            w.open_table(VERSIONS)?;
            let mut meta = w.open_table(META)?;
            let schema = meta.get("schema")?.map(|v| v.value());
            let has_keys = names.first()?.is_some();
            drop(names);
            match schema {
                Some(v) if v > SCHEMA => return Err(StoreError::NewerSchema(v)),
                Some(_) => 0,
                None => {
                    let n = if has_keys { migrate_v1(&w)? } else { 0 };
                    meta.insert("schema", SCHEMA)?;
                    n
                }
            }
        };
        w.commit()?;
        if migrated > 0 {
            tracing::info!(
                keys = migrated,
                schema = SCHEMA,
                "store migrated in place from schema 1"
            );
        }
        Ok(Store {
            db,
            hlc: crate::clock::Hlc::default(),
        })
    }

    /// A new stamp from the node's clock.
    pub fn stamp(&self) -> u64 {
        self.hlc.stamp()
    }

    /// Runs `f` in one write transaction and commits it (or abandons it
    /// when `f` fails). redb has one writer at a time; a write that waited
    /// for it and committed for [`SLOW_WRITE`] or more is logged as a
    /// `slow store write` warning naming `what` (a key or a partition).
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let w = self.db.begin_write()?;
        let waited = started.elapsed();
        let out = f(&w)?;
        w.commit()?;
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            tracing::warn!(
                what,
                waited_ms = waited.as_millis() as u64,
                total_ms = took.as_millis() as u64,
                "slow store write"
            );
        }
        Ok(out)
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
        self.write(&rec.name, |w| {
            let mut t = w.open_table(PARTITIONS)?;
            if t.get(rec.name.as_str())?.is_some() {
                return Err(StoreError::PartitionExists(rec.name.clone()));
            }
            t.insert(rec.name.as_str(), encode(rec)?.as_slice())?;
            Ok(())
        })
    }

    /// Reads, changes and writes back one partition in one transaction. The
    /// change is committed even when `f` returns `Err` (a failed login
    /// must still count); return `Ok` to carry a value out.
    pub fn update_partition<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut PartitionRecord) -> T,
    ) -> Result<T, StoreError> {
        self.write(name, |w| {
            let mut t = w.open_table(PARTITIONS)?;
            let mut rec: PartitionRecord = {
                let v = t
                    .get(name)?
                    .ok_or_else(|| StoreError::NoPartition(name.into()))?;
                decode(&|| format!("partition {name}"), v.value())?
            };
            let out = f(&mut rec);
            t.insert(name, encode(&rec)?.as_slice())?;
            Ok(out)
        })
    }

    /// Deletes a partition with every key in it.
    pub fn delete_partition(&self, name: &str) -> Result<(), StoreError> {
        self.write(name, |w| {
            let mut p = w.open_table(PARTITIONS)?;
            if p.remove(name)?.is_none() {
                return Err(StoreError::NoPartition(name.into()));
            }
            let mut names = w.open_table(NAMES)?;
            names.retain_in((name, "")..(name, "\u{10FFFF}"), |_, _| false)?;
            let mut versions = w.open_table(VERSIONS)?;
            versions.retain_in((name, "", "")..(name, "\u{10FFFF}", ""), |_, _| false)?;
            let mut inv = w.open_table(INVENTORY)?;
            inv.retain_in((name, 0u8, "")..=(name, 255u8, "\u{10FFFF}"), |_, _| false)?;
            let mut buckets = w.open_table(BUCKETS)?;
            buckets.retain_in((name, 0u8)..=(name, 255u8), |_, _| false)?;
            Ok(())
        })
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

    /// The live name and the record of `version`, or of the current
    /// version when `version` is `None`.
    pub fn live_version(
        &self,
        p: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<(String, VersionRecord), StoreError> {
        let n = self
            .name(p, name)?
            .filter(NameRecord::is_live)
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

    /// Reads an object (all its versions) outside any write.
    pub fn object(&self, p: &str, name: &str) -> Result<Object, StoreError> {
        let r = self.db.begin_read()?;
        let names = r.open_table(NAMES)?;
        let versions = r.open_table(VERSIONS)?;
        load_object(&names, &versions, p, name)
    }

    /// Applies `change` to one object in one write transaction. When the
    /// change succeeds and altered the object's replicated state, the
    /// object gets its new digest and generation, the inventory is updated,
    /// and everything commits together; when it fails, nothing is written.
    pub fn with_object<T>(
        &self,
        p: &str,
        name: &str,
        change: impl FnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<(T, Object), StoreError> {
        self.write(name, |w| change_object(w, &self.hlc, p, name, change))
    }

    /// [`Store::with_object`] for a change that often changes nothing (a
    /// clone import of a state the member holds): `change` first runs on a
    /// copy read outside any write, and only when it alters the object is
    /// it run again inside a write transaction. An import that changes
    /// nothing writes nothing (no fsync). Returns whether it wrote.
    pub fn with_object_if_changed<T>(
        &self,
        p: &str,
        name: &str,
        mut change: impl FnMut(&mut Object) -> Result<T, StoreError>,
    ) -> Result<(T, Object, bool), StoreError> {
        let mut copy = self.object(p, name)?;
        self.hlc.observe(copy.rec.generation);
        copy.now = self.hlc.stamp();
        let before = (encode(&copy.rec)?, encode(&copy.versions)?);
        let out = change(&mut copy)?;
        copy.normalise();
        copy.rec.digest = object_digest(name, &copy.rec, &copy.versions);
        if (encode(&copy.rec)?, encode(&copy.versions)?) == before {
            return Ok((out, copy, false));
        }
        let (out, obj) = self.with_object(p, name, change)?;
        Ok((out, obj, true))
    }

    /// Applies `change` to many objects in one transaction: all commit or
    /// none (bulk restore). `change` returns `Ok(false)` to stop early and
    /// commit what was done, `Err` to abandon everything.
    pub fn with_objects(
        &self,
        p: &str,
        mut next: impl FnMut() -> Option<String>,
        mut change: impl FnMut(&mut Object) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        self.write(p, |w| {
            let mut n = 0;
            while let Some(name) = next() {
                change_object(w, &self.hlc, p, &name, &mut change)?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Adds a version to a key, creating the name (or reusing a purged
    /// one) if `may_create`. Refused when the name is soft-deleted. The
    /// version is stamped now; it is pending when `rec.pending_until` is
    /// set (a version made through the proxy), committed at once otherwise
    /// (a client of this member alone). When the version already exists —
    /// a retried request made it: versions of requests with an id are named
    /// after the id — nothing is made and the existing version is confirmed
    /// instead (see [`Store::confirm`]), pending or not.
    pub fn add_version(
        &self,
        p: &str,
        name: &str,
        version: &str,
        rec: &VersionRecord,
        may_create: bool,
    ) -> Result<Added, StoreError> {
        let now_ms = crate::clock::now_millis();
        let (added, _) = self.with_object(p, name, |o| {
            if o.rec.is_deleted() {
                return Err(StoreError::KeyIsDeleted(name.into()));
            }
            if let Some(existing) = o.versions.get(version) {
                if !existing.expired(now_ms) {
                    return confirm_in(o, version, rec.request.as_ref())
                        .map(|r| Added::Replayed(Box::new(r)));
                }
            }
            let created = !o.rec.is_live();
            if created && !may_create {
                return Err(StoreError::NoKey(name.into()));
            }
            let mut rec = rec.clone();
            rec.stamp = o.now;
            rec.attr_stamp = o.now;
            o.insert(version, rec);
            Ok(Added::New { created })
        })?;
        Ok(added)
    }

    /// Commits a pending version whose key material has the digest
    /// `material`: from now on it is listed, usable and, when newest,
    /// current. Idempotent: a version committed already (with that
    /// material) is answered as it is. Another material, an unknown
    /// version or one past its deadline is refused: nothing changes.
    pub fn commit(
        &self,
        p: &str,
        name: &str,
        version: &str,
        material: &str,
    ) -> Result<Object, StoreError> {
        let now_ms = crate::clock::now_millis();
        let (_, o) = self.with_object(p, name, |o| {
            let none = || StoreError::NoPending {
                name: name.into(),
                version: version.into(),
            };
            let rec = o.versions.get_mut(version).ok_or_else(none)?;
            if rec.material_digest != material {
                return Err(StoreError::VersionConflict {
                    name: name.into(),
                    version: version.into(),
                });
            }
            if rec.pending_until.is_none() {
                return Ok(());
            }
            if rec.expired(now_ms) {
                return Err(none());
            }
            rec.pending_until = None;
            o.rec.pending.retain(|v| v != version);
            o.rec.versions.push(version.to_string());
            Ok(())
        })?;
        Ok(o)
    }

    /// Confirms a version a retried request made earlier: a later attempt
    /// (higher stamp) re-stamps it, so that this copy wins over any copy an
    /// abandoned attempt made elsewhere. Returns the version's record, or
    /// `None` when the key or version is not here (or past its deadline).
    pub fn confirm(
        &self,
        p: &str,
        name: &str,
        version: &str,
        request: &RequestStamp,
    ) -> Result<Option<VersionRecord>, StoreError> {
        let now_ms = crate::clock::now_millis();
        let (r, _) = self.with_object(p, name, |o| {
            if o.rec.is_deleted() {
                return Err(StoreError::KeyIsDeleted(name.into()));
            }
            match o.versions.get(version) {
                Some(v) if !v.expired(now_ms) => confirm_in(o, version, Some(request)).map(Some),
                _ => Ok(None),
            }
        })?;
        Ok(r)
    }

    /// Takes back the *pending* version an attempt of a request made (same
    /// request id and stamp), when its create could not be made durable.
    /// A committed version is never withdrawn (it may have been used); a
    /// pending one was never seen by anyone, so no tombstone is needed.
    /// Returns whether it was here, and the object's generation afterwards.
    pub fn withdraw(
        &self,
        p: &str,
        name: &str,
        version: &str,
        request_id: &str,
        stamp: u64,
    ) -> Result<(bool, u64), StoreError> {
        let (withdrawn, o) = self.with_object(p, name, |o| {
            let ours = o.versions.get(version).is_some_and(|r| {
                r.pending_until.is_some()
                    && r.request
                        .as_ref()
                        .is_some_and(|q| q.id == request_id && q.stamp == stamp)
            });
            if ours {
                o.rec.pending.retain(|v| v != version);
            }
            Ok(ours)
        })?;
        Ok((withdrawn, o.rec.generation))
    }

    /// Drops every pending version past its deadline at `now_ms` (a proxy
    /// that made it died, or could not make it durable); returns how many.
    pub fn drop_expired(&self, now_ms: i64) -> Result<usize, StoreError> {
        let due: Vec<(String, String)> = {
            let r = self.db.begin_read()?;
            let t = r.open_table(PENDING)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                if v.value() <= now_ms {
                    let (p, name, _) = k.value();
                    out.push((p.to_string(), name.to_string()));
                }
            }
            out.dedup();
            out
        };
        let mut n = 0;
        for (p, name) in &due {
            let (dropped, _) = self.with_object(p, name, |o| {
                let before = o.rec.pending.len();
                let versions = &o.versions;
                o.rec
                    .pending
                    .retain(|v| versions.get(v).is_some_and(|r| !r.expired(now_ms)));
                Ok(before - o.rec.pending.len())
            })?;
            n += dropped;
        }
        Ok(n)
    }

    /// Restores a whole key (every version) under a name that is free;
    /// a live or deleted name is refused, a tombstone is replaced. The
    /// versions are stamped anew (in their order), so that a purge of the
    /// name before the restore does not cover them.
    pub fn restore(
        &self,
        p: &str,
        name: &str,
        versions_in: &[(String, VersionRecord)],
    ) -> Result<(), StoreError> {
        self.with_object(p, name, |o| {
            if o.rec.is_live() || o.rec.is_deleted() {
                return Err(StoreError::NameTaken(name.into()));
            }
            o.restore_versions(versions_in.to_vec());
            Ok(())
        })?;
        Ok(())
    }

    /// Changes one version of a live key (its attributes, stamped now).
    pub fn update_version(
        &self,
        p: &str,
        name: &str,
        version: &str,
        f: impl FnOnce(&mut VersionRecord),
    ) -> Result<VersionRecord, StoreError> {
        let (rec, _) = self.with_object(p, name, |o| {
            if !o.rec.is_live() || !o.rec.versions.iter().any(|v| v == version) {
                return Err(StoreError::NoVersion {
                    name: name.into(),
                    version: version.into(),
                });
            }
            let now = o.now;
            let rec = o
                .versions
                .get_mut(version)
                .ok_or_else(|| StoreError::NoVersion {
                    name: name.into(),
                    version: version.into(),
                })?;
            f(rec);
            rec.attr_stamp = now;
            Ok(rec.clone())
        })?;
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
            let wanted = if deleted { n.is_deleted() } else { n.is_live() };
            if !wanted {
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
            .filter(NameRecord::is_live)
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
        let (_, o) = self.with_object(p, name, |o| {
            if !o.rec.is_live() {
                return Err(StoreError::NoKey(name.into()));
            }
            o.rec.deleted = Some(info);
            o.rec.life_stamp = o.now;
            Ok(())
        })?;
        current_of(name, o)
    }

    /// Recovers a soft-deleted key.
    pub fn recover(&self, p: &str, name: &str) -> Result<(NameRecord, VersionRecord), StoreError> {
        let (_, o) = self.with_object(p, name, |o| {
            if !o.rec.is_deleted() {
                return Err(StoreError::NoDeletedKey(name.into()));
            }
            o.rec.deleted = None;
            o.rec.life_stamp = o.now;
            Ok(())
        })?;
        current_of(name, o)
    }

    /// Purges a soft-deleted key: every version stamped before now is gone
    /// for good and a tombstone remains.
    pub fn purge(&self, p: &str, name: &str) -> Result<(), StoreError> {
        self.with_object(p, name, |o| {
            if !o.rec.is_deleted() {
                return Err(StoreError::NoDeletedKey(name.into()));
            }
            o.rec.deleted = None;
            o.rec.life_stamp = o.now;
            o.rec.purged = Some(crate::clock::now_secs());
            o.rec.purged_through = o.now;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes tombstones purged before `before` (Unix seconds); returns how many.
    pub fn drop_tombstones(&self, before: i64) -> Result<usize, StoreError> {
        let due: Vec<(String, String)> = {
            let r = self.db.begin_read()?;
            let names = r.open_table(NAMES)?;
            let mut out = Vec::new();
            for row in names.iter()? {
                let (k, v) = row?;
                let (p, name) = k.value();
                let n: NameRecord = decode(&|| format!("name {p}/{name}"), v.value())?;
                if n.is_tombstone() && n.pending.is_empty() && n.purged.is_some_and(|t| t < before)
                {
                    out.push((p.to_string(), name.to_string()));
                }
            }
            out
        };
        self.write("tombstones", |w| {
            let mut names = w.open_table(NAMES)?;
            let mut inv = w.open_table(INVENTORY)?;
            let mut buckets = w.open_table(BUCKETS)?;
            for (p, name) in &due {
                let Some(bytes) = names.remove((p.as_str(), name.as_str()))? else {
                    continue;
                };
                let rec: NameRecord = decode(&|| format!("name {p}/{name}"), bytes.value())?;
                let obj = Object {
                    name: name.clone(),
                    rec,
                    versions: BTreeMap::new(),
                    now: 0,
                };
                update_inventory(
                    &mut inv,
                    &mut buckets,
                    p,
                    inventory_entry(&obj).as_ref(),
                    None,
                )?;
            }
            Ok(())
        })?;
        Ok(due.len())
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
            if n.is_deleted() && n.deleted.is_some_and(|d| d.scheduled_purge_date <= now) {
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
            if n.is_live() {
                *out.entry(p.to_string()).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    // ---- sync state ----

    /// A partition's sync state (a fresh one, synced now, when none was
    /// kept yet: a partition made by `init` starts in step with nothing).
    pub fn sync_record(&self, p: &str) -> Result<SyncRecord, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(SYNC)?;
        match t.get(p)? {
            Some(v) => decode(&|| format!("sync {p}"), v.value()),
            None => Ok(SyncRecord {
                last_synced: crate::clock::now_secs(),
                ..SyncRecord::default()
            }),
        }
    }

    /// Changes a partition's sync state in one transaction; a change that
    /// changes nothing writes nothing (a round's commit on a member already
    /// in sync costs no fsync). Returns `f`'s answer and the record before
    /// and after.
    pub fn update_sync<T>(
        &self,
        p: &str,
        f: impl Fn(&mut SyncRecord) -> T,
    ) -> Result<(T, SyncRecord, SyncRecord), StoreError> {
        let before = self.sync_record(p)?;
        let mut after = before.clone();
        let out = f(&mut after);
        if after == before {
            return Ok((out, before, after));
        }
        self.write(p, |w| {
            let mut t = w.open_table(SYNC)?;
            let mut rec = before.clone();
            if let Some(v) = t.get(p)? {
                rec = decode(&|| format!("sync {p}"), v.value())?;
            }
            let was = rec.clone();
            let out = f(&mut rec);
            t.insert(p, encode(&rec)?.as_slice())?;
            Ok((out, was, rec))
        })
    }

    // ---- inventory ----

    /// The partition's summary hash (hex SHA-256 over the 256 bucket
    /// hashes in order) and object count.
    pub fn inventory_summary(&self, p: &str) -> Result<(String, u64), StoreError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut count = 0;
        for (_, hash, n) in self.inventory_buckets(p)? {
            h.update(hash);
            count += n;
        }
        Ok((hex::encode(h.finalize()), count))
    }

    /// Every bucket's hash and count, all 256 in order (empty ones zero).
    pub fn inventory_buckets(&self, p: &str) -> Result<Vec<(u8, [u8; 32], u64)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BUCKETS)?;
        let mut out: Vec<(u8, [u8; 32], u64)> = (0..=255u8).map(|b| (b, [0u8; 32], 0)).collect();
        for row in t.range((p, 0u8)..=(p, 255u8))? {
            let (k, v) = row?;
            let (_, b) = k.value();
            let (hash, n) = split_bucket(v.value());
            out[b as usize] = (b, hash, n);
        }
        Ok(out)
    }

    /// The entries of one bucket after `after` (exclusive), up to `limit`,
    /// and whether more follow.
    /// The entries of one slice of one bucket (see [`slice_of`]); the
    /// others' are skipped before they are decoded.
    pub fn inventory_slice(
        &self,
        p: &str,
        bucket: u8,
        slice: u8,
    ) -> Result<Vec<InventoryEntry>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(INVENTORY)?;
        let mut out = Vec::new();
        for row in t.range((p, bucket, "")..=(p, bucket, "\u{10FFFF}"))? {
            let (k, v) = row?;
            let (_, _, name) = k.value();
            if slice_of(name) == slice {
                out.push(decode(&|| format!("inventory {p}/{name}"), v.value())?);
            }
        }
        Ok(out)
    }

    pub fn inventory_entries(
        &self,
        p: &str,
        bucket: u8,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<InventoryEntry>, bool), StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(INVENTORY)?;
        let mut out = Vec::new();
        for row in t.range((p, bucket, after.unwrap_or(""))..=(p, bucket, "\u{10FFFF}"))? {
            let (k, v) = row?;
            let (_, _, name) = k.value();
            if Some(name) == after {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(decode(&|| format!("inventory {p}/{name}"), v.value())?);
        }
        Ok((out, false))
    }
}

/// One object's change inside a write transaction: the heart of
/// [`Store::with_object`] (see there).
fn change_object<T>(
    w: &redb::WriteTransaction,
    hlc: &crate::clock::Hlc,
    p: &str,
    name: &str,
    change: impl FnOnce(&mut Object) -> Result<T, StoreError>,
) -> Result<(T, Object), StoreError> {
    let mut obj = {
        let names = w.open_table(NAMES)?;
        let versions = w.open_table(VERSIONS)?;
        load_object(&names, &versions, p, name)?
    };
    hlc.observe(obj.rec.generation);
    obj.now = hlc.stamp();
    let before = Before::of(&obj);
    let out = change(&mut obj)?;
    obj.normalise();
    let digest = object_digest(name, &obj.rec, &obj.versions);
    if digest != before.digest {
        obj.rec.digest = digest;
        obj.rec.updated = crate::clock::now_secs();
    }
    save_object(w, p, name, &before, &obj)?;
    Ok((out, obj))
}

/// What an object was when it was loaded: what [`save_object`] must undo.
struct Before {
    versions: Vec<String>,
    pending: Vec<String>,
    digest: String,
    entry: Option<InventoryEntry>,
}

impl Before {
    fn of(obj: &Object) -> Self {
        Before {
            versions: obj.versions.keys().cloned().collect(),
            pending: obj.rec.pending.clone(),
            digest: obj.rec.digest.clone(),
            entry: inventory_entry(obj),
        }
    }
}

/// Writes a changed object back: its name and version rows (the ones it
/// no longer has removed), its pending deadlines, and its inventory entry
/// and bucket digest. The one place an object's rows are written.
fn save_object(
    w: &redb::WriteTransaction,
    p: &str,
    name: &str,
    before: &Before,
    obj: &Object,
) -> Result<(), StoreError> {
    let mut names = w.open_table(NAMES)?;
    let mut versions = w.open_table(VERSIONS)?;
    for v in &before.versions {
        if !obj.versions.contains_key(v) {
            versions.remove((p, name, v.as_str()))?;
        }
    }
    for (v, rec) in &obj.versions {
        versions.insert((p, name, v.as_str()), encode(rec)?.as_slice())?;
    }
    if obj.exists() || !obj.rec.pending.is_empty() {
        names.insert((p, name), encode(&obj.rec)?.as_slice())?;
    } else {
        names.remove((p, name))?;
    }
    let mut pending = w.open_table(PENDING)?;
    for v in &before.pending {
        pending.remove((p, name, v.as_str()))?;
    }
    for v in &obj.rec.pending {
        if let Some(until) = obj.versions.get(v).and_then(|r| r.pending_until) {
            pending.insert((p, name, v.as_str()), until)?;
        }
    }
    let mut inv = w.open_table(INVENTORY)?;
    let mut buckets = w.open_table(BUCKETS)?;
    update_inventory(
        &mut inv,
        &mut buckets,
        p,
        before.entry.as_ref(),
        inventory_entry(obj).as_ref(),
    )
}

/// Gives a schema-1 object (versions in creation order, one generation in
/// Unix milliseconds) the stamps of schema 2, derived only from replicated
/// fields, so that every member (and every old backup) stamps one object
/// the same: versions from their `created` second, strictly increasing in
/// their old order; the soft-delete and purge registers from the old
/// generation.
pub fn stamp_v1(rec: &mut NameRecord, versions: &mut BTreeMap<String, VersionRecord>) {
    let old = rec.generation.saturating_mul(1000);
    let mut prev = 0u64;
    for v in &rec.versions {
        if let Some(r) = versions.get_mut(v) {
            let at = u64::try_from(r.created)
                .unwrap_or(0)
                .saturating_mul(1_000_000);
            r.stamp = at.max(prev + 1);
            r.attr_stamp = r.stamp;
            prev = r.stamp;
        }
    }
    if rec.deleted.is_some() || rec.purged.is_some() {
        rec.life_stamp = old.max(prev + 1);
    }
    if rec.purged.is_some() {
        rec.purged_through = rec.life_stamp;
    }
}

/// Migrates a schema-1 store in place (inside `w`): versions get stamps in
/// their creation order (from their `created` second, so that every member
/// migrates one object to the same state), registers get the old
/// generation as stamp, and digests and the inventory are recomputed.
/// Returns how many key names were migrated.
fn migrate_v1(w: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let keys: Vec<(String, String)> = {
        let names = w.open_table(NAMES)?;
        let mut out = Vec::new();
        for row in names.iter()? {
            let (k, _) = row?;
            let (p, n) = k.value();
            out.push((p.to_string(), n.to_string()));
        }
        out
    };
    for (p, name) in &keys {
        let mut obj = {
            let names = w.open_table(NAMES)?;
            let versions = w.open_table(VERSIONS)?;
            load_object(&names, &versions, p, name)?
        };
        let before = Before::of(&obj);
        stamp_v1(&mut obj.rec, &mut obj.versions);
        obj.normalise();
        obj.rec.digest = object_digest(name, &obj.rec, &obj.versions);
        save_object(w, p, name, &before, &obj)?;
    }
    Ok(keys.len())
}

fn load_object<N, V>(names: &N, versions: &V, p: &str, name: &str) -> Result<Object, StoreError>
where
    N: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    V: ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
{
    let rec: NameRecord = match names.get((p, name))? {
        Some(v) => decode(&|| format!("name {p}/{name}"), v.value())?,
        None => NameRecord::default(),
    };
    let mut vs = BTreeMap::new();
    for v in rec.versions.iter().chain(&rec.pending) {
        let row = versions
            .get((p, name, v.as_str()))?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("name {p}/{name}"),
                message: format!("version {v} missing"),
            })?;
        vs.insert(
            v.clone(),
            decode(&|| format!("version {p}/{name}/{v}"), row.value())?,
        );
    }
    Ok(Object {
        name: name.to_string(),
        rec,
        versions: vs,
        now: 0,
    })
}

fn current_of(name: &str, o: Object) -> Result<(NameRecord, VersionRecord), StoreError> {
    let v = o
        .rec
        .current()
        .ok_or_else(|| StoreError::NoKey(name.into()))?
        .to_string();
    let mut versions = o.versions;
    let vr = versions.remove(&v).ok_or_else(|| StoreError::Corrupt {
        what: format!("name {name}"),
        message: "current version missing".into(),
    })?;
    Ok((o.rec, vr))
}

/// The inventory entry of an object, `None` when it does not exist.
fn inventory_entry(o: &Object) -> Option<InventoryEntry> {
    o.exists().then(|| InventoryEntry {
        name: o.name.clone(),
        version: o.rec.current().map(str::to_string),
        generation: o.rec.generation,
        digest: o.rec.digest.clone(),
        tombstone: o.rec.is_tombstone(),
        deleted: o.rec.is_deleted(),
        updated: o.rec.updated,
    })
}

fn split_bucket(v: &[u8]) -> ([u8; 32], u64) {
    let mut hash = [0u8; 32];
    let mut n = [0u8; 8];
    if v.len() == 40 {
        hash.copy_from_slice(&v[..32]);
        n.copy_from_slice(&v[32..]);
    }
    (hash, u64::from_be_bytes(n))
}

/// Replaces `old` by `new` in the inventory and its bucket hash.
fn update_inventory(
    inv: &mut redb::Table<(&'static str, u8, &'static str), &'static [u8]>,
    buckets: &mut redb::Table<(&'static str, u8), &'static [u8]>,
    p: &str,
    old: Option<&InventoryEntry>,
    new: Option<&InventoryEntry>,
) -> Result<(), StoreError> {
    if old == new {
        return Ok(());
    }
    let Some(name) = old.or(new).map(|e| e.name.as_str()) else {
        return Ok(());
    };
    let b = bucket_of(name);
    let (mut hash, mut count) = match buckets.get((p, b))? {
        Some(v) => split_bucket(v.value()),
        None => ([0u8; 32], 0),
    };
    if let Some(o) = old {
        for (h, x) in hash.iter_mut().zip(entry_hash(o)) {
            *h ^= x;
        }
        count = count.saturating_sub(1);
        inv.remove((p, b, name))?;
    }
    if let Some(n) = new {
        for (h, x) in hash.iter_mut().zip(entry_hash(n)) {
            *h ^= x;
        }
        count += 1;
        inv.insert((p, b, name), encode(n)?.as_slice())?;
    }
    if count == 0 {
        buckets.remove((p, b))?;
    } else {
        let mut v = hash.to_vec();
        v.extend_from_slice(&count.to_be_bytes());
        buckets.insert((p, b), v.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn version(created: i64, material: &str) -> VersionRecord {
        VersionRecord {
            public_jwk: JsonWebKey::default(),
            key_ops: vec![KeyOperation::Sign],
            enabled: true,
            nbf: None,
            exp: None,
            created,
            updated: created,
            tags: None,
            sealed: B64::default(),
            token: None,
            material_digest: material.into(),
            request: None,
            stamp: 0,
            attr_stamp: 0,
            pending_until: None,
        }
    }

    /// Writes what a schema-1 node left: v1 JSON records (no stamps, no
    /// meta table), versions in creation order, the old generation.
    fn write_v1(path: &Path) {
        let db = redb::Database::create(path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut names = w.open_table(NAMES).unwrap();
            let mut versions = w.open_table(VERSIONS).unwrap();
            let live = serde_json::json!({
                "versions": ["a0000000000000000000000000000000", "b0000000000000000000000000000000"],
                "deleted": null, "purged": null, "generation": 1_700_000_000_123u64,
                "digest": "old", "updated": 1_700_000_000
            });
            names
                .insert(("p", "live"), serde_json::to_vec(&live).unwrap().as_slice())
                .unwrap();
            for (v, created) in [
                ("a0000000000000000000000000000000", 1_700_000_000i64),
                ("b0000000000000000000000000000000", 1_700_000_000),
            ] {
                let mut rec = serde_json::to_value(version(created, v)).unwrap();
                for f in ["stamp", "attr_stamp"] {
                    rec.as_object_mut().unwrap().remove(f);
                }
                versions
                    .insert(
                        ("p", "live", v),
                        serde_json::to_vec(&rec).unwrap().as_slice(),
                    )
                    .unwrap();
            }
            let gone = serde_json::json!({
                "versions": [], "deleted": null, "purged": 1_700_000_100,
                "generation": 1_700_000_100_000u64, "digest": "old", "updated": 1_700_000_100
            });
            names
                .insert(("p", "gone"), serde_json::to_vec(&gone).unwrap().as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }

    #[test]
    fn a_schema_1_store_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        write_v1(&path);
        let digest_of = |s: &Store| s.name("p", "live").unwrap().unwrap().digest;
        let first = {
            let s = Store::open(&path).unwrap();
            let n = s.name("p", "live").unwrap().unwrap();
            // The old order survives: the last version stays current.
            assert_eq!(n.current(), Some("b0000000000000000000000000000000"));
            let a = s
                .version("p", "live", "a0000000000000000000000000000000")
                .unwrap();
            let b = s
                .version("p", "live", "b0000000000000000000000000000000")
                .unwrap();
            assert!(a.stamp > 0 && b.stamp > a.stamp, "{} {}", a.stamp, b.stamp);
            assert_eq!(
                n.digest,
                object_digest("live", &n, &s.object("p", "live").unwrap().versions)
            );
            // The tombstone keeps covering what it purged.
            let g = s.name("p", "gone").unwrap().unwrap();
            assert!(g.is_tombstone() && g.purged_through > 0);
            // The inventory holds both objects under their new digests.
            let (_, count) = s.inventory_summary("p").unwrap();
            assert_eq!(count, 2);
            digest_of(&s)
        };
        // Opening again changes nothing; another member migrating the same
        // object gets the same state.
        assert_eq!(digest_of(&Store::open(&path).unwrap()), first);
        let other = dir.path().join("other.redb");
        write_v1(&other);
        assert_eq!(digest_of(&Store::open(&other).unwrap()), first);
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA + 1)
                .unwrap();
            w.commit().unwrap();
        }
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::NewerSchema(_))
        ));
    }

    #[test]
    fn a_pending_version_is_invisible_until_committed_and_dropped_after_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data.redb")).unwrap();
        let now = crate::clock::now_millis();
        let v1 = "c0000000000000000000000000000000";
        let v2 = "d0000000000000000000000000000000";
        let pending = |m: &str, until: i64| VersionRecord {
            pending_until: Some(until),
            ..version(1, m)
        };
        s.add_version("p", "k", v1, &pending("m1", now + 60_000), true)
            .unwrap();
        assert!(
            s.live_version("p", "k", None).is_err(),
            "pending is not usable"
        );
        assert_eq!(
            s.inventory_summary("p").unwrap().1,
            0,
            "nor in the inventory"
        );
        // Another material cannot be committed under the kid.
        assert!(matches!(
            s.commit("p", "k", v1, "other"),
            Err(StoreError::VersionConflict { .. })
        ));
        s.commit("p", "k", v1, "m1").unwrap();
        s.commit("p", "k", v1, "m1").unwrap();
        assert_eq!(s.live_version("p", "k", None).unwrap().0, v1);
        // A rotation left pending past its deadline: dropped, never current.
        s.add_version("p", "k", v2, &pending("m2", now - 1), false)
            .unwrap();
        assert!(matches!(
            s.commit("p", "k", v2, "m2"),
            Err(StoreError::NoPending { .. })
        ));
        assert_eq!(s.drop_expired(now).unwrap(), 1);
        assert_eq!(s.live_version("p", "k", None).unwrap().0, v1);
        assert!(s.name("p", "k").unwrap().unwrap().pending.is_empty());
    }

    #[test]
    fn versions_are_ordered_by_stamp_and_a_purge_covers_what_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("data.redb")).unwrap();
        let (v1, v2) = (
            "e0000000000000000000000000000000",
            "f0000000000000000000000000000000",
        );
        s.add_version("p", "k", v2, &version(1, "m2"), true)
            .unwrap();
        s.add_version("p", "k", v1, &version(1, "m1"), false)
            .unwrap();
        // The later stamp is current, whatever the ids.
        assert_eq!(s.live_version("p", "k", None).unwrap().0, v1);
        let info = DeletedInfo {
            deleted_date: 1,
            scheduled_purge_date: 2,
        };
        s.soft_delete("p", "k", info).unwrap();
        s.purge("p", "k").unwrap();
        let n = s.name("p", "k").unwrap().unwrap();
        assert!(n.is_tombstone());
        // A create after the purge is stamped after it: the name lives again.
        s.add_version("p", "k", v2, &version(2, "m3"), true)
            .unwrap();
        assert_eq!(s.live_version("p", "k", None).unwrap().0, v2);
    }
}
