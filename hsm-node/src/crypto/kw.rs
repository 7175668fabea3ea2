//! AES key wrap (RFC 3394) and key wrap with padding (RFC 5649) over the
//! AES block function (aws-lc-rs `cipher`, ECB on single blocks).
//!
//! aws-lc-rs's `key_wrap` module offers AES-128 and AES-256 KEKs only; this
//! module serves the AES-192 ones (A192KW, A192KWPAD). It works for any AES
//! key size, which the tests use to check it against `key_wrap` for 128/256
//! and against the RFC and Wycheproof vectors for 192.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use zeroize::Zeroizing;

/// RFC 3394 §2.2.3.1 default initial value.
const KW_IV: [u8; 8] = [0xa6; 8];
/// RFC 5649 §3 alternative initial value, high half.
const KWP_PREFIX: [u8; 4] = [0xa6, 0x59, 0x59, 0xa6];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KwError {
    /// The input's length is not one the algorithm takes.
    Length,
    /// The integrity check failed (wrong key or modified ciphertext).
    Integrity,
    /// The cipher could not be set up or run.
    Internal,
}

fn cipher_key(key: &[u8]) -> Result<UnboundCipherKey, KwError> {
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        _ => return Err(KwError::Internal),
    };
    UnboundCipherKey::new(alg, key).map_err(|_| KwError::Internal)
}

struct Enc(EncryptingKey);

impl Enc {
    fn new(key: &[u8]) -> Result<Enc, KwError> {
        EncryptingKey::ecb(cipher_key(key)?)
            .map(Enc)
            .map_err(|_| KwError::Internal)
    }
    fn block(&self, b: &mut [u8; 16]) -> Result<(), KwError> {
        self.0.encrypt(b).map(|_| ()).map_err(|_| KwError::Internal)
    }
}

struct Dec(DecryptingKey);

impl Dec {
    fn new(key: &[u8]) -> Result<Dec, KwError> {
        DecryptingKey::ecb(cipher_key(key)?)
            .map(Dec)
            .map_err(|_| KwError::Internal)
    }
    fn block(&self, b: &mut [u8; 16]) -> Result<(), KwError> {
        self.0
            .decrypt(b, DecryptionContext::None)
            .map(|_| ())
            .map_err(|_| KwError::Internal)
    }
}

/// Whether `n` is a whole number of 64-bit semiblocks.
pub(crate) fn multiple_of_8(n: usize) -> bool {
    n & 7 == 0
}

fn xor_counter(a: &mut [u8; 8], t: u64) {
    for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
        *x ^= y;
    }
}

fn half(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// The wrapping process W (RFC 3394 §2.2.1, index form) over `r`, which
/// holds n >= 2 64-bit blocks; returns the final A.
fn w(enc: &Enc, iv: [u8; 8], r: &mut [u8]) -> Result<[u8; 8], KwError> {
    let n = r.len() / 8;
    let mut a = iv;
    let mut b = Zeroizing::new([0u8; 16]);
    for j in 0..6u64 {
        for (i, ri) in r.chunks_exact_mut(8).enumerate() {
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            enc.block(&mut b)?;
            a = half(&b[..8]);
            xor_counter(&mut a, n as u64 * j + i as u64 + 1);
            ri.copy_from_slice(&b[8..]);
        }
    }
    Ok(a)
}

/// The unwrapping process W^-1 (RFC 3394 §2.2.2, index form); returns the
/// recovered A for the caller to check.
fn w_inv(dec: &Dec, c0: [u8; 8], r: &mut [u8]) -> Result<[u8; 8], KwError> {
    let n = r.len() / 8;
    let mut a = c0;
    let mut b = Zeroizing::new([0u8; 16]);
    for j in (0..6u64).rev() {
        for (i, ri) in r.chunks_exact_mut(8).enumerate().rev() {
            xor_counter(&mut a, n as u64 * j + i as u64 + 1);
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            dec.block(&mut b)?;
            a = half(&b[..8]);
            ri.copy_from_slice(&b[8..]);
        }
    }
    Ok(a)
}

/// RFC 3394 wrap: `plaintext` is a multiple of 8 bytes, at least 16.
pub(crate) fn wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KwError> {
    if !multiple_of_8(plaintext.len()) || plaintext.len() < 16 {
        return Err(KwError::Length);
    }
    let enc = Enc::new(key)?;
    let mut out = vec![0u8; plaintext.len() + 8];
    out[8..].copy_from_slice(plaintext);
    let a = w(&enc, KW_IV, &mut out[8..])?;
    out[..8].copy_from_slice(&a);
    Ok(out)
}

/// RFC 3394 unwrap: `wrapped` is a multiple of 8 bytes, at least 24.
pub(crate) fn unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KwError> {
    if !multiple_of_8(wrapped.len()) || wrapped.len() < 24 {
        return Err(KwError::Length);
    }
    let dec = Dec::new(key)?;
    let mut r = Zeroizing::new(wrapped[8..].to_vec());
    let a = w_inv(&dec, half(wrapped), &mut r)?;
    verify_slices_are_equal(&a, &KW_IV).map_err(|_| KwError::Integrity)?;
    Ok(r)
}

/// RFC 5649 wrap: any non-empty `plaintext` up to 2^32 - 1 bytes.
pub(crate) fn wrap_padded(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KwError> {
    let mli = u32::try_from(plaintext.len()).map_err(|_| KwError::Length)?;
    if mli == 0 {
        return Err(KwError::Length);
    }
    let mut aiv = [0u8; 8];
    aiv[..4].copy_from_slice(&KWP_PREFIX);
    aiv[4..].copy_from_slice(&mli.to_be_bytes());
    let padded = plaintext.len().div_ceil(8) * 8;
    let enc = Enc::new(key)?;
    if padded == 8 {
        // §4.1: a single block is encrypted directly with AES.
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&aiv);
        b[8..8 + plaintext.len()].copy_from_slice(plaintext);
        enc.block(&mut b)?;
        return Ok(b.to_vec());
    }
    let mut out = vec![0u8; padded + 8];
    out[8..8 + plaintext.len()].copy_from_slice(plaintext);
    let a = w(&enc, aiv, &mut out[8..])?;
    out[..8].copy_from_slice(&a);
    Ok(out)
}

/// RFC 5649 unwrap: `wrapped` is a multiple of 8 bytes, at least 16.
pub(crate) fn unwrap_padded(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KwError> {
    if !multiple_of_8(wrapped.len()) || wrapped.len() < 16 {
        return Err(KwError::Length);
    }
    let dec = Dec::new(key)?;
    let (a, mut p) = if wrapped.len() == 16 {
        let mut b = Zeroizing::new([0u8; 16]);
        b.copy_from_slice(wrapped);
        dec.block(&mut b)?;
        (half(&b[..8]), Zeroizing::new(b[8..].to_vec()))
    } else {
        let mut r = Zeroizing::new(wrapped[8..].to_vec());
        let a = w_inv(&dec, half(wrapped), &mut r)?;
        (a, r)
    };
    // §3: the prefix must match, 8 (n - 1) < MLI <= 8 n, and the padding
    // bytes must be zero. All three are evaluated before deciding.
    let padded = p.len();
    let prefix_ok = verify_slices_are_equal(&a[..4], &KWP_PREFIX).is_ok();
    let mli = u32::from_be_bytes([a[4], a[5], a[6], a[7]]) as usize;
    let len_ok = mli <= padded && padded - mli < 8;
    let pad_ok = p
        .get(mli.min(padded)..)
        .map(|pad| pad.iter().fold(0u8, |acc, &x| acc | x) == 0)
        .unwrap_or(false);
    if !(prefix_ok & len_ok & pad_ok) {
        return Err(KwError::Integrity);
    }
    p.truncate(mli);
    Ok(p)
}
