//! Who may do what: role passwords (argon2id), lockout after repeated
//! failures, bearer tokens, and the permission table of the roles.
//!
//! Decides: password hashing parameters, token format and lifetime, and
//! which role may call which route. Never: storing the lockout counters
//! (the store does, inside the same transaction that checks them).

use hsm_api::{Role, Route};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Minimum password length accepted when a password is set.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Hashes a password with argon2id (OWASP parameters: 19 MiB, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Checks a password against a PHC hash; malformed hashes never match.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Refuses passwords too short to be one.
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "passwords must be at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    Ok(())
}

/// Whether `role` may call `route`. Any role may log out (handled before
/// this table, with the token itself). Crypto users use keys; crypto officers
/// also create, import, change, delete and replicate them; the security
/// officer manages the partition and uses no keys; the replication
/// credential reads the inventory and moves clone blobs, nothing else.
pub fn permits(role: Role, route: &Route) -> bool {
    use Route::*;
    let reads = matches!(
        route,
        GetKey { .. } | ListKeys | ListVersions { .. } | ListDeleted | GetDeleted { .. }
    );
    // Deriving makes a new key, so it is management, not use.
    let derives = matches!(
        route,
        Operation {
            op: hsm_api::KeyOp::Derive,
            ..
        }
    );
    let uses = matches!(route, Operation { .. } | Rng) && !derives;
    let manages = derives
        || matches!(
            route,
            CreateKey { .. }
                | ImportKey { .. }
                | UpdateKey { .. }
                | DeleteKey { .. }
                | BackupKey { .. }
                | RestoreKey
                | RotateKey { .. }
                | RecoverDeleted { .. }
                | PurgeDeleted { .. }
        );
    let replicates = matches!(
        route,
        Inventory
            | InventoryBuckets
            | InventoryBucket { .. }
            | InventorySlices { .. }
            | InventorySlice { .. }
            | CloneExport
            | CloneImport
            | CloneWithdraw
            | CloneCommit
            | SyncState
            | Sync
    );
    match role {
        Role::CryptoOfficer => reads || uses || manages || replicates,
        Role::CryptoUser => reads || uses,
        Role::SecurityOfficer => reads,
        Role::Replication => replicates,
    }
}

/// What a valid token stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub partition: String,
    pub role: Role,
    /// The fingerprint of the client certificate that logged in; the token
    /// is refused on a connection with any other certificate.
    pub client: String,
    pub expires: Instant,
}

/// Live bearer tokens, in memory only: a restarted node asks every client
/// to log in again, as a restarted appliance does.
pub struct Sessions {
    ttl: Duration,
    max: usize,
    /// SHA-256 of the token → session (the token itself is not kept).
    map: RwLock<HashMap<[u8; 32], Session>>,
}

fn token_hash(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            ttl,
            max,
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for a session; drops expired sessions when full.
    pub fn issue(&self, partition: &str, role: Role, client: &str) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut raw[..]);
        let token = Zeroizing::new(hsm_api::b64::encode(&raw[..]));
        let now = Instant::now();
        let session = Session {
            partition: partition.to_string(),
            role,
            client: client.to_string(),
            expires: now + self.ttl,
        };
        if let Ok(mut m) = self.map.write() {
            if m.len() >= self.max {
                m.retain(|_, s| s.expires > now);
            }
            if m.len() >= self.max {
                // Still full of live sessions: drop the one closest to expiry.
                if let Some(k) = m.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                    m.remove(&k);
                }
            }
            m.insert(token_hash(&token), session);
        }
        token
    }

    /// The session of a token, if it is live.
    pub fn check(&self, token: &str) -> Option<Session> {
        let m = self.map.read().ok()?;
        let s = m.get(&token_hash(token))?;
        (s.expires > Instant::now()).then(|| s.clone())
    }

    /// Ends the session of a token (a logout); whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        let now = Instant::now();
        match self.map.write() {
            Ok(mut m) => m
                .remove(&token_hash(token))
                .is_some_and(|s| s.expires > now),
            Err(_) => false,
        }
    }

    /// Ends every session (zeroization).
    pub fn clear(&self) {
        if let Ok(mut m) = self.map.write() {
            m.clear();
        }
    }

    /// Ends every session of a partition (its deletion, a password change).
    pub fn revoke_partition(&self, partition: &str) {
        if let Ok(mut m) = self.map.write() {
            m.retain(|_, s| s.partition != partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap_or_default();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_are_bound_and_expire() {
        let s = Sessions::new(Duration::from_millis(50), 10);
        let t = s.issue("p1", Role::CryptoUser, "fp");
        assert!(s.check(&t).is_some_and(|x| x.role == Role::CryptoUser));
        assert!(s.check("forged").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.check(&t).is_none());
    }

    #[test]
    fn a_revoked_token_is_refused_and_others_are_not() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let t = s.issue("p1", Role::CryptoOfficer, "fp");
        let other = s.issue("p1", Role::CryptoOfficer, "fp");
        assert!(s.revoke(&t));
        assert!(s.check(&t).is_none());
        assert!(!s.revoke(&t), "a second logout finds nothing");
        assert!(s.check(&other).is_some());
    }

    #[test]
    fn crypto_user_cannot_manage_keys() {
        let create = Route::CreateKey { name: "k".into() };
        assert!(!permits(Role::CryptoUser, &create));
        assert!(permits(Role::CryptoOfficer, &create));
        assert!(!permits(Role::SecurityOfficer, &Route::Rng));
    }
}
