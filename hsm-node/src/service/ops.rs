//! Key use: sign, verify, encrypt, decrypt, wrapkey, unwrapkey, mac,
//! verifymac, derive, and the random number generator.
//!
//! Decides: the checks every use passes first (enabled, nbf/exp, key_ops)
//! and the shape of each answer. The cryptography itself is `crypto`'s.

use super::cache::CachedKey;
use super::edge::{self, ApiError, ApiResult, Resp};
use super::keys::NewKey;
use super::{check_name, Ctx};
use crate::clock::now_secs;
use crate::crypto::{self, KeyMaterial};
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
        let key = &k.loaded;
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
            KeyOp::Derive => return self.derive(name, &k, body).await,
        };
        Ok(resp)
    }

    fn bundle_kid(&self, name: &str, version: &str) -> String {
        format!(
            "{}/keys/{name}/{version}",
            self.node.partition_base(&self.part.name)
        )
    }

    async fn derive(&self, name: &str, k: &CachedKey, body: &[u8]) -> ApiResult<Resp> {
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
                let shared = k.loaded.ecdh(peer)?;
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
                k.loaded.kbkdf(kdf, info, len)?
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
