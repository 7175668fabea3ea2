//! Operations over raw bytes: random, AES-256-GCM seal/open, KBKDF.

use super::CryptoError;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::kdf::{get_kbkdf_ctr_hmac_algorithm, kbkdf_ctr_hmac, KbkdfCtrHmacAlgorithmId};
use hsm_api::DeriveAlgorithm;
use zeroize::Zeroizing;

/// Length of the GCM authentication tag produced by [`seal`].
const TAG_LEN: usize = 16;

/// The largest output [`kbkdf`] produces, in bytes. Derived keys are at most
/// 512 bits; the margin leaves room for callers deriving several at once.
pub const KBKDF_MAX_OUTPUT: usize = 1024;

/// `n` cryptographically random bytes from the library's DRBG.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut out)
        .map_err(|_| CryptoError::Internal("random generator failed"))?;
    Ok(out)
}

/// A fresh random 96-bit GCM nonce.
pub(crate) fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut n = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| CryptoError::Internal("random generator failed"))?;
    Ok(n)
}

fn gcm256(key: &[u8; 32]) -> Result<LessSafeKey, CryptoError> {
    let unbound = UnboundKey::new(&AES_256_GCM, key)
        .map_err(|_| CryptoError::Internal("AES-256-GCM key setup failed"))?;
    Ok(LessSafeKey::new(unbound))
}

/// AES-256-GCM with a random nonce: returns `nonce(12) || ciphertext || tag(16)`.
/// `aad` is authenticated, not encrypted, and must be given again to [`open`].
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let k = gcm256(key)?;
    let nonce = random_nonce()?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Internal("AES-256-GCM seal failed"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`seal`] made with the same key and `aad`.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::DecryptionFailed(
            "sealed data is shorter than nonce and tag",
        ));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| CryptoError::Internal("nonce of wrong length"))?;
    let k = gcm256(key)?;
    let mut buf = Zeroizing::new(rest.to_vec());
    let len = k
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::DecryptionFailed("authentication of sealed data failed"))?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// NIST SP 800-108 KBKDF in counter mode: a 32-bit big-endian counter
/// (starting at 1) before the fixed input `info`, PRF HMAC-SHA256/384/512
/// keyed with `secret`. `info` is used as given (label ‖ 0x00 ‖ context ‖ L,
/// as the caller encodes it).
pub fn kbkdf(
    alg: DeriveAlgorithm,
    secret: &[u8],
    info: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let id = match alg {
        DeriveAlgorithm::KbkdfHmacSha256 => KbkdfCtrHmacAlgorithmId::Sha256,
        DeriveAlgorithm::KbkdfHmacSha384 => KbkdfCtrHmacAlgorithmId::Sha384,
        DeriveAlgorithm::KbkdfHmacSha512 => KbkdfCtrHmacAlgorithmId::Sha512,
        DeriveAlgorithm::Ecdh => {
            return Err(CryptoError::bad(
                "ECDH is not a KBKDF algorithm; use KBKDF-CTR-HMAC-SHA256/384/512",
            ))
        }
    };
    if out_len == 0 || out_len > KBKDF_MAX_OUTPUT {
        return Err(CryptoError::bad(format!(
            "KBKDF output length must be 1 to {KBKDF_MAX_OUTPUT} bytes, got {out_len}"
        )));
    }
    if secret.is_empty() {
        return Err(CryptoError::bad("the KBKDF key-derivation key is empty"));
    }
    let algorithm = get_kbkdf_ctr_hmac_algorithm(id)
        .ok_or(CryptoError::Internal("KBKDF algorithm unavailable"))?;
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    kbkdf_ctr_hmac(algorithm, secret, info, &mut out)
        .map_err(|_| CryptoError::Internal("KBKDF failed"))?;
    Ok(out)
}
