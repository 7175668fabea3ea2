//! Tests of the crypto module.
//!
//! - `roundtrip`: every key type and algorithm through its operations.
//! - `crosscheck`: RustCrypto implementations check our outputs and we check theirs.
//! - `wycheproof`: Wycheproof signature and key-wrap vectors.
//! - `vectors`: RFC 3394 / RFC 5649 key wrap and NIST CAVP SP 800-108 KBKDF vectors.
//! - `bad_inputs`: each wrong input gives its precise error code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_inputs;
mod crosscheck;
mod roundtrip;
mod vectors;
mod wycheproof;

use super::*;
use hsm_api::{
    Curve, EncryptionAlgorithm, ErrorCode, JsonWebKey, KeyType, SignatureAlgorithm, B64,
};
use sha2::Digest as _;
use std::sync::OnceLock;

/// The digest `alg` signs, computed with RustCrypto's sha2 (not aws-lc).
/// For EdDSA the "digest" is the message itself.
pub(super) fn digest_for(alg: SignatureAlgorithm, msg: &[u8]) -> Vec<u8> {
    match alg.digest_len() {
        Some(32) => sha2::Sha256::digest(msg).to_vec(),
        Some(48) => sha2::Sha384::digest(msg).to_vec(),
        Some(64) => sha2::Sha512::digest(msg).to_vec(),
        _ => msg.to_vec(),
    }
}

pub(super) fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    ::hex::decode(clean).expect("test hex")
}

/// One RSA-2048 key shared by the tests (generation is the slow part).
pub(super) fn rsa2048() -> &'static KeyMaterial {
    static K: OnceLock<KeyMaterial> = OnceLock::new();
    K.get_or_init(|| KeyMaterial::generate(&KeySpec::Rsa { bits: 2048 }).unwrap())
}

pub(super) fn gen(spec: KeySpec) -> KeyMaterial {
    KeyMaterial::generate(&spec).unwrap()
}

pub(super) fn load(m: &KeyMaterial) -> LoadedKey {
    LoadedKey::load(m).unwrap()
}

/// An oct key with the given bytes, through the JWK import path.
pub(super) fn oct(k: &[u8]) -> LoadedKey {
    let jwk = JsonWebKey {
        kty: Some(KeyType::Oct),
        k: Some(B64(k.to_vec())),
        ..JsonWebKey::default()
    };
    load(&KeyMaterial::from_jwk(&jwk).unwrap())
}

/// The error code of a result that must be an error.
pub(super) fn code<T: std::fmt::Debug>(r: Result<T, CryptoError>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

/// The public-only twin of a key, through its public JWK.
pub(super) fn public_twin(m: &KeyMaterial) -> KeyMaterial {
    KeyMaterial::from_jwk(&m.public_jwk()).unwrap()
}

/// Signature algorithms per (generated) key kind.
pub(super) fn sig_algs(m: &KeyMaterial) -> Vec<SignatureAlgorithm> {
    use SignatureAlgorithm::*;
    match (m.family(), m.curve()) {
        (hsm_api::KeyFamily::Rsa, _) => vec![Rs256, Rs384, Rs512, Ps256, Ps384, Ps512],
        (_, Some(Curve::P256)) => vec![Es256],
        (_, Some(Curve::P384)) => vec![Es384],
        (_, Some(Curve::P521)) => vec![Es512],
        (_, Some(Curve::Ed25519)) => vec![EdDsa],
        _ => vec![],
    }
}
