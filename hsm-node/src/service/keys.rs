//! Key management handlers: create, import, get, list, versions, update,
//! delete, recover, purge, backup, restore, rotate.
//!
//! Decides: validation of attributes, tags and key_ops; how a new version is
//! sealed and named (a request carrying an id names its version after the
//! id, so a retry finds the version it made instead of making another:
//! `hsm_api::request`); the shape of bundles and list pages (a key backup's
//! bytes are `replication::backup`'s). Every mutation is one store
//! transaction followed by a cache invalidation.

use super::cache::CachedKey;
use super::edge::{self, ApiError, ApiResult, Resp};
use super::{check_name, check_version, Ctx};
use crate::clock::now_secs;
use crate::crypto::{self, KeyMaterial, KeySpec};
use crate::keystore::Placed;
use crate::metrics as m;
use crate::replication::{backup, ReplicaError};
use crate::store::{Added, DeletedInfo, NameRecord, VersionRecord};
use hsm_api::*;
use http::StatusCode;
use std::sync::Arc;

/// Most tags a key may carry, and their sizes, as Key Vault.
const MAX_TAGS: usize = 15;
const MAX_TAG_NAME: usize = 512;
const MAX_TAG_VALUE: usize = 256;
/// Default and largest page of a list.
const PAGE: usize = 25;

/// Marks an answer as a replay (`hsm_api::REPLAYED_HEADER`): the version
/// was made by an earlier attempt, which the proxy must never withdraw.
fn replayed(mut r: Resp) -> Resp {
    r.headers_mut().insert(
        hsm_api::REPLAYED_HEADER,
        http::HeaderValue::from_static("true"),
    );
    r
}

/// The id of a new version of `name`: named after the request's id when
/// it carries one, else random.
fn new_version(name: &str, request: Option<&RequestStamp>) -> ApiResult<String> {
    match request {
        Some(r) => Ok(request::version_for(name, &r.id)),
        None => Ok(hex::encode(crypto::random_bytes(16)?)),
    }
}

/// Attributes a caller may set, checked.
struct Settable {
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
}

fn settable(a: Option<&KeyAttributes>, current: Option<&VersionRecord>) -> ApiResult<Settable> {
    let bad = |m: &str| Err(ApiError::new(ErrorCode::BadParameter, m));
    let mut s = Settable {
        enabled: current.map(|c| c.enabled).unwrap_or(true),
        nbf: current.and_then(|c| c.nbf),
        exp: current.and_then(|c| c.exp),
    };
    let Some(a) = a else { return Ok(s) };
    if a.created.is_some() || a.updated.is_some() || a.recovery_level.is_some() {
        return bad("created, updated and recoveryLevel are read-only attributes");
    }
    if a.recoverable_days.is_some() || a.hsm_platform.is_some() {
        return bad("recoverableDays and hsmPlatform are read-only attributes");
    }
    if a.exportable == Some(true) {
        return Err(ApiError::new(
            ErrorCode::NotSupported,
            "exportable keys are not offered: key material never leaves this HSM in plaintext",
        ));
    }
    if let Some(e) = a.enabled {
        s.enabled = e;
    }
    if a.nbf.is_some() {
        s.nbf = a.nbf;
    }
    if a.exp.is_some() {
        s.exp = a.exp;
    }
    if let (Some(nbf), Some(exp)) = (s.nbf, s.exp) {
        if exp <= nbf {
            return bad("exp must be after nbf");
        }
    }
    Ok(s)
}

fn check_tags(tags: Option<&Tags>) -> ApiResult<()> {
    let Some(t) = tags else { return Ok(()) };
    let bad = |m: String| Err(ApiError::new(ErrorCode::BadParameter, m));
    if t.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags, got {}", t.len()));
    }
    for (k, v) in t {
        if k.is_empty() || k.len() > MAX_TAG_NAME || v.len() > MAX_TAG_VALUE {
            return bad(format!(
                "tag names are 1-{MAX_TAG_NAME} characters and values at most {MAX_TAG_VALUE}"
            ));
        }
    }
    Ok(())
}

fn no_release_policy(p: &Option<serde_json::Value>) -> ApiResult<()> {
    match p {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::NotSupported,
            "secure key release is not offered",
        )),
    }
}

/// The key_ops a key gets: the requested ones if they all fit the key,
/// else a precise error; the key type's defaults when none are requested.
fn key_ops_for(
    allowed: Vec<KeyOperation>,
    describe: &str,
    requested: Option<&Vec<KeyOperation>>,
) -> ApiResult<Vec<KeyOperation>> {
    let Some(req) = requested else {
        return Ok(allowed);
    };
    let mut out: Vec<KeyOperation> = Vec::new();
    for op in req {
        if !allowed.contains(op) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                format!("key_ops `{op}` does not fit a {describe} key here"),
            ));
        }
        if !out.contains(op) {
            out.push(*op);
        }
    }
    Ok(out)
}

/// What a new version records besides its material.
struct Meta {
    key_ops: Vec<KeyOperation>,
    attrs: Settable,
    tags: Option<Tags>,
    created: i64,
    request: Option<RequestStamp>,
}

/// The record of a version whose key was just placed in the key store.
fn version_record(ctx: &Ctx<'_>, placed: Placed, meta: Meta) -> VersionRecord {
    VersionRecord {
        material_digest: placed.material_digest,
        public_jwk: placed.public_jwk,
        token: placed.token,
        key_ops: meta.key_ops,
        enabled: meta.attrs.enabled,
        nbf: meta.attrs.nbf,
        exp: meta.attrs.exp,
        created: meta.created,
        updated: now_secs(),
        tags: meta.tags,
        sealed: placed.sealed.into(),
        request: meta.request,
        // Stamped by the store when it adds the version.
        stamp: 0,
        attr_stamp: 0,
        pending_until: ctx.through_proxy.then(|| {
            let ttl = i64::try_from(ctx.node.settings.pending_ttl_secs).unwrap_or(i64::MAX);
            crate::clock::now_millis().saturating_add(ttl.saturating_mul(1000))
        }),
    }
}

/// What the caller chose for a new key.
pub(super) struct NewKey<'a> {
    pub key_ops: Option<&'a Vec<KeyOperation>>,
    pub attributes: Option<&'a KeyAttributes>,
    pub tags: Option<Tags>,
}

impl Ctx<'_> {
    fn kid(&self, name: &str, version: &str) -> String {
        format!(
            "{}/keys/{name}/{version}",
            self.node.partition_base(&self.part.name)
        )
    }

    pub(super) fn bundle(&self, name: &str, version: &str, rec: &VersionRecord) -> KeyBundle {
        let mut key = rec.public_jwk.clone();
        key.kid = Some(self.kid(name, version));
        key.key_ops = Some(rec.key_ops.clone());
        KeyBundle {
            key,
            attributes: self.attributes(rec),
            tags: rec.tags.clone(),
            managed: None,
        }
    }

    fn attributes(&self, rec: &VersionRecord) -> KeyAttributes {
        KeyAttributes {
            enabled: Some(rec.enabled),
            nbf: rec.nbf,
            exp: rec.exp,
            created: Some(rec.created),
            updated: Some(rec.updated),
            recovery_level: Some("Recoverable+Purgeable".into()),
            recoverable_days: Some(i64::from(self.node.settings.recoverable_days)),
            exportable: Some(false),
            hsm_platform: None,
        }
    }

    fn deleted_bundle(&self, name: &str, n: &NameRecord, rec: &VersionRecord) -> DeletedKeyBundle {
        let version = n.current().unwrap_or_default();
        DeletedKeyBundle {
            bundle: self.bundle(name, version, rec),
            recovery_id: Some(self.recovery_id(name)),
            deleted_date: n.deleted.map(|d| d.deleted_date),
            scheduled_purge_date: n.deleted.map(|d| d.scheduled_purge_date),
        }
    }

    fn recovery_id(&self, name: &str) -> String {
        format!(
            "{}/deletedkeys/{name}",
            self.node.partition_base(&self.part.name)
        )
    }

    /// Stores a new version and answers with its bundle.
    async fn commit_version(
        &self,
        name: &str,
        version: String,
        rec: VersionRecord,
        may_create: bool,
    ) -> ApiResult<Resp> {
        let (p, n, v, r) = (
            self.part.name.clone(),
            name.to_string(),
            version.clone(),
            rec.clone(),
        );
        let added = self
            .write(move |s| s.add_version(&p, &n, &v, &r, may_create))
            .await?;
        self.node.cache.invalidate(&self.part.name, name);
        let rec = match added {
            Added::New { created } => {
                if created {
                    m::keys_delta(&self.part.name, 1.0);
                }
                rec
            }
            Added::Replayed(existing) => {
                return Ok(replayed(edge::json(
                    StatusCode::OK,
                    &self.bundle(name, &version, &existing),
                )))
            }
        };
        Ok(edge::json(
            StatusCode::OK,
            &self.bundle(name, &version, &rec),
        ))
    }

    /// A retried request whose version exists here already: confirmed and
    /// answered as the first time, and nothing made again.
    async fn replay(&self, name: &str) -> ApiResult<Option<Resp>> {
        let Some(req) = self.request.clone() else {
            return Ok(None);
        };
        let version = request::version_for(name, &req.id);
        let (p, n, v) = (self.part.name.clone(), name.to_string(), version.clone());
        let Some(rec) = self.write(move |s| s.confirm(&p, &n, &v, &req)).await? else {
            return Ok(None);
        };
        self.node.cache.invalidate(&self.part.name, name);
        tracing::info!(partition = %self.part.name, key = name, version, "retried request answered with the version it made");
        Ok(Some(replayed(edge::json(
            StatusCode::OK,
            &self.bundle(name, &version, &rec),
        ))))
    }

    pub(super) async fn create(&self, name: &str, body: &[u8]) -> ApiResult<Resp> {
        check_name(name)?;
        let req: KeyCreateParameters = edge::parse_json(body)?;
        no_release_policy(&req.release_policy)?;
        let spec = KeySpec::from_create(&req)?;
        // Validate everything else before spending time on key generation.
        check_tags(req.tags.as_ref())?;
        settable(req.attributes.as_ref(), None)?;
        if let Some(r) = self.replay(name).await? {
            return Ok(r);
        }
        let version = new_version(name, self.request.as_ref())?;
        let placed = self
            .node
            .keys
            .generate(self.part, name, &version, spec)
            .await?;
        let new = NewKey {
            key_ops: req.key_ops.as_ref(),
            attributes: req.attributes.as_ref(),
            tags: req.tags,
        };
        self.add_placed(name, version, placed, new, "created").await
    }

    pub(super) async fn import(&self, name: &str, body: &[u8]) -> ApiResult<Resp> {
        check_name(name)?;
        let req: KeyImportParameters = edge::parse_json(body)?;
        no_release_policy(&req.release_policy)?;
        let material = KeyMaterial::from_jwk(&req.key)?;
        let new = NewKey {
            key_ops: req.key.key_ops.as_ref(),
            attributes: req.attributes.as_ref(),
            tags: req.tags,
        };
        self.add_key(name, &material, new, "imported").await
    }

    /// Adds `material` (arrived in the clear: an imported JWK, a derived
    /// key) as a new version of `name` (creating the name if needed) with
    /// the caller's key_ops, attributes and tags, all checked.
    pub(super) async fn add_key(
        &self,
        name: &str,
        material: &KeyMaterial,
        new: NewKey<'_>,
        how: &str,
    ) -> ApiResult<Resp> {
        check_name(name)?;
        check_tags(new.tags.as_ref())?;
        settable(new.attributes, None)?;
        let version = new_version(name, self.request.as_ref())?;
        let placed = self
            .node
            .keys
            .place(self.part, name, &version, material)
            .await?;
        self.add_placed(name, version, placed, new, how).await
    }

    /// Records a key just placed in the key store as a new version; a key
    /// whose record is refused is destroyed again (a token object).
    async fn add_placed(
        &self,
        name: &str,
        version: String,
        placed: Placed,
        new: NewKey<'_>,
        how: &str,
    ) -> ApiResult<Resp> {
        let token_id = placed.token.as_ref().map(|t| t.id.0.clone());
        let r = async {
            let s = settable(new.attributes, None)?;
            let key_ops = key_ops_for(placed.default_ops.clone(), &placed.describe, new.key_ops)?;
            let meta = Meta {
                key_ops,
                attrs: s,
                tags: new.tags,
                created: now_secs(),
                request: self.request.clone(),
            };
            let kind = placed.describe.clone();
            let rec = version_record(self, placed, meta);
            tracing::info!(partition = %self.part.name, key = name, %kind, how, "key added");
            self.commit_version(name, version, rec, true).await
        }
        .await;
        self.forget_unless_kept(name, token_id, &r).await;
        r
    }

    /// Destroys a token object made for a new version that was not
    /// stored (the answer is an error, or a replay of another version).
    async fn forget_unless_kept(&self, name: &str, token_id: Option<Vec<u8>>, r: &ApiResult<Resp>) {
        let Some(id) = token_id else { return };
        let kept = r
            .as_ref()
            .is_ok_and(|resp| !resp.headers().contains_key(hsm_api::REPLAYED_HEADER));
        if !kept {
            tracing::info!(partition = %self.part.name, key = name, "token object of an unstored version destroyed");
            self.node.keys.forget(&id).await;
        }
    }

    pub(super) async fn rotate(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        if let Some(r) = self.replay(name).await? {
            return Ok(r);
        }
        let cur = self.load(name, None)?;
        let spec = match &cur.record.token {
            Some(o) => crate::keystore::spec_of_object(o),
            None => KeySpec::of(&self.unseal(name, &cur.version, &cur.record)?),
        };
        let version = new_version(name, self.request.as_ref())?;
        let placed = self
            .node
            .keys
            .generate(self.part, name, &version, spec)
            .await?;
        let token_id = placed.token.as_ref().map(|t| t.id.0.clone());
        let meta = Meta {
            key_ops: cur.record.key_ops.clone(),
            attrs: Settable {
                enabled: true,
                nbf: None,
                exp: None,
            },
            tags: cur.record.tags.clone(),
            created: now_secs(),
            request: self.request.clone(),
        };
        let rec = version_record(self, placed, meta);
        tracing::info!(partition = %self.part.name, key = name, "key rotated");
        let r = self.commit_version(name, version, rec, false).await;
        self.forget_unless_kept(name, token_id, &r).await;
        r
    }

    /// Unseals one version's material.
    pub(super) fn unseal(
        &self,
        name: &str,
        version: &str,
        rec: &VersionRecord,
    ) -> ApiResult<KeyMaterial> {
        self.part.unseal_material(name, version, rec.sealed.as_slice()).map_err(|e| {
            tracing::error!(partition = %self.part.name, key = name, version, error = %e, "unsealing key material");
            ApiError::new(ErrorCode::Internal, "stored key material failed its integrity check")
        })
    }

    /// A live key version ready for use, from the cache or the store.
    pub(super) fn load(&self, name: &str, version: Option<&str>) -> ApiResult<Arc<CachedKey>> {
        check_name(name)?;
        check_version(name, version)?;
        let cache = &self.node.cache;
        if let Some(k) = cache.get(&self.part.name, name, version) {
            return Ok(k);
        }
        let epoch = cache.epoch();
        let (v, record) = self
            .node
            .store
            .live_version(&self.part.name, name, version)?;
        let loaded = self.node.keys.load(
            self.part,
            name,
            &v,
            record.sealed.as_slice(),
            record.token.as_ref(),
        )?;
        let k = Arc::new(CachedKey {
            version: v,
            record,
            loaded,
        });
        cache.insert(&self.part.name, name, epoch, version.is_none(), k.clone());
        Ok(k)
    }

    pub(super) fn get(&self, name: &str, version: Option<&str>) -> ApiResult<Resp> {
        check_name(name)?;
        check_version(name, version)?;
        let (v, rec) = self
            .node
            .store
            .live_version(&self.part.name, name, version)?;
        Ok(edge::json(StatusCode::OK, &self.bundle(name, &v, &rec)))
    }

    fn page_size(&self) -> ApiResult<(usize, Option<String>)> {
        let q =
            ListQuery::parse(self.query).map_err(|m| ApiError::new(ErrorCode::BadParameter, m))?;
        Ok((
            q.maxresults.map(|n| n as usize).unwrap_or(PAGE),
            q.skiptoken,
        ))
    }

    fn next_link(&self, path: &str, token: &str, n: usize) -> String {
        format!(
            "{}{path}?api-version=7.4&maxresults={n}&$skiptoken={token}",
            self.node.partition_base(&self.part.name)
        )
    }

    pub(super) fn list_keys(&self) -> ApiResult<Resp> {
        self.list_names(false)
    }

    pub(super) fn list_deleted(&self) -> ApiResult<Resp> {
        self.list_names(true)
    }

    fn list_names(&self, deleted: bool) -> ApiResult<Resp> {
        let (n, after) = self.page_size()?;
        if let Some(a) = &after {
            check_name(a)
                .map_err(|_| ApiError::new(ErrorCode::BadParameter, "invalid $skiptoken"))?;
        }
        let (rows, more) =
            self.node
                .store
                .list_names(&self.part.name, after.as_deref(), n, deleted)?;
        let last = rows.last().map(|(name, _, _)| name.clone());
        let path = if deleted { "/deletedkeys" } else { "/keys" };
        let next_link = match (more, last) {
            (true, Some(l)) => Some(self.next_link(path, &l, n)),
            _ => None,
        };
        let base = self.node.partition_base(&self.part.name);
        if deleted {
            let value = rows
                .into_iter()
                .map(|(name, nr, vr)| DeletedKeyItem {
                    item: KeyItem {
                        kid: format!("{base}/keys/{name}"),
                        attributes: self.attributes(&vr),
                        tags: vr.tags.clone(),
                        managed: None,
                    },
                    recovery_id: Some(self.recovery_id(&name)),
                    deleted_date: nr.deleted.map(|d| d.deleted_date),
                    scheduled_purge_date: nr.deleted.map(|d| d.scheduled_purge_date),
                })
                .collect();
            Ok(edge::json(StatusCode::OK, &Page { value, next_link }))
        } else {
            let value = rows
                .into_iter()
                .map(|(name, _, vr)| KeyItem {
                    kid: format!("{base}/keys/{name}"),
                    attributes: self.attributes(&vr),
                    tags: vr.tags.clone(),
                    managed: None,
                })
                .collect();
            Ok(edge::json(
                StatusCode::OK,
                &Page::<KeyItem> { value, next_link },
            ))
        }
    }

    pub(super) fn list_versions(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let (n, skip) = self.page_size()?;
        let start: usize = match skip {
            None => 0,
            Some(s) => s
                .parse()
                .map_err(|_| ApiError::new(ErrorCode::BadParameter, "invalid $skiptoken"))?,
        };
        let all = self.node.store.list_versions(&self.part.name, name)?;
        let end = (start + n).min(all.len());
        let value: Vec<KeyItem> = all
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|(v, rec)| KeyItem {
                kid: self.kid(name, v),
                attributes: self.attributes(rec),
                tags: rec.tags.clone(),
                managed: None,
            })
            .collect();
        let next_link = (end < all.len())
            .then(|| self.next_link(&format!("/keys/{name}/versions"), &end.to_string(), n));
        Ok(edge::json(StatusCode::OK, &Page { value, next_link }))
    }

    pub(super) async fn update(
        &self,
        name: &str,
        version: Option<&str>,
        body: &[u8],
    ) -> ApiResult<Resp> {
        check_name(name)?;
        check_version(name, version)?;
        let req: KeyUpdateParameters = edge::parse_json(body)?;
        no_release_policy(&req.release_policy)?;
        check_tags(req.tags.as_ref())?;
        let (v, cur) = self
            .node
            .store
            .live_version(&self.part.name, name, version)?;
        let s = settable(req.attributes.as_ref(), Some(&cur))?;
        let key_ops = match &req.key_ops {
            Some(_) => {
                let (allowed, describe) = match &cur.token {
                    Some(o) => crate::keystore::token_ops_of(o),
                    None => {
                        let m = self.unseal(name, &v, &cur)?;
                        (m.default_key_ops(), m.describe())
                    }
                };
                Some(key_ops_for(allowed, &describe, req.key_ops.as_ref())?)
            }
            None => None,
        };
        let (p, n, vv, tags) = (
            self.part.name.clone(),
            name.to_string(),
            v.clone(),
            req.tags,
        );
        let rec = self
            .write(move |st| {
                st.update_version(&p, &n, &vv, |r| {
                    r.enabled = s.enabled;
                    r.nbf = s.nbf;
                    r.exp = s.exp;
                    if let Some(ops) = key_ops {
                        r.key_ops = ops;
                    }
                    if tags.is_some() {
                        r.tags = tags;
                    }
                    r.updated = now_secs();
                })
            })
            .await?;
        self.node.cache.invalidate(&self.part.name, name);
        tracing::info!(partition = %self.part.name, key = name, version = %v, "key updated");
        Ok(edge::json(StatusCode::OK, &self.bundle(name, &v, &rec)))
    }

    pub(super) async fn delete(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let now = now_secs();
        let days = i64::from(self.node.settings.recoverable_days);
        let info = DeletedInfo {
            deleted_date: now,
            scheduled_purge_date: now + days * 86_400,
        };
        let (p, n) = (self.part.name.clone(), name.to_string());
        let (nr, vr) = self.write(move |s| s.soft_delete(&p, &n, info)).await?;
        self.node.cache.invalidate(&self.part.name, name);
        m::keys_delta(&self.part.name, -1.0);
        tracing::info!(partition = %self.part.name, key = name, "key deleted");
        Ok(edge::json(
            StatusCode::OK,
            &self.deleted_bundle(name, &nr, &vr),
        ))
    }

    pub(super) fn get_deleted(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let missing = || {
            ApiError::new(
                ErrorCode::DeletedKeyNotFound,
                format!("no deleted key `{name}`"),
            )
        };
        let n = self
            .node
            .store
            .name(&self.part.name, name)?
            .filter(|n| n.deleted.is_some())
            .ok_or_else(missing)?;
        let cur = n.current().ok_or_else(missing)?;
        let vr = self.node.store.version(&self.part.name, name, cur)?;
        Ok(edge::json(
            StatusCode::OK,
            &self.deleted_bundle(name, &n, &vr),
        ))
    }

    pub(super) async fn recover(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let (p, n) = (self.part.name.clone(), name.to_string());
        let (nr, vr) = self.write(move |s| s.recover(&p, &n)).await?;
        self.node.cache.invalidate(&self.part.name, name);
        m::keys_delta(&self.part.name, 1.0);
        tracing::info!(partition = %self.part.name, key = name, "key recovered");
        Ok(edge::json(
            StatusCode::OK,
            &self.bundle(name, nr.current().unwrap_or_default(), &vr),
        ))
    }

    pub(super) async fn purge(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let (p, n) = (self.part.name.clone(), name.to_string());
        self.write(move |s| s.purge(&p, &n)).await?;
        self.node.cache.invalidate(&self.part.name, name);
        tracing::info!(partition = %self.part.name, key = name, "key purged");
        Ok(edge::no_content())
    }

    /// A key backup is its clone blob: sealed under the cloning domain,
    /// restorable on any partition of the domain.
    pub(super) async fn backup(&self, name: &str) -> ApiResult<Resp> {
        check_name(name)?;
        let obj = self.node.store.object(&self.part.name, name)?;
        if !obj.rec.is_live() {
            return Err(ApiError::new(
                ErrorCode::KeyNotFound,
                format!("key `{name}` not found"),
            ));
        }
        let (part, keys) = (
            self.node.partition_arc(&self.part.name)?,
            self.node.keys.clone(),
        );
        let bytes = tokio::task::spawn_blocking(move || backup::export_key(&part, &keys, &obj))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("backup task: {e}")))??;
        tracing::info!(partition = %self.part.name, key = name, "key backed up");
        Ok(edge::json(
            StatusCode::OK,
            &BackupKeyResult {
                value: bytes.into(),
            },
        ))
    }

    /// Restores a backup (a clone blob) under its name, which must be free
    /// here (a tombstone is free); it becomes a new change of that name.
    pub(super) async fn restore(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: KeyRestoreParameters = edge::parse_json(body)?;
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidBackup, m);
        let (part, keys) = (
            self.node.partition_arc(&self.part.name)?,
            self.node.keys.clone(),
        );
        let (p, store) = (self.part.name.clone(), self.node.store.clone());
        let value = req.value.0;
        let (name, obj) = tokio::task::spawn_blocking(move || {
            let opened = backup::open_key(&part, &keys, &value)?;
            let obj = backup::restore_key(&store, &keys, &p, &opened)?;
            Ok::<_, ReplicaError>((opened.name.clone(), obj))
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("storage task: {e}")))?
        .map_err(|e| match e {
            ReplicaError::Invalid(m) => invalid(&m),
            other => other.into(),
        })?;
        self.node.cache.invalidate(&self.part.name, &name);
        m::keys_delta(&self.part.name, 1.0);
        tracing::info!(partition = %self.part.name, key = %name, "key restored");
        let (v, rec) = obj.current().ok_or_else(|| invalid("empty backup"))?;
        Ok(edge::json(StatusCode::OK, &self.bundle(&name, v, rec)))
    }
}
