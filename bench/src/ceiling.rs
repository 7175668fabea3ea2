//! The raw ceiling: the same operations done in this process with
//! aws-lc-rs (the library the nodes use), with no network, TLS, HTTP,
//! JSON or process hop. A side run with it shows what the cores could do
//! at most; every other side is a share of it.
//!
//! Decides: the in-process equivalent of each [`Op`] — ES256 and RS256
//! sign the workload's SHA-256 digest as a node does (`sign_digest`, no
//! hashing), A256GCM seals the workload's plaintext under a fresh random
//! nonce — and checks each answer's length as [`Op::send`] does.

use crate::workload::{Op, Payload};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use std::sync::Arc;

/// Setting up or running an in-process operation failed.
#[derive(Debug, thiserror::Error)]
#[error("in-process {what}: aws-lc-rs refused")]
pub struct CeilingError {
    what: &'static str,
}

fn refused(what: &'static str) -> impl FnOnce(aws_lc_rs::error::Unspecified) -> CeilingError {
    move |_| CeilingError { what }
}

/// One key per operation, generated in memory. Cheap to clone.
#[derive(Clone)]
pub struct Ceiling {
    keys: Arc<Keys>,
}

struct Keys {
    ec: EcdsaKeyPair,
    rsa: RsaKeyPair,
    aes: LessSafeKey,
    digest: Digest,
    rng: SystemRandom,
}

impl Ceiling {
    /// Generates the keys (an RSA-2048 key takes a moment) and imports the
    /// payload's digest.
    pub fn new(payload: &Payload) -> Result<Ceiling, CeilingError> {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(refused("EC key generation"))?;
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).map_err(refused("RSA key generation"))?;
        let mut secret = [0u8; 32];
        rng.fill(&mut secret).map_err(refused("random"))?;
        let aes =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &secret).map_err(refused("AES key"))?);
        let digest =
            Digest::import_less_safe(&payload.digest, &SHA256).map_err(refused("digest import"))?;
        Ok(Ceiling {
            keys: Arc::new(Keys {
                ec,
                rsa,
                aes,
                digest,
                rng,
            }),
        })
    }

    /// Does `op` once on this thread.
    pub fn run(&self, op: Op, payload: &Payload) -> Result<(), CeilingError> {
        let k = &self.keys;
        let len = match op {
            Op::Es256 => {
                k.ec.sign_digest(&k.digest)
                    .map_err(refused("ES256"))?
                    .as_ref()
                    .len()
            }
            Op::Rs256 => {
                let mut sig = vec![0u8; k.rsa.public_modulus_len()];
                k.rsa
                    .sign_digest(&RSA_PKCS1_SHA256, &k.digest, &mut sig)
                    .map_err(refused("RS256"))?;
                sig.len()
            }
            Op::A256gcm => {
                let mut nonce = [0u8; NONCE_LEN];
                k.rng.fill(&mut nonce).map_err(refused("random"))?;
                let mut buf = payload.plaintext.as_ref().clone();
                let tag = k
                    .aes
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .map_err(refused("A256GCM"))?;
                // The dialect answers the tag apart from the ciphertext.
                if tag.as_ref().len() != 16 {
                    return Err(CeilingError { what: op.name() });
                }
                buf.len()
            }
        };
        if len != op.answer_len() {
            return Err(CeilingError { what: op.name() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn every_operation_runs_and_an_es256_signature_verifies() {
        let p = Payload::new();
        let c = Ceiling::new(&p).unwrap();
        for op in Op::ALL {
            c.run(op, &p).unwrap();
        }
        // The signature is over the digest as given (no second hash): it
        // verifies against the message whose SHA-256 the digest is.
        let msg = b"the workload's message";
        let p = Payload {
            digest: Arc::new(aws_lc_rs::digest::digest(&SHA256, msg).as_ref().to_vec()),
            ..p
        };
        let c = Ceiling::new(&p).unwrap();
        let sig = c.keys.ec.sign_digest(&c.keys.digest).unwrap();
        use aws_lc_rs::signature::KeyPair;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, c.keys.ec.public_key().as_ref())
            .verify(msg, sig.as_ref())
            .unwrap();
    }
}
