//! The member protocol: what the proxy uses to compare members and copy
//! keys between them without ever seeing key material.
//!
//! Decides: the inventory answers (summary, buckets, entries, paged) and
//! how clone export, import, commit and withdraw are served, and that an
//! expired partition (`sync`) serves none of them and a member of protocol
//! 1 (format-1 blobs) is refused. The blob and the merge are `replication`'s;
//! what a commit or a withdraw changes is the store's.

use super::edge::{self, ApiError, ApiResult, Resp};
use super::{check_name, Ctx};
use crate::metrics as m;
use crate::replication::{self, ReplicaError};
use crate::store::StoreError;
use hsm_api::*;
use http::StatusCode;

const PAGE: usize = 500;

impl Ctx<'_> {
    pub(super) fn inventory_summary(&self) -> ApiResult<Resp> {
        self.check_not_expired()?;
        let (summary, count) = self.node.store.inventory_summary(&self.part.name)?;
        Ok(edge::json(
            StatusCode::OK,
            &InventorySummary { summary, count },
        ))
    }

    pub(super) fn inventory_buckets(&self) -> ApiResult<Resp> {
        self.check_not_expired()?;
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
        let value: Vec<InventoryItem> = entries;
        Ok(edge::json(StatusCode::OK, &Page { value, next_link }))
    }

    /// The slice hashes of one bucket, computed from its entries (a bucket
    /// holds 1/256 of the partition: a read of that much).
    pub(super) fn inventory_slices(&self, bucket: u8) -> ApiResult<Resp> {
        let (entries, _) =
            self.node
                .store
                .inventory_entries(&self.part.name, bucket, None, usize::MAX)?;
        Ok(edge::json(
            StatusCode::OK,
            &InventorySlices {
                bucket,
                slices: crate::store::slice_hashes(&entries),
            },
        ))
    }

    /// Every entry of one slice of one bucket, in one page.
    pub(super) fn inventory_slice(&self, bucket: u8, slice: u8) -> ApiResult<Resp> {
        let value: Vec<InventoryItem> =
            self.node
                .store
                .inventory_slice(&self.part.name, bucket, slice)?;
        Ok(edge::json(
            StatusCode::OK,
            &Page {
                value,
                next_link: None,
            },
        ))
    }

    pub(super) async fn clone_export(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: CloneExportRequest = edge::parse_json(body)?;
        check_name(&req.name)?;
        self.check_not_expired()?;
        let blob = if self.node.keys.is_token() {
            // Off the async threads: a token member wraps in its token.
            let (store, keys) = (self.node.store.clone(), self.node.keys.clone());
            let part = self.node.partition_arc(&self.part.name)?;
            let (name, version) = (req.name.clone(), req.version.clone());
            tokio::task::spawn_blocking(move || {
                replication::export(&store, &part, &keys, &name, version.as_deref())
            })
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("export task: {e}")))??
        } else {
            // A software export is a read and an AES pass: inline, as
            // before token members (every creation through the proxy
            // exports once).
            replication::export(
                &self.node.store,
                self.part,
                &self.node.keys,
                &req.name,
                req.version.as_deref(),
            )?
        };
        tracing::info!(partition = %self.part.name, key = %req.name, generation = blob.generation, "clone exported");
        Ok(edge::json(StatusCode::OK, &blob))
    }

    pub(super) async fn clone_import(&self, body: &[u8]) -> ApiResult<Resp> {
        let blob: CloneBlob = edge::parse_json(body)?;
        if blob.format == replication::CLONE_FORMAT_V1 {
            return Err(ApiError::new(
                ErrorCode::InvalidClone,
                "the clone comes from an hsm-node of member protocol 1 (objects merged whole): \
                 upgrade every member and proxy of the group; each member's store is migrated in place when it starts",
            ));
        }
        self.check_not_expired()?;
        let name = blob.name.clone();
        let p = self.part.name.clone();
        let (store, keys) = (self.node.store.clone(), self.node.keys.clone());
        let part = self.node.partition_arc(&self.part.name)?;
        let ttl_ms = i64::try_from(self.node.settings.pending_ttl_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        // Off the async threads: a token member unwraps in its token. A
        // version held here with the same material is not placed again.
        let result = tokio::task::spawn_blocking(move || {
            let local = store.object(&p, &blob.name)?;
            let now_ms = crate::clock::now_millis();
            let have = |v: &str, digest: &str| {
                local
                    .versions
                    .get(v)
                    .is_some_and(|r| r.material_digest == digest && !r.expired(now_ms))
            };
            let opened = replication::open(&part, &keys, &blob, &have)?;
            replication::apply(&store, &keys, &p, &opened, ttl_ms)
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("storage task: {e}")))?;
        let a = match result {
            Ok(a) => a,
            Err(e) => {
                if matches!(e, ReplicaError::Store(StoreError::VersionConflict { .. })) {
                    tracing::warn!(partition = %self.part.name, key = %name, error = %e, "clone refused: conflict");
                }
                return Err(e.into());
            }
        };
        if a.outcome == CloneOutcome::Applied {
            self.node.cache.invalidate(&self.part.name, &name);
            match (a.was_live, a.is_live) {
                (false, true) => m::keys_delta(&self.part.name, 1.0),
                (true, false) => m::keys_delta(&self.part.name, -1.0),
                _ => {}
            }
        }
        tracing::info!(partition = %self.part.name, key = %name, generation = a.generation, outcome = ?a.outcome, "clone imported");
        Ok(edge::json(
            StatusCode::OK,
            &CloneImportResult {
                outcome: a.outcome,
                generation: a.generation,
                digest: a.digest,
                holds: a.holds,
            },
        ))
    }

    /// Commits a pending version: from now on it is listed and usable here.
    pub(super) async fn clone_commit(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: CommitRequest = edge::parse_json(body)?;
        check_name(&req.name)?;
        if !is_valid_version(&req.version) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                "version must be 32 lowercase hex characters",
            ));
        }
        self.check_not_expired()?;
        let (p, n, v, mat) = (
            self.part.name.clone(),
            req.name.clone(),
            req.version.clone(),
            req.material.clone(),
        );
        let was_live = self.node.store.name(&p, &n)?.is_some_and(|r| r.is_live());
        let o = self.write(move |s| s.commit(&p, &n, &v, &mat)).await?;
        self.node.cache.invalidate(&self.part.name, &req.name);
        if !was_live && o.rec.is_live() {
            m::keys_delta(&self.part.name, 1.0);
        }
        tracing::info!(partition = %self.part.name, key = %req.name, version = %req.version, "version committed");
        Ok(edge::json(
            StatusCode::OK,
            &CommitResult {
                generation: o.rec.generation,
                digest: o.rec.digest,
            },
        ))
    }

    pub(super) async fn clone_withdraw(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: WithdrawRequest = edge::parse_json(body)?;
        check_name(&req.name)?;
        if !is_valid_version(&req.version) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                "version must be 32 lowercase hex characters",
            ));
        }
        let (p, n, v, id, stamp) = (
            self.part.name.clone(),
            req.name.clone(),
            req.version.clone(),
            req.request_id.clone(),
            req.stamp,
        );
        let was_live = self.node.store.name(&p, &n)?.is_some_and(|r| r.is_live());
        let (withdrawn, generation) = self
            .write(move |s| s.withdraw(&p, &n, &v, &id, stamp))
            .await?;
        if withdrawn {
            self.node.cache.invalidate(&self.part.name, &req.name);
            let is_live = self
                .node
                .store
                .name(&self.part.name, &req.name)?
                .is_some_and(|r| r.is_live());
            if was_live && !is_live {
                m::keys_delta(&self.part.name, -1.0);
            }
            tracing::warn!(partition = %self.part.name, key = %req.name, version = %req.version, "version withdrawn: its create was not made durable");
        }
        Ok(edge::json(
            StatusCode::OK,
            &WithdrawResult {
                withdrawn,
                generation,
            },
        ))
    }
}
