//! Clone blobs: how one key object (a name with all its versions, its
//! soft-delete state or its tombstone) travels between members of a
//! cloning domain, and the rule that decides whether an arriving blob wins.
//!
//! Decides: the blob (readable name, generation, digest and domain id; the
//! state and key material sealed under the domain's clone key with those
//! fields as associated data) and the import rule, the same on every member
//! whatever the arrival order: a version whose material differs from the
//! local one is a conflict (nothing changes); otherwise the higher
//! generation wins, and at equal generations the higher digest, so every
//! member converges. One exception: two copies of a version made by two
//! attempts of one request (a retried key creation, `hsm_api::request`)
//! differ in material by nature; the copy stamped by the later attempt wins
//! (the proxy acknowledges only its last attempt). Used by the member
//! protocol (`service::member`) and by partition backup and restore
//! (`admin`). Never: who may call it.

use crate::crypto::{self, KeyMaterial};
use crate::partition::PartitionState;
use crate::store::{
    object_digest, DeletedInfo, NameRecord, Object, Store, StoreError, VersionRecord,
};
use hsm_api::{is_valid_version, CloneBlob, CloneOutcome, KeyOperation, RequestStamp, Tags, B64};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// The format tag of clone blobs.
pub const CLONE_FORMAT: &str = "hsm-node-clone/1";
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

/// The sealed part of a clone blob.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneContent {
    versions: Vec<CloneVersion>,
    deleted: Option<DeletedInfo>,
    purged: Option<i64>,
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
    material: B64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<RequestStamp>,
}

/// The associated data that binds a blob's readable fields to its content.
fn clone_aad(b: &CloneBlob) -> Vec<u8> {
    format!(
        "{}\0{}\0{}\0{}\0{}",
        b.format, b.domain, b.name, b.generation, b.digest
    )
    .into_bytes()
}

/// Seals an object read from the store as a clone blob.
pub fn export_object(part: &PartitionState, obj: &Object) -> Result<CloneBlob, ReplicaError> {
    if !obj.exists() {
        return Err(ReplicaError::NotFound(obj.name.clone()));
    }
    let mut versions = Vec::new();
    for v in &obj.rec.versions {
        let rec = obj
            .versions
            .get(v)
            .ok_or_else(|| ReplicaError::Internal("version record missing".into()))?;
        let material = part
            .unseal_material(&obj.name, v, rec.sealed.as_slice())
            .map_err(ReplicaError::Internal)?;
        versions.push(CloneVersion {
            version: v.clone(),
            key_ops: rec.key_ops.clone(),
            enabled: rec.enabled,
            nbf: rec.nbf,
            exp: rec.exp,
            created: rec.created,
            updated: rec.updated,
            tags: rec.tags.clone(),
            material: B64(material.to_bytes().to_vec()),
            request: rec.request.clone(),
        });
    }
    let mut content = CloneContent {
        versions,
        deleted: obj.rec.deleted,
        purged: obj.rec.purged,
    };
    let plain = Zeroizing::new(
        serde_json::to_vec(&content).map_err(|e| ReplicaError::Internal(e.to_string()))?,
    );
    for v in &mut content.versions {
        zeroize::Zeroize::zeroize(&mut v.material.0);
    }
    let mut blob = CloneBlob {
        format: CLONE_FORMAT.into(),
        domain: part.domain.id(),
        name: obj.name.clone(),
        generation: obj.rec.generation,
        digest: obj.rec.digest.clone(),
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

/// Exports the object `name` of a partition.
pub fn export(store: &Store, part: &PartitionState, name: &str) -> Result<CloneBlob, ReplicaError> {
    export_object(part, &store.object(&part.name, name)?)
}

/// A blob opened and rebuilt as this member would store it.
pub struct Opened {
    pub name: String,
    rec: NameRecord,
    versions: BTreeMap<String, VersionRecord>,
}

impl Opened {
    /// Whether the blob holds a live key (not deleted, not a tombstone).
    pub fn is_live(&self) -> bool {
        self.rec.is_live()
    }
}

/// Restores a blob as a new change under its name, which must be free
/// (a tombstone is free): the single-key restore of the dialect.
pub fn restore(store: &Store, partition: &str, o: &Opened) -> Result<Object, ReplicaError> {
    let (_, obj) = store.with_object(partition, &o.name, |local| {
        if local.rec.is_live() || local.rec.is_deleted() {
            return Err(StoreError::NameTaken(o.name.clone()));
        }
        local.rec.versions = o.rec.versions.clone();
        local.rec.deleted = None;
        local.rec.purged = None;
        local.versions = o.versions.clone();
        Ok(())
    })?;
    Ok(obj)
}

/// Checks a blob (format, domain, seal, digest) and re-seals its material
/// under this partition. Runs no transaction: call [`apply`] with the result.
pub fn open(part: &PartitionState, blob: &CloneBlob) -> Result<Opened, ReplicaError> {
    if !hsm_api::is_valid_key_name(&blob.name) {
        return Err(invalid("the clone names an invalid key"));
    }
    if blob.format != CLONE_FORMAT {
        return Err(invalid(format!("unknown clone format `{}`", blob.format)));
    }
    if blob.domain != part.domain.id() {
        tracing::warn!(partition = %part.name, key = %blob.name, from = %blob.domain, "clone from another cloning domain refused");
        return Err(invalid("the clone blob was made in another cloning domain"));
    }
    let key = part
        .domain
        .purpose_key(CLONE_PURPOSE)
        .map_err(ReplicaError::Internal)?;
    let plain = crypto::open(&key, &clone_aad(blob), blob.sealed.as_slice())
        .map_err(|_| invalid("the clone blob is corrupt or was altered"))?;
    let content: CloneContent =
        serde_json::from_slice(&plain).map_err(|_| invalid("the clone content is malformed"))?;
    drop(plain);
    let mut order = Vec::new();
    let mut versions = BTreeMap::new();
    for cv in content.versions {
        if !is_valid_version(&cv.version) || versions.contains_key(&cv.version) {
            return Err(invalid("the clone holds an invalid or repeated version"));
        }
        let material = KeyMaterial::from_bytes(cv.material.as_slice())
            .map_err(|_| invalid("the clone holds key material this HSM cannot read"))?;
        let (sealed, material_digest) = part
            .seal_material(&blob.name, &cv.version, &material)
            .map_err(ReplicaError::Internal)?;
        let rec = VersionRecord {
            public_jwk: material.public_jwk(),
            key_ops: cv.key_ops,
            enabled: cv.enabled,
            nbf: cv.nbf,
            exp: cv.exp,
            created: cv.created,
            updated: cv.updated,
            tags: cv.tags,
            sealed: sealed.into(),
            material_digest,
            request: cv.request,
        };
        order.push(cv.version.clone());
        versions.insert(cv.version, rec);
    }
    let rec = NameRecord {
        versions: order,
        deleted: content.deleted,
        purged: content.purged,
        generation: blob.generation,
        digest: blob.digest.clone(),
        updated: 0,
    };
    if object_digest(&blob.name, &rec, &versions) != blob.digest {
        return Err(invalid("the clone's digest does not match its content"));
    }
    Ok(Opened {
        name: blob.name.clone(),
        rec,
        versions,
    })
}

/// What an import did.
pub struct Applied {
    pub outcome: CloneOutcome,
    pub was_live: bool,
    pub is_live: bool,
    pub generation: u64,
    pub digest: String,
}

/// The import rule on one object inside a transaction.
fn decide(local: &mut Object, o: &Opened) -> Result<(CloneOutcome, bool), StoreError> {
    let was_live = local.rec.is_live();
    // Two copies of one version with different material: a conflict,
    // unless two attempts of one request made them (retried creation);
    // then the copy of the later attempt wins, whatever the generations.
    let mut retried: Option<bool> = None;
    for (v, rec) in &o.versions {
        let Some(l) = local.versions.get(v) else {
            continue;
        };
        if l.material_digest == rec.material_digest {
            continue;
        }
        match (&l.request, &rec.request) {
            (Some(mine), Some(theirs)) if mine.id == theirs.id && mine.stamp != theirs.stamp => {
                let wins = theirs.stamp > mine.stamp;
                if retried.is_some_and(|w| w != wins) {
                    return Err(StoreError::VersionConflict {
                        name: o.name.clone(),
                        version: v.clone(),
                    });
                }
                retried = Some(wins);
            }
            _ => {
                return Err(StoreError::VersionConflict {
                    name: o.name.clone(),
                    version: v.clone(),
                })
            }
        }
    }
    let same = local.exists()
        && o.rec.generation == local.rec.generation
        && o.rec.digest == local.rec.digest;
    let newer = match retried {
        Some(wins) => wins,
        None => {
            !local.exists()
                || o.rec.generation > local.rec.generation
                || (o.rec.generation == local.rec.generation && o.rec.digest > local.rec.digest)
        }
    };
    let outcome = if same {
        CloneOutcome::Unchanged
    } else if newer {
        local.rec.versions = o.rec.versions.clone();
        local.rec.deleted = o.rec.deleted;
        local.rec.purged = o.rec.purged;
        local.versions = o.versions.clone();
        local.set_generation = Some(o.rec.generation);
        CloneOutcome::Applied
    } else {
        CloneOutcome::KeptNewer
    };
    Ok((outcome, was_live))
}

/// Applies an opened blob by the import rule, in one transaction.
pub fn apply(store: &Store, partition: &str, o: &Opened) -> Result<Applied, ReplicaError> {
    let ((outcome, was_live), obj) =
        store.with_object(partition, &o.name, |local| decide(local, o))?;
    if let CloneOutcome::Applied = outcome {
        tracing::info!(partition, key = %o.name, generation = obj.rec.generation, "clone applied");
    }
    Ok(Applied {
        outcome,
        was_live,
        is_live: obj.rec.is_live(),
        generation: obj.rec.generation,
        digest: obj.rec.digest,
    })
}

/// Applies many opened blobs in one transaction: all or nothing.
pub fn apply_all(store: &Store, partition: &str, all: &[Opened]) -> Result<usize, ReplicaError> {
    let mut names = all.iter().map(|o| o.name.clone());
    let mut it = all.iter();
    let n = store.with_objects(
        partition,
        || names.next(),
        |local| {
            let o = it
                .next()
                .ok_or_else(|| StoreError::Db("restore list ran short".into()))?;
            decide(local, o).map(|_| ())
        },
    )?;
    Ok(n)
}
