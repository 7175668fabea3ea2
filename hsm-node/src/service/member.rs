//! The member protocol: what the proxy uses to compare members and copy
//! keys between them without ever seeing key material.
//!
//! Decides: the inventory answers (summary, buckets, entries) and the clone
//! blob — an object's whole state with its material sealed under the
//! cloning domain's clone key, its metadata bound as associated data — and
//! the import rule, the same on every member whatever the arrival order:
//! a version whose material differs from the local one is a conflict
//! (409, nothing changes); otherwise the higher generation wins, and at
//! equal generations the higher digest, so every member converges.

use super::edge::{self, ApiError, ApiResult, Resp};
use super::keys::material_aad;
use super::{check_name, Ctx};
use crate::crypto::{self, KeyMaterial};
use crate::metrics as m;
use crate::store::{object_digest, DeletedInfo, NameRecord, StoreError, VersionRecord};
use hsm_api::*;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

const CLONE_FORMAT: &str = "hsm-node-clone/1";
const CLONE_PURPOSE: &str = "clone v1";
const PAGE: usize = 500;

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
}

/// The associated data that binds a blob's readable fields to its content.
fn clone_aad(b: &CloneBlob) -> Vec<u8> {
    format!(
        "{}\0{}\0{}\0{}\0{}",
        b.format, b.domain, b.name, b.generation, b.digest
    )
    .into_bytes()
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidClone, m)
}

fn internal(m: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, m.to_string())
}

impl Ctx<'_> {
    pub(super) fn inventory_summary(&self) -> ApiResult<Resp> {
        let (summary, count) = self.node.store.inventory_summary(&self.part.name)?;
        Ok(edge::json(
            StatusCode::OK,
            &InventorySummary { summary, count },
        ))
    }

    pub(super) fn inventory_buckets(&self) -> ApiResult<Resp> {
        let buckets = self
            .node
            .store
            .inventory_buckets(&self.part.name)?
            .into_iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(bucket, hash, count)| BucketHash {
                bucket,
                hash: hex::encode(hash),
                count,
            })
            .collect();
        Ok(edge::json(StatusCode::OK, &InventoryBuckets { buckets }))
    }

    pub(super) fn inventory_bucket(&self, bucket: u8) -> ApiResult<Resp> {
        let q =
            ListQuery::parse(self.query).map_err(|m| ApiError::new(ErrorCode::BadParameter, m))?;
        if let Some(a) = &q.skiptoken {
            check_name(a)
                .map_err(|_| ApiError::new(ErrorCode::BadParameter, "invalid $skiptoken"))?;
        }
        let (entries, more) = self.node.store.inventory_entries(
            &self.part.name,
            bucket,
            q.skiptoken.as_deref(),
            PAGE,
        )?;
        let next_link = match (more, entries.last()) {
            (true, Some(last)) => Some(format!(
                "{}/inventory/buckets/{bucket}?$skiptoken={}",
                self.node.partition_base(&self.part.name),
                last.name
            )),
            _ => None,
        };
        let value: Vec<InventoryItem> = entries
            .into_iter()
            .map(|e| InventoryItem {
                name: e.name,
                version: e.version,
                generation: e.generation,
                digest: e.digest,
                tombstone: e.tombstone,
                deleted: e.deleted,
                updated: e.updated,
            })
            .collect();
        Ok(edge::json(StatusCode::OK, &Page { value, next_link }))
    }

    pub(super) fn clone_export(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: CloneExportRequest = edge::parse_json(body)?;
        check_name(&req.name)?;
        let obj = self.node.store.object(&self.part.name, &req.name)?;
        if !obj.exists() {
            return Err(ApiError::new(
                ErrorCode::KeyNotFound,
                format!("key `{}` not found", req.name),
            ));
        }
        let mut versions = Vec::new();
        for v in &obj.rec.versions {
            let rec = obj
                .versions
                .get(v)
                .ok_or_else(|| internal("version record missing"))?;
            let material = self.unseal(&req.name, v, rec)?;
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
            });
        }
        let mut content = CloneContent {
            versions,
            deleted: obj.rec.deleted,
            purged: obj.rec.purged,
        };
        let plain = Zeroizing::new(serde_json::to_vec(&content).map_err(internal)?);
        for v in &mut content.versions {
            zeroize::Zeroize::zeroize(&mut v.material.0);
        }
        let domain = &self.part.domain;
        let mut blob = CloneBlob {
            format: CLONE_FORMAT.into(),
            domain: domain.id(),
            name: req.name.clone(),
            generation: obj.rec.generation,
            digest: obj.rec.digest.clone(),
            sealed: B64::default(),
        };
        let key = domain.purpose_key(CLONE_PURPOSE).map_err(internal)?;
        blob.sealed = crypto::seal(&key, &clone_aad(&blob), &plain)?.into();
        tracing::info!(partition = %self.part.name, key = %req.name, generation = blob.generation, "clone exported");
        Ok(edge::json(StatusCode::OK, &blob))
    }

    pub(super) async fn clone_import(&self, body: &[u8]) -> ApiResult<Resp> {
        let blob: CloneBlob = edge::parse_json(body)?;
        check_name(&blob.name)?;
        if blob.format != CLONE_FORMAT {
            return Err(invalid(format!("unknown clone format `{}`", blob.format)));
        }
        let domain = &self.part.domain;
        if blob.domain != domain.id() {
            tracing::warn!(partition = %self.part.name, key = %blob.name, from = %blob.domain, "clone from another cloning domain refused");
            return Err(invalid("the clone blob was made in another cloning domain"));
        }
        let key = domain.purpose_key(CLONE_PURPOSE).map_err(internal)?;
        let plain = crypto::open(&key, &clone_aad(&blob), blob.sealed.as_slice())
            .map_err(|_| invalid("the clone blob is corrupt or was altered"))?;
        let content: CloneContent = serde_json::from_slice(&plain)
            .map_err(|_| invalid("the clone content is malformed"))?;
        drop(plain);

        // Rebuild the object as this member would store it.
        let name = blob.name.clone();
        let mut order = Vec::new();
        let mut versions = BTreeMap::new();
        for cv in content.versions {
            if !is_valid_version(&cv.version) || versions.contains_key(&cv.version) {
                return Err(invalid("the clone holds an invalid or repeated version"));
            }
            let material = KeyMaterial::from_bytes(cv.material.as_slice())
                .map_err(|_| invalid("the clone holds key material this HSM cannot read"))?;
            let bytes = material.to_bytes();
            let sealed = crypto::seal(
                &self.part.kek,
                &material_aad(&self.part.name, &name, &cv.version),
                &bytes,
            )?;
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
                material_digest: domain.material_digest(&bytes).map_err(internal)?,
            };
            order.push(cv.version.clone());
            versions.insert(cv.version, rec);
        }
        let incoming = NameRecord {
            versions: order,
            deleted: content.deleted,
            purged: content.purged,
            generation: blob.generation,
            digest: blob.digest.clone(),
            updated: 0,
        };
        if object_digest(&name, &incoming, &versions) != blob.digest {
            return Err(invalid("the clone's digest does not match its content"));
        }

        let p = self.part.name.clone();
        let n = name.clone();
        let result = self
            .write(move |s| {
                s.with_object(&p, &n, |o| {
                    let was_live = o.rec.is_live();
                    for (v, rec) in &versions {
                        if let Some(local) = o.versions.get(v) {
                            if local.material_digest != rec.material_digest {
                                return Err(StoreError::VersionConflict {
                                    name: n.clone(),
                                    version: v.clone(),
                                });
                            }
                        }
                    }
                    let newer = !o.exists()
                        || incoming.generation > o.rec.generation
                        || (incoming.generation == o.rec.generation
                            && incoming.digest > o.rec.digest);
                    let outcome = if o.exists()
                        && incoming.generation == o.rec.generation
                        && incoming.digest == o.rec.digest
                    {
                        CloneOutcome::Unchanged
                    } else if newer {
                        o.rec.versions = incoming.versions.clone();
                        o.rec.deleted = incoming.deleted;
                        o.rec.purged = incoming.purged;
                        o.versions = versions.clone();
                        o.set_generation = Some(incoming.generation);
                        CloneOutcome::Applied
                    } else {
                        CloneOutcome::KeptNewer
                    };
                    Ok((outcome, was_live))
                })
            })
            .await;
        let ((outcome, was_live), obj) = match result {
            Ok(r) => r,
            Err(e) => {
                if e.code == ErrorCode::Conflict {
                    tracing::warn!(partition = %self.part.name, key = %name, error = %e.message, "clone refused: conflict");
                }
                return Err(e);
            }
        };
        if outcome == CloneOutcome::Applied {
            self.node.cache.invalidate(&self.part.name, &name);
            match (was_live, obj.rec.is_live()) {
                (false, true) => m::keys_delta(&self.part.name, 1.0),
                (true, false) => m::keys_delta(&self.part.name, -1.0),
                _ => {}
            }
        }
        tracing::info!(partition = %self.part.name, key = %name, generation = blob.generation, ?outcome, "clone imported");
        Ok(edge::json(
            StatusCode::OK,
            &CloneImportResult {
                outcome,
                generation: obj.rec.generation,
                digest: obj.rec.digest,
            },
        ))
    }
}
