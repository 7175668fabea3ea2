//! What a key inside the token is made of: the templates keys are
//! generated and unwrapped with, the public half read back as a JWK, the
//! cloning domain's wrapping key, and export and import as wrapped blobs.
//!
//! Decides:
//! - every object is a token object (`CKA_TOKEN`) carrying a random 16-byte
//!   `CKA_ID`, which is all the node stores, and a `CKA_LABEL` for people;
//! - private and secret keys are `CKA_PRIVATE` and `CKA_SENSITIVE`; they are
//!   `CKA_EXTRACTABLE` only so that `C_WrapKey` can export them under the
//!   domain wrapping key (a sensitive key never leaves in the clear), and
//!   `CKA_WRAP_WITH_TRUSTED` when the configuration asks for it (the
//!   wrapping key must then be `CKA_TRUSTED`, which tokens let only the
//!   security officer set);
//! - oct keys of 128, 192 and 256 bits are AES keys (`CKK_AES`); 384 and
//!   512 bits are generic secrets (`CKK_GENERIC_SECRET`, HMAC only);
//! - the domain wrapping key is an AES-256 key imported once from the
//!   domain secret (`CKA_ID` = `hsm-ha-domain:` + the domain id), sensitive,
//!   never extractable, for wrap and unwrap only; export and import use
//!   `CKM_AES_KEY_WRAP_PAD` (RFC 5649) under it.

use super::{Token, TokenError};
use cryptoki::error::Error as CkError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_api::{Curve, JsonWebKey, KeyType as Kty, B64};
use zeroize::Zeroizing;

/// What kind of key to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeySpec {
    Rsa { bits: u32 },
    Ec(Curve),
    Oct { bits: u32 },
}

/// The kind of object a `CKA_ID` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Private,
    Public,
    Secret,
}

impl Part {
    fn class(self) -> ObjectClass {
        match self {
            Part::Private => ObjectClass::PRIVATE_KEY,
            Part::Public => ObjectClass::PUBLIC_KEY,
            Part::Secret => ObjectClass::SECRET_KEY,
        }
    }
}

/// A key made in the token: its id and the public half (for a pair).
#[derive(Debug, Clone)]
pub struct MadeKey {
    pub id: Vec<u8>,
    /// The public JWK of an RSA or EC pair; for oct keys just `kty`.
    pub public: JsonWebKey,
}

/// DER of the named curve's OID, as `CKA_EC_PARAMS` wants it.
pub(crate) fn ec_params(c: Curve) -> Result<&'static [u8], TokenError> {
    match c {
        Curve::P256 => Ok(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        Curve::P384 => Ok(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        Curve::P521 => Ok(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23]),
        Curve::Ed25519 => Err(TokenError::NotYet {
            mechanism: "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            what: "an Ed25519 key",
        }),
        Curve::X25519 => Err(TokenError::NotYet {
            mechanism: "CKM_EC_MONTGOMERY_KEY_PAIR_GEN",
            what: "an X25519 key",
        }),
    }
}

/// The uncompressed point inside `CKA_EC_POINT` (a DER OCTET STRING, or
/// the bare point from tokens that skip the wrapper).
fn ec_point(raw: &[u8], c: Curve) -> Result<&[u8], TokenError> {
    let want = 1 + 2 * c.field_len();
    if raw.len() == want && raw.first() == Some(&4) {
        return Ok(raw);
    }
    let body = match raw {
        [0x04, n, rest @ ..] if usize::from(*n) == rest.len() && *n < 0x80 => rest,
        [0x04, 0x81, n, rest @ ..] if usize::from(*n) == rest.len() => rest,
        _ => &[][..],
    };
    if body.len() == want && body.first() == Some(&4) {
        Ok(body)
    } else {
        Err(TokenError::Invalid(format!(
            "the token's CKA_EC_POINT ({} bytes) is not an uncompressed {c} point",
            raw.len()
        )))
    }
}

fn random_id() -> Result<Vec<u8>, TokenError> {
    crate::crypto::random_bytes(16).map_err(|e| TokenError::Invalid(e.to_string()))
}

/// The attributes every private or secret key gets.
fn protected(id: &[u8], label: &str, trusted_wrap: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if trusted_wrap {
        t.push(Attribute::WrapWithTrusted(true));
    }
    t
}

/// The template of a private or secret key of `spec`, for generation or
/// unwrap.
fn key_template(spec: TokenKeySpec, id: &[u8], label: &str, trusted: bool) -> Vec<Attribute> {
    let mut t = protected(id, label, trusted);
    match spec {
        TokenKeySpec::Rsa { .. } => t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
        ]),
        TokenKeySpec::Ec(_) => t.extend([
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Sign(true),
            Attribute::Derive(true),
        ]),
        TokenKeySpec::Oct { bits } if bits <= 256 => t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
        ]),
        TokenKeySpec::Oct { .. } => t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Sign(true),
            Attribute::Verify(true),
        ]),
    }
    t
}

fn public_template(spec: TokenKeySpec, id: &[u8], label: &str) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    match spec {
        TokenKeySpec::Rsa { bits } => t.extend([
            Attribute::KeyType(KeyType::RSA),
            Attribute::ModulusBits(u64::from(bits).into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
        ]),
        TokenKeySpec::Ec(c) => {
            t.push(Attribute::KeyType(KeyType::EC));
            if let Ok(p) = ec_params(c) {
                t.push(Attribute::EcParams(p.to_vec()));
            }
        }
        TokenKeySpec::Oct { .. } => {}
    }
    t
}

/// Reads the public half of a pair as a JWK.
fn public_jwk(s: &Session, h: ObjectHandle, spec: TokenKeySpec) -> Result<JsonWebKey, CkError> {
    let mut jwk = JsonWebKey::default();
    match spec {
        TokenKeySpec::Rsa { .. } => {
            jwk.kty = Some(Kty::RsaHsm);
            for a in
                s.get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])?
            {
                match a {
                    Attribute::Modulus(n) => jwk.n = Some(B64(n)),
                    Attribute::PublicExponent(e) => jwk.e = Some(B64(e)),
                    _ => {}
                }
            }
        }
        TokenKeySpec::Ec(c) => {
            jwk.kty = Some(Kty::EcHsm);
            jwk.crv = Some(c);
            for a in s.get_attributes(h, &[AttributeType::EcPoint])? {
                if let Attribute::EcPoint(raw) = a {
                    // A malformed point leaves x and y out; the caller checks.
                    if let Ok(p) = ec_point(&raw, c) {
                        let fl = c.field_len();
                        jwk.x = p.get(1..1 + fl).map(B64::from);
                        jwk.y = p.get(1 + fl..1 + 2 * fl).map(B64::from);
                    }
                }
            }
        }
        TokenKeySpec::Oct { .. } => jwk.kty = Some(Kty::OctHsm),
    }
    Ok(jwk)
}

fn check_public(jwk: &JsonWebKey, spec: TokenKeySpec) -> Result<(), TokenError> {
    let whole = match spec {
        TokenKeySpec::Rsa { .. } => jwk.n.is_some() && jwk.e.is_some(),
        TokenKeySpec::Ec(_) => jwk.x.is_some() && jwk.y.is_some(),
        TokenKeySpec::Oct { .. } => true,
    };
    if whole {
        Ok(())
    } else {
        Err(TokenError::Invalid(
            "the token's public key attributes could not be read".into(),
        ))
    }
}

/// Finds the one object of `part` with `id`.
pub(crate) fn find(s: &Session, id: &[u8], part: Part) -> Result<Option<ObjectHandle>, CkError> {
    let found = s.find_objects(&[Attribute::Class(part.class()), Attribute::Id(id.to_vec())])?;
    Ok(found.into_iter().next())
}

/// The `CKA_ID` of the domain wrapping key for `domain_id`.
pub fn domain_key_id(domain_id: &str) -> Vec<u8> {
    format!("hsm-ha-domain:{domain_id}").into_bytes()
}

impl Token {
    fn generate_mechanism(spec: TokenKeySpec) -> Mechanism<'static> {
        match spec {
            TokenKeySpec::Rsa { .. } => Mechanism::RsaPkcsKeyPairGen,
            TokenKeySpec::Ec(_) => Mechanism::EccKeyPairGen,
            TokenKeySpec::Oct { bits } if bits <= 256 => Mechanism::AesKeyGen,
            TokenKeySpec::Oct { .. } => Mechanism::GenericSecretKeyGen,
        }
    }

    /// Generates a key inside the token.
    pub async fn generate(
        &self,
        spec: TokenKeySpec,
        label: &str,
        trusted_wrap: bool,
    ) -> Result<MadeKey, TokenError> {
        if let TokenKeySpec::Ec(c) = spec {
            ec_params(c)?;
        }
        self.require(
            Self::generate_mechanism(spec).mechanism_type(),
            "key creation",
        )?;
        let id = random_id()?;
        let (idc, label) = (id.clone(), label.to_string());
        let public = self
            .keygen_call("C_GenerateKey", move |s| {
                let mech = Self::generate_mechanism(spec);
                let mut prv = key_template(spec, &idc, &label, trusted_wrap);
                match spec {
                    TokenKeySpec::Oct { bits } => {
                        prv.push(Attribute::ValueLen(u64::from(bits / 8).into()));
                        s.generate_key(&mech, &prv)?;
                        Ok(JsonWebKey {
                            kty: Some(Kty::OctHsm),
                            ..JsonWebKey::default()
                        })
                    }
                    TokenKeySpec::Rsa { .. } | TokenKeySpec::Ec(_) => {
                        let pubt = public_template(spec, &idc, &label);
                        let (pubh, _) = s.generate_key_pair(&mech, &pubt, &prv)?;
                        public_jwk(s, pubh, spec)
                    }
                }
            })
            .await?;
        check_public(&public, spec)?;
        Ok(MadeKey { id, public })
    }

    /// The handle of the object `id` names (looked up on every call: handles
    /// may change when a session or the token is reopened).
    pub(crate) fn handle(s: &Session, id: &[u8], part: Part) -> Result<ObjectHandle, CkError> {
        use cryptoki::error::RvError;
        use cryptoki::session::SessionState;
        if let Some(h) = find(s, id, part)? {
            return Ok(h);
        }
        // Private objects are invisible to a session that is not logged in:
        // a lapsed login, not a missing key, which the pool then renews.
        let state = s.get_session_info()?.session_state();
        let rv = match state {
            SessionState::RoPublic | SessionState::RwPublic => RvError::UserNotLoggedIn,
            _ => RvError::KeyHandleInvalid,
        };
        Err(CkError::Pkcs11(
            rv,
            cryptoki::context::Function::FindObjects,
        ))
    }

    /// Destroys every object carrying `id` (both halves of a pair). Returns
    /// how many were destroyed.
    pub async fn destroy(&self, id: &[u8]) -> Result<usize, TokenError> {
        let (id, t) = (id.to_vec(), self.clone());
        self.write_call("C_DestroyObject", move |s| {
            let found = s.find_objects(&[Attribute::Id(id.clone())])?;
            t.forget_handles();
            for h in &found {
                s.destroy_object(*h)?;
            }
            Ok(found.len())
        })
        .await
    }

    /// Destroys every object whose label starts with `prefix` (a zeroized
    /// partition's keys). Returns how many were destroyed.
    pub async fn destroy_labelled(&self, prefix: &str) -> Result<usize, TokenError> {
        let (prefix, t) = (prefix.as_bytes().to_vec(), self.clone());
        self.write_call("C_DestroyObject", move |s| {
            t.forget_handles();
            let mut n = 0;
            for h in s.find_objects(&[Attribute::Token(true)])? {
                let label = s.get_attributes(h, &[AttributeType::Label])?;
                let hit = label
                    .iter()
                    .any(|a| matches!(a, Attribute::Label(l) if l.starts_with(&prefix)));
                if hit {
                    s.destroy_object(h)?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    /// Puts the domain wrapping key into the token, unless a key with its id
    /// is already there. `secret` is the 32-byte AES key derived from the
    /// domain secret; it is given to the token once and kept nowhere else.
    /// Returns whether the key was created now.
    pub async fn install_domain_key(
        &self,
        domain_id: &str,
        secret: Zeroizing<Vec<u8>>,
    ) -> Result<bool, TokenError> {
        if secret.len() != 32 {
            return Err(TokenError::Invalid(
                "the domain wrapping key must be 32 bytes".into(),
            ));
        }
        self.require(
            MechanismType::AES_KEY_WRAP_PAD,
            "replication (export and import)",
        )?;
        let id = domain_key_id(domain_id);
        self.write_call("C_CreateObject", move |s| {
            if find(s, &id, Part::Secret)?.is_some() {
                return Ok(false);
            }
            s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Id(id.clone()),
                Attribute::Label(b"hsm-ha cloning domain".to_vec()),
                Attribute::Value(secret.to_vec()),
            ])?;
            Ok(true)
        })
        .await
    }

    /// Whether the domain wrapping key of `domain_id` is in the token.
    pub async fn has_domain_key(&self, domain_id: &str) -> Result<bool, TokenError> {
        let id = domain_key_id(domain_id);
        self.call("C_FindObjects", move |s| {
            Ok(find(s, &id, Part::Secret)?.is_some())
        })
        .await
    }

    /// Exports a private or secret key as `CKM_AES_KEY_WRAP_PAD` under the
    /// domain wrapping key: PKCS#8 `PrivateKeyInfo` for private keys, the
    /// key bytes for secret keys, wrapped.
    pub async fn export(
        &self,
        domain_id: &str,
        id: &[u8],
        part: Part,
    ) -> Result<Vec<u8>, TokenError> {
        self.require(MechanismType::AES_KEY_WRAP_PAD, "replication (export)")?;
        let (dk, id) = (domain_key_id(domain_id), id.to_vec());
        self.call("C_WrapKey", move |s| {
            let wrapping = Self::handle(s, &dk, Part::Secret)?;
            let key = Self::handle(s, &id, part)?;
            s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key)
        })
        .await
    }

    /// Imports a wrapped key (the form `export` makes) as a new token key of
    /// `spec`, with a fresh id; for a pair, `public` becomes the public
    /// object. The key bytes are unwrapped inside the token.
    pub async fn import(
        &self,
        domain_id: &str,
        spec: TokenKeySpec,
        wrapped: &[u8],
        public: Option<Vec<Attribute>>,
        label: &str,
        trusted_wrap: bool,
    ) -> Result<Vec<u8>, TokenError> {
        self.require(MechanismType::AES_KEY_WRAP_PAD, "replication (import)")?;
        let id = random_id()?;
        let (dk, idc, wrapped, label) = (
            domain_key_id(domain_id),
            id.clone(),
            wrapped.to_vec(),
            label.to_string(),
        );
        self.write_call("C_UnwrapKey", move |s| {
            let unwrapping = Self::handle(s, &dk, Part::Secret)?;
            // No CKA_VALUE_LEN: the length is the blob's (tokens refuse it
            // in an unwrap template).
            let t = key_template(spec, &idc, &label, trusted_wrap);
            let key = s.unwrap_key(&Mechanism::AesKeyWrapPad, unwrapping, &wrapped, &t)?;
            if let Some(p) = &public {
                let mut pt = public_template(spec, &idc, &label);
                pt.retain(|a| {
                    !matches!(a, Attribute::ModulusBits(_) | Attribute::PublicExponent(_))
                });
                pt.extend(p.iter().cloned());
                if let Err(e) = s.create_object(&pt) {
                    // No half-imported pair.
                    let _ = s.destroy_object(key);
                    return Err(e);
                }
            }
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// The public attributes of a pair, from a JWK, for `import`.
    pub fn public_attributes(jwk: &JsonWebKey) -> Result<Vec<Attribute>, TokenError> {
        let bad = |m: &str| TokenError::Invalid(format!("public key: {m}"));
        if let (Some(n), Some(e)) = (&jwk.n, &jwk.e) {
            return Ok(vec![
                Attribute::Modulus(n.0.clone()),
                Attribute::PublicExponent(e.0.clone()),
            ]);
        }
        let (Some(c), Some(x), Some(y)) = (jwk.crv, &jwk.x, &jwk.y) else {
            return Err(bad("neither RSA (n, e) nor EC (crv, x, y)"));
        };
        let fl = c.field_len();
        if x.0.len() != fl || y.0.len() != fl {
            return Err(bad("x and y must be the curve's field length"));
        }
        let mut point = Vec::with_capacity(3 + 2 * fl);
        point.push(0x04);
        let len = 1 + 2 * fl;
        if len < 0x80 {
            point.push(len as u8);
        } else {
            point.extend([0x81, len as u8]);
        }
        point.push(0x04);
        point.extend_from_slice(&x.0);
        point.extend_from_slice(&y.0);
        Ok(vec![
            Attribute::EcParams(ec_params(c)?.to_vec()),
            Attribute::EcPoint(point),
        ])
    }
}
