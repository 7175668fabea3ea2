//! The mechanisms the module offers and how each maps onto the proxy's
//! algorithms.
//!
//! Decides: the mechanism table (`C_GetMechanismList` / `Info`), how a
//! Cryptoki input becomes a Key Vault request (a raw ECDSA hash fitted to
//! the curve, a PKCS#1 DigestInfo unpacked to its hash, PSS parameters
//! checked against what `PS256…` means, SP 800-108 data parameters turned
//! into the KBKDF fixed input), and which digests the module computes
//! itself. Parameters arrive already read from C memory (`ffi::convert`).

use crate::error::{Error, Result};
use aws_lc_rs::digest;
use cryptoki_sys::*;
use hsm_api::{Curve, DeriveAlgorithm, EncryptionAlgorithm, MacAlgorithm, SignatureAlgorithm};

/// The hash functions of digesting and of the hash-and-sign mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn output_len(self) -> usize {
        self.algorithm().output_len()
    }
    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha224 => &digest::SHA224,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }
    pub fn context(self) -> digest::Context {
        digest::Context::new(self.algorithm())
    }
    /// The hash named by a `CKM_SHA*` digest mechanism (also how PSS and
    /// OAEP parameters name their hash).
    pub fn from_ckm(m: CK_MECHANISM_TYPE) -> Option<HashAlg> {
        Some(match m {
            CKM_SHA_1 => HashAlg::Sha1,
            CKM_SHA224 => HashAlg::Sha224,
            CKM_SHA256 => HashAlg::Sha256,
            CKM_SHA384 => HashAlg::Sha384,
            CKM_SHA512 => HashAlg::Sha512,
            _ => return None,
        })
    }
    /// The MGF1 variant that goes with this hash.
    pub fn mgf1(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            HashAlg::Sha1 => CKG_MGF1_SHA1,
            HashAlg::Sha224 => CKG_MGF1_SHA224,
            HashAlg::Sha256 => CKG_MGF1_SHA256,
            HashAlg::Sha384 => CKG_MGF1_SHA384,
            HashAlg::Sha512 => CKG_MGF1_SHA512,
        }
    }
    /// The DER prefix of a PKCS#1 v1.5 DigestInfo with this hash (RFC 8017
    /// 9.2, note 1), for the hashes this HSM signs with.
    fn digest_info_prefix(self) -> Option<&'static [u8]> {
        Some(match self {
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
            _ => return None,
        })
    }
    fn rs(self) -> Option<SignatureAlgorithm> {
        Some(match self {
            HashAlg::Sha256 => SignatureAlgorithm::Rs256,
            HashAlg::Sha384 => SignatureAlgorithm::Rs384,
            HashAlg::Sha512 => SignatureAlgorithm::Rs512,
            _ => return None,
        })
    }
    fn ps(self) -> Option<SignatureAlgorithm> {
        Some(match self {
            HashAlg::Sha256 => SignatureAlgorithm::Ps256,
            HashAlg::Sha384 => SignatureAlgorithm::Ps384,
            HashAlg::Sha512 => SignatureAlgorithm::Ps512,
            _ => return None,
        })
    }
    pub fn hs(self) -> Option<MacAlgorithm> {
        Some(match self {
            HashAlg::Sha256 => MacAlgorithm::Hs256,
            HashAlg::Sha384 => MacAlgorithm::Hs384,
            HashAlg::Sha512 => MacAlgorithm::Hs512,
            _ => return None,
        })
    }
}

/// `CK_RSA_PKCS_PSS_PARAMS`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PssParams {
    pub hash: CK_MECHANISM_TYPE,
    pub mgf: CK_RSA_PKCS_MGF_TYPE,
    pub salt_len: u64,
}

/// `CK_RSA_PKCS_OAEP_PARAMS`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OaepParams {
    pub hash: CK_MECHANISM_TYPE,
    pub mgf: CK_RSA_PKCS_MGF_TYPE,
    pub source: CK_RSA_PKCS_OAEP_SOURCE_TYPE,
    pub label: Vec<u8>,
}

/// `CK_GCM_PARAMS`, read (the IV buffer's address stays in the FFI layer,
/// which writes the generated IV back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcmParams {
    pub iv: Vec<u8>,
    pub aad: Vec<u8>,
    pub tag_bits: u64,
}

/// `CK_ECDH1_DERIVE_PARAMS`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ecdh1Params {
    pub kdf: CK_EC_KDF_TYPE,
    pub shared_data: Vec<u8>,
    pub public_data: Vec<u8>,
}

/// One `CK_PRF_DATA_PARAM` of an SP 800-108 derivation, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdfData {
    /// The counter, with its width and byte order.
    Counter {
        width_bits: u64,
        little_endian: bool,
    },
    /// Caller bytes (label, separator, context).
    Bytes(Vec<u8>),
    /// The length of the derived material, encoded as given.
    DkmLength {
        method: CK_SP800_108_DKM_LENGTH_METHOD,
        width_bits: u64,
        little_endian: bool,
    },
}

/// `CK_SP800_108_KDF_PARAMS`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbkdfParams {
    pub prf: CK_MECHANISM_TYPE,
    pub data: Vec<KdfData>,
    pub additional_keys: u64,
}

/// A mechanism with its parameters, as the safe layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    EcKeyPairGen,
    RsaKeyPairGen,
    EdwardsKeyPairGen,
    MontgomeryKeyPairGen,
    AesKeyGen,
    GenericSecretKeyGen,
    /// `None`: the caller passes the hash (`CKM_ECDSA`).
    Ecdsa(Option<HashAlg>),
    /// `CKM_RSA_PKCS`: sign/verify a DigestInfo.
    RsaPkcs,
    RsaPkcsHash(HashAlg),
    /// `CKM_RSA_PKCS_PSS`: the caller passes the hash.
    RsaPss(PssParams),
    RsaPssHash(HashAlg, PssParams),
    EdDsa,
    Hmac(HashAlg),
    AesGcm(GcmParams),
    RsaOaep(OaepParams),
    AesKeyWrap,
    AesKeyWrapPad,
    Ecdh1(Ecdh1Params),
    Kbkdf(KbkdfParams),
    Digest(HashAlg),
}

/// What a mechanism is offered for, as `CK_MECHANISM_INFO` says it.
pub struct Offer {
    pub ckm: CK_MECHANISM_TYPE,
    pub min: u64,
    pub max: u64,
    pub flags: CK_FLAGS,
}

const SIGN: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// The mechanism table: every mechanism the module offers.
pub const OFFERED: &[Offer] = &[
    Offer {
        ckm: CKM_EC_KEY_PAIR_GEN,
        min: 256,
        max: 521,
        flags: CKF_HW | CKF_GENERATE_KEY_PAIR | EC_FLAGS,
    },
    Offer {
        ckm: CKM_RSA_PKCS_KEY_PAIR_GEN,
        min: 2048,
        max: 4096,
        flags: CKF_HW | CKF_GENERATE_KEY_PAIR,
    },
    Offer {
        ckm: CKM_EC_EDWARDS_KEY_PAIR_GEN,
        min: 255,
        max: 255,
        flags: CKF_HW | CKF_GENERATE_KEY_PAIR,
    },
    Offer {
        ckm: CKM_EC_MONTGOMERY_KEY_PAIR_GEN,
        min: 255,
        max: 255,
        flags: CKF_HW | CKF_GENERATE_KEY_PAIR,
    },
    Offer {
        ckm: CKM_AES_KEY_GEN,
        min: 16,
        max: 32,
        flags: CKF_HW | CKF_GENERATE,
    },
    Offer {
        ckm: CKM_GENERIC_SECRET_KEY_GEN,
        min: 16,
        max: 64,
        flags: CKF_HW | CKF_GENERATE,
    },
    Offer {
        ckm: CKM_ECDSA,
        min: 256,
        max: 521,
        flags: CKF_HW | SIGN | EC_FLAGS,
    },
    Offer {
        ckm: CKM_ECDSA_SHA256,
        min: 256,
        max: 521,
        flags: CKF_HW | SIGN | EC_FLAGS,
    },
    Offer {
        ckm: CKM_ECDSA_SHA384,
        min: 256,
        max: 521,
        flags: CKF_HW | SIGN | EC_FLAGS,
    },
    Offer {
        ckm: CKM_ECDSA_SHA512,
        min: 256,
        max: 521,
        flags: CKF_HW | SIGN | EC_FLAGS,
    },
    Offer {
        ckm: CKM_RSA_PKCS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA256_RSA_PKCS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA384_RSA_PKCS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA512_RSA_PKCS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_RSA_PKCS_PSS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA256_RSA_PKCS_PSS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA384_RSA_PKCS_PSS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA512_RSA_PKCS_PSS,
        min: 2048,
        max: 4096,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_EDDSA,
        min: 255,
        max: 255,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA256_HMAC,
        min: 16,
        max: 64,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA384_HMAC,
        min: 16,
        max: 64,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_SHA512_HMAC,
        min: 16,
        max: 64,
        flags: CKF_HW | SIGN,
    },
    Offer {
        ckm: CKM_AES_GCM,
        min: 16,
        max: 32,
        flags: CKF_HW | CKF_ENCRYPT | CKF_DECRYPT,
    },
    Offer {
        ckm: CKM_RSA_PKCS_OAEP,
        min: 2048,
        max: 4096,
        flags: CKF_HW | CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
    },
    Offer {
        ckm: CKM_AES_KEY_WRAP,
        min: 16,
        max: 32,
        flags: CKF_HW | CKF_WRAP | CKF_UNWRAP,
    },
    Offer {
        ckm: CKM_AES_KEY_WRAP_PAD,
        min: 16,
        max: 32,
        flags: CKF_HW | CKF_WRAP | CKF_UNWRAP,
    },
    Offer {
        ckm: CKM_ECDH1_DERIVE,
        min: 255,
        max: 384,
        flags: CKF_HW | CKF_DERIVE | EC_FLAGS,
    },
    Offer {
        ckm: CKM_SP800_108_COUNTER_KDF,
        min: 16,
        max: 64,
        flags: CKF_HW | CKF_DERIVE,
    },
    Offer {
        ckm: CKM_SHA_1,
        min: 0,
        max: 0,
        flags: CKF_DIGEST,
    },
    Offer {
        ckm: CKM_SHA224,
        min: 0,
        max: 0,
        flags: CKF_DIGEST,
    },
    Offer {
        ckm: CKM_SHA256,
        min: 0,
        max: 0,
        flags: CKF_DIGEST,
    },
    Offer {
        ckm: CKM_SHA384,
        min: 0,
        max: 0,
        flags: CKF_DIGEST,
    },
    Offer {
        ckm: CKM_SHA512,
        min: 0,
        max: 0,
        flags: CKF_DIGEST,
    },
];

/// The hash-and-sign mechanisms' hash (and the plain ones' `None`).
pub fn signing_hash(ckm: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    Some(match ckm {
        CKM_ECDSA_SHA256 | CKM_SHA256_RSA_PKCS | CKM_SHA256_RSA_PKCS_PSS | CKM_SHA256_HMAC => {
            HashAlg::Sha256
        }
        CKM_ECDSA_SHA384 | CKM_SHA384_RSA_PKCS | CKM_SHA384_RSA_PKCS_PSS | CKM_SHA384_HMAC => {
            HashAlg::Sha384
        }
        CKM_ECDSA_SHA512 | CKM_SHA512_RSA_PKCS | CKM_SHA512_RSA_PKCS_PSS | CKM_SHA512_HMAC => {
            HashAlg::Sha512
        }
        _ => return None,
    })
}

/// The ES algorithm for a curve, and the digest fitted to it: ECDSA uses
/// the leftmost bits of the hash up to the order's size, so a longer hash
/// is cut and a shorter one left-padded with zeros (the same integer).
pub fn fit_ecdsa(crv: Curve, hash: &[u8]) -> Result<(SignatureAlgorithm, Vec<u8>)> {
    let (alg, len) = match crv {
        Curve::P256 => (SignatureAlgorithm::Es256, 32),
        Curve::P384 => (SignatureAlgorithm::Es384, 48),
        Curve::P521 => (SignatureAlgorithm::Es512, 64),
        other => {
            return Err(Error::KeyTypeInconsistent(format!(
                "ECDSA needs a NIST curve, the key is {other}"
            )))
        }
    };
    if hash.is_empty() {
        return Err(Error::DataLenRange("ECDSA input is empty".into()));
    }
    if hash.len() > len {
        // P-521's order has 521 bits: a longer input cannot be cut to 64
        // bytes without changing the integer ECDSA signs.
        if crv == Curve::P521 {
            return Err(Error::DataLenRange(format!(
                "P-521 signs a hash of at most 64 bytes, got {}",
                hash.len()
            )));
        }
        return Ok((alg, hash[..len].to_vec()));
    }
    let mut d = vec![0u8; len - hash.len()];
    d.extend_from_slice(hash);
    Ok((alg, d))
}

/// `CKM_RSA_PKCS` signing input: a DigestInfo of SHA-256/384/512, unpacked.
pub fn unpack_digest_info(data: &[u8]) -> Result<(SignatureAlgorithm, Vec<u8>)> {
    for h in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
        if let (Some(prefix), Some(alg)) = (h.digest_info_prefix(), h.rs()) {
            if data.len() == prefix.len() + h.output_len() && data.starts_with(prefix) {
                return Ok((alg, data[prefix.len()..].to_vec()));
            }
        }
    }
    Err(Error::DataInvalid(
        "CKM_RSA_PKCS signs a DER DigestInfo of SHA-256, SHA-384 or SHA-512 only".into(),
    ))
}

/// The PS algorithm PSS parameters stand for: the hash, MGF1 with the same
/// hash and a salt as long as the hash (what `PS256…` mean). `want` is the
/// hash a `CKM_SHAx_RSA_PKCS_PSS` mechanism names.
pub fn pss_alg(p: &PssParams, want: Option<HashAlg>) -> Result<(HashAlg, SignatureAlgorithm)> {
    let bad = |why: String| Error::MechanismParamInvalid(why);
    let h = HashAlg::from_ckm(p.hash).ok_or_else(|| bad(format!("PSS hash {:#x}", p.hash)))?;
    let alg = h
        .ps()
        .ok_or_else(|| bad("PSS hash must be SHA-256, SHA-384 or SHA-512".into()))?;
    if want.is_some_and(|w| w != h) {
        return Err(bad("the PSS hash must be the mechanism's hash".into()));
    }
    if p.mgf != h.mgf1() {
        return Err(bad("the MGF must be MGF1 with the PSS hash".into()));
    }
    if p.salt_len != h.output_len() as u64 {
        return Err(bad(format!(
            "the salt must be {} bytes, the hash's length",
            h.output_len()
        )));
    }
    Ok((h, alg))
}

/// The RSA-OAEP algorithm OAEP parameters stand for.
pub fn oaep_alg(p: &OaepParams) -> Result<EncryptionAlgorithm> {
    let bad = |why: &str| Error::MechanismParamInvalid(why.into());
    if !p.label.is_empty() {
        return Err(bad("OAEP labels are not offered"));
    }
    if p.source != 0 && p.source != CKZ_DATA_SPECIFIED {
        return Err(bad("OAEP source must be CKZ_DATA_SPECIFIED"));
    }
    match (p.hash, p.mgf) {
        (CKM_SHA_1, CKG_MGF1_SHA1) => Ok(EncryptionAlgorithm::RsaOaep),
        (CKM_SHA256, CKG_MGF1_SHA256) => Ok(EncryptionAlgorithm::RsaOaep256),
        _ => Err(bad(
            "OAEP is offered with SHA-1 and MGF1-SHA1, or SHA-256 and MGF1-SHA256",
        )),
    }
}

/// The AES-GCM algorithm for a key of `len` bytes.
pub fn gcm_alg(len: usize) -> Result<EncryptionAlgorithm> {
    Ok(match len {
        16 => EncryptionAlgorithm::A128Gcm,
        24 => EncryptionAlgorithm::A192Gcm,
        32 => EncryptionAlgorithm::A256Gcm,
        _ => {
            return Err(Error::KeyTypeInconsistent(format!(
                "AES-GCM with a {len}-byte key"
            )))
        }
    })
}

/// The AES key-wrap algorithm for a key of `len` bytes.
pub fn key_wrap_alg(len: usize, pad: bool) -> Result<EncryptionAlgorithm> {
    use EncryptionAlgorithm::*;
    Ok(match (len, pad) {
        (16, false) => A128Kw,
        (24, false) => A192Kw,
        (32, false) => A256Kw,
        (16, true) => A128Kwp,
        (24, true) => A192Kwp,
        (32, true) => A256Kwp,
        _ => {
            return Err(Error::KeyTypeInconsistent(format!(
                "AES key wrap with a {len}-byte key"
            )))
        }
    })
}

/// The KBKDF algorithm and fixed input of an SP 800-108 counter-mode
/// derivation of `key_len` bytes. The proxy's KBKDF puts a 32-bit
/// big-endian counter before the fixed input, so the data parameters must
/// start with exactly that counter; the rest (bytes and the encoded length)
/// are the fixed input, in order.
pub fn kbkdf(p: &KbkdfParams, key_len: usize) -> Result<(DeriveAlgorithm, Vec<u8>)> {
    let bad = |why: String| Error::MechanismParamInvalid(why);
    let (alg, block_bits) = match p.prf {
        CKM_SHA256_HMAC => (DeriveAlgorithm::KbkdfHmacSha256, 256u64),
        CKM_SHA384_HMAC => (DeriveAlgorithm::KbkdfHmacSha384, 384),
        CKM_SHA512_HMAC => (DeriveAlgorithm::KbkdfHmacSha512, 512),
        other => {
            return Err(bad(format!(
                "PRF {other:#x}: HMAC-SHA256/384/512 are offered"
            )))
        }
    };
    if p.additional_keys != 0 {
        return Err(bad("additional derived keys are not offered".into()));
    }
    match p.data.first() {
        Some(KdfData::Counter {
            width_bits: 32,
            little_endian: false,
        }) => {}
        _ => {
            return Err(bad(
                "the first data parameter must be the counter, 32 bits, big-endian".into(),
            ))
        }
    }
    let key_bits = key_len as u64 * 8;
    let mut info = Vec::new();
    for d in &p.data[1..] {
        match d {
            KdfData::Counter { .. } => return Err(bad("only one counter is allowed".into())),
            KdfData::Bytes(b) => info.extend_from_slice(b),
            KdfData::DkmLength {
                method,
                width_bits,
                little_endian,
            } => {
                let l = match *method {
                    CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS => key_bits,
                    CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS => {
                        key_bits.div_ceil(block_bits) * block_bits
                    }
                    m => return Err(bad(format!("DKM length method {m:#x}"))),
                };
                if *width_bits == 0 || *width_bits > 64 || width_bits % 8 != 0 {
                    return Err(bad(format!("DKM length width {width_bits}")));
                }
                let n = (*width_bits / 8) as usize;
                if n < 8 && l >> (n * 8) != 0 {
                    return Err(bad(format!(
                        "the length {l} does not fit {width_bits} bits"
                    )));
                }
                let be = l.to_be_bytes();
                let mut bytes = be[8 - n..].to_vec();
                if *little_endian {
                    bytes.reverse();
                }
                info.extend_from_slice(&bytes);
            }
        }
    }
    Ok((alg, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_inputs_are_fitted_to_the_curve_as_the_integer_ecdsa_signs() {
        let (alg, d) = fit_ecdsa(Curve::P256, &[1u8; 20]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alg, SignatureAlgorithm::Es256);
        assert_eq!(&d[..12], &[0u8; 12]);
        assert_eq!(&d[12..], &[1u8; 20]);
        let long: Vec<u8> = (0..48).collect();
        let (_, d) = fit_ecdsa(Curve::P256, &long).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d, long[..32].to_vec());
        assert!(matches!(
            fit_ecdsa(Curve::P521, &[0u8; 66]),
            Err(Error::DataLenRange(_))
        ));
        assert!(matches!(
            fit_ecdsa(Curve::Ed25519, &[0u8; 32]),
            Err(Error::KeyTypeInconsistent(_))
        ));
    }

    #[test]
    fn a_digest_info_is_unpacked_and_anything_else_refused() {
        let h = [7u8; 32];
        let mut di = HashAlg::Sha256
            .digest_info_prefix()
            .unwrap_or_default()
            .to_vec();
        di.extend_from_slice(&h);
        let (alg, d) = unpack_digest_info(&di).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((alg, d.as_slice()), (SignatureAlgorithm::Rs256, &h[..]));
        assert!(unpack_digest_info(&h).is_err());
        di.push(0);
        assert!(unpack_digest_info(&di).is_err());
    }

    #[test]
    fn pss_parameters_must_mean_what_ps256_means() {
        let ok = PssParams {
            hash: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            salt_len: 32,
        };
        assert_eq!(
            pss_alg(&ok, None).ok().map(|x| x.1),
            Some(SignatureAlgorithm::Ps256)
        );
        assert!(pss_alg(&ok, Some(HashAlg::Sha384)).is_err());
        assert!(pss_alg(&PssParams { salt_len: 20, ..ok }, None).is_err());
        assert!(pss_alg(
            &PssParams {
                mgf: CKG_MGF1_SHA1,
                ..ok
            },
            None
        )
        .is_err());
    }

    #[test]
    fn kbkdf_fixed_input_is_the_data_after_the_counter_with_the_length_encoded() {
        let p = KbkdfParams {
            prf: CKM_SHA256_HMAC,
            data: vec![
                KdfData::Counter {
                    width_bits: 32,
                    little_endian: false,
                },
                KdfData::Bytes(b"label".to_vec()),
                KdfData::Bytes(vec![0]),
                KdfData::Bytes(b"ctx".to_vec()),
                KdfData::DkmLength {
                    method: CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS,
                    width_bits: 32,
                    little_endian: false,
                },
            ],
            additional_keys: 0,
        };
        let (alg, info) = kbkdf(&p, 32).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alg, DeriveAlgorithm::KbkdfHmacSha256);
        assert_eq!(info, b"label\0ctx\x00\x00\x01\x00".to_vec());
        let mut lsb = p.clone();
        lsb.data[0] = KdfData::Counter {
            width_bits: 16,
            little_endian: false,
        };
        assert!(kbkdf(&lsb, 32).is_err());
        let mut seg = p.clone();
        seg.prf = CKM_SHA512_HMAC;
        seg.data[4] = KdfData::DkmLength {
            method: CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS,
            width_bits: 16,
            little_endian: true,
        };
        let (_, info) = kbkdf(&seg, 16).unwrap_or_else(|e| panic!("{e}"));
        // 128 bits rounded up to one 512-bit block, little-endian 16 bits.
        assert_eq!(&info[info.len() - 2..], &[0x00, 0x02]);
    }
}
