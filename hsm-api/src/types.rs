//! Request and response bodies of the Key Vault keys dialect.
//!
//! Field names follow the Key Vault REST reference and what the
//! `azure-keyvault-keys` SDK sends (`shared/reference/keyvault-wire.md`).
//! Request bodies refuse unknown fields so a misspelt option is an error,
//! never silently ignored; response bodies skip absent optionals.

use crate::alg::{
    Curve, DeriveAlgorithm, EncryptionAlgorithm, KeyOperation, KeyType, MacAlgorithm, Role,
    SignatureAlgorithm,
};
use crate::b64::B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tags: at most 15 name/value pairs, as Key Vault allows.
pub type Tags = BTreeMap<String, String>;

/// A JSON Web Key (RFC 7517) in Key Vault's spelling. Private members are
/// present only in an import request; a node never returns them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonWebKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<KeyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<KeyOperation>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dq: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qi: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hsm: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<B64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<B64>,
}

/// Key attributes. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<i64>,
    #[serde(rename = "recoveryLevel", skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
    #[serde(rename = "recoverableDays", skip_serializing_if = "Option::is_none")]
    pub recoverable_days: Option<i64>,
    /// Whether the private key may leave the HSM in plaintext. This HSM
    /// never exports it; `true` is refused at create and import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    #[serde(rename = "hsmPlatform", skip_serializing_if = "Option::is_none")]
    pub hsm_platform: Option<String>,
}

/// A key with its attributes: what create, import, get, update, rotate and
/// restore return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyBundle {
    pub key: JsonWebKey,
    pub attributes: KeyAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

/// A soft-deleted key: the bundle plus when it was deleted and will be purged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedKeyBundle {
    #[serde(flatten)]
    pub bundle: KeyBundle,
    #[serde(rename = "recoveryId", skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<String>,
    #[serde(rename = "deletedDate", skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<i64>,
    #[serde(rename = "scheduledPurgeDate", skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<i64>,
}

/// One entry of a key list (no key material, no public key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyItem {
    pub kid: String,
    pub attributes: KeyAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
}

/// One entry of a deleted-key list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedKeyItem {
    #[serde(flatten)]
    pub item: KeyItem,
    #[serde(rename = "recoveryId", skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<String>,
    #[serde(rename = "deletedDate", skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<i64>,
    #[serde(rename = "scheduledPurgeDate", skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<i64>,
}

/// A page of a list; follow `nextLink` while it is not null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub value: Vec<T>,
    #[serde(rename = "nextLink")]
    pub next_link: Option<String>,
}

/// `POST /keys/{name}/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateParameters {
    pub kty: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_exponent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<KeyOperation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    /// Secure key release is not offered; only absent or null is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<serde_json::Value>,
}

impl KeyCreateParameters {
    fn of(kty: KeyType) -> Self {
        KeyCreateParameters {
            kty,
            key_size: None,
            public_exponent: None,
            key_ops: None,
            attributes: None,
            tags: None,
            crv: None,
            release_policy: None,
        }
    }
    /// An RSA key of `bits` (2048, 3072 or 4096).
    pub fn rsa(bits: u32) -> Self {
        KeyCreateParameters {
            key_size: Some(bits),
            ..Self::of(KeyType::RsaHsm)
        }
    }
    /// An EC key on a NIST curve.
    pub fn ec(crv: Curve) -> Self {
        KeyCreateParameters {
            crv: Some(crv),
            ..Self::of(KeyType::EcHsm)
        }
    }
    /// An OKP key (Ed25519 for signing, X25519 for ECDH).
    pub fn okp(crv: Curve) -> Self {
        KeyCreateParameters {
            crv: Some(crv),
            ..Self::of(KeyType::OkpHsm)
        }
    }
    /// A symmetric key of `bits` (AES 128/192/256, or HMAC 256/384/512).
    pub fn oct(bits: u32) -> Self {
        KeyCreateParameters {
            key_size: Some(bits),
            ..Self::of(KeyType::OctHsm)
        }
    }
}

/// `PUT /keys/{name}`: import a JWK.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyImportParameters {
    #[serde(rename = "Hsm", skip_serializing_if = "Option::is_none")]
    pub hsm: Option<bool>,
    pub key: JsonWebKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<serde_json::Value>,
}

/// `PATCH /keys/{name}/{version}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdateParameters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<KeyOperation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<serde_json::Value>,
}

/// `POST .../sign`: `value` is the digest (the message, for EdDSA).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySignParameters {
    pub alg: SignatureAlgorithm,
    pub value: B64,
}

/// `POST .../verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVerifyParameters {
    pub alg: SignatureAlgorithm,
    pub digest: B64,
    pub value: B64,
}

/// `POST .../verify` and `.../verifymac` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyVerifyResult {
    pub value: bool,
}

/// `POST .../encrypt|decrypt|wrapkey|unwrapkey`. `iv` is made by the node
/// on encrypt and must not be sent; `tag` is required on GCM decrypt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOperationsParameters {
    pub alg: EncryptionAlgorithm,
    pub value: B64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<B64>,
}

/// The answer to sign, encrypt, decrypt, wrapkey, unwrapkey and mac.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyOperationResult {
    pub kid: String,
    pub value: B64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<B64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<B64>,
}

/// `POST .../mac` (extension): HMAC over `value` with an oct key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMacParameters {
    pub alg: MacAlgorithm,
    pub value: B64,
}

/// `POST .../verifymac` (extension): constant-time check of `mac`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVerifyMacParameters {
    pub alg: MacAlgorithm,
    pub value: B64,
    pub mac: B64,
}

/// `POST /keys/{name}/{version}/derive` (extension): derive a new oct key
/// named `target` from this key. For ECDH, `peer` is the other party's public
/// JWK; for KBKDF, `info` is the fixed input (label ‖ 0x00 ‖ context ‖ L, as
/// the caller encodes it). The derived key is created in the partition, never
/// returned in plaintext.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDeriveParameters {
    pub alg: DeriveAlgorithm,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<JsonWebKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<B64>,
    /// Size of the derived key in bits (128, 192, 256, 384 or 512); default 256.
    /// For ECDH without `info` it must equal the shared secret's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<KeyOperation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `POST /keys/{name}/backup` answer and `POST /keys/restore` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKeyResult {
    pub value: B64,
}

/// `POST /keys/restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRestoreParameters {
    pub value: B64,
}

/// `POST /rng`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRandomBytesRequest {
    /// 1 to 128 bytes.
    pub count: u32,
}

/// `POST /rng` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomBytes {
    pub value: B64,
}

/// `POST /login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub role: Role,
    pub password: String,
}

/// `POST /login` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// `GET /health` answer: readiness only, never names or secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"ready"` or `"not-ready"`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A member's: a number that changes whenever the `behind` or `synced`
    /// epoch of any of its partitions changes (`GET /partitions/{p}/sync`),
    /// and differs between two runs of the member. A proxy re-reads the
    /// sync state only when this changed since its last read, so a group
    /// in sync costs one request per health check, however many sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_generation: Option<u64>,
}

/// The error body: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

// ---- the member protocol (between the proxy and nodes) ----

/// `GET /inventory`: equal summaries mean equal partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySummary {
    /// Hex SHA-256 over the 256 bucket hashes in order (committed state
    /// only: pending versions are not in the inventory).
    pub summary: String,
    /// Objects (live keys, deleted keys and tombstones).
    pub count: u64,
}

/// One bucket of the inventory: objects whose SHA-256(name) starts with
/// the byte `bucket`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketHash {
    pub bucket: u8,
    /// Hex XOR of the bucket's entry hashes (all zeros when empty).
    pub hash: String,
    pub count: u64,
}

/// How many slices a bucket has: objects of bucket `b` fall in the slice
/// named by the second byte of SHA-256(name).
pub const SLICES: usize = 256;

/// `GET /inventory/buckets/{b}/slices`: a finer comparison of one bucket,
/// so that two members whose bucket differs by a few objects exchange a
/// few entries, not the whole bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventorySlices {
    pub bucket: u8,
    /// For each slice in order, the first 8 bytes of the XOR of its entry
    /// hashes (the same entry hashes as the bucket's), hex: 16 digits per
    /// slice, [`SLICES`] slices, all zeros for an empty slice.
    pub slices: String,
}

impl InventorySlices {
    /// The hash of slice `s` (16 hex digits), if the answer is well formed.
    pub fn slice(&self, s: u8) -> Option<&str> {
        let i = usize::from(s) * 16;
        self.slices.get(i..i + 16)
    }
}

/// `GET /inventory/buckets`: the non-empty buckets; absent ones are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryBuckets {
    pub buckets: Vec<BucketHash>,
}

/// One object in `GET /inventory/buckets/{b}` (a [`Page`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryItem {
    pub name: String,
    /// The current version; none for a tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Higher wins.
    pub generation: u64,
    /// Hex SHA-256 of the object's replicated state.
    pub digest: String,
    /// Purged: only the tombstone remains.
    pub tombstone: bool,
    /// Soft-deleted.
    pub deleted: bool,
    /// Unix seconds of the last change.
    pub updated: i64,
}

/// `POST /clone/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneExportRequest {
    pub name: String,
    /// A version to carry even while it is *pending* (made, not yet
    /// committed): the replication of a new version. Resync never asks for
    /// one: pending versions are not spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The version a clone blob is about ([`CloneExportRequest::version`]),
/// readable so that the proxy can commit it without seeing key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    pub version: String,
    /// The keyed digest of its key material (equal on every member of the
    /// cloning domain, revealing nothing of the key).
    pub material: String,
    /// Whether it was still pending on the exporting member.
    pub pending: bool,
}

/// `POST /clone/commit`: make a pending version usable (listed, current
/// when newest) on this member. Sent by the proxy once the version is
/// durable on `min_replicas` members; idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub name: String,
    pub version: String,
    /// The material digest of [`VersionRef`]: a copy with other material
    /// (another attempt's) is not committed.
    pub material: String,
}

/// The answer to a commit: the object's state afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResult {
    pub generation: u64,
    pub digest: String,
}

/// The version of the member protocol this build speaks: 2 is pending
/// versions, per-version merge and member-held sync state.
pub const MEMBER_PROTOCOL: u32 = 2;

/// `GET /sync`: a member's own view of whether it holds every change of
/// its group (per partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// [`MEMBER_PROTOCOL`] of the member.
    pub protocol: u32,
    /// Raised whenever the member may have missed a change: at every start
    /// of the node, and when a proxy reports a change it could not copy.
    pub behind: u64,
    /// The `behind` epoch the last completed resync round started from:
    /// the member is in sync when `synced >= behind`.
    pub synced: u64,
    /// Unix seconds of the last completed round on this member.
    pub last_synced: i64,
    /// Away (behind) for longer than the tombstone retention: refused by
    /// the group until rebuilt, so that it cannot bring purged keys back.
    pub expired: bool,
    /// The proxy holding the resync lease, if any, and for how long more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

impl SyncState {
    /// Holds every change the group acknowledged (as far as anyone told it).
    pub fn in_sync(&self) -> bool {
        self.synced >= self.behind && !self.expired
    }
}

/// A resync round's lease on a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    pub expires_in_ms: u64,
}

/// `POST /sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SyncRequest {
    /// Take (or renew) the resync lease for `ttl_ms`; granted when free,
    /// expired or already `holder`'s. The answer's `lease` says who holds it.
    Lease { holder: String, ttl_ms: u64 },
    /// Give the lease back (only its holder can).
    Release { holder: String },
    /// A round that started at `epoch` (the `behind` it read with its
    /// lease) compared this member with the group and copied what it
    /// lacked: `synced` becomes `epoch`. Only the lease holder may.
    Commit { holder: String, epoch: u64 },
    /// A proxy could not copy a change here: raise `behind`.
    Behind,
}

/// `POST /clone/withdraw`: take back a version that a create made but
/// could not make durable on `min_replicas` members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawRequest {
    pub name: String,
    pub version: String,
    /// The request id digest (see `request::request_digest`) the version
    /// was made under: only that request's version is withdrawn.
    pub request_id: String,
    /// The stamp of the attempt whose copy is withdrawn: a copy that a
    /// later attempt confirmed (re-stamped) is not.
    pub stamp: u64,
}

/// The answer to a withdraw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawResult {
    /// Whether the member held the version and removed it.
    pub withdrawn: bool,
    /// The object's generation afterwards.
    pub generation: u64,
}

/// A clone blob: the export answer and the import request. Its metadata
/// (name, generation, digest, domain) is readable; key material inside is
/// sealed under the cloning domain, so whoever carries it (the proxy) never
/// sees a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneBlob {
    pub format: String,
    /// Public identifier of the cloning domain.
    pub domain: String,
    pub name: String,
    pub generation: u64,
    pub digest: String,
    /// The version this blob was exported for, if one was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionRef>,
    /// The object's state with its key material, AES-256-GCM under the
    /// domain's clone key, the fields above bound as associated data.
    pub sealed: B64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloneOutcome {
    /// The blob's state was merged in and changed the member's.
    Applied,
    /// The member already held all of it: nothing was written.
    Unchanged,
    /// Part of the blob was refused: the member holds another key material
    /// under one of its versions (see `holds`).
    KeptNewer,
}

/// `POST /clone/import` answer: the member's state of the object afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneImportResult {
    pub outcome: CloneOutcome,
    /// The highest stamp in the object (informational).
    pub generation: u64,
    pub digest: String,
    /// Whether the member now holds everything the blob carried, with the
    /// same key material (the blob's [`VersionRef`] version included): a
    /// durable copy of it.
    #[serde(default)]
    pub holds: bool,
}
