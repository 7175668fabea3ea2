//! Reading the caller's C memory into safe values, and writing answers
//! back: every pointer the application passes is checked here.
//!
//! Decides the checks: a NULL pointer with a non-zero length is
//! `CKR_ARGUMENTS_BAD`; a mechanism parameter must have exactly its
//! structure's size; lengths above `isize::MAX` are refused; nothing is
//! kept pointing into the caller's memory except the AES-GCM IV buffer
//! (see `super::GCM_IV`).
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::mechanism::*;
use crate::objects::Attr;
use crate::token::Out;
use cryptoki_sys::*;

/// The caller's bytes at `p`, `n` long.
///
/// # Safety
/// `p` must point to `n` readable bytes when it is not NULL (the caller's
/// promise under PKCS#11); NULL with `n > 0` is refused here.
pub unsafe fn bytes<'a>(p: *const u8, n: CK_ULONG) -> Result<&'a [u8]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() || n > isize::MAX as CK_ULONG {
        return Err(Error::ArgumentsBad("NULL or oversized buffer"));
    }
    // SAFETY: non-NULL, and the caller guarantees `n` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, n as usize) })
}

/// A template (`CK_ATTRIBUTE` array), copied.
///
/// # Safety
/// `p` must point to `n` `CK_ATTRIBUTE`s whose `pValue` point to
/// `ulValueLen` readable bytes.
pub unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > 4096 {
        return Err(Error::ArgumentsBad("template"));
    }
    // SAFETY: non-NULL, `n` entries promised by the caller.
    let attrs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    attrs
        .iter()
        .map(|a| {
            // SAFETY: each attribute's value pointer and length, as promised.
            let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
            Ok(Attr {
                ty: a.type_,
                value: v.to_vec(),
            })
        })
        .collect()
}

/// A mechanism parameter of type `T`, copied.
///
/// # Safety
/// `m.pParameter` must point to `m.ulParameterLen` readable bytes.
unsafe fn param<T: Copy>(m: &CK_MECHANISM) -> Result<T> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(Error::MechanismParamInvalid(format!(
            "mechanism {:#x} needs a {}-byte parameter",
            m.mechanism,
            std::mem::size_of::<T>()
        )));
    }
    // SAFETY: non-NULL and exactly the structure's size; read unaligned in
    // case the caller's buffer is not aligned.
    Ok(unsafe { std::ptr::read_unaligned(m.pParameter as *const T) })
}

/// `CK_GCM_PARAMS` without `ulIvBits`, as Java and pre-2.40 headers lay
/// it out.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(non_snake_case)]
struct GcmParamsNoBits {
    pIv: *mut CK_BYTE,
    ulIvLen: CK_ULONG,
    pAAD: *mut CK_BYTE,
    ulAADLen: CK_ULONG,
    ulTagBits: CK_ULONG,
}

/// Where an AES-GCM encryption writes its IV back: the caller's `pIv`.
pub use crate::token::IvTarget as IvOut;

/// A mechanism, read; for AES-GCM also where its IV goes back.
///
/// # Safety
/// `p` must point to a `CK_MECHANISM` whose parameter is valid for its type.
pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<(Mechanism, Option<IvOut>)> {
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL mechanism"));
    }
    // SAFETY: non-NULL, a CK_MECHANISM promised by the caller.
    let m = unsafe { std::ptr::read_unaligned(p) };
    let none = |mech: Mechanism| -> Result<(Mechanism, Option<IvOut>)> {
        if m.ulParameterLen != 0 {
            return Err(Error::MechanismParamInvalid(format!(
                "mechanism {:#x} takes no parameter",
                m.mechanism
            )));
        }
        Ok((mech, None))
    };
    let hash = signing_hash(m.mechanism);
    match m.mechanism {
        CKM_EC_KEY_PAIR_GEN => none(Mechanism::EcKeyPairGen),
        CKM_RSA_PKCS_KEY_PAIR_GEN => none(Mechanism::RsaKeyPairGen),
        CKM_EC_EDWARDS_KEY_PAIR_GEN => none(Mechanism::EdwardsKeyPairGen),
        CKM_EC_MONTGOMERY_KEY_PAIR_GEN => none(Mechanism::MontgomeryKeyPairGen),
        CKM_AES_KEY_GEN => none(Mechanism::AesKeyGen),
        CKM_GENERIC_SECRET_KEY_GEN => none(Mechanism::GenericSecretKeyGen),
        CKM_ECDSA => none(Mechanism::Ecdsa(None)),
        CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512 => none(Mechanism::Ecdsa(hash)),
        CKM_RSA_PKCS => none(Mechanism::RsaPkcs),
        CKM_SHA256_RSA_PKCS | CKM_SHA384_RSA_PKCS | CKM_SHA512_RSA_PKCS => match hash {
            Some(h) => none(Mechanism::RsaPkcsHash(h)),
            None => Err(Error::MechanismInvalid(m.mechanism)),
        },
        CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => {
            // SAFETY: the parameter of a PSS mechanism.
            let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { param(&m) }?;
            let pss = PssParams {
                hash: p.hashAlg,
                mgf: p.mgf,
                salt_len: p.sLen,
            };
            Ok((
                match hash {
                    Some(h) => Mechanism::RsaPssHash(h, pss),
                    None => Mechanism::RsaPss(pss),
                },
                None,
            ))
        }
        CKM_EDDSA => {
            if m.ulParameterLen != 0 {
                // SAFETY: the parameter of CKM_EDDSA.
                let p: CK_EDDSA_PARAMS = unsafe { param(&m) }?;
                if p.phFlag != CK_FALSE || p.ulContextDataLen != 0 {
                    return Err(Error::MechanismParamInvalid(
                        "Ed25519ph and contexts are not offered".into(),
                    ));
                }
            }
            Ok((Mechanism::EdDsa, None))
        }
        CKM_SHA256_HMAC | CKM_SHA384_HMAC | CKM_SHA512_HMAC => match hash {
            Some(h) => none(Mechanism::Hmac(h)),
            None => Err(Error::MechanismInvalid(m.mechanism)),
        },
        CKM_AES_GCM => {
            // Two layouts are in use: the 2.40 header's (with ulIvBits, 48
            // bytes) and the one without it (40 bytes) that Java's
            // SunPKCS11 and older headers send.
            let p: CK_GCM_PARAMS =
                if m.ulParameterLen as usize == std::mem::size_of::<GcmParamsNoBits>() {
                    // SAFETY: the parameter of CKM_AES_GCM, in the short layout.
                    let q: GcmParamsNoBits = unsafe { param(&m) }?;
                    CK_GCM_PARAMS {
                        pIv: q.pIv,
                        ulIvLen: q.ulIvLen,
                        ulIvBits: q.ulIvLen * 8,
                        pAAD: q.pAAD,
                        ulAADLen: q.ulAADLen,
                        ulTagBits: q.ulTagBits,
                    }
                } else {
                    // SAFETY: the parameter of CKM_AES_GCM.
                    unsafe { param(&m) }?
                };
            // SAFETY: the IV and AAD buffers the parameter points to.
            let iv = unsafe { bytes(p.pIv, p.ulIvLen) }?.to_vec();
            // SAFETY: as above.
            let aad = unsafe { bytes(p.pAAD, p.ulAADLen) }?.to_vec();
            let out = (!p.pIv.is_null()).then_some(IvOut {
                addr: p.pIv as usize,
                len: p.ulIvLen as usize,
            });
            Ok((
                Mechanism::AesGcm(GcmParams {
                    iv,
                    aad,
                    tag_bits: p.ulTagBits,
                }),
                out,
            ))
        }
        CKM_RSA_PKCS_OAEP => {
            // SAFETY: the parameter of CKM_RSA_PKCS_OAEP.
            let p: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(&m) }?;
            // SAFETY: the source data the parameter points to.
            let label = unsafe { bytes(p.pSourceData as *const u8, p.ulSourceDataLen) }?.to_vec();
            Ok((
                Mechanism::RsaOaep(OaepParams {
                    hash: p.hashAlg,
                    mgf: p.mgf,
                    source: p.source,
                    label,
                }),
                None,
            ))
        }
        CKM_AES_KEY_WRAP => none(Mechanism::AesKeyWrap),
        CKM_AES_KEY_WRAP_PAD => none(Mechanism::AesKeyWrapPad),
        CKM_ECDH1_DERIVE => {
            // SAFETY: the parameter of CKM_ECDH1_DERIVE.
            let p: CK_ECDH1_DERIVE_PARAMS = unsafe { param(&m) }?;
            // SAFETY: the buffers the parameter points to.
            let shared_data = unsafe { bytes(p.pSharedData, p.ulSharedDataLen) }?.to_vec();
            // SAFETY: as above.
            let public_data = unsafe { bytes(p.pPublicData, p.ulPublicDataLen) }?.to_vec();
            Ok((
                Mechanism::Ecdh1(Ecdh1Params {
                    kdf: p.kdf,
                    shared_data,
                    public_data,
                }),
                None,
            ))
        }
        CKM_SP800_108_COUNTER_KDF => {
            // SAFETY: the parameter of CKM_SP800_108_COUNTER_KDF.
            let p: CK_SP800_108_KDF_PARAMS = unsafe { param(&m) }?;
            if p.ulNumberOfDataParams > 64 {
                return Err(Error::MechanismParamInvalid(
                    "too many data parameters".into(),
                ));
            }
            let raw: &[CK_PRF_DATA_PARAM] = if p.ulNumberOfDataParams == 0 {
                &[]
            } else if p.pDataParams.is_null() {
                return Err(Error::MechanismParamInvalid("NULL data parameters".into()));
            } else {
                // SAFETY: non-NULL, `ulNumberOfDataParams` entries promised.
                unsafe {
                    std::slice::from_raw_parts(p.pDataParams, p.ulNumberOfDataParams as usize)
                }
            };
            let mut data = Vec::new();
            for d in raw {
                // SAFETY: each data parameter's value, as promised.
                let v = unsafe { bytes(d.pValue as *const u8, d.ulValueLen) }?;
                data.push(kdf_data(d.type_, v)?);
            }
            Ok((
                Mechanism::Kbkdf(KbkdfParams {
                    prf: p.prfType,
                    data,
                    additional_keys: p.ulAdditionalDerivedKeys,
                }),
                None,
            ))
        }
        other => match HashAlg::from_ckm(other) {
            Some(h) => none(Mechanism::Digest(h)),
            None => Err(Error::MechanismInvalid(other)),
        },
    }
}

/// One SP 800-108 data parameter from its type and value bytes.
fn kdf_data(ty: CK_PRF_DATA_TYPE, v: &[u8]) -> Result<KdfData> {
    let bad = |w: &str| Error::MechanismParamInvalid(w.into());
    let ulong = |b: &[u8]| -> Option<u64> { Some(CK_ULONG::from_ne_bytes(b.try_into().ok()?)) };
    match ty {
        CK_SP800_108_ITERATION_VARIABLE | CK_SP800_108_COUNTER => {
            // CK_SP800_108_COUNTER_FORMAT: a CK_BBOOL, padding, a CK_ULONG.
            if v.len() != std::mem::size_of::<CK_SP800_108_COUNTER_FORMAT>() {
                return Err(bad("the counter needs a CK_SP800_108_COUNTER_FORMAT"));
            }
            let off = std::mem::offset_of!(CK_SP800_108_COUNTER_FORMAT, ulWidthInBits);
            Ok(KdfData::Counter {
                little_endian: v[0] != CK_FALSE,
                width_bits: ulong(&v[off..off + 8]).ok_or_else(|| bad("counter width"))?,
            })
        }
        CK_SP800_108_BYTE_ARRAY => Ok(KdfData::Bytes(v.to_vec())),
        CK_SP800_108_DKM_LENGTH => {
            if v.len() != std::mem::size_of::<CK_SP800_108_DKM_LENGTH_FORMAT>() {
                return Err(bad("the length needs a CK_SP800_108_DKM_LENGTH_FORMAT"));
            }
            let le = std::mem::offset_of!(CK_SP800_108_DKM_LENGTH_FORMAT, bLittleEndian);
            let w = std::mem::offset_of!(CK_SP800_108_DKM_LENGTH_FORMAT, ulWidthInBits);
            Ok(KdfData::DkmLength {
                method: ulong(&v[..8]).ok_or_else(|| bad("DKM method"))?,
                little_endian: v[le] != CK_FALSE,
                width_bits: ulong(&v[w..w + 8]).ok_or_else(|| bad("DKM width"))?,
            })
        }
        other => Err(Error::MechanismParamInvalid(format!(
            "data parameter type {other:#x}"
        ))),
    }
}

/// The capacity of an output buffer under the two-call convention: `None`
/// when the caller passes NULL (a length query).
///
/// # Safety
/// `len` must point to a writable `CK_ULONG` when it is not NULL.
pub unsafe fn capacity(p: *mut u8, len: *mut CK_ULONG) -> Result<Option<usize>> {
    if len.is_null() {
        return Err(Error::ArgumentsBad("NULL length pointer"));
    }
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, promised writable and readable.
    Ok(Some(unsafe { *len } as usize))
}

/// Writes an answer under the two-call convention; returns the `CK_RV`.
///
/// # Safety
/// `p` must point to `*len` writable bytes when not NULL; `len` to a
/// writable `CK_ULONG` (checked by [`capacity`] first).
pub unsafe fn put(out: Out<&[u8]>, p: *mut u8, len: *mut CK_ULONG) -> CK_RV {
    if len.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match out {
        Out::Len(n) => {
            // SAFETY: `len` is non-NULL and writable.
            unsafe { *len = n as CK_ULONG };
            CKR_OK
        }
        Out::TooSmall(n) => {
            // SAFETY: as above.
            unsafe { *len = n as CK_ULONG };
            CKR_BUFFER_TOO_SMALL
        }
        Out::Done(v) => {
            if !v.is_empty() {
                if p.is_null() {
                    return CKR_ARGUMENTS_BAD;
                }
                // SAFETY: the caller's buffer holds at least `*len` bytes,
                // which the token layer checked is at least `v.len()`.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()) };
            }
            // SAFETY: `len` is non-NULL and writable.
            unsafe { *len = v.len() as CK_ULONG };
            CKR_OK
        }
    }
}

/// Copies `s` into a blank-padded fixed field (the info structures).
pub fn pad<const N: usize>(s: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    let b = s.as_bytes();
    let n = b.len().min(N);
    out[..n].copy_from_slice(&b[..n]);
    out
}
