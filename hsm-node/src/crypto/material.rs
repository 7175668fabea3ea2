//! Key material as the node keeps it, its storage form and its public JWK.

use super::spec::{OCT_BITS, RSA_BITS};
use super::{jwk, CryptoError, KeySpec};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, Ed25519KeyPair,
    KeyPair as _,
};
use aws_lc_rs::{agreement, digest, hmac, rsa};
use hsm_api::{Curve, JsonWebKey, KeyFamily, KeyOperation, KeyType, B64};
use std::fmt;
use zeroize::Zeroizing;

/// Version byte that starts every [`KeyMaterial::to_bytes`] blob.
const FORMAT_VERSION: u8 = 1;

// Type tags of the storage form. Never renumber: stored blobs carry them.
const TAG_RSA_PRIVATE: u8 = 0x01; // PKCS#8 v1 DER
const TAG_RSA_PUBLIC: u8 = 0x02; // X.509 SubjectPublicKeyInfo DER
const TAG_EC_PRIVATE: u8 = 0x03; // curve tag, PKCS#8 v1 DER
const TAG_EC_PUBLIC: u8 = 0x04; // curve tag, uncompressed SEC1 point
const TAG_ED25519_PRIVATE: u8 = 0x05; // 32-byte seed
const TAG_ED25519_PUBLIC: u8 = 0x06; // 32-byte public key
const TAG_X25519_PRIVATE: u8 = 0x07; // 32 raw private bytes
const TAG_X25519_PUBLIC: u8 = 0x08; // 32-byte public key
const TAG_OCT: u8 = 0x09; // raw key bytes
const TAG_OCT_CHECK: u8 = 0x0a; // only in public_digest: length, key check value

const CURVE_P256: u8 = 1;
const CURVE_P384: u8 = 2;
const CURVE_P521: u8 = 3;

/// Key material. Private parts are zeroized on drop and never appear in
/// `Debug` output. A key imported from a public JWK has no private part.
#[derive(Clone)]
pub struct KeyMaterial {
    pub(crate) inner: Inner,
}

#[derive(Clone)]
pub(crate) enum Inner {
    Rsa(RsaParts),
    Ec(EcParts),
    Ed25519(OkpParts),
    X25519(OkpParts),
    Oct(Zeroizing<Vec<u8>>),
}

#[derive(Clone)]
pub(crate) struct RsaParts {
    /// Modulus, big-endian, no leading zeros.
    pub n: Vec<u8>,
    /// Public exponent, big-endian, no leading zeros.
    pub e: Vec<u8>,
    /// X.509 SubjectPublicKeyInfo DER of (n, e).
    pub spki: Vec<u8>,
    /// PKCS#8 v1 DER of the private key.
    pub pkcs8: Option<Zeroizing<Vec<u8>>>,
}

#[derive(Clone)]
pub(crate) struct EcParts {
    pub curve: Curve,
    /// Uncompressed SEC1 point: 0x04 || x || y, full-width coordinates.
    pub point: Vec<u8>,
    /// PKCS#8 v1 DER of the private key.
    pub pkcs8: Option<Zeroizing<Vec<u8>>>,
}

#[derive(Clone)]
pub(crate) struct OkpParts {
    pub public: [u8; 32],
    /// Ed25519 seed or X25519 private scalar bytes.
    pub private: Option<Zeroizing<[u8; 32]>>,
}

// ---- curve tables -------------------------------------------------------

pub(crate) fn ecdsa_signing(c: Curve) -> Option<&'static EcdsaSigningAlgorithm> {
    match c {
        Curve::P256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Curve::P384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        Curve::P521 => Some(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        Curve::Ed25519 | Curve::X25519 => None,
    }
}

pub(crate) fn ecdsa_verification(c: Curve) -> Option<&'static EcdsaVerificationAlgorithm> {
    match c {
        Curve::P256 => Some(&signature::ECDSA_P256_SHA256_FIXED),
        Curve::P384 => Some(&signature::ECDSA_P384_SHA384_FIXED),
        Curve::P521 => Some(&signature::ECDSA_P521_SHA512_FIXED),
        Curve::Ed25519 | Curve::X25519 => None,
    }
}

pub(crate) fn ecdh_algorithm(c: Curve) -> &'static agreement::Algorithm {
    match c {
        Curve::P256 => &agreement::ECDH_P256,
        Curve::P384 => &agreement::ECDH_P384,
        Curve::P521 => &agreement::ECDH_P521,
        Curve::Ed25519 | Curve::X25519 => &agreement::X25519,
    }
}

fn curve_tag(c: Curve) -> u8 {
    match c {
        Curve::P256 => CURVE_P256,
        Curve::P384 => CURVE_P384,
        // Only NIST curves reach here (EcParts is built only for them).
        _ => CURVE_P521,
    }
}

fn curve_from_tag(t: u8) -> Option<Curve> {
    match t {
        CURVE_P256 => Some(Curve::P256),
        CURVE_P384 => Some(Curve::P384),
        CURVE_P521 => Some(Curve::P521),
        _ => None,
    }
}

/// Short curve label without the dash: "P256".
fn curve_label(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "P256",
        Curve::P384 => "P384",
        Curve::P521 => "P521",
        Curve::Ed25519 => "Ed25519",
        Curve::X25519 => "X25519",
    }
}

/// Bit length of a big-endian unsigned integer.
pub(crate) fn bit_len(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
    }
}

/// Builds a zeroizing blob from parts without reallocating (so no copy of
/// secret bytes is left behind in a freed buffer).
fn assemble(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Whether a re-encoded private key equals the stored bytes (constant time).
fn same(encoded: Option<&Vec<u8>>, stored: &[u8]) -> bool {
    encoded.is_some_and(|e| verify_slices_are_equal(e, stored).is_ok())
}

fn okp_array(b: &[u8]) -> Option<[u8; 32]> {
    b.try_into().ok()
}

// ---- construction helpers (shared with jwk.rs) ---------------------------

impl RsaParts {
    pub(crate) fn from_keypair(kp: &rsa::KeyPair) -> Result<RsaParts, CryptoError> {
        let public = kp.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let spki = public
            .as_der()
            .map_err(|_| CryptoError::Internal("RSA public key encoding failed"))?
            .as_ref()
            .to_vec();
        let pkcs8 = kp
            .as_der()
            .map_err(|_| CryptoError::Internal("RSA private key encoding failed"))?;
        let bits = bit_len(&n);
        if !RSA_BITS.iter().any(|&b| b as usize == bits) {
            return Err(CryptoError::invalid(format!(
                "RSA modulus of {bits} bits is not supported; expected 2048, 3072 or 4096"
            )));
        }
        Ok(RsaParts {
            n,
            e,
            spki,
            pkcs8: Some(Zeroizing::new(pkcs8.as_ref().to_vec())),
        })
    }

    /// A public-only RSA key from n and e (big-endian, no leading zeros).
    pub(crate) fn from_public(n: &[u8], e: &[u8]) -> Result<RsaParts, CryptoError> {
        let bits = bit_len(n);
        if !RSA_BITS.iter().any(|&b| b as usize == bits) {
            return Err(CryptoError::invalid(format!(
                "RSA modulus of {bits} bits is not supported; expected 2048, 3072 or 4096"
            )));
        }
        let comps = rsa::PublicKeyComponents { n, e };
        let spki = comps
            .as_der()
            .map_err(|_| CryptoError::invalid("the RSA public key (n, e) is not valid"))?
            .as_ref()
            .to_vec();
        // Parsing runs the library's consistency checks (odd e > 1, e < n ...).
        rsa::PublicKey::from_der(&spki)
            .map_err(|_| CryptoError::invalid("the RSA public key (n, e) is not valid"))?;
        rsa::PublicEncryptingKey::from_der(&spki)
            .map_err(|_| CryptoError::invalid("the RSA public key (n, e) is not valid"))?;
        Ok(RsaParts {
            n: n.to_vec(),
            e: e.to_vec(),
            spki,
            pkcs8: None,
        })
    }
}

impl EcParts {
    pub(crate) fn from_keypair(curve: Curve, kp: &EcdsaKeyPair) -> Result<EcParts, CryptoError> {
        let pkcs8 = kp
            .to_pkcs8v1()
            .map_err(|_| CryptoError::Internal("EC private key encoding failed"))?;
        Ok(EcParts {
            curve,
            point: kp.public_key().as_ref().to_vec(),
            pkcs8: Some(Zeroizing::new(pkcs8.as_ref().to_vec())),
        })
    }

    /// A public-only EC key from an uncompressed point, checked on the curve.
    pub(crate) fn from_point(curve: Curve, point: &[u8]) -> Result<EcParts, CryptoError> {
        let alg = ecdsa_verification(curve)
            .ok_or_else(|| CryptoError::invalid(format!("crv {curve} is not an EC curve")))?;
        if point.len() != 1 + 2 * curve.field_len() || point.first() != Some(&0x04) {
            return Err(CryptoError::invalid(format!(
                "the EC point is not an uncompressed {curve} point"
            )));
        }
        signature::ParsedPublicKey::new(alg, point).map_err(|_| {
            CryptoError::invalid(format!("the EC point (x, y) is not on curve {curve}"))
        })?;
        Ok(EcParts {
            curve,
            point: point.to_vec(),
            pkcs8: None,
        })
    }
}

impl OkpParts {
    pub(crate) fn ed25519_from_seed(seed: &[u8; 32]) -> Result<OkpParts, CryptoError> {
        let kp = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| CryptoError::invalid("the Ed25519 seed is not valid"))?;
        let public = okp_array(kp.public_key().as_ref())
            .ok_or(CryptoError::Internal("Ed25519 public key of wrong length"))?;
        Ok(OkpParts {
            public,
            private: Some(Zeroizing::new(*seed)),
        })
    }

    pub(crate) fn x25519_from_private(private: &[u8; 32]) -> Result<OkpParts, CryptoError> {
        let pk = agreement::PrivateKey::from_private_key(&agreement::X25519, private)
            .map_err(|_| CryptoError::invalid("the X25519 private key is not valid"))?;
        let public = pk
            .compute_public_key()
            .map_err(|_| CryptoError::Internal("X25519 public key computation failed"))?;
        let public = okp_array(public.as_ref())
            .ok_or(CryptoError::Internal("X25519 public key of wrong length"))?;
        Ok(OkpParts {
            public,
            private: Some(Zeroizing::new(*private)),
        })
    }
}

pub(crate) fn oct_from_bytes(k: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if !OCT_BITS.iter().any(|&b| b as usize == k.len() * 8) {
        return Err(CryptoError::invalid(format!(
            "oct key of {} bits is not supported; expected 128, 192, 256, 384 or 512",
            k.len() * 8
        )));
    }
    Ok(Zeroizing::new(k.to_vec()))
}

// ---- the public API -------------------------------------------------------

impl KeyMaterial {
    /// Generates a new key.
    pub fn generate(spec: &KeySpec) -> Result<KeyMaterial, CryptoError> {
        let inner = match *spec {
            KeySpec::Rsa { bits } => {
                let size = match bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    other => {
                        return Err(CryptoError::bad(format!(
                            "RSA key size {other} is not supported; expected 2048, 3072 or 4096"
                        )))
                    }
                };
                let kp = rsa::KeyPair::generate(size)
                    .map_err(|_| CryptoError::Internal("RSA key generation failed"))?;
                Inner::Rsa(RsaParts::from_keypair(&kp)?)
            }
            KeySpec::Ec(curve) => {
                let alg = ecdsa_signing(curve)
                    .ok_or_else(|| CryptoError::bad(format!("crv {curve} is not an EC curve")))?;
                let kp = EcdsaKeyPair::generate(alg)
                    .map_err(|_| CryptoError::Internal("EC key generation failed"))?;
                Inner::Ec(EcParts::from_keypair(curve, &kp)?)
            }
            KeySpec::Ed25519 => {
                let kp = Ed25519KeyPair::generate()
                    .map_err(|_| CryptoError::Internal("Ed25519 key generation failed"))?;
                let seed = kp
                    .seed()
                    .and_then(|s| s.as_be_bytes())
                    .map_err(|_| CryptoError::Internal("Ed25519 seed export failed"))?;
                let seed = Zeroizing::new(
                    okp_array(seed.as_ref())
                        .ok_or(CryptoError::Internal("Ed25519 seed of wrong length"))?,
                );
                let public = okp_array(kp.public_key().as_ref())
                    .ok_or(CryptoError::Internal("Ed25519 public key of wrong length"))?;
                Inner::Ed25519(OkpParts {
                    public,
                    private: Some(seed),
                })
            }
            KeySpec::X25519 => {
                let pk = agreement::PrivateKey::generate(&agreement::X25519)
                    .map_err(|_| CryptoError::Internal("X25519 key generation failed"))?;
                let raw: Curve25519SeedBin<'static> = pk
                    .as_be_bytes()
                    .map_err(|_| CryptoError::Internal("X25519 private key export failed"))?;
                let raw = Zeroizing::new(
                    okp_array(raw.as_ref())
                        .ok_or(CryptoError::Internal("X25519 private key of wrong length"))?,
                );
                Inner::X25519(OkpParts::x25519_from_private(&raw)?)
            }
            KeySpec::Oct { bits } => {
                if !OCT_BITS.contains(&bits) {
                    return Err(CryptoError::bad(format!(
                        "oct key size {bits} is not supported; expected 128, 192, 256, 384 or 512"
                    )));
                }
                let k = Zeroizing::new(super::random_bytes(bits as usize / 8)?);
                Inner::Oct(k)
            }
        };
        Ok(KeyMaterial { inner })
    }

    /// From an import JWK (kty RSA/EC/oct/OKP or their -HSM spellings).
    ///
    /// Validates thoroughly: members foreign to the key type are refused;
    /// RSA needs n, e (2048/3072/4096 bits) and, for a private key, all of
    /// d, p, q, dp, dq, qi consistent with each other; EC needs crv
    /// P-256/P-384/P-521 and a point (x, y) on the curve, and d must match
    /// it; OKP needs crv Ed25519/X25519 and a 32-byte x, and d must produce
    /// it; oct needs k of 128/192/256/384/512 bits. A JWK without private
    /// members gives a public-only key. `key_hsm` is `NotSupported`; every
    /// other failure is `InvalidKeyMaterial`.
    pub fn from_jwk(jwk: &JsonWebKey) -> Result<KeyMaterial, CryptoError> {
        jwk::material_from_jwk(jwk)
    }

    /// Stable serialisation for storage: version byte, type tag, then
    /// DER (RSA, EC) or raw bytes (OKP, oct). The caller encrypts it at rest.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let v = [FORMAT_VERSION];
        match &self.inner {
            Inner::Rsa(p) => match &p.pkcs8 {
                Some(der) => assemble(&[&v, &[TAG_RSA_PRIVATE], der]),
                None => assemble(&[&v, &[TAG_RSA_PUBLIC], &p.spki]),
            },
            Inner::Ec(p) => match &p.pkcs8 {
                Some(der) => assemble(&[&v, &[TAG_EC_PRIVATE, curve_tag(p.curve)], der]),
                None => assemble(&[&v, &[TAG_EC_PUBLIC, curve_tag(p.curve)], &p.point]),
            },
            Inner::Ed25519(p) => match &p.private {
                Some(seed) => assemble(&[&v, &[TAG_ED25519_PRIVATE], seed.as_slice()]),
                None => assemble(&[&v, &[TAG_ED25519_PUBLIC], &p.public]),
            },
            Inner::X25519(p) => match &p.private {
                Some(raw) => assemble(&[&v, &[TAG_X25519_PRIVATE], raw.as_slice()]),
                None => assemble(&[&v, &[TAG_X25519_PUBLIC], &p.public]),
            },
            Inner::Oct(k) => assemble(&[&v, &[TAG_OCT], k]),
        }
    }

    /// Parses what [`KeyMaterial::to_bytes`] made, validating it again.
    pub fn from_bytes(b: &[u8]) -> Result<KeyMaterial, CryptoError> {
        use CryptoError::CorruptMaterial as Corrupt;
        let (&version, rest) = b.split_first().ok_or(Corrupt("empty blob"))?;
        if version != FORMAT_VERSION {
            return Err(Corrupt("unknown format version"));
        }
        let (&tag, body) = rest.split_first().ok_or(Corrupt("missing type tag"))?;
        let inner = match tag {
            TAG_RSA_PRIVATE => {
                let kp = rsa::KeyPair::from_pkcs8(body)
                    .map_err(|_| Corrupt("RSA private key does not parse"))?;
                let parts = RsaParts::from_keypair(&kp)
                    .map_err(|_| Corrupt("RSA private key is not usable"))?;
                // The library tolerates trailing bytes; the storage form is canonical.
                if !same(parts.pkcs8.as_deref(), body) {
                    return Err(Corrupt("RSA private key is not in canonical form"));
                }
                Inner::Rsa(parts)
            }
            TAG_RSA_PUBLIC => {
                let pk = rsa::PublicKey::from_der(body)
                    .map_err(|_| Corrupt("RSA public key does not parse"))?;
                let n = pk.modulus().big_endian_without_leading_zero().to_vec();
                let e = pk.exponent().big_endian_without_leading_zero().to_vec();
                Inner::Rsa(
                    RsaParts::from_public(&n, &e)
                        .map_err(|_| Corrupt("RSA public key is not usable"))?,
                )
            }
            TAG_EC_PRIVATE => {
                let (&c, der) = body.split_first().ok_or(Corrupt("missing curve tag"))?;
                let curve = curve_from_tag(c).ok_or(Corrupt("unknown curve tag"))?;
                let alg = ecdsa_signing(curve).ok_or(Corrupt("unknown curve tag"))?;
                let kp = EcdsaKeyPair::from_pkcs8(alg, der)
                    .map_err(|_| Corrupt("EC private key does not parse"))?;
                let parts = EcParts::from_keypair(curve, &kp)
                    .map_err(|_| Corrupt("EC private key is not usable"))?;
                if !same(parts.pkcs8.as_deref(), der) {
                    return Err(Corrupt("EC private key is not in canonical form"));
                }
                Inner::Ec(parts)
            }
            TAG_EC_PUBLIC => {
                let (&c, point) = body.split_first().ok_or(Corrupt("missing curve tag"))?;
                let curve = curve_from_tag(c).ok_or(Corrupt("unknown curve tag"))?;
                Inner::Ec(
                    EcParts::from_point(curve, point)
                        .map_err(|_| Corrupt("EC public key does not parse"))?,
                )
            }
            TAG_ED25519_PRIVATE => {
                let seed = Zeroizing::new(okp_array(body).ok_or(Corrupt("Ed25519 seed length"))?);
                Inner::Ed25519(
                    OkpParts::ed25519_from_seed(&seed)
                        .map_err(|_| Corrupt("Ed25519 seed does not parse"))?,
                )
            }
            TAG_ED25519_PUBLIC => {
                let public = okp_array(body).ok_or(Corrupt("Ed25519 public key length"))?;
                jwk::check_ed25519_public(&public)
                    .map_err(|_| Corrupt("Ed25519 public key does not parse"))?;
                Inner::Ed25519(OkpParts {
                    public,
                    private: None,
                })
            }
            TAG_X25519_PRIVATE => {
                let raw =
                    Zeroizing::new(okp_array(body).ok_or(Corrupt("X25519 private key length"))?);
                Inner::X25519(
                    OkpParts::x25519_from_private(&raw)
                        .map_err(|_| Corrupt("X25519 private key does not parse"))?,
                )
            }
            TAG_X25519_PUBLIC => Inner::X25519(OkpParts {
                public: okp_array(body).ok_or(Corrupt("X25519 public key length"))?,
                private: None,
            }),
            TAG_OCT => Inner::Oct(oct_from_bytes(body).map_err(|_| Corrupt("oct key length"))?),
            _ => return Err(Corrupt("unknown key type tag")),
        };
        Ok(KeyMaterial { inner })
    }

    /// The key family (RSA, EC, OKP, oct).
    pub fn family(&self) -> KeyFamily {
        match &self.inner {
            Inner::Rsa(_) => KeyFamily::Rsa,
            Inner::Ec(_) => KeyFamily::Ec,
            Inner::Ed25519(_) | Inner::X25519(_) => KeyFamily::Okp,
            Inner::Oct(_) => KeyFamily::Oct,
        }
    }

    /// The curve of an EC or OKP key.
    pub fn curve(&self) -> Option<Curve> {
        match &self.inner {
            Inner::Ec(p) => Some(p.curve),
            Inner::Ed25519(_) => Some(Curve::Ed25519),
            Inner::X25519(_) => Some(Curve::X25519),
            Inner::Rsa(_) | Inner::Oct(_) => None,
        }
    }

    /// Whether the private (or secret) part is present. oct keys always are.
    pub fn is_private(&self) -> bool {
        match &self.inner {
            Inner::Rsa(p) => p.pkcs8.is_some(),
            Inner::Ec(p) => p.pkcs8.is_some(),
            Inner::Ed25519(p) | Inner::X25519(p) => p.private.is_some(),
            Inner::Oct(_) => true,
        }
    }

    /// The same key without its private part; `None` for oct keys, which
    /// have no public part.
    pub fn to_public(&self) -> Option<KeyMaterial> {
        let inner = match &self.inner {
            Inner::Rsa(p) => Inner::Rsa(p.clone_public()),
            Inner::Ec(p) => Inner::Ec(EcParts {
                curve: p.curve,
                point: p.point.clone(),
                pkcs8: None,
            }),
            Inner::Ed25519(p) => Inner::Ed25519(OkpParts {
                public: p.public,
                private: None,
            }),
            Inner::X25519(p) => Inner::X25519(OkpParts {
                public: p.public,
                private: None,
            }),
            Inner::Oct(_) => return None,
        };
        Some(KeyMaterial { inner })
    }

    /// The public JWK: kty in its -HSM spelling; RSA n, e; EC crv, x, y
    /// (full width); OKP crv, x; oct nothing. `kid` and `key_ops` are None.
    pub fn public_jwk(&self) -> JsonWebKey {
        let mut jwk = JsonWebKey {
            kty: Some(KeyType::hsm(self.family())),
            ..JsonWebKey::default()
        };
        match &self.inner {
            Inner::Rsa(p) => {
                jwk.n = Some(B64(p.n.clone()));
                jwk.e = Some(B64(p.e.clone()));
            }
            Inner::Ec(p) => {
                let fl = p.curve.field_len();
                jwk.crv = Some(p.curve);
                jwk.x = p.point.get(1..1 + fl).map(B64::from);
                jwk.y = p.point.get(1 + fl..1 + 2 * fl).map(B64::from);
            }
            Inner::Ed25519(p) => {
                jwk.crv = Some(Curve::Ed25519);
                jwk.x = Some(B64(p.public.to_vec()));
            }
            Inner::X25519(p) => {
                jwk.crv = Some(Curve::X25519);
                jwk.x = Some(B64(p.public.to_vec()));
            }
            Inner::Oct(_) => {}
        }
        jwk
    }

    /// Default key_ops for a new key of this material.
    pub fn default_key_ops(&self) -> Vec<KeyOperation> {
        use KeyOperation::*;
        match &self.inner {
            Inner::Rsa(_) => vec![Sign, Verify, Encrypt, Decrypt, WrapKey, UnwrapKey],
            Inner::Ec(_) => vec![Sign, Verify, DeriveKey],
            Inner::Ed25519(_) => vec![Sign, Verify],
            Inner::X25519(_) => vec![DeriveKey],
            Inner::Oct(_) => vec![
                Encrypt, Decrypt, WrapKey, UnwrapKey, Sign, Verify, DeriveKey,
            ],
        }
    }

    /// A short description for logs and metric labels: "RSA-2048",
    /// "EC-P256", "OKP-Ed25519", "OKP-X25519", "oct-256".
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Rsa(p) => format!("RSA-{}", bit_len(&p.n)),
            Inner::Ec(p) => format!("EC-{}", curve_label(p.curve)),
            Inner::Ed25519(_) => "OKP-Ed25519".to_string(),
            Inner::X25519(_) => "OKP-X25519".to_string(),
            Inner::Oct(k) => format!("oct-{}", k.len() * 8),
        }
    }

    /// SHA-256 over `to_bytes()` of the public view (which starts with the
    /// format version and the type tag), for replication digests. oct keys
    /// have no public view: theirs is `version || 0x0a || length ||
    /// HMAC-SHA256(key, "hsm-node oct key check value v1")`, a key check
    /// value that identifies the key without revealing it.
    pub fn public_digest(&self) -> [u8; 32] {
        let view: Vec<u8> = match (&self.inner, self.to_public()) {
            (Inner::Oct(k), _) => {
                let kcv = hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, k),
                    b"hsm-node oct key check value v1",
                );
                let mut v = vec![FORMAT_VERSION, TAG_OCT_CHECK, k.len() as u8];
                v.extend_from_slice(kcv.as_ref());
                v
            }
            (_, Some(public)) => public.to_bytes().to_vec(),
            (_, None) => Vec::new(),
        };
        let d = digest::digest(&digest::SHA256, &view);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl RsaParts {
    fn clone_public(&self) -> RsaParts {
        RsaParts {
            n: self.n.clone(),
            e: self.e.clone(),
            spki: self.spki.clone(),
            pkcs8: None,
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = if matches!(self.inner, Inner::Oct(_)) {
            "secret"
        } else if self.is_private() {
            "private"
        } else {
            "public"
        };
        write!(f, "KeyMaterial({}, {part})", self.describe())
    }
}

impl KeySpec {
    /// The spec that generates a key like `m` (same type, size and curve):
    /// what rotation makes.
    pub fn of(m: &KeyMaterial) -> KeySpec {
        match &m.inner {
            Inner::Rsa(r) => KeySpec::Rsa {
                bits: bit_len(&r.n) as u32,
            },
            Inner::Ec(e) => KeySpec::Ec(e.curve),
            Inner::Ed25519(_) => KeySpec::Ed25519,
            Inner::X25519(_) => KeySpec::X25519,
            Inner::Oct(k) => KeySpec::Oct {
                bits: (k.len() * 8) as u32,
            },
        }
    }
}
