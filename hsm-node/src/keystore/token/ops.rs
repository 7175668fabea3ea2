//! The dialect's key operations as the token's own functions: `C_Sign`,
//! `C_Verify`, `C_Encrypt`, `C_Decrypt` on the token object a key's
//! `CKA_ID` names.
//!
//! Decides: the mechanism and parameters of each algorithm, and the
//! encodings around them:
//! - ES256/384/512: `CKM_ECDSA` over the caller's digest; PKCS#11 returns
//!   r‖s, which is the JWS form;
//! - RS256/384/512: `CKM_RSA_PKCS` over the DigestInfo of the digest
//!   (RFC 8017 §9.2), which the caller's digest is wrapped in here;
//! - PS256/384/512: `CKM_RSA_PKCS_PSS`, MGF1 with the same hash, salt the
//!   hash's length (as JWS requires);
//! - RSA-OAEP (SHA-1) and RSA-OAEP-256: `CKM_RSA_PKCS_OAEP`, empty label;
//! - A128/192/256GCM: `CKM_AES_GCM`, a 12-byte IV from the token's RNG
//!   unless the caller gives one, a 128-bit tag returned apart;
//! - HS256/384/512: `CKM_SHA256_HMAC` and its siblings.

use super::keys::Part;
use super::{Token, TokenError};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use hsm_api::{EncryptionAlgorithm, MacAlgorithm, SignatureAlgorithm};

/// The DER prefix of DigestInfo for SHA-256, -384 and -512 (RFC 8017
/// §9.2, note 1).
fn digest_info_prefix(len: usize) -> Option<&'static [u8]> {
    match len {
        32 => Some(&[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ]),
        48 => Some(&[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ]),
        64 => Some(&[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ]),
        _ => None,
    }
}

/// The hash mechanism and MGF of a digest length.
fn hash_of(len: usize) -> Option<(MechanismType, PkcsMgfType)> {
    match len {
        32 => Some((MechanismType::SHA256, PkcsMgfType::MGF1_SHA256)),
        48 => Some((MechanismType::SHA384, PkcsMgfType::MGF1_SHA384)),
        64 => Some((MechanismType::SHA512, PkcsMgfType::MGF1_SHA512)),
        _ => None,
    }
}

/// What a signature call sends: the mechanism (rebuilt on the blocking
/// thread, since a `Mechanism` holds pointers) and the bytes it signs.
#[derive(Clone, Copy)]
enum SignMech {
    Ecdsa,
    RsaPkcs,
    Pss(usize),
    Hmac(MacAlgorithm),
}

impl SignMech {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            SignMech::Ecdsa => Mechanism::Ecdsa,
            SignMech::RsaPkcs => Mechanism::RsaPkcs,
            SignMech::Pss(len) => {
                // `prepare` checked the length.
                let (hash_alg, mgf) =
                    hash_of(len).unwrap_or((MechanismType::SHA256, PkcsMgfType::MGF1_SHA256));
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg,
                    mgf,
                    s_len: (len as u64).into(),
                })
            }
            SignMech::Hmac(MacAlgorithm::Hs256) => Mechanism::Sha256Hmac,
            SignMech::Hmac(MacAlgorithm::Hs384) => Mechanism::Sha384Hmac,
            SignMech::Hmac(MacAlgorithm::Hs512) => Mechanism::Sha512Hmac,
        }
    }
}

/// The mechanism and the bytes to sign for `alg` over `digest`.
fn prepare(alg: SignatureAlgorithm, digest: &[u8]) -> Result<(SignMech, Vec<u8>), TokenError> {
    use SignatureAlgorithm::*;
    let want = alg.digest_len().unwrap_or(0);
    let m = match alg {
        Es256 | Es384 | Es512 => SignMech::Ecdsa,
        Rs256 | Rs384 | Rs512 => SignMech::RsaPkcs,
        Ps256 | Ps384 | Ps512 => SignMech::Pss(want),
        EdDsa => {
            return Err(TokenError::NotYet {
                mechanism: "CKM_EDDSA",
                what: "EdDSA",
            })
        }
    };
    if digest.len() != want {
        return Err(TokenError::Invalid(format!(
            "{alg} signs a {want}-byte digest, got {} bytes",
            digest.len()
        )));
    }
    let data = match (m, digest_info_prefix(want)) {
        (SignMech::RsaPkcs, Some(prefix)) => [prefix, digest].concat(),
        _ => digest.to_vec(),
    };
    Ok((m, data))
}

/// A key algorithm's part: which object signs and which verifies.
fn parts(m: SignMech) -> (Part, Part) {
    match m {
        SignMech::Hmac(_) => (Part::Secret, Part::Secret),
        _ => (Part::Private, Part::Public),
    }
}

/// Output of an AES-GCM encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

const GCM_TAG: usize = 16;
const GCM_IV: usize = 12;

impl Token {
    async fn sign_with(
        &self,
        id: &[u8],
        m: SignMech,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, TokenError> {
        self.require(m.mechanism().mechanism_type(), "this signature")?;
        let (id, (signer, _)) = (id.to_vec(), parts(m));
        let t = self.clone();
        self.call("C_Sign", move |s| {
            let h = t.cached_handle(s, &id, signer)?;
            s.sign(&m.mechanism(), h, &data)
        })
        .await
    }

    async fn verify_with(
        &self,
        id: &[u8],
        m: SignMech,
        data: Vec<u8>,
        sig: &[u8],
    ) -> Result<bool, TokenError> {
        self.require(m.mechanism().mechanism_type(), "this verification")?;
        let (id, sig, (_, verifier)) = (id.to_vec(), sig.to_vec(), parts(m));
        let t = self.clone();
        self.call("C_Verify", move |s| {
            let h = t.cached_handle(s, &id, verifier)?;
            match s.verify(&m.mechanism(), h, &data, &sig) {
                Ok(()) => Ok(true),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Signs `digest` with the private key `id`.
    pub async fn sign(
        &self,
        id: &[u8],
        alg: SignatureAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        let (m, data) = prepare(alg, digest)?;
        self.sign_with(id, m, data).await
    }

    /// Verifies a signature with the public key `id`: `Ok(false)` when it
    /// does not match.
    pub async fn verify(
        &self,
        id: &[u8],
        alg: SignatureAlgorithm,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<bool, TokenError> {
        let (m, data) = prepare(alg, digest)?;
        self.verify_with(id, m, data, sig).await
    }

    /// HMAC of `data` with the secret key `id`.
    pub async fn mac(
        &self,
        id: &[u8],
        alg: MacAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.sign_with(id, SignMech::Hmac(alg), data.to_vec()).await
    }

    /// Checks an HMAC tag (in the token, in constant time there).
    pub async fn verify_mac(
        &self,
        id: &[u8],
        alg: MacAlgorithm,
        data: &[u8],
        tag: &[u8],
    ) -> Result<bool, TokenError> {
        self.verify_with(id, SignMech::Hmac(alg), data.to_vec(), tag)
            .await
    }

    /// RSA-OAEP encryption with the public key `id`.
    pub async fn rsa_encrypt(
        &self,
        id: &[u8],
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.oaep_call(id, alg, plaintext, false).await
    }

    /// RSA-OAEP decryption with the private key `id`.
    pub async fn rsa_decrypt(
        &self,
        id: &[u8],
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.oaep_call(id, alg, ciphertext, true).await
    }

    async fn oaep_call(
        &self,
        id: &[u8],
        alg: EncryptionAlgorithm,
        data: &[u8],
        decrypt: bool,
    ) -> Result<Vec<u8>, TokenError> {
        let sha256 = oaep_hash(alg)?;
        self.require(MechanismType::RSA_PKCS_OAEP, "RSA-OAEP")?;
        let (id, data) = (id.to_vec(), data.to_vec());
        let function = if decrypt { "C_Decrypt" } else { "C_Encrypt" };
        let t = self.clone();
        let r = self
            .call(function, move |s| {
                let mech = Mechanism::RsaPkcsOaep(oaep(sha256));
                let r = if decrypt {
                    let h = t.cached_handle(s, &id, Part::Private)?;
                    s.decrypt(&mech, h, &data)
                } else {
                    let h = t.cached_handle(s, &id, Part::Public)?;
                    s.encrypt(&mech, h, &data)
                };
                match r {
                    // Tokens that do OAEP with SHA-1 only (SoftHSM2 2.6)
                    // refuse the SHA-256 parameters.
                    Err(CkError::Pkcs11(
                        RvError::ArgumentsBad | RvError::MechanismParamInvalid,
                        _,
                    )) if sha256 => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        r.ok_or_else(|| TokenError::Unsupported {
            mechanism: "CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256".into(),
            what: "RSA-OAEP-256",
        })
    }

    /// AES-GCM encryption with the secret key `id`.
    pub async fn gcm_encrypt(
        &self,
        id: &[u8],
        iv: Option<&[u8]>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Sealed, TokenError> {
        self.require(MechanismType::AES_GCM, "AES-GCM")?;
        if let Some(iv) = iv {
            if iv.len() != GCM_IV {
                return Err(TokenError::Invalid(format!(
                    "an AES-GCM iv is {GCM_IV} bytes, got {}",
                    iv.len()
                )));
            }
        }
        let (id, given, aad, data) = (
            id.to_vec(),
            iv.map(<[u8]>::to_vec),
            aad.to_vec(),
            plaintext.to_vec(),
        );
        let t = self.clone();
        self.call("C_Encrypt", move |s| {
            let mut iv = match &given {
                Some(v) => v.clone(),
                None => s.generate_random_vec(GCM_IV as u32)?,
            };
            let h = t.cached_handle(s, &id, Part::Secret)?;
            let params = GcmParams::new(&mut iv, &aad, ((GCM_TAG * 8) as u64).into())?;
            let mut out = s.encrypt(&Mechanism::AesGcm(params), h, &data)?;
            let tag = out.split_off(out.len().saturating_sub(GCM_TAG));
            // The IV as the token left it: tokens that make their own IV
            // (AWS CloudHSM) write it into the parameter's buffer.
            Ok(Sealed {
                iv,
                ciphertext: out,
                tag,
            })
        })
        .await
    }

    /// AES-GCM decryption with the secret key `id`; a wrong tag is
    /// `TokenError::Invalid`.
    pub async fn gcm_decrypt(
        &self,
        id: &[u8],
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Vec<u8>, TokenError> {
        self.require(MechanismType::AES_GCM, "AES-GCM")?;
        if sealed.iv.len() != GCM_IV || sealed.tag.len() != GCM_TAG {
            return Err(TokenError::Invalid(format!(
                "AES-GCM needs a {GCM_IV}-byte iv and a {GCM_TAG}-byte tag"
            )));
        }
        let (id, iv, aad) = (id.to_vec(), sealed.iv.clone(), aad.to_vec());
        let mut data = sealed.ciphertext.clone();
        data.extend_from_slice(&sealed.tag);
        let t = self.clone();
        let opened = self
            .call("C_Decrypt", move |s| {
                let h = t.cached_handle(s, &id, Part::Secret)?;
                let mut iv = iv.clone();
                let params = GcmParams::new(&mut iv, &aad, ((GCM_TAG * 8) as u64).into())?;
                match s.decrypt(&Mechanism::AesGcm(params), h, &data) {
                    Ok(p) => Ok(Some(p)),
                    // A tag that does not match: SoftHSM2 says
                    // CKR_GENERAL_ERROR, the standard CKR_ENCRYPTED_DATA_INVALID.
                    Err(CkError::Pkcs11(
                        RvError::GeneralError
                        | RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange,
                        _,
                    )) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        opened.ok_or_else(|| {
            TokenError::Invalid("AES-GCM decryption failed: the tag does not match".into())
        })
    }
}

/// Whether an OAEP algorithm hashes with SHA-256 (else SHA-1).
fn oaep_hash(alg: EncryptionAlgorithm) -> Result<bool, TokenError> {
    match alg {
        EncryptionAlgorithm::RsaOaep => Ok(false),
        EncryptionAlgorithm::RsaOaep256 => Ok(true),
        other => Err(TokenError::Invalid(format!(
            "{other} is not an RSA-OAEP algorithm"
        ))),
    }
}

fn oaep(sha256: bool) -> PkcsOaepParams<'static> {
    if sha256 {
        PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        )
    } else {
        PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        )
    }
}
