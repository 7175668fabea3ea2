//! The transfer form of key material: how a key version travels between
//! members (clone blobs, backups) without its bytes ever being readable
//! outside a member's key store.
//!
//! Decides: the payload of each kind of key — PKCS#8 `PrivateKeyInfo` for
//! RSA and EC private keys, the raw bytes for oct keys (what a PKCS#11
//! token's `C_WrapKey` produces and its `C_UnwrapKey` takes), this crate's
//! own storage form (`KeyMaterial::to_bytes`) for everything a token cannot
//! hold (Ed25519, X25519, public-only keys) — and that the payload is
//! wrapped with AES key wrap with padding (RFC 5649, `CKM_AES_KEY_WRAP_PAD`)
//! under the cloning domain's wrapping key. A token member does the same
//! inside its token; a software member does it here, so both read what the
//! other wrote.
//!
//! Tokens may pad what they wrap: SoftHSM2 wraps an EC `PrivateKeyInfo`
//! with up to 7 zero bytes after it inside the RFC 5649 length, so a DER
//! payload is read by its own length and the rest must be zeros.

use super::material::{ecdsa_signing, oct_from_bytes, EcParts, Inner, RsaParts};
use super::{kw, CryptoError, KeyMaterial};
use aws_lc_rs::rsa;
use aws_lc_rs::signature::EcdsaKeyPair;
use hsm_api::Curve;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What a wrapped payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WrapKind {
    /// An RSA private key, PKCS#8.
    Rsa,
    /// An EC private key on P-256, P-384 or P-521, PKCS#8.
    #[serde(rename = "ec-p256")]
    EcP256,
    #[serde(rename = "ec-p384")]
    EcP384,
    #[serde(rename = "ec-p521")]
    EcP521,
    /// A secret key's raw bytes (AES or HMAC).
    Oct,
    /// This crate's storage form: keys a token cannot hold.
    Native,
}

impl WrapKind {
    /// The EC curve of an EC kind.
    pub fn curve(self) -> Option<Curve> {
        match self {
            WrapKind::EcP256 => Some(Curve::P256),
            WrapKind::EcP384 => Some(Curve::P384),
            WrapKind::EcP521 => Some(Curve::P521),
            _ => None,
        }
    }

    fn of_curve(c: Curve) -> Option<WrapKind> {
        match c {
            Curve::P256 => Some(WrapKind::EcP256),
            Curve::P384 => Some(WrapKind::EcP384),
            Curve::P521 => Some(WrapKind::EcP521),
            Curve::Ed25519 | Curve::X25519 => None,
        }
    }
}

impl std::fmt::Display for WrapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            WrapKind::Rsa => "RSA private key",
            WrapKind::EcP256 => "P-256 private key",
            WrapKind::EcP384 => "P-384 private key",
            WrapKind::EcP521 => "P-521 private key",
            WrapKind::Oct => "secret key",
            WrapKind::Native => "Ed25519, X25519 or public-only key",
        };
        f.write_str(s)
    }
}

/// A key's payload and what it is, before wrapping.
pub struct Payload {
    pub kind: WrapKind,
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The length of the DER element at the start of `b` (tag, length,
/// content), when it is a definite-length SEQUENCE that fits in `b`.
fn der_len(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&0x30) {
        return None;
    }
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// `b` without the zero padding a token may have put after its DER.
fn trim_der(b: &[u8]) -> Result<&[u8], CryptoError> {
    let bad = || CryptoError::CorruptMaterial("the wrapped key is not one DER structure");
    let n = der_len(b).ok_or_else(bad)?;
    let rest = &b[n..];
    if rest.len() >= 8 || rest.iter().any(|&x| x != 0) {
        return Err(bad());
    }
    Ok(&b[..n])
}

impl KeyMaterial {
    /// The key's payload for transfer (see the module comment).
    pub fn payload(&self) -> Payload {
        let native = || Payload {
            kind: WrapKind::Native,
            bytes: self.to_bytes(),
        };
        match &self.inner {
            Inner::Rsa(RsaParts {
                pkcs8: Some(der), ..
            }) => Payload {
                kind: WrapKind::Rsa,
                bytes: der.clone(),
            },
            Inner::Ec(EcParts {
                curve,
                pkcs8: Some(der),
                ..
            }) => match WrapKind::of_curve(*curve) {
                Some(kind) => Payload {
                    kind,
                    bytes: der.clone(),
                },
                None => native(),
            },
            Inner::Oct(k) => Payload {
                kind: WrapKind::Oct,
                bytes: k.clone(),
            },
            _ => native(),
        }
    }

    /// Reads a payload back, checking it as any imported key.
    pub fn from_payload(kind: WrapKind, b: &[u8]) -> Result<KeyMaterial, CryptoError> {
        use CryptoError::CorruptMaterial as Corrupt;
        let inner = match kind {
            WrapKind::Rsa => {
                let kp = rsa::KeyPair::from_pkcs8(trim_der(b)?)
                    .map_err(|_| Corrupt("the RSA private key does not parse"))?;
                Inner::Rsa(RsaParts::from_keypair(&kp)?)
            }
            WrapKind::EcP256 | WrapKind::EcP384 | WrapKind::EcP521 => {
                let curve = kind.curve().ok_or(Corrupt("no curve"))?;
                let alg = ecdsa_signing(curve).ok_or(Corrupt("no curve"))?;
                let kp = EcdsaKeyPair::from_pkcs8(alg, trim_der(b)?)
                    .map_err(|_| Corrupt("the EC private key does not parse"))?;
                Inner::Ec(EcParts::from_keypair(curve, &kp)?)
            }
            WrapKind::Oct => Inner::Oct(oct_from_bytes(b)?),
            WrapKind::Native => return KeyMaterial::from_bytes(b),
        };
        Ok(KeyMaterial { inner })
    }

    /// The payload wrapped under `kek` (RFC 5649).
    pub fn wrap_for_transfer(&self, kek: &[u8; 32]) -> Result<(WrapKind, Vec<u8>), CryptoError> {
        let p = self.payload();
        let w = kw::wrap_padded(kek, &p.bytes)
            .map_err(|_| CryptoError::Internal("key wrap with padding failed"))?;
        Ok((p.kind, w))
    }

    /// Unwraps what [`Self::wrap_for_transfer`] (or a token's `C_WrapKey`
    /// with `CKM_AES_KEY_WRAP_PAD`) made.
    pub fn unwrap_transfer(
        kind: WrapKind,
        wrapped: &[u8],
        kek: &[u8; 32],
    ) -> Result<KeyMaterial, CryptoError> {
        let p = kw::unwrap_padded(kek, wrapped).map_err(|_| {
            CryptoError::CorruptMaterial("the wrapped key does not open under the domain key")
        })?;
        KeyMaterial::from_payload(kind, &p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeySpec;

    fn round_trip(spec: KeySpec, kind: WrapKind) {
        let m = KeyMaterial::generate(&spec).unwrap_or_else(|e| panic!("{e}"));
        let kek = [7u8; 32];
        let (k, w) = m.wrap_for_transfer(&kek).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k, kind);
        let back = KeyMaterial::unwrap_transfer(k, &w, &kek).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_bytes(), m.to_bytes());
        assert!(KeyMaterial::unwrap_transfer(k, &w, &[8u8; 32]).is_err());
    }

    #[test]
    fn every_kind_round_trips_and_needs_the_key() {
        round_trip(KeySpec::Ec(Curve::P256), WrapKind::EcP256);
        round_trip(KeySpec::Ec(Curve::P521), WrapKind::EcP521);
        round_trip(KeySpec::Rsa { bits: 2048 }, WrapKind::Rsa);
        round_trip(KeySpec::Oct { bits: 256 }, WrapKind::Oct);
        round_trip(KeySpec::Ed25519, WrapKind::Native);
    }

    #[test]
    fn zero_padding_after_der_is_read_and_other_trailers_refused() {
        let m = KeyMaterial::generate(&KeySpec::Ec(Curve::P384)).unwrap_or_else(|e| panic!("{e}"));
        let p = m.payload();
        let mut padded = p.bytes.to_vec();
        padded.extend([0u8; 5]);
        let back = KeyMaterial::from_payload(p.kind, &padded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.to_bytes(), m.to_bytes());
        let mut junk = p.bytes.to_vec();
        junk.push(1);
        assert!(KeyMaterial::from_payload(p.kind, &junk).is_err());
        let mut long = p.bytes.to_vec();
        long.extend([0u8; 8]);
        assert!(KeyMaterial::from_payload(p.kind, &long).is_err());
        assert!(KeyMaterial::from_payload(WrapKind::Rsa, &p.bytes).is_err());
    }
}
