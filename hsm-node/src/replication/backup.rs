//! Backups: a partition backup file and a key backup are clone blobs of
//! the cloning domain (`replication`), so only members of the domain can
//! restore them.
//!
//! Decides: the partition backup format (JSON lines: a header naming the
//! domain and the partition, one clone blob per object, a trailer with the
//! count and an HMAC under the domain's "partition backup v1" key, so a
//! truncated, reordered or spliced file is refused before anything is
//! restored), that a restore is all or nothing into an empty partition, and
//! the key backup of the Key Vault dialect (one key's clone blob as JSON).
//! One implementation for the offline CLI (`offline`) and the HTTP admin
//! API and key handlers (`service`). Never: who may back up or restore, or
//! where the bytes go.

use super::{Opened, ReplicaError};
use crate::clock::now_secs;
use crate::keystore::KeyStore;
use crate::partition::PartitionState;
use crate::store::{Object, Store, StoreError};

/// Why a partition backup could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> BackupError {
    BackupError::Invalid(m.into())
}

/// The format tag of partition backup files.
pub const PARTITION_BACKUP_FORMAT: &str = "hsm-node-partition-backup/1";
const PARTITION_BACKUP_PURPOSE: &str = "partition backup v1";

/// The first line of a partition backup file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupHeader {
    format: String,
    /// Public id of the cloning domain: only its members can restore.
    domain: String,
    /// The partition it was taken from (restore may target another name).
    partition: String,
    created: i64,
}

/// The last line: the object count and an HMAC (under the domain's
/// "partition backup v1" key) over every line before it, so a truncated,
/// reordered or spliced file is refused before anything is restored.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupTrailer {
    count: usize,
    mac: String,
}

fn backup_mac(part: &PartitionState) -> Result<aws_lc_rs::hmac::Context, BackupError> {
    let k = part
        .domain
        .purpose_key(PARTITION_BACKUP_PURPOSE)
        .map_err(invalid)?;
    Ok(aws_lc_rs::hmac::Context::with_key(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &k[..]),
    ))
}

/// Every object name of a partition (live, deleted and tombstones).
fn object_names(store: &Store, partition: &str) -> Result<Vec<String>, BackupError> {
    let mut names = Vec::new();
    for b in 0..=255u8 {
        let (entries, _) = store.inventory_entries(partition, b, None, usize::MAX)?;
        names.extend(entries.into_iter().map(|e| e.name));
    }
    Ok(names)
}

/// Writes a partition backup (JSON lines: header, one clone blob per
/// object, trailer with the count and the MAC) to `w`. Used by the CLI
/// (`offline`, to a file) and the admin API (`service::admin_api`, to the
/// answer).
pub fn write_backup(
    store: &Store,
    part: &PartitionState,
    keys: &KeyStore,
    w: &mut impl std::io::Write,
) -> Result<usize, BackupError> {
    let names = object_names(store, &part.name)?;
    let mut mac = backup_mac(part)?;
    let io = |e: std::io::Error| invalid(format!("writing the backup: {e}"));
    let mut line = |w: &mut dyn std::io::Write, text: String| -> Result<(), BackupError> {
        mac.update(text.as_bytes());
        mac.update(b"\n");
        writeln!(w, "{text}").map_err(io)
    };
    let header = BackupHeader {
        format: PARTITION_BACKUP_FORMAT.into(),
        domain: part.domain.id(),
        partition: part.name.clone(),
        created: now_secs(),
    };
    line(
        w,
        serde_json::to_string(&header).map_err(|e| invalid(e.to_string()))?,
    )?;
    for name in &names {
        let blob =
            super::export(store, part, keys, name, None).map_err(|e| invalid(e.to_string()))?;
        line(
            w,
            serde_json::to_string(&blob).map_err(|e| invalid(e.to_string()))?,
        )?;
    }
    let trailer = BackupTrailer {
        count: names.len(),
        mac: hex::encode(mac.sign().as_ref()),
    };
    writeln!(
        w,
        "{}",
        serde_json::to_string(&trailer).map_err(|e| invalid(e.to_string()))?
    )
    .map_err(io)?;
    Ok(names.len())
}

/// Restores a backup's text into an empty partition: the whole text is
/// checked first (format, domain, MAC, count, every blob), then every
/// object is installed in one transaction. `source` names the input in errors.
pub fn restore_backup(
    store: &Store,
    part: &PartitionState,
    keys: &KeyStore,
    text: &str,
    source: &str,
) -> Result<usize, BackupError> {
    let partition = part.name.as_str();
    let (_, count) = store.inventory_summary(partition)?;
    if count != 0 {
        return Err(invalid(format!(
            "partition `{partition}` holds {count} objects; restore needs an empty partition"
        )));
    }
    let bad = |m: &str| invalid(format!("{source}: {m}"));
    let lines: Vec<&str> = text.lines().collect();
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        return Err(bad("empty file"));
    };
    if lines.len() < 2 {
        return Err(bad("not a partition backup (no trailer)"));
    }
    let header: BackupHeader =
        serde_json::from_str(first).map_err(|_| bad("not a partition backup"))?;
    if header.format != PARTITION_BACKUP_FORMAT {
        return Err(bad("unknown backup format"));
    }
    if header.domain != part.domain.id() {
        return Err(bad(&format!(
            "the backup belongs to cloning domain {}, partition `{partition}` to {}",
            header.domain,
            part.domain.id()
        )));
    }
    let trailer: BackupTrailer =
        serde_json::from_str(last).map_err(|_| bad("the file is truncated"))?;
    let body = &lines[1..lines.len() - 1];
    let want = hex::decode(&trailer.mac).map_err(|_| bad("malformed trailer"))?;
    let k = part
        .domain
        .purpose_key(PARTITION_BACKUP_PURPOSE)
        .map_err(invalid)?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &k[..]);
    let mut msg = Vec::new();
    for l in lines[..lines.len() - 1].iter() {
        msg.extend_from_slice(l.as_bytes());
        msg.push(b'\n');
    }
    if aws_lc_rs::hmac::verify(&key, &msg, &want).is_err() || trailer.count != body.len() {
        return Err(bad("the file was altered, truncated or reordered"));
    }
    let mut opened = Vec::with_capacity(body.len());
    for (i, l) in body.iter().enumerate() {
        let blob: hsm_api::CloneBlob = serde_json::from_str(l)
            .map_err(|_| bad(&format!("line {}: not a clone blob", i + 2)))?;
        match super::open(part, keys, &blob, &|_, _| false) {
            Ok(o) => opened.push(o),
            Err(e) => {
                for o in &opened {
                    keys.forget_blocking(&o.orphans(None));
                }
                return Err(bad(&format!("line {}: {e}", i + 2)));
            }
        }
    }
    super::apply_all(store, keys, partition, &opened).map_err(|e| invalid(e.to_string()))
}

/// A key backup (`POST /keys/{name}/backup`): the key's clone blob, as JSON.
pub fn export_key(
    part: &PartitionState,
    keys: &KeyStore,
    obj: &Object,
) -> Result<Vec<u8>, ReplicaError> {
    let blob = super::export_object(part, keys, obj, None)?;
    serde_json::to_vec(&blob).map_err(|e| ReplicaError::Internal(e.to_string()))
}

/// Opens a key backup (`POST /keys/restore`) for [`restore_key`]: it
/// must be a clone blob of this domain holding a live key. A blob that is
/// not one is `ReplicaError::Invalid`, worded for a backup.
pub fn open_key(
    part: &PartitionState,
    keys: &KeyStore,
    bytes: &[u8],
) -> Result<Opened, ReplicaError> {
    let invalid = |m: &str| ReplicaError::Invalid(m.into());
    let blob: hsm_api::CloneBlob =
        serde_json::from_slice(bytes).map_err(|_| invalid("not a key backup of this HSM"))?;
    let opened = super::open_as(part, keys, &blob, "backup", &|_, _| false)?;
    if !opened.is_live() {
        keys.forget_blocking(&opened.orphans(None));
        return Err(invalid("the backup holds no live key"));
    }
    Ok(opened)
}

/// Restores a blob as a new change under its name, which must be free
/// (a tombstone is free): the single-key restore of the dialect. The
/// committed versions are stamped anew (`Object::restore_versions`).
pub fn restore_key(
    store: &Store,
    keys: &KeyStore,
    partition: &str,
    o: &Opened,
) -> Result<Object, ReplicaError> {
    let r = restore_key_inner(store, partition, o);
    keys.forget_blocking(&o.orphans(r.as_ref().ok()));
    r
}

fn restore_key_inner(store: &Store, partition: &str, o: &Opened) -> Result<Object, ReplicaError> {
    let (_, obj) = store.with_object(partition, &o.name, |local| {
        if local.rec.is_live() || local.rec.is_deleted() {
            return Err(StoreError::NameTaken(o.name.clone()));
        }
        local.restore_versions(
            o.rec
                .versions
                .iter()
                .filter_map(|v| o.versions.get(v).map(|r| (v.clone(), r.clone())))
                .collect(),
        );
        Ok(())
    })?;
    Ok(obj)
}
