//! A partition's secrets in memory and how key material is sealed at rest.
//!
//! Decides: the associated data that binds every sealed secret to its place
//! (a KEK to its partition, key material to its partition, name and
//! version), and the keyed material digest members compare. Never: where
//! records are stored (`store`) or who may ask (`auth`).

use crate::crypto::{self, KeyMaterial};
use crate::domain::Domain;
use crate::store::PartitionRecord;
use std::collections::HashSet;
use zeroize::Zeroizing;

/// A partition's unsealed secrets and registered clients, kept in memory.
pub struct PartitionState {
    pub name: String,
    /// Key-encryption key: seals every key's material at rest.
    pub kek: Zeroizing<[u8; 32]>,
    /// Fingerprints of the client certificates registered to it.
    pub clients: HashSet<String>,
    /// Its cloning domain.
    pub domain: Domain,
    /// One password check at a time per role (see [`Self::login_turn`]).
    logins: [std::sync::Mutex<()>; hsm_api::Role::ALL.len()],
}

/// The associated data that binds a sealed KEK to its partition.
pub fn kek_aad(partition: &str) -> Vec<u8> {
    format!("hsm-node/partition-kek/v1\0{partition}").into_bytes()
}

/// The associated data that binds a sealed domain secret to its partition.
pub fn domain_aad(partition: &str) -> Vec<u8> {
    format!("hsm-node/partition-domain/v1\0{partition}").into_bytes()
}

/// The associated data that binds sealed key material to its place.
pub fn material_aad(p: &str, name: &str, version: &str) -> Vec<u8> {
    format!("hsm-node/key-material/v1\0{p}\0{name}\0{version}").into_bytes()
}

impl PartitionState {
    /// The turn a login as `role` takes: a password check and its failure
    /// count are one step, so parallel guesses cannot share the last
    /// attempt; no check holds the store's write lock while it hashes (key
    /// changes and copies never wait behind logins), and guesses at one
    /// role never queue in front of another role's logins.
    pub fn login_turn(&self, role: hsm_api::Role) -> &std::sync::Mutex<()> {
        let i = hsm_api::Role::ALL
            .iter()
            .position(|r| *r == role)
            .unwrap_or(0);
        &self.logins[i]
    }

    /// Unseals a partition's KEK and domain secret with the master key.
    pub fn unseal(master: &[u8; 32], rec: &PartitionRecord) -> Result<PartitionState, String> {
        let kek = crypto::open(master, &kek_aad(&rec.name), rec.kek_sealed.as_slice())
            .map_err(|e| format!("key-encryption key: {e}"))?;
        let mut k = Zeroizing::new([0u8; 32]);
        if kek.len() != 32 {
            return Err("partition KEK has the wrong length".into());
        }
        k.copy_from_slice(&kek);
        let secret = crypto::open(master, &domain_aad(&rec.name), rec.domain_sealed.as_slice())
            .map_err(|e| format!("domain secret: {e}"))?;
        Ok(PartitionState {
            name: rec.name.clone(),
            kek: k,
            clients: rec.clients.keys().cloned().collect(),
            domain: Domain::from_secret(&secret)?,
            logins: Default::default(),
        })
    }

    /// Seals key material for (name, version) of this partition; returns the
    /// sealed bytes and the material digest.
    pub fn seal_material(
        &self,
        name: &str,
        version: &str,
        m: &KeyMaterial,
    ) -> Result<(Vec<u8>, String), String> {
        let bytes = m.to_bytes();
        let sealed = crypto::seal(&self.kek, &material_aad(&self.name, name, version), &bytes)
            .map_err(|e| e.to_string())?;
        Ok((sealed, self.domain.material_digest(&bytes)?))
    }

    /// Unseals and parses the material of (name, version). A failure means
    /// the database was altered or belongs to another partition.
    pub fn unseal_material(
        &self,
        name: &str,
        version: &str,
        sealed: &[u8],
    ) -> Result<KeyMaterial, String> {
        let bytes = crypto::open(&self.kek, &material_aad(&self.name, name, version), sealed)
            .map_err(|e| {
                format!("stored key material of {name}/{version} failed its integrity check: {e}")
            })?;
        KeyMaterial::from_bytes(&bytes)
            .map_err(|e| format!("stored key material of {name}/{version}: {e}"))
    }
}
