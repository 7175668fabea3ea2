//! Clone blobs: how one key object (a name with its versions, its
//! soft-delete state or its tombstone) travels between members of a
//! cloning domain, and the merge that an arriving blob goes through.
//!
//! Decides: the blob (readable name, generation, digest, domain id and the
//! version it was exported for; the state and key material sealed under
//! the domain's clone key with those fields as associated data) and the
//! merge, the same on every member whatever the arrival order, so every
//! member converges on the union of what any member holds:
//! - versions are a grow-only set, merged one by one: a version the member
//!   lacks is added (pending if it was pending, with this member's own
//!   deadline); a committed copy commits a pending one of the same
//!   material; each version's attributes are the copy with the later
//!   `attr_stamp`;
//! - **one kid, one key material**: a committed version's material never
//!   changes, except between two copies made by two attempts of one
//!   request (a retried creation, `hsm_api::request`), where the later
//!   attempt's copy wins (the proxy acknowledges only its last attempt); a
//!   pending copy gives way to a committed one, and to a later attempt's
//!   pending one; anything else is a conflict and changes nothing;
//! - the soft-delete register goes to the later `life_stamp`, the purge
//!   range tombstone to the higher `purged_through`.
//!
//! Used by the member protocol (`service::member`) and by backup and
//! restore ([`backup`]: partition backups and key backups are clone
//! blobs). Never: who may call it.

pub mod backup;

use crate::crypto::{self, KeyMaterial, WrapKind};
use crate::keystore::KeyStore;
use crate::partition::PartitionState;
use crate::store::{
    object_digest, DeletedInfo, NameRecord, Object, Store, StoreError, VersionRecord,
};
use hsm_api::{
    is_valid_version, CloneBlob, CloneOutcome, JsonWebKey, KeyOperation, RequestStamp, Tags,
    VersionRef, B64,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The format tag of clone blobs: each version's key wrapped under the
/// domain wrapping key (`crypto::transfer`), which a token member unwraps
/// inside its token.
pub const CLONE_FORMAT: &str = "hsm-node-clone/3";
/// The format before token members: the key material in the clear inside
/// the sealed content. Still read (members and backups of that release).
pub const CLONE_FORMAT_V2: &str = "hsm-node-clone/2";
/// The format of members and backups from before per-version merge
/// (member protocol 1): read from backups, refused from members.
pub const CLONE_FORMAT_V1: &str = "hsm-node-clone/1";
const CLONE_PURPOSE: &str = "clone v1";

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("key `{0}` not found")]
    NotFound(String),
    /// Corrupt, inconsistent or foreign blob.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

fn invalid(m: impl Into<String>) -> ReplicaError {
    ReplicaError::Invalid(m.into())
}

/// The sealed part of a clone blob. Schema-1 content (no stamps) reads
/// into it with the stamps zero.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneContent {
    versions: Vec<CloneVersion>,
    deleted: Option<DeletedInfo>,
    purged: Option<i64>,
    #[serde(default)]
    life_stamp: u64,
    #[serde(default)]
    purged_through: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneVersion {
    version: String,
    key_ops: Vec<KeyOperation>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
    tags: Option<Tags>,
    /// Formats 1 and 2: the material's storage form (`KeyMaterial::to_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    material: Option<B64>,
    /// Format 3: the key wrapped under the domain wrapping key, what it
    /// is, its public JWK and its material digest (carried, never
    /// recomputed: a token member cannot read the key to compute one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<WrapKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<JsonWebKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<RequestStamp>,
    #[serde(default)]
    stamp: u64,
    #[serde(default)]
    attr_stamp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

/// The associated data that binds a blob's readable fields to its content.
fn clone_aad(b: &CloneBlob) -> Vec<u8> {
    let mut aad = format!(
        "{}\0{}\0{}\0{}\0{}",
        b.format, b.domain, b.name, b.generation, b.digest
    );
    if let Some(v) = &b.version {
        aad.push_str(&format!("\0{}\0{}\0{}", v.version, v.material, v.pending));
    }
    aad.into_bytes()
}

/// Seals an object read from the store as a clone blob: its committed
/// versions, and `with` too if that version is pending here (the
/// replication of a new version; resync never carries a pending one).
pub fn export_object(
    part: &PartitionState,
    keys: &KeyStore,
    obj: &Object,
    with: Option<&str>,
) -> Result<CloneBlob, ReplicaError> {
    let now_ms = crate::clock::now_millis();
    let pending_with = with.filter(|v| {
        obj.rec.pending.iter().any(|p| p == v)
            && obj.versions.get(*v).is_some_and(|r| !r.expired(now_ms))
    });
    if !obj.exists() && pending_with.is_none() {
        return Err(ReplicaError::NotFound(obj.name.clone()));
    }
    let mut versions = Vec::new();
    for v in obj
        .rec
        .versions
        .iter()
        .map(String::as_str)
        .chain(pending_with)
    {
        let rec = obj
            .versions
            .get(v)
            .ok_or_else(|| ReplicaError::Internal("version record missing".into()))?;
        let (kind, wrapped) = keys
            .wrapped_blocking(
                part,
                &obj.name,
                v,
                rec.sealed.as_slice(),
                rec.token.as_ref(),
            )
            .map_err(|e| ReplicaError::Internal(e.to_string()))?;
        versions.push(CloneVersion {
            version: v.to_string(),
            key_ops: rec.key_ops.clone(),
            enabled: rec.enabled,
            nbf: rec.nbf,
            exp: rec.exp,
            created: rec.created,
            updated: rec.updated,
            tags: rec.tags.clone(),
            material: None,
            wrapped: Some(B64(wrapped)),
            kind: Some(kind),
            public: Some(rec.public_jwk.clone()),
            digest: Some(rec.material_digest.clone()),
            request: rec.request.clone(),
            stamp: rec.stamp,
            attr_stamp: rec.attr_stamp,
            pending: rec.pending_until.is_some(),
        });
    }
    let version = match with {
        None => None,
        Some(v) => {
            let rec = obj
                .versions
                .get(v)
                .filter(|r| !r.expired(now_ms))
                .ok_or_else(|| ReplicaError::NotFound(format!("{}/{v}", obj.name)))?;
            Some(VersionRef {
                version: v.to_string(),
                material: rec.material_digest.clone(),
                pending: rec.pending_until.is_some(),
            })
        }
    };
    let mut content = CloneContent {
        versions,
        deleted: obj.rec.deleted,
        purged: obj.rec.purged,
        life_stamp: obj.rec.life_stamp,
        purged_through: obj.rec.purged_through,
    };
    let plain = Zeroizing::new(
        serde_json::to_vec(&content).map_err(|e| ReplicaError::Internal(e.to_string()))?,
    );
    for v in &mut content.versions {
        if let Some(m) = v.material.as_mut() {
            zeroize::Zeroize::zeroize(&mut m.0);
        }
    }
    let mut blob = CloneBlob {
        format: CLONE_FORMAT.into(),
        domain: part.domain.id(),
        name: obj.name.clone(),
        generation: obj.rec.generation,
        digest: obj.rec.digest.clone(),
        version,
        sealed: B64::default(),
    };
    let key = part
        .domain
        .purpose_key(CLONE_PURPOSE)
        .map_err(ReplicaError::Internal)?;
    blob.sealed = crypto::seal(&key, &clone_aad(&blob), &plain)
        .map_err(|e| ReplicaError::Internal(e.to_string()))?
        .into();
    Ok(blob)
}

/// Exports the object `name` of a partition (with `with`, see
/// [`export_object`]).
pub fn export(
    store: &Store,
    part: &PartitionState,
    keys: &KeyStore,
    name: &str,
    with: Option<&str>,
) -> Result<CloneBlob, ReplicaError> {
    export_object(part, keys, &store.object(&part.name, name)?, with)
}

/// A blob opened and rebuilt as this member would store it.
pub struct Opened {
    pub name: String,
    rec: NameRecord,
    /// Every version it carries; a pending one has `pending_until` set
    /// (to a placeholder: the importing member sets its own deadline).
    versions: BTreeMap<String, VersionRecord>,
    /// Token objects this opening made (see [`Opened::orphans`]).
    placed: Vec<Vec<u8>>,
}

impl Opened {
    /// The token objects this opening made that `after` (the object as
    /// stored once the merge ran) does not keep: the caller destroys them
    /// (`KeyStore::forget_blocking`). All of them when nothing was stored.
    pub fn orphans(&self, after: Option<&Object>) -> Vec<Vec<u8>> {
        self.placed
            .iter()
            .filter(|id| {
                !after.is_some_and(|o| {
                    o.versions.values().any(|r| {
                        r.token
                            .as_ref()
                            .is_some_and(|t| t.id.as_slice() == id.as_slice())
                    })
                })
            })
            .cloned()
            .collect()
    }

    /// Whether the blob holds a live key (not deleted, not a tombstone).
    pub fn is_live(&self) -> bool {
        self.rec.is_live()
    }
}

/// Checks a blob (format, domain, seal, digest) and re-seals its material
/// under this partition. Runs no transaction: call [`apply`] with the result.
/// Blobs of format 1 (backups from before per-version merge) are read and
/// stamped as a schema-1 store is migrated (`store::stamp_v1`).
pub fn open(
    part: &PartitionState,
    keys: &KeyStore,
    blob: &CloneBlob,
    have: &dyn Fn(&str, &str) -> bool,
) -> Result<Opened, ReplicaError> {
    open_as(part, keys, blob, "clone", have)
}

/// [`open`], with `what` naming the blob in the errors: "clone" for the
/// member protocol and partition backups, "backup" for a key backup
/// (`backup::open_key`).
/// `have(version, digest)` says whether this member holds that version
/// with that material already: its key is then not placed again (the
/// merge keeps the local copy). Keys are placed through `keys` (sealed
/// here, or unwrapped inside the token). Call it off the async workers.
fn open_as(
    part: &PartitionState,
    keys: &KeyStore,
    blob: &CloneBlob,
    what: &str,
    have: &dyn Fn(&str, &str) -> bool,
) -> Result<Opened, ReplicaError> {
    if !hsm_api::is_valid_key_name(&blob.name) {
        return Err(invalid(format!("the {what} names an invalid key")));
    }
    let v1 = blob.format == CLONE_FORMAT_V1;
    let v3 = blob.format == CLONE_FORMAT;
    if !v3 && !v1 && blob.format != CLONE_FORMAT_V2 {
        return Err(invalid(format!("unknown {what} format `{}`", blob.format)));
    }
    if v1 && blob.version.is_some() {
        return Err(invalid(format!("a format-1 {what} cannot name a version")));
    }
    if blob.domain != part.domain.id() {
        tracing::warn!(partition = %part.name, key = %blob.name, from = %blob.domain, "clone from another cloning domain refused");
        return Err(invalid(format!(
            "the {what} blob was made in another cloning domain"
        )));
    }
    let key = part
        .domain
        .purpose_key(CLONE_PURPOSE)
        .map_err(ReplicaError::Internal)?;
    let plain = crypto::open(&key, &clone_aad(blob), blob.sealed.as_slice())
        .map_err(|_| invalid(format!("the {what} blob is corrupt or was altered")))?;
    let content: CloneContent = serde_json::from_slice(&plain)
        .map_err(|_| invalid(format!("the {what} content is malformed")))?;
    drop(plain);
    let mut order = Vec::new();
    let mut pending = Vec::new();
    let mut versions = BTreeMap::new();
    let mut placed_ids = PlacedGuard {
        keys,
        ids: Vec::new(),
    };
    for cv in content.versions {
        if !is_valid_version(&cv.version) || versions.contains_key(&cv.version) {
            return Err(invalid(format!(
                "the {what} holds an invalid or repeated version"
            )));
        }
        let unreadable = || {
            invalid(format!(
                "the {what} holds key material this HSM cannot read"
            ))
        };
        // What to place: (kind, wrapped key, public JWK, digest).
        let (kind, wrapped, public_jwk, material_digest) = if v3 {
            match (cv.kind, cv.wrapped, cv.public, cv.digest) {
                (Some(k), Some(w), Some(p), Some(d)) if cv.material.is_none() => (k, w.0, p, d),
                _ => return Err(unreadable()),
            }
        } else {
            let plain = cv.material.ok_or_else(unreadable)?;
            let material = KeyMaterial::from_bytes(plain.as_slice()).map_err(|_| unreadable())?;
            let digest = part
                .domain
                .material_digest(&material.to_bytes())
                .map_err(ReplicaError::Internal)?;
            let kek = crate::keystore::wrap_key(part)
                .map_err(|e| ReplicaError::Internal(e.to_string()))?;
            let (k, w) = material
                .wrap_for_transfer(&kek)
                .map_err(|e| ReplicaError::Internal(e.to_string()))?;
            (k, w, material.public_jwk(), digest)
        };
        let (sealed, token) = if have(&cv.version, &material_digest) {
            (Vec::new(), None)
        } else {
            let placed = keys.place_wrapped_blocking(
                part,
                &blob.name,
                &cv.version,
                kind,
                &wrapped,
                &public_jwk,
            );
            match placed {
                Ok(p) => p,
                Err(e) => {
                    return Err(match e {
                        crate::keystore::KeyStoreError::Token(t) if !t.is_token_fault() => {
                            invalid(format!("the {what}'s {kind} cannot be held here: {t}"))
                        }
                        crate::keystore::KeyStoreError::Crypto(_) => unreadable(),
                        other => ReplicaError::Internal(other.to_string()),
                    });
                }
            }
        };
        if let Some(t) = &token {
            placed_ids.ids.push(t.id.0.clone());
        }
        let rec = VersionRecord {
            public_jwk,
            key_ops: cv.key_ops,
            enabled: cv.enabled,
            nbf: cv.nbf,
            exp: cv.exp,
            created: cv.created,
            updated: cv.updated,
            tags: cv.tags,
            sealed: sealed.into(),
            token,
            material_digest,
            request: cv.request,
            stamp: cv.stamp,
            attr_stamp: cv.attr_stamp,
            pending_until: cv.pending.then_some(i64::MAX),
        };
        if cv.pending {
            pending.push(cv.version.clone());
        } else {
            order.push(cv.version.clone());
        }
        versions.insert(cv.version, rec);
    }
    if let Some(r) = &blob.version {
        let carried = versions.get(&r.version).is_some_and(|v| {
            v.material_digest == r.material && v.pending_until.is_some() == r.pending
        });
        if !carried {
            return Err(invalid(format!(
                "the {what} does not carry the version it names"
            )));
        }
    }
    let mut rec = NameRecord {
        versions: order,
        pending,
        deleted: content.deleted,
        life_stamp: content.life_stamp,
        purged: content.purged,
        purged_through: content.purged_through,
        generation: blob.generation,
        digest: blob.digest.clone(),
        updated: 0,
    };
    if v1 {
        // The digest of format 1 covered another view; the seal (the
        // fields above are its associated data) vouches for the content.
        crate::store::stamp_v1(&mut rec, &mut versions);
        rec.digest = object_digest(&blob.name, &rec, &versions);
    } else if object_digest(&blob.name, &rec, &versions) != blob.digest {
        return Err(invalid(format!(
            "the {what}'s digest does not match its content"
        )));
    }
    Ok(Opened {
        name: blob.name.clone(),
        rec,
        versions,
        placed: std::mem::take(&mut placed_ids.ids),
    })
}

/// The token objects an opening made so far, destroyed if it fails.
struct PlacedGuard<'a> {
    keys: &'a KeyStore,
    ids: Vec<Vec<u8>>,
}

impl Drop for PlacedGuard<'_> {
    fn drop(&mut self) {
        self.keys.forget_blocking(&self.ids);
    }
}

/// What an import did.
pub struct Applied {
    pub outcome: CloneOutcome,
    pub was_live: bool,
    pub is_live: bool,
    pub generation: u64,
    pub digest: String,
    /// The member holds all the blob carried (see `CloneImportResult::holds`).
    pub holds: bool,
}

/// How an arriving copy of a version meets the local one.
enum Meet {
    /// Take the arriving copy (the local one is absent, expired, or gives way).
    Take,
    /// Same material: merge the two.
    Merge,
    /// Keep the local copy; the arriving one is not held here.
    Keep,
}

fn meet(
    name: &str,
    v: &str,
    local: Option<&VersionRecord>,
    theirs: &VersionRecord,
    now_ms: i64,
) -> Result<Meet, StoreError> {
    let Some(mine) = local.filter(|l| !l.expired(now_ms)) else {
        return Ok(Meet::Take);
    };
    if mine.material_digest == theirs.material_digest {
        return Ok(Meet::Merge);
    }
    let later_attempt = match (&mine.request, &theirs.request) {
        (Some(a), Some(b)) if a.id == b.id => Some(b.stamp > a.stamp),
        _ => None,
    };
    let conflict = || StoreError::VersionConflict {
        name: name.into(),
        version: v.into(),
    };
    Ok(
        match (mine.pending_until.is_some(), theirs.pending_until.is_some()) {
            // A pending copy was never seen: a committed one replaces it.
            (true, false) => Meet::Take,
            (false, true) => Meet::Keep,
            (true, true) => match later_attempt {
                Some(true) => Meet::Take,
                _ => Meet::Keep,
            },
            // Two committed copies of one kid: only two attempts of one
            // request make them; the later attempt's is the acknowledged one.
            (false, false) => match later_attempt {
                Some(true) => Meet::Take,
                Some(false) => Meet::Keep,
                None => return Err(conflict()),
            },
        },
    )
}

/// The merge of an opened blob into a local object (see the module
/// comment). Returns whether the member holds everything the blob carried.
fn merge(local: &mut Object, o: &Opened, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
    let mut holds = true;
    let life = |r: &NameRecord| {
        (
            r.life_stamp,
            r.deleted.map(|d| (d.deleted_date, d.scheduled_purge_date)),
        )
    };
    if life(&o.rec) > life(&local.rec) {
        local.rec.life_stamp = o.rec.life_stamp;
        local.rec.deleted = o.rec.deleted;
    }
    local.rec.purged_through = local.rec.purged_through.max(o.rec.purged_through);
    local.rec.purged = local.rec.purged.max(o.rec.purged);
    for (v, theirs) in &o.versions {
        if local.rec.purged_through > 0 && theirs.stamp <= local.rec.purged_through {
            continue;
        }
        match meet(&o.name, v, local.versions.get(v), theirs, now_ms)? {
            // A copy whose key was not placed (this member said it held
            // it, and the local copy went since) is not taken.
            Meet::Take if theirs.sealed.0.is_empty() && theirs.token.is_none() => holds = false,
            Meet::Take => {
                let mut rec = theirs.clone();
                if rec.pending_until.is_some() {
                    rec.pending_until = Some(now_ms.saturating_add(ttl_ms));
                }
                local.insert(v, rec);
            }
            Meet::Keep => holds = false,
            Meet::Merge => {
                let Some(mine) = local.versions.get_mut(v) else {
                    continue;
                };
                if (theirs.attr_stamp, theirs.attrs_view()) > (mine.attr_stamp, mine.attrs_view()) {
                    mine.enabled = theirs.enabled;
                    mine.nbf = theirs.nbf;
                    mine.exp = theirs.exp;
                    mine.key_ops = theirs.key_ops.clone();
                    mine.tags = theirs.tags.clone();
                    mine.updated = theirs.updated;
                    mine.attr_stamp = theirs.attr_stamp;
                }
                mine.stamp = mine.stamp.max(theirs.stamp);
                if let (Some(a), Some(b)) = (mine.request.as_mut(), theirs.request.as_ref()) {
                    a.stamp = a.stamp.max(b.stamp);
                }
                if theirs.pending_until.is_none() && mine.pending_until.is_some() {
                    // Committed elsewhere: committed here too.
                    let mut rec = mine.clone();
                    rec.pending_until = None;
                    local.insert(v, rec);
                }
            }
        }
    }
    Ok(holds)
}

/// Merges an opened blob in, in one transaction — or none, when it
/// changes nothing here. `ttl_ms` is this member's deadline for a pending
/// version it receives.
/// Token objects the opening made and the merge did not keep are
/// destroyed, whatever the outcome.
pub fn apply(
    store: &Store,
    keys: &KeyStore,
    partition: &str,
    o: &Opened,
    ttl_ms: i64,
) -> Result<Applied, ReplicaError> {
    let now_ms = crate::clock::now_millis();
    let mut was_live = false;
    let merged = store.with_object_if_changed(partition, &o.name, |local| {
        was_live = local.rec.is_live();
        merge(local, o, now_ms, ttl_ms)
    });
    keys.forget_blocking(&o.orphans(merged.as_ref().ok().map(|(_, obj, _)| obj)));
    let (holds, obj, wrote) = merged?;
    let outcome = match (wrote, holds) {
        (_, false) => CloneOutcome::KeptNewer,
        (true, true) => CloneOutcome::Applied,
        (false, true) => CloneOutcome::Unchanged,
    };
    if wrote {
        tracing::info!(partition, key = %o.name, generation = obj.rec.generation, "clone merged");
    }
    Ok(Applied {
        outcome,
        was_live,
        is_live: obj.rec.is_live(),
        generation: obj.rec.generation,
        digest: obj.rec.digest,
        holds,
    })
}

/// Merges many opened blobs in one transaction: all or nothing.
pub fn apply_all(
    store: &Store,
    keys: &KeyStore,
    partition: &str,
    all: &[Opened],
) -> Result<usize, ReplicaError> {
    let r = apply_all_inner(store, partition, all);
    if r.is_err() {
        for o in all {
            keys.forget_blocking(&o.orphans(None));
        }
    }
    r
}

fn apply_all_inner(store: &Store, partition: &str, all: &[Opened]) -> Result<usize, ReplicaError> {
    let now_ms = crate::clock::now_millis();
    let mut names = all.iter().map(|o| o.name.clone());
    let mut it = all.iter();
    let n = store.with_objects(
        partition,
        || names.next(),
        |local| {
            let o = it
                .next()
                .ok_or_else(|| StoreError::Db("restore list ran short".into()))?;
            merge(local, o, now_ms, 0).map(|_| ())
        },
    )?;
    Ok(n)
}
