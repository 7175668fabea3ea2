//! A key parsed once for fast repeated use, and the operations on it.

use super::kw::{self, multiple_of_8};
use super::material::{ecdh_algorithm, ecdsa_signing, ecdsa_verification, Inner, KeyMaterial};
use super::sym::random_nonce;
use super::{jwk, CryptoError};
use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_192_GCM, AES_256_GCM, NONCE_LEN,
};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, KeyWrapPadded, AES_128, AES_256};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, RsaEncoding, VerificationAlgorithm,
};
use aws_lc_rs::{agreement, hmac, rsa};
use hsm_api::{
    Curve, DeriveAlgorithm, EncryptionAlgorithm, JsonWebKey, KeyFamily, MacAlgorithm,
    SignatureAlgorithm,
};
use std::fmt;
use zeroize::Zeroizing;

/// GCM tag length, bytes.
const GCM_TAG_LEN: usize = 16;

/// The result of `encrypt`: for GCM the node-made IV and the tag come apart.
#[derive(Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub ciphertext: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("iv", &self.iv.as_ref().map(Vec::len))
            .field("tag", &self.tag.as_ref().map(Vec::len))
            .finish()
    }
}

/// A key parsed once for fast repeated use. `Send + Sync`; the node caches these.
pub struct LoadedKey {
    inner: Loaded,
    label: String,
    family: KeyFamily,
}

enum Loaded {
    Rsa {
        /// X.509 SubjectPublicKeyInfo DER, for verification.
        spki: Vec<u8>,
        encrypting: OaepPublicEncryptingKey,
        private: Option<Box<RsaPrivate>>,
    },
    Ec {
        curve: Curve,
        verifying: signature::ParsedPublicKey,
        signing: Option<EcdsaKeyPair>,
        agreement: Option<agreement::PrivateKey>,
    },
    Ed25519 {
        verifying: signature::ParsedPublicKey,
        signing: Option<Ed25519KeyPair>,
    },
    X25519 {
        agreement: Option<agreement::PrivateKey>,
    },
    Oct {
        key: Zeroizing<Vec<u8>>,
        /// AES-GCM key when the key is an AES size.
        gcm: Option<LessSafeKey>,
    },
}

struct RsaPrivate {
    signing: rsa::KeyPair,
    decrypting: OaepPrivateDecryptingKey,
}

const LOAD_FAILED: &str = "key material failed to load";

// ---- algorithm tables -------------------------------------------------------

fn hash_of(alg: SignatureAlgorithm) -> Option<&'static digest::Algorithm> {
    use SignatureAlgorithm::*;
    match alg {
        Rs256 | Ps256 | Es256 => Some(&digest::SHA256),
        Rs384 | Ps384 | Es384 => Some(&digest::SHA384),
        Rs512 | Ps512 | Es512 => Some(&digest::SHA512),
        EdDsa => None,
    }
}

fn rsa_signing(alg: SignatureAlgorithm) -> Option<&'static dyn RsaEncoding> {
    use SignatureAlgorithm::*;
    match alg {
        Rs256 => Some(&signature::RSA_PKCS1_SHA256),
        Rs384 => Some(&signature::RSA_PKCS1_SHA384),
        Rs512 => Some(&signature::RSA_PKCS1_SHA512),
        Ps256 => Some(&signature::RSA_PSS_SHA256),
        Ps384 => Some(&signature::RSA_PSS_SHA384),
        Ps512 => Some(&signature::RSA_PSS_SHA512),
        Es256 | Es384 | Es512 | EdDsa => None,
    }
}

fn rsa_verification(alg: SignatureAlgorithm) -> Option<&'static dyn VerificationAlgorithm> {
    use SignatureAlgorithm::*;
    match alg {
        Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        Es256 | Es384 | Es512 | EdDsa => None,
    }
}

/// The curve an ECDSA algorithm needs.
fn es_curve(alg: SignatureAlgorithm) -> Option<Curve> {
    match alg {
        SignatureAlgorithm::Es256 => Some(Curve::P256),
        SignatureAlgorithm::Es384 => Some(Curve::P384),
        SignatureAlgorithm::Es512 => Some(Curve::P521),
        _ => None,
    }
}

/// What a signature algorithm needs, for mismatch messages.
fn sig_needs(alg: SignatureAlgorithm) -> &'static str {
    use SignatureAlgorithm::*;
    match alg {
        Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512 => "an RSA key",
        Es256 => "an EC P-256 key",
        Es384 => "an EC P-384 key",
        Es512 => "an EC P-521 key",
        EdDsa => "an OKP Ed25519 key",
    }
}

fn oaep(alg: EncryptionAlgorithm) -> Option<&'static OaepAlgorithm> {
    match alg {
        EncryptionAlgorithm::RsaOaep => Some(&OAEP_SHA1_MGF1SHA1),
        EncryptionAlgorithm::RsaOaep256 => Some(&OAEP_SHA256_MGF1SHA256),
        _ => None,
    }
}

fn hmac_alg(alg: MacAlgorithm) -> hmac::Algorithm {
    match alg {
        MacAlgorithm::Hs256 => hmac::HMAC_SHA256,
        MacAlgorithm::Hs384 => hmac::HMAC_SHA384,
        MacAlgorithm::Hs512 => hmac::HMAC_SHA512,
    }
}

fn is_padded_kw(alg: EncryptionAlgorithm) -> bool {
    use EncryptionAlgorithm::*;
    matches!(alg, A128Kwp | A192Kwp | A256Kwp)
}

// ---- loading ---------------------------------------------------------------

impl LoadedKey {
    /// Parses `m` once into library key objects.
    pub fn load(m: &KeyMaterial) -> Result<LoadedKey, CryptoError> {
        fn internal<E>(_: E) -> CryptoError {
            CryptoError::Internal(LOAD_FAILED)
        }
        let inner = match &m.inner {
            Inner::Rsa(p) => {
                let public = PublicEncryptingKey::from_der(&p.spki).map_err(internal)?;
                let encrypting = OaepPublicEncryptingKey::new(public).map_err(internal)?;
                let private = match &p.pkcs8 {
                    None => None,
                    Some(der) => {
                        let signing = rsa::KeyPair::from_pkcs8(der).map_err(internal)?;
                        let dec = PrivateDecryptingKey::from_pkcs8(der).map_err(internal)?;
                        let decrypting = OaepPrivateDecryptingKey::new(dec).map_err(internal)?;
                        Some(Box::new(RsaPrivate {
                            signing,
                            decrypting,
                        }))
                    }
                };
                Loaded::Rsa {
                    spki: p.spki.clone(),
                    encrypting,
                    private,
                }
            }
            Inner::Ec(p) => {
                let verify_alg =
                    ecdsa_verification(p.curve).ok_or(CryptoError::Internal(LOAD_FAILED))?;
                let sign_alg = ecdsa_signing(p.curve).ok_or(CryptoError::Internal(LOAD_FAILED))?;
                let verifying =
                    signature::ParsedPublicKey::new(verify_alg, &p.point).map_err(internal)?;
                let (signing, agreement) = match &p.pkcs8 {
                    None => (None, None),
                    Some(der) => {
                        let s = EcdsaKeyPair::from_pkcs8(sign_alg, der).map_err(internal)?;
                        let a = agreement::PrivateKey::from_private_key_der(
                            ecdh_algorithm(p.curve),
                            der,
                        )
                        .map_err(internal)?;
                        (Some(s), Some(a))
                    }
                };
                Loaded::Ec {
                    curve: p.curve,
                    verifying,
                    signing,
                    agreement,
                }
            }
            Inner::Ed25519(p) => {
                let verifying = signature::ParsedPublicKey::new(&signature::ED25519, p.public)
                    .map_err(internal)?;
                let signing = match &p.private {
                    None => None,
                    Some(seed) => Some(
                        Ed25519KeyPair::from_seed_and_public_key(seed.as_slice(), &p.public)
                            .map_err(internal)?,
                    ),
                };
                Loaded::Ed25519 { verifying, signing }
            }
            Inner::X25519(p) => {
                let agreement = match &p.private {
                    None => None,
                    Some(raw) => Some(
                        agreement::PrivateKey::from_private_key(&agreement::X25519, raw.as_slice())
                            .map_err(internal)?,
                    ),
                };
                Loaded::X25519 { agreement }
            }
            Inner::Oct(k) => {
                let aead_alg = match k.len() {
                    16 => Some(&AES_128_GCM),
                    24 => Some(&AES_192_GCM),
                    32 => Some(&AES_256_GCM),
                    _ => None,
                };
                let gcm = match aead_alg {
                    None => None,
                    Some(a) => Some(LessSafeKey::new(UnboundKey::new(a, k).map_err(internal)?)),
                };
                Loaded::Oct {
                    key: k.clone(),
                    gcm,
                }
            }
        };
        Ok(LoadedKey {
            inner,
            label: m.describe(),
            family: m.family(),
        })
    }

    /// The family of the key this was loaded from.
    pub fn material_family(&self) -> KeyFamily {
        self.family
    }

    /// The key's description ("RSA-2048", "EC-P256", ...).
    pub fn describe(&self) -> &str {
        &self.label
    }

    fn public_only(&self, op: &str) -> CryptoError {
        CryptoError::PublicKeyOnly(format!(
            "{op} needs the private key; this {} key has only its public part",
            self.label
        ))
    }

    fn sig_mismatch(&self, alg: SignatureAlgorithm) -> CryptoError {
        CryptoError::mismatch(format!(
            "{alg} needs {}; this key is {}",
            sig_needs(alg),
            self.label
        ))
    }

    /// Checks the digest length for `alg` and wraps it for the library.
    fn digest_for(alg: SignatureAlgorithm, digest: &[u8]) -> Result<Digest, CryptoError> {
        let hash = hash_of(alg).ok_or(CryptoError::Internal("no hash for algorithm"))?;
        if digest.len() != hash.output_len() {
            return Err(CryptoError::InvalidDigestLength {
                alg,
                expected: hash.output_len(),
                actual: digest.len(),
            });
        }
        Digest::import_less_safe(digest, hash)
            .map_err(|_| CryptoError::Internal("digest import failed"))
    }

    // ---- signatures ----------------------------------------------------------

    /// Signs a digest (RS*/PS*/ES*) or, for EdDSA, the message itself
    /// (PureEdDSA). ECDSA signatures are raw `r || s`, fixed width. PSS uses
    /// MGF1 with the same hash and a salt as long as the digest.
    pub fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.inner {
            Loaded::Rsa { private, .. } => {
                let encoding = rsa_signing(alg).ok_or_else(|| self.sig_mismatch(alg))?;
                let d = Self::digest_for(alg, digest)?;
                let p = private.as_ref().ok_or_else(|| self.public_only("sign"))?;
                let mut sig = vec![0u8; p.signing.public_modulus_len()];
                p.signing
                    .sign_digest(encoding, &d, &mut sig)
                    .map_err(|_| CryptoError::Internal("RSA signing failed"))?;
                Ok(sig)
            }
            Loaded::Ec { curve, signing, .. } => {
                if es_curve(alg) != Some(*curve) {
                    return Err(self.sig_mismatch(alg));
                }
                let d = Self::digest_for(alg, digest)?;
                let kp = signing.as_ref().ok_or_else(|| self.public_only("sign"))?;
                let sig = kp
                    .sign_digest(&d)
                    .map_err(|_| CryptoError::Internal("ECDSA signing failed"))?;
                Ok(sig.as_ref().to_vec())
            }
            Loaded::Ed25519 { signing, .. } => {
                if alg != SignatureAlgorithm::EdDsa {
                    return Err(self.sig_mismatch(alg));
                }
                let kp = signing.as_ref().ok_or_else(|| self.public_only("sign"))?;
                let sig = kp
                    .try_sign(digest)
                    .map_err(|_| CryptoError::Internal("Ed25519 signing failed"))?;
                Ok(sig.as_ref().to_vec())
            }
            Loaded::X25519 { .. } | Loaded::Oct { .. } => Err(self.sig_mismatch(alg)),
        }
    }

    /// Verifies a signature made by [`LoadedKey::sign`] or any conforming
    /// signer. An invalid signature is `Ok(false)`; a wrong digest length or
    /// an algorithm that does not fit the key is an error. Public-only keys
    /// verify.
    pub fn verify(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool, CryptoError> {
        match &self.inner {
            Loaded::Rsa { spki, .. } => {
                let params = rsa_verification(alg).ok_or_else(|| self.sig_mismatch(alg))?;
                let d = Self::digest_for(alg, digest)?;
                let key = signature::UnparsedPublicKey::new(params, spki.as_slice());
                Ok(key.verify_digest(&d, sig).is_ok())
            }
            Loaded::Ec {
                curve, verifying, ..
            } => {
                if es_curve(alg) != Some(*curve) {
                    return Err(self.sig_mismatch(alg));
                }
                let d = Self::digest_for(alg, digest)?;
                Ok(verifying.verify_digest_sig(&d, sig).is_ok())
            }
            Loaded::Ed25519 { verifying, .. } => {
                if alg != SignatureAlgorithm::EdDsa {
                    return Err(self.sig_mismatch(alg));
                }
                Ok(verifying.verify_sig(digest, sig).is_ok())
            }
            Loaded::X25519 { .. } | Loaded::Oct { .. } => Err(self.sig_mismatch(alg)),
        }
    }

    // ---- encryption --------------------------------------------------------

    fn enc_mismatch(&self, alg: EncryptionAlgorithm) -> CryptoError {
        let needs = match alg.aes_key_len() {
            None => "an RSA key".to_string(),
            Some(n) => format!("an oct key of {} bits", n * 8),
        };
        CryptoError::mismatch(format!("{alg} needs {needs}; this key is {}", self.label))
    }

    /// The oct key for an AES algorithm, checked for the exact size.
    fn aes_key(&self, alg: EncryptionAlgorithm) -> Result<&[u8], CryptoError> {
        match (&self.inner, alg.aes_key_len()) {
            (Loaded::Oct { key, .. }, Some(len)) if key.len() == len => Ok(key.as_slice()),
            _ => Err(self.enc_mismatch(alg)),
        }
    }

    fn rsa_encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        op: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let (Loaded::Rsa { encrypting, .. }, Some(oaep_alg)) = (&self.inner, oaep(alg)) else {
            return Err(self.enc_mismatch(alg));
        };
        let max = encrypting.max_plaintext_size(oaep_alg);
        if plaintext.len() > max {
            return Err(CryptoError::bad(format!(
                "{op} input of {} bytes is too long for {alg} with this {} key (at most {max})",
                plaintext.len(),
                self.label
            )));
        }
        let mut out = vec![0u8; encrypting.ciphertext_size()];
        let len = encrypting
            .encrypt(oaep_alg, plaintext, &mut out, None)
            .map_err(|_| CryptoError::Internal("RSA-OAEP encryption failed"))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    fn rsa_decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        op: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (Loaded::Rsa { private, .. }, Some(oaep_alg)) = (&self.inner, oaep(alg)) else {
            return Err(self.enc_mismatch(alg));
        };
        let p = private.as_ref().ok_or_else(|| self.public_only(op))?;
        let expected = p.decrypting.key_size_bytes();
        if ciphertext.len() != expected {
            return Err(CryptoError::bad(format!(
                "{op} input must be {expected} bytes for this {} key, got {}",
                self.label,
                ciphertext.len()
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; p.decrypting.min_output_size()]);
        let len = p
            .decrypting
            .decrypt(oaep_alg, ciphertext, &mut out, None)
            .map_err(|_| CryptoError::DecryptionFailed("RSA-OAEP decryption failed"))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// Encrypts with RSA-OAEP (SHA-1) / RSA-OAEP-256 (public part suffices)
    /// or AES-GCM with an oct key of exactly the algorithm's size. GCM gets
    /// a random 12-byte IV made here and returns the 16-byte tag separately.
    pub fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Encrypted, CryptoError> {
        if alg.is_key_wrap() {
            return Err(CryptoError::bad(format!(
                "{alg} is a key-wrap algorithm; use wrapkey"
            )));
        }
        if alg.is_gcm() {
            self.aes_key(alg)?;
            let Loaded::Oct { gcm: Some(key), .. } = &self.inner else {
                return Err(self.enc_mismatch(alg));
            };
            let iv = random_nonce()?;
            let mut ciphertext = plaintext.to_vec();
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(aad.unwrap_or_default()),
                    &mut ciphertext,
                )
                .map_err(|_| CryptoError::Internal("AES-GCM encryption failed"))?;
            return Ok(Encrypted {
                ciphertext,
                iv: Some(iv.to_vec()),
                tag: Some(tag.as_ref().to_vec()),
            });
        }
        if aad.is_some() {
            return Err(CryptoError::bad(format!(
                "aad is not used with {alg}; only AES-GCM takes it"
            )));
        }
        let ciphertext = self.rsa_encrypt(alg, plaintext, "encrypt")?;
        Ok(Encrypted {
            ciphertext,
            iv: None,
            tag: None,
        })
    }

    /// Decrypts what [`LoadedKey::encrypt`] made. GCM requires `iv` (12
    /// bytes) and `tag` (16 bytes); RSA takes neither, nor `aad`.
    pub fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if alg.is_key_wrap() {
            return Err(CryptoError::bad(format!(
                "{alg} is a key-wrap algorithm; use unwrapkey"
            )));
        }
        if alg.is_gcm() {
            self.aes_key(alg)?;
            let Loaded::Oct { gcm: Some(key), .. } = &self.inner else {
                return Err(self.enc_mismatch(alg));
            };
            let iv = iv.ok_or_else(|| CryptoError::bad(format!("{alg} decrypt needs `iv`")))?;
            let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| {
                CryptoError::bad(format!(
                    "`iv` must be {NONCE_LEN} bytes for {alg}, got {}",
                    iv.len()
                ))
            })?;
            let tag = tag.ok_or_else(|| CryptoError::bad(format!("{alg} decrypt needs `tag`")))?;
            if tag.len() != GCM_TAG_LEN {
                return Err(CryptoError::bad(format!(
                    "`tag` must be {GCM_TAG_LEN} bytes for {alg}, got {}",
                    tag.len()
                )));
            }
            let mut buf = Zeroizing::new(ciphertext.to_vec());
            key.open_in_place_separate_tag(
                nonce,
                Aad::from(aad.unwrap_or_default()),
                tag,
                &mut buf,
            )
            .map_err(|_| CryptoError::DecryptionFailed("AES-GCM authentication failed"))?;
            return Ok(buf);
        }
        for (name, v) in [("iv", iv), ("aad", aad), ("tag", tag)] {
            if v.is_some() {
                return Err(CryptoError::bad(format!(
                    "`{name}` is not used with {alg}; only AES-GCM takes it"
                )));
            }
        }
        self.rsa_decrypt(alg, ciphertext, "decrypt")
    }

    // ---- key wrapping -----------------------------------------------------

    /// Wraps `key` with RSA-OAEP(-256) or AES key wrap: A*KW (RFC 3394:
    /// input a multiple of 8 bytes, at least 16) or A*KWPAD (RFC 5649: any
    /// non-empty input), with an oct key of the algorithm's size.
    pub fn wrap(&self, alg: EncryptionAlgorithm, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if alg.is_gcm() {
            return Err(CryptoError::bad(format!(
                "{alg} is an encryption algorithm; use encrypt"
            )));
        }
        if !alg.is_key_wrap() {
            return self.rsa_encrypt(alg, key, "wrapkey");
        }
        let kek = self.aes_key(alg)?;
        let padded = is_padded_kw(alg);
        if padded {
            if key.is_empty() {
                return Err(CryptoError::bad(format!("{alg} cannot wrap an empty key")));
            }
        } else if !multiple_of_8(key.len()) || key.len() < 16 {
            return Err(CryptoError::bad(format!(
                "{alg} wraps keys of a multiple of 8 bytes, at least 16; got {} bytes \
                 (use {} for other lengths)",
                key.len(),
                padded_name(alg)
            )));
        }
        let failed = |_| CryptoError::Internal("AES key wrap failed");
        match kek.len() {
            16 | 32 => {
                let cipher = if kek.len() == 16 { &AES_128 } else { &AES_256 };
                let k = KeyEncryptionKey::new(cipher, kek).map_err(failed)?;
                let mut out = vec![0u8; key.len() + 16];
                let len = if padded {
                    k.wrap_with_padding(key, &mut out).map_err(failed)?.len()
                } else {
                    k.wrap(key, &mut out).map_err(failed)?.len()
                };
                out.truncate(len);
                Ok(out)
            }
            _ => {
                let r = if padded {
                    kw::wrap_padded(kek, key)
                } else {
                    kw::wrap(kek, key)
                };
                r.map_err(|e| match e {
                    kw::KwError::Length => {
                        CryptoError::bad(format!("{alg} cannot wrap a key of {} bytes", key.len()))
                    }
                    _ => CryptoError::Internal("AES key wrap failed"),
                })
            }
        }
    }

    /// Unwraps what [`LoadedKey::wrap`] (or any RFC 3394/5649 or RSA-OAEP
    /// implementation) made. A failed integrity check is `DecryptionFailed`.
    pub fn unwrap(
        &self,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if alg.is_gcm() {
            return Err(CryptoError::bad(format!(
                "{alg} is an encryption algorithm; use decrypt"
            )));
        }
        if !alg.is_key_wrap() {
            return self.rsa_decrypt(alg, wrapped, "unwrapkey");
        }
        let kek = self.aes_key(alg)?;
        let padded = is_padded_kw(alg);
        let min = if padded { 16 } else { 24 };
        if !multiple_of_8(wrapped.len()) || wrapped.len() < min {
            return Err(CryptoError::bad(format!(
                "{alg} wrapped keys are a multiple of 8 bytes, at least {min}; got {} bytes",
                wrapped.len()
            )));
        }
        let integrity = CryptoError::DecryptionFailed("AES key unwrap failed its integrity check");
        match kek.len() {
            16 | 32 => {
                let cipher = if kek.len() == 16 { &AES_128 } else { &AES_256 };
                let k = KeyEncryptionKey::new(cipher, kek)
                    .map_err(|_| CryptoError::Internal("AES key unwrap failed"))?;
                let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
                let len = if padded {
                    k.unwrap_with_padding(wrapped, &mut out)
                        .map_err(|_| integrity.clone())?
                        .len()
                } else {
                    k.unwrap(wrapped, &mut out)
                        .map_err(|_| integrity.clone())?
                        .len()
                };
                out.truncate(len);
                Ok(out)
            }
            _ => {
                let r = if padded {
                    kw::unwrap_padded(kek, wrapped)
                } else {
                    kw::unwrap(kek, wrapped)
                };
                r.map_err(|e| match e {
                    kw::KwError::Internal => CryptoError::Internal("AES key unwrap failed"),
                    kw::KwError::Length | kw::KwError::Integrity => integrity.clone(),
                })
            }
        }
    }

    // ---- MAC ------------------------------------------------------------------

    fn oct_key(&self, what: &str) -> Result<&[u8], CryptoError> {
        match &self.inner {
            Loaded::Oct { key, .. } => Ok(key.as_slice()),
            _ => Err(CryptoError::mismatch(format!(
                "{what} needs an oct key; this key is {}",
                self.label
            ))),
        }
    }

    /// HMAC over `data` with an oct key (any size).
    pub fn mac(&self, alg: MacAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.oct_key(alg.as_str())?;
        let k = hmac::Key::new(hmac_alg(alg), key);
        Ok(hmac::sign(&k, data).as_ref().to_vec())
    }

    /// Constant-time check of an HMAC; a wrong or wrong-length `mac` is `Ok(false)`.
    pub fn verify_mac(
        &self,
        alg: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, CryptoError> {
        let key = self.oct_key(alg.as_str())?;
        let k = hmac::Key::new(hmac_alg(alg), key);
        Ok(hmac::verify(&k, data, mac).is_ok())
    }

    // ---- derivation ----------------------------------------------------------

    /// ECDH with this EC (P-256/P-384/P-521) or X25519 private key and a
    /// peer public JWK on the same curve; the raw shared secret (the
    /// x-coordinate for EC, the 32-byte X25519 output).
    pub fn ecdh(&self, peer: &JsonWebKey) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let (mine, my_curve) = match &self.inner {
            Loaded::Ec {
                agreement, curve, ..
            } => (agreement, *curve),
            Loaded::X25519 { agreement } => (agreement, Curve::X25519),
            _ => {
                return Err(CryptoError::mismatch(format!(
                    "ECDH needs an EC or OKP X25519 key; this key is {}",
                    self.label
                )))
            }
        };
        let mine = mine.as_ref().ok_or_else(|| self.public_only("ECDH"))?;
        let (peer_curve, peer_bytes) = jwk::peer_public(peer)?;
        if peer_curve != my_curve {
            return Err(CryptoError::mismatch(format!(
                "the peer key is on {peer_curve}, this key is on {my_curve}"
            )));
        }
        let peer_key = agreement::UnparsedPublicKey::new(ecdh_algorithm(my_curve), peer_bytes);
        agreement::agree(
            mine,
            peer_key,
            CryptoError::invalid(format!(
                "key agreement with the peer {peer_curve} key failed (an invalid or low-order point)"
            )),
            |secret| Ok(Zeroizing::new(secret.to_vec())),
        )
    }

    /// SP 800-108 counter-mode KBKDF with this oct key as the key-derivation key.
    pub fn kbkdf(
        &self,
        alg: DeriveAlgorithm,
        info: &[u8],
        out_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if alg == DeriveAlgorithm::Ecdh {
            return super::kbkdf(alg, &[], info, out_len);
        }
        let key = self.oct_key(alg.as_str())?;
        super::kbkdf(alg, key, info, out_len)
    }
}

fn padded_name(alg: EncryptionAlgorithm) -> &'static str {
    use EncryptionAlgorithm::*;
    match alg {
        A128Kw => "A128KWPAD",
        A192Kw => "A192KWPAD",
        _ => "A256KWPAD",
    }
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedKey({})", self.label)
    }
}
