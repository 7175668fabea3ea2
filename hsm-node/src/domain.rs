//! The cloning domain: a secret shared by the partitions of one HA group,
//! from which the keys that protect backups (and, later, clone blobs) are
//! derived. A blob made under one domain opens only under the same domain.
//!
//! Decides: the domain file format (32+ random bytes, mode 0600), the
//! derivation of purpose keys (HKDF-SHA256 with a purpose label) and the
//! public domain identifier (a hash that reveals nothing of the secret).

use aws_lc_rs::hkdf;
use sha2::{Digest, Sha256};
use std::path::Path;
use zeroize::Zeroizing;

/// Bytes in a newly made domain secret.
pub const DOMAIN_SECRET_LEN: usize = 32;

/// A cloning-domain secret.
pub struct Domain {
    secret: Zeroizing<Vec<u8>>,
}

impl Domain {
    pub fn from_secret(secret: &[u8]) -> Result<Domain, String> {
        if secret.len() < 16 {
            return Err(format!(
                "a domain secret must be at least 16 bytes, got {}",
                secret.len()
            ));
        }
        Ok(Domain {
            secret: Zeroizing::new(secret.to_vec()),
        })
    }

    /// A fresh random domain.
    pub fn generate() -> Result<Domain, String> {
        let bytes = crate::crypto::random_bytes(DOMAIN_SECRET_LEN).map_err(|e| e.to_string())?;
        Domain::from_secret(&bytes)
    }

    /// Reads a domain file, or creates it (mode 0600) when it does not exist.
    /// Returns the domain and whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(Domain, bool), String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                Ok((
                    Domain::from_secret(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let d = Domain::generate()?;
                crate::pki::write_new(path, &d.secret).map_err(|e| e.to_string())?;
                Ok((d, true))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// A short public identifier of the domain, safe to show and to put in
    /// blobs, so a blob from another domain is named as such.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"hsm-ha domain id v1\0");
        h.update(&self.secret[..]);
        hex::encode(&h.finalize()[..8])
    }

    /// The 32-byte key for one purpose (`"backup v1"`, …).
    pub fn purpose_key(&self, purpose: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hsm-ha cloning domain");
        let prk = salt.extract(&self.secret);
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| "hkdf expand".to_string())?;
        let mut out = Zeroizing::new([0u8; 32]);
        okm.fill(&mut out[..])
            .map_err(|_| "hkdf fill".to_string())?;
        Ok(out)
    }
}

impl Domain {
    /// A digest (hex) of key material that is equal on every member of the
    /// domain and reveals nothing of the key without the domain secret:
    /// HMAC-SHA256 under the domain's "material digest v1" key.
    pub fn material_digest(&self, material: &[u8]) -> Result<String, String> {
        let k = self.purpose_key("material digest v1")?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &k[..]);
        Ok(hex::encode(aws_lc_rs::hmac::sign(&key, material).as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_keys_differ_by_domain_and_purpose() {
        let a = Domain::from_secret(&[1u8; 32]).ok();
        let b = Domain::from_secret(&[2u8; 32]).ok();
        let (Some(a), Some(b)) = (a, b) else {
            panic!("domains")
        };
        let ka = a.purpose_key("backup v1").ok().map(|k| *k);
        assert_eq!(ka, a.purpose_key("backup v1").ok().map(|k| *k));
        assert_ne!(ka, b.purpose_key("backup v1").ok().map(|k| *k));
        assert_ne!(ka, a.purpose_key("clone v1").ok().map(|k| *k));
        assert_ne!(a.id(), b.id());
        assert!(Domain::from_secret(&[0u8; 8]).is_err());
    }
}
