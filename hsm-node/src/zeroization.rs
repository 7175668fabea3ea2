//! Zeroization: destroying a node's secrets irreversibly, on command or on
//! a tamper event, as the seed appliance does.
//!
//! Decides: what is destroyed (the master key, which seals every
//! partition's key-encryption key, overwritten then removed; the database,
//! overwritten then removed) and what stays (settings, TLS identity, the
//! audit trail and its key, so the event itself remains provable), and the
//! marker `DIR/ZEROIZED` that keeps the node refusing key operations until
//! `hsm-node init` initialises it again.
//!
//! Key material in the database is sealed under keys that only the master
//! key opens, so destroying the master key alone already makes it
//! unrecoverable (cryptographic erasure); the database is overwritten too so
//! that not even sealed material remains on the file system path.

use crate::layout::NodeDir;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Contents of `DIR/ZEROIZED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// Unix seconds.
    pub time: i64,
    /// Why: "command", "admin API", "tamper: SIGUSR2"…
    pub reason: String,
}

impl Marker {
    /// The message every refused request carries.
    pub fn message(&self) -> String {
        format!(
            "this node was zeroized ({}) at Unix time {}; it holds no keys until it is initialised again with `hsm-node init`",
            self.reason, self.time
        )
    }
}

fn marker_path(dir: &NodeDir) -> std::path::PathBuf {
    dir.root.join("ZEROIZED")
}

/// The marker, if the node was zeroized.
pub fn marker(dir: &NodeDir) -> Option<Marker> {
    let bytes = std::fs::read(marker_path(dir)).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or(Marker {
        time: 0,
        reason: "unreadable marker".into(),
    }))
}

/// Removes the marker (re-initialisation).
pub fn clear_marker(dir: &NodeDir) -> Result<(), String> {
    match std::fs::remove_file(marker_path(dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", marker_path(dir).display())),
    }
}

/// Overwrites a file in place (random bytes, then zeros), syncs, removes it.
fn shred(path: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len() as usize,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    let chunk = 1 << 20;
    for pass in 0..2 {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).map_err(err)?;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk);
            let buf = if pass == 0 {
                crate::crypto::random_bytes(n).map_err(|e| e.to_string())?
            } else {
                vec![0u8; n]
            };
            f.write_all(&buf).map_err(err)?;
            left -= n;
        }
        f.sync_all().map_err(err)?;
    }
    drop(f);
    std::fs::remove_file(path).map_err(err)
}

/// Destroys the node's secrets and writes the marker. The marker is
/// written first, so a crash half-way still leaves a node that refuses to
/// serve keys and says why.
pub fn destroy(dir: &NodeDir, reason: &str) -> Result<Marker, String> {
    let m = Marker {
        time: crate::clock::now_secs(),
        reason: reason.to_string(),
    };
    let path = marker_path(dir);
    let text = serde_json::to_vec(&m).map_err(|e| e.to_string())?;
    hsm_server::private_fs::write_atomic(&path, &text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    shred(&dir.master_key())?;
    shred(&dir.database())?;
    // Make the removals durable.
    if let Ok(d) = std::fs::File::open(&dir.root) {
        let _ = d.sync_all();
    }
    tracing::warn!(reason, "node zeroized");
    Ok(m)
}
