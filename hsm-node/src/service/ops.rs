//! Key use: sign, verify, encrypt, decrypt, wrapkey, unwrapkey, mac,
//! verifymac, derive, and the random number generator.
//!
//! Decides: the checks every use passes first (enabled, nbf/exp, key_ops)
//! and the shape of each answer. The cryptography itself is `crypto`'s
//! for a software key and the token's own (`keystore::token::ops`) for a
//! token key; [`Ctx::token_operation`] decides which algorithm fits which
//! token key and refuses, naming the mechanism, what a token member does
//! not do (EdDSA, ECDH and KBKDF derivation, AES key wrap of caller bytes,
//! HMAC with an AES-sized key).

use super::cache::CachedKey;
use super::edge::{self, ApiError, ApiResult, Resp};
use super::keys::NewKey;
use super::{check_name, Ctx};
use crate::clock::now_secs;
use crate::crypto::{self, KeyMaterial, WrapKind};
use crate::keystore::{Loaded, TokenKey};
use hsm_api::*;
use http::StatusCode;

/// The key operation a route needs in the key's `key_ops`.
fn needed(op: KeyOp) -> KeyOperation {
    match op {
        KeyOp::Sign | KeyOp::Mac => KeyOperation::Sign,
        KeyOp::Verify | KeyOp::VerifyMac => KeyOperation::Verify,
        KeyOp::Encrypt => KeyOperation::Encrypt,
        KeyOp::Decrypt => KeyOperation::Decrypt,
        KeyOp::WrapKey => KeyOperation::WrapKey,
        KeyOp::UnwrapKey => KeyOperation::UnwrapKey,
        KeyOp::Derive => KeyOperation::DeriveKey,
    }
}

/// Refuses a use the key's attributes do not allow.
fn check_usable(name: &str, k: &CachedKey, op: KeyOp, now: i64) -> ApiResult<()> {
    let r = &k.record;
    if !r.enabled {
        return Err(ApiError::new(
            ErrorCode::KeyDisabled,
            format!("key `{name}` is disabled"),
        ));
    }
    if r.nbf.is_some_and(|nbf| now < nbf) {
        return Err(ApiError::new(
            ErrorCode::KeyNotYetValid,
            format!("key `{name}` is not valid before its nbf"),
        ));
    }
    if r.exp.is_some_and(|exp| now >= exp) {
        return Err(ApiError::new(
            ErrorCode::KeyExpired,
            format!("key `{name}` expired"),
        ));
    }
    let need = needed(op);
    if !r.key_ops.contains(&need) {
        return Err(ApiError::new(
            ErrorCode::OperationNotPermitted,
            format!("key `{name}` does not allow `{need}` (its key_ops)"),
        ));
    }
    Ok(())
}

impl Ctx<'_> {
    pub(super) async fn operation(
        &self,
        name: &str,
        version: Option<&str>,
        op: KeyOp,
        body: &[u8],
    ) -> ApiResult<Resp> {
        let k = self.load(name, version)?;
        check_usable(name, &k, op, now_secs())?;
        let kid = || self.bundle_kid(name, &k.version);
        let key = match &k.loaded {
            Loaded::Software(key) => key,
            Loaded::Token(t) => return self.token_operation(&kid(), t, op, body).await,
        };
        let result = |value: Vec<u8>| KeyOperationResult {
            kid: kid(),
            value: value.into(),
            iv: None,
            tag: None,
            aad: None,
        };
        let resp = match op {
            KeyOp::Sign => {
                let req: KeySignParameters = edge::parse_json(body)?;
                edge::json(
                    StatusCode::OK,
                    &result(key.sign(req.alg, req.value.as_slice())?),
                )
            }
            KeyOp::Verify => {
                let req: KeyVerifyParameters = edge::parse_json(body)?;
                let ok = key.verify(req.alg, req.digest.as_slice(), req.value.as_slice())?;
                edge::json(StatusCode::OK, &KeyVerifyResult { value: ok })
            }
            KeyOp::Encrypt => {
                let req: KeyOperationsParameters = edge::parse_json(body)?;
                if req.iv.is_some() || req.tag.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "iv and tag are made by the HSM on encrypt; do not send them",
                    ));
                }
                let aad = req.aad.as_ref().map(|a| a.as_slice());
                let e = key.encrypt(req.alg, req.value.as_slice(), aad)?;
                let mut r = result(e.ciphertext);
                r.iv = e.iv.map(Into::into);
                r.tag = e.tag.map(Into::into);
                r.aad = req.aad;
                edge::json(StatusCode::OK, &r)
            }
            KeyOp::Decrypt => {
                let req: KeyOperationsParameters = edge::parse_json(body)?;
                let pt = key.decrypt(
                    req.alg,
                    req.value.as_slice(),
                    req.iv.as_ref().map(|v| v.as_slice()),
                    req.aad.as_ref().map(|v| v.as_slice()),
                    req.tag.as_ref().map(|v| v.as_slice()),
                )?;
                edge::json(StatusCode::OK, &result(pt.to_vec()))
            }
            KeyOp::WrapKey | KeyOp::UnwrapKey => {
                let req: KeyOperationsParameters = edge::parse_json(body)?;
                if req.iv.is_some() || req.tag.is_some() || req.aad.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "wrapkey and unwrapkey take no iv, tag or aad",
                    ));
                }
                let out = if op == KeyOp::WrapKey {
                    key.wrap(req.alg, req.value.as_slice())?
                } else {
                    key.unwrap(req.alg, req.value.as_slice())?.to_vec()
                };
                edge::json(StatusCode::OK, &result(out))
            }
            KeyOp::Mac => {
                let req: KeyMacParameters = edge::parse_json(body)?;
                edge::json(
                    StatusCode::OK,
                    &result(key.mac(req.alg, req.value.as_slice())?),
                )
            }
            KeyOp::VerifyMac => {
                let req: KeyVerifyMacParameters = edge::parse_json(body)?;
                let ok = key.verify_mac(req.alg, req.value.as_slice(), req.mac.as_slice())?;
                edge::json(StatusCode::OK, &KeyVerifyResult { value: ok })
            }
            KeyOp::Derive => return self.derive(name, key, body).await,
        };
        Ok(resp)
    }

    /// A use of a key that lives in the token.
    async fn token_operation(
        &self,
        kid: &str,
        t: &TokenKey,
        op: KeyOp,
        body: &[u8],
    ) -> ApiResult<Resp> {
        let token = self.node.keys.token().ok_or_else(|| {
            ApiError::new(ErrorCode::Internal, "a token key on a node without a token")
        })?;
        let result = |value: Vec<u8>| KeyOperationResult {
            kid: kid.to_string(),
            value: value.into(),
            iv: None,
            tag: None,
            aad: None,
        };
        let id = t.id.as_slice();
        let resp = match op {
            KeyOp::Sign => {
                let req: KeySignParameters = edge::parse_json(body)?;
                check_sign(t.kind, req.alg, req.value.as_slice())?;
                let sig = token.sign(id, req.alg, req.value.as_slice()).await?;
                edge::json(StatusCode::OK, &result(sig))
            }
            KeyOp::Verify => {
                let req: KeyVerifyParameters = edge::parse_json(body)?;
                check_sign(t.kind, req.alg, req.digest.as_slice())?;
                let ok = token
                    .verify(id, req.alg, req.digest.as_slice(), req.value.as_slice())
                    .await?;
                edge::json(StatusCode::OK, &KeyVerifyResult { value: ok })
            }
            KeyOp::Encrypt | KeyOp::WrapKey => {
                let req: KeyOperationsParameters = edge::parse_json(body)?;
                if req.iv.is_some() || req.tag.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "iv and tag are made by the HSM on encrypt; do not send them",
                    ));
                }
                if op == KeyOp::WrapKey && req.aad.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "wrapkey and unwrapkey take no iv, tag or aad",
                    ));
                }
                match check_cipher_alg(t, req.alg, op)? {
                    Cipher::Rsa => {
                        let ct = token.rsa_encrypt(id, req.alg, req.value.as_slice()).await?;
                        edge::json(StatusCode::OK, &result(ct))
                    }
                    Cipher::Gcm => {
                        let aad = req.aad.as_ref().map(|a| a.as_slice()).unwrap_or_default();
                        let sealed = token
                            .gcm_encrypt(id, None, aad, req.value.as_slice())
                            .await?;
                        let mut r = result(sealed.ciphertext);
                        r.iv = Some(sealed.iv.into());
                        r.tag = Some(sealed.tag.into());
                        r.aad = req.aad;
                        edge::json(StatusCode::OK, &r)
                    }
                }
            }
            KeyOp::Decrypt | KeyOp::UnwrapKey => {
                let req: KeyOperationsParameters = edge::parse_json(body)?;
                match check_cipher_alg(t, req.alg, op)? {
                    Cipher::Rsa => {
                        if req.iv.is_some() || req.tag.is_some() || req.aad.is_some() {
                            return Err(ApiError::new(
                                ErrorCode::BadParameter,
                                "RSA decryption takes no iv, tag or aad",
                            ));
                        }
                        let pt = token.rsa_decrypt(id, req.alg, req.value.as_slice()).await?;
                        edge::json(StatusCode::OK, &result(pt))
                    }
                    Cipher::Gcm => {
                        let (Some(iv), Some(tag)) = (req.iv, req.tag) else {
                            return Err(ApiError::new(
                                ErrorCode::BadParameter,
                                "AES-GCM decryption needs the iv and tag of the encryption",
                            ));
                        };
                        let sealed = crate::keystore::token::ops::Sealed {
                            iv: iv.0,
                            ciphertext: req.value.0,
                            tag: tag.0,
                        };
                        let aad = req.aad.as_ref().map(|a| a.as_slice()).unwrap_or_default();
                        let pt = token.gcm_decrypt(id, &sealed, aad).await.map_err(|e| {
                            match e {
                                crate::keystore::token::TokenError::Invalid(_) => ApiError::new(
                                    ErrorCode::DecryptionFailed,
                                    "decryption failed: wrong key, iv, tag, aad or ciphertext",
                                ),
                                other => other.into(),
                            }
                        })?;
                        edge::json(StatusCode::OK, &result(pt))
                    }
                }
            }
            KeyOp::Mac | KeyOp::VerifyMac => {
                if t.kind != WrapKind::Oct {
                    return Err(ApiError::new(
                        ErrorCode::AlgorithmKeyMismatch,
                        "mac and verifymac need an oct key",
                    ));
                }
                if t.bits <= 256 {
                    return Err(ApiError::new(
                        ErrorCode::NotSupported,
                        "HMAC (CKM_SHA*_HMAC) with an AES key: a token member keeps oct keys of                          128 to 256 bits as AES keys, which tokens do not MAC with; use a 384-                          or 512-bit oct key for HMAC",
                    ));
                }
                if op == KeyOp::Mac {
                    let req: KeyMacParameters = edge::parse_json(body)?;
                    let tag = token.mac(id, req.alg, req.value.as_slice()).await?;
                    edge::json(StatusCode::OK, &result(tag))
                } else {
                    let req: KeyVerifyMacParameters = edge::parse_json(body)?;
                    let ok = token
                        .verify_mac(id, req.alg, req.value.as_slice(), req.mac.as_slice())
                        .await?;
                    edge::json(StatusCode::OK, &KeyVerifyResult { value: ok })
                }
            }
            KeyOp::Derive => {
                return Err(ApiError::new(
                    ErrorCode::NotSupported,
                    "derive (CKM_ECDH1_DERIVE, CKM_SP800_108_COUNTER_KDF) is not offered by                      token members yet",
                ))
            }
        };
        Ok(resp)
    }

    fn bundle_kid(&self, name: &str, version: &str) -> String {
        format!(
            "{}/keys/{name}/{version}",
            self.node.partition_base(&self.part.name)
        )
    }

    async fn derive(&self, name: &str, key: &crypto::LoadedKey, body: &[u8]) -> ApiResult<Resp> {
        let req: KeyDeriveParameters = edge::parse_json(body)?;
        check_name(&req.target)?;
        if req.target == name {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                "the derived key needs a name of its own",
            ));
        }
        let bits = req.key_size.unwrap_or(256);
        if ![128, 192, 256, 384, 512].contains(&bits) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                "key_size must be 128, 192, 256, 384 or 512",
            ));
        }
        let len = (bits / 8) as usize;
        let secret = match req.alg {
            DeriveAlgorithm::Ecdh => {
                let peer = req.peer.as_ref().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadParameter,
                        "ECDH needs `peer`, the other party's public JWK",
                    )
                })?;
                let shared = key.ecdh(peer)?;
                match &req.info {
                    Some(info) => crypto::kbkdf(DeriveAlgorithm::KbkdfHmacSha256, &shared, info.as_slice(), len)?,
                    None if shared.len() == len => shared,
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::BadParameter,
                            format!(
                                "the shared secret is {} bits; give that key_size, or `info` to run it through KBKDF",
                                shared.len() * 8
                            ),
                        ))
                    }
                }
            }
            kdf => {
                if req.peer.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::BadParameter,
                        "KBKDF takes no `peer`",
                    ));
                }
                let info = req.info.as_ref().map(|i| i.as_slice()).unwrap_or_default();
                key.kbkdf(kdf, info, len)?
            }
        };
        let jwk = JsonWebKey {
            kty: Some(KeyType::OctHsm),
            k: Some(B64(secret.to_vec())),
            ..Default::default()
        };
        let material = KeyMaterial::from_jwk(&jwk)?;
        if let Some(mut k) = jwk.k {
            zeroize::Zeroize::zeroize(&mut k.0);
        }
        tracing::info!(partition = %self.part.name, key = name, target = %req.target, alg = %req.alg, "key derived");
        let new = NewKey {
            key_ops: req.key_ops.as_ref(),
            attributes: req.attributes.as_ref(),
            tags: req.tags,
        };
        self.add_key(&req.target, &material, new, "derived").await
    }

    pub(super) fn rng(&self, body: &[u8]) -> ApiResult<Resp> {
        let req: GetRandomBytesRequest = edge::parse_json(body)?;
        if !(1..=128).contains(&req.count) {
            return Err(ApiError::new(
                ErrorCode::BadParameter,
                "count must be 1 to 128",
            ));
        }
        let bytes = crypto::random_bytes(req.count as usize)?;
        Ok(edge::json(
            StatusCode::OK,
            &RandomBytes {
                value: bytes.into(),
            },
        ))
    }
}

/// Which signature algorithms fit a token key, and the digest's length
/// (checked here, so the answer is the software member's).
fn check_sign(kind: WrapKind, alg: SignatureAlgorithm, digest: &[u8]) -> ApiResult<()> {
    check_sign_alg(kind, alg)?;
    match alg.digest_len() {
        Some(n) if n != digest.len() => Err(crypto::CryptoError::InvalidDigestLength {
            alg,
            expected: n,
            actual: digest.len(),
        }
        .into()),
        _ => Ok(()),
    }
}

fn check_sign_alg(kind: WrapKind, alg: SignatureAlgorithm) -> ApiResult<()> {
    use SignatureAlgorithm::*;
    let fits = match alg {
        Es256 => kind == WrapKind::EcP256,
        Es384 => kind == WrapKind::EcP384,
        Es512 => kind == WrapKind::EcP521,
        Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512 => kind == WrapKind::Rsa,
        EdDsa => {
            return Err(ApiError::new(
                ErrorCode::NotSupported,
                "EdDSA (CKM_EDDSA) is not offered by token members",
            ))
        }
    };
    if fits {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::AlgorithmKeyMismatch,
            format!("{alg} does not fit this key ({kind})"),
        ))
    }
}

/// The token cipher an encryption algorithm takes on a token key.
enum Cipher {
    Rsa,
    Gcm,
}

fn check_cipher_alg(t: &TokenKey, alg: EncryptionAlgorithm, op: KeyOp) -> ApiResult<Cipher> {
    let mismatch = || {
        Err(ApiError::new(
            ErrorCode::AlgorithmKeyMismatch,
            format!("{alg} does not fit this key ({}, {} bits)", t.kind, t.bits),
        ))
    };
    let wrapping = matches!(op, KeyOp::WrapKey | KeyOp::UnwrapKey);
    match alg.aes_key_len() {
        None if t.kind == WrapKind::Rsa => Ok(Cipher::Rsa),
        None => mismatch(),
        Some(_) if t.kind != WrapKind::Oct => mismatch(),
        Some(len) if len * 8 != t.bits as usize => mismatch(),
        Some(_) if alg.is_key_wrap() => Err(ApiError::new(
            ErrorCode::NotSupported,
            format!("{alg} (CKM_AES_KEY_WRAP of caller bytes) is not offered by token members yet"),
        )),
        Some(_) if wrapping => Err(ApiError::new(
            ErrorCode::AlgorithmKeyMismatch,
            format!("{alg} is not a key wrap algorithm"),
        )),
        Some(_) => Ok(Cipher::Gcm),
    }
}
