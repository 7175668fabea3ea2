//! The key-store boundary: where a key version's material lives and which
//! code performs its operations.
//!
//! Two stores, one per node (`node.json` `token` chooses):
//! - **software**: the material sealed in the node's own database under the
//!   partition's key (`partition`, `crypto`), unsealed into memory for use;
//! - **token** (`token`): the material inside a PKCS#11 token (a Luna,
//!   CloudHSM or nShield partition, SoftHSM2 in tests), created there as a
//!   sensitive token object and used only through the token's own functions;
//!   the node keeps the object's `CKA_ID` and never the key bytes.
//!
//! Decides: how a new version is placed in the store ([`KeyStore::generate`],
//! [`KeyStore::place`], [`KeyStore::place_wrapped`]), what the record keeps
//! of it ([`Placed`]), how a version is readied for use ([`Loaded`]) and
//! exported wrapped under the cloning domain's wrapping key
//! ([`KeyStore::wrapped`], `crypto::transfer`), and what a token-made
//! version's material digest is: the domain-keyed digest of its token
//! object's random `CKA_ID`, unique per made key and carried unchanged by
//! every copy (copies never recompute it). Never: who may call what, or
//! metadata (the service and the store).

pub mod token;

use crate::crypto::{CryptoError, KeyMaterial, KeySpec, LoadedKey, WrapKind};
use crate::partition::PartitionState;
use crate::store::TokenObject;
use hsm_api::{Curve, JsonWebKey, KeyOperation};
use token::keys::{Part, TokenKeySpec};
use token::{Token, TokenError};
use zeroize::Zeroizing;

/// Errors of the key-store boundary, mapped once at the service's edge.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Stored state that does not fit this store (a record without its
    /// token object id, material that does not unseal).
    #[error("{0}")]
    Internal(String),
}

/// The node's key store.
#[derive(Clone)]
pub enum KeyStore {
    Software,
    /// `trusted_wrap`: keys are made `CKA_WRAP_WITH_TRUSTED`
    /// (`token.wrap_with_trusted`).
    Token {
        token: Token,
        trusted_wrap: bool,
    },
}

/// What a version's record keeps of a key just placed in the store.
pub struct Placed {
    pub public_jwk: JsonWebKey,
    /// Software: the material sealed under the partition KEK. Token: empty.
    pub sealed: Vec<u8>,
    /// Token: the object that holds the key.
    pub token: Option<TokenObject>,
    pub material_digest: String,
    /// The key_ops a new key of this kind gets by default here.
    pub default_ops: Vec<KeyOperation>,
    /// A short description for logs ("EC-P256").
    pub describe: String,
}

/// A key version ready for use.
pub enum Loaded {
    Software(LoadedKey),
    Token(TokenKey),
}

/// A key inside the token: its object id and what kind of key it is.
#[derive(Debug, Clone)]
pub struct TokenKey {
    pub id: Vec<u8>,
    pub kind: WrapKind,
    pub bits: u32,
}

/// The `CKA_LABEL` prefix of a partition's objects (zeroize destroys by it).
pub fn label_prefix(partition: &str) -> String {
    format!("hsm-ha:{partition}:")
}

fn label(partition: &str, name: &str, version: &str) -> String {
    format!("{}{name}:{version}", label_prefix(partition))
}

fn object(id: Vec<u8>, spec: TokenKeySpec) -> TokenObject {
    let (kind, bits) = match spec {
        TokenKeySpec::Rsa { bits } => (WrapKind::Rsa, bits),
        TokenKeySpec::Ec(c) => (
            match c {
                Curve::P384 => WrapKind::EcP384,
                Curve::P521 => WrapKind::EcP521,
                _ => WrapKind::EcP256,
            },
            (c.field_len() * 8) as u32,
        ),
        TokenKeySpec::Oct { bits } => (WrapKind::Oct, bits),
    };
    TokenObject {
        id: hsm_api::B64(id),
        kind,
        bits,
    }
}

/// What a token object is, as a spec (rotation makes another like it).
pub fn spec_of_object(o: &TokenObject) -> KeySpec {
    match o.kind.curve() {
        Some(c) => KeySpec::Ec(c),
        None if o.kind == WrapKind::Rsa => KeySpec::Rsa { bits: o.bits },
        None => KeySpec::Oct { bits: o.bits },
    }
}

/// The key_ops a token object can serve, and its description.
pub fn token_ops_of(o: &TokenObject) -> (Vec<KeyOperation>, String) {
    let ts = match spec_of_object(o) {
        KeySpec::Rsa { bits } => TokenKeySpec::Rsa { bits },
        KeySpec::Ec(c) => TokenKeySpec::Ec(c),
        KeySpec::Oct { bits } => TokenKeySpec::Oct { bits },
        // Never stored for a token object.
        KeySpec::Ed25519 | KeySpec::X25519 => TokenKeySpec::Oct { bits: 0 },
    };
    (token_ops(ts), describe(ts))
}

fn part_of(kind: WrapKind) -> Part {
    match kind {
        WrapKind::Oct => Part::Secret,
        _ => Part::Private,
    }
}

/// What a token can make of a key spec: NIST EC, RSA and oct keys.
fn token_spec(spec: &KeySpec) -> Result<TokenKeySpec, TokenError> {
    match *spec {
        KeySpec::Rsa { bits } => Ok(TokenKeySpec::Rsa { bits }),
        KeySpec::Ec(c) => Ok(TokenKeySpec::Ec(c)),
        KeySpec::Oct { bits } => Ok(TokenKeySpec::Oct { bits }),
        KeySpec::Ed25519 => Err(TokenError::NotYet {
            mechanism: "CKM_EC_EDWARDS_KEY_PAIR_GEN",
            what: "an Ed25519 key",
        }),
        KeySpec::X25519 => Err(TokenError::NotYet {
            mechanism: "CKM_EC_MONTGOMERY_KEY_PAIR_GEN",
            what: "an X25519 key",
        }),
    }
}

/// The token spec of a payload kind with the key's size.
fn spec_of_kind(kind: WrapKind, jwk: &JsonWebKey, len: usize) -> Result<TokenKeySpec, TokenError> {
    match kind {
        WrapKind::Rsa => Ok(TokenKeySpec::Rsa {
            bits: jwk.n.as_ref().map(|n| n.0.len() as u32 * 8).unwrap_or(2048),
        }),
        WrapKind::EcP256 | WrapKind::EcP384 | WrapKind::EcP521 => kind
            .curve()
            .map(TokenKeySpec::Ec)
            .ok_or_else(|| TokenError::Invalid("no curve".into())),
        // RFC 5649 pads to 8 bytes: the wrapped length bounds the key's.
        WrapKind::Oct => Ok(TokenKeySpec::Oct {
            bits: (len.saturating_sub(8) * 8) as u32,
        }),
        WrapKind::Native => Err(TokenError::NotYet {
            mechanism: "CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EC_MONTGOMERY_KEY_PAIR_GEN",
            what: "an Ed25519, X25519 or public-only key",
        }),
    }
}

/// The key_ops a token key of `spec` can serve (what `token::ops` does).
fn token_ops(spec: TokenKeySpec) -> Vec<KeyOperation> {
    use KeyOperation::*;
    match spec {
        TokenKeySpec::Rsa { .. } => vec![Sign, Verify, Encrypt, Decrypt, WrapKey, UnwrapKey],
        TokenKeySpec::Ec(_) => vec![Sign, Verify],
        TokenKeySpec::Oct { bits } if bits <= 256 => vec![Encrypt, Decrypt],
        TokenKeySpec::Oct { .. } => vec![Sign, Verify],
    }
}

fn describe(spec: TokenKeySpec) -> String {
    match spec {
        TokenKeySpec::Rsa { bits } => format!("RSA-{bits}"),
        TokenKeySpec::Ec(c) => format!("EC-{c}"),
        TokenKeySpec::Oct { bits } => format!("oct-{bits}"),
    }
}

impl KeyStore {
    pub fn is_token(&self) -> bool {
        matches!(self, KeyStore::Token { .. })
    }

    /// The token, when this node keeps its keys in one.
    pub fn token(&self) -> Option<&Token> {
        match self {
            KeyStore::Token { token: t, .. } => Some(t),
            KeyStore::Software => None,
        }
    }

    fn software_placed(
        part: &PartitionState,
        name: &str,
        version: &str,
        m: &KeyMaterial,
    ) -> Result<Placed, KeyStoreError> {
        let (sealed, material_digest) = part
            .seal_material(name, version, m)
            .map_err(KeyStoreError::Internal)?;
        Ok(Placed {
            public_jwk: m.public_jwk(),
            sealed,
            token: None,
            material_digest,
            default_ops: m.default_key_ops(),
            describe: m.describe(),
        })
    }

    fn placed_software_wrapped(
        part: &PartitionState,
        name: &str,
        version: &str,
        kind: WrapKind,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, Option<TokenObject>), KeyStoreError> {
        let m = KeyMaterial::unwrap_transfer(kind, wrapped, &*wrap_key(part)?)?;
        Ok((Self::software_placed(part, name, version, &m)?.sealed, None))
    }

    fn token_digest(part: &PartitionState, id: &[u8]) -> Result<String, KeyStoreError> {
        let mut v = b"hsm-ha token key v1\0".to_vec();
        v.extend_from_slice(id);
        part.domain
            .material_digest(&v)
            .map_err(KeyStoreError::Internal)
    }

    /// Makes a new key of `spec` for (name, version). Software keys are
    /// generated off the async threads (RSA-4096 takes seconds).
    pub async fn generate(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        spec: KeySpec,
    ) -> Result<Placed, KeyStoreError> {
        match self {
            KeyStore::Software => {
                let m = tokio::task::spawn_blocking(move || KeyMaterial::generate(&spec))
                    .await
                    .map_err(|e| KeyStoreError::Internal(format!("keygen task: {e}")))??;
                Self::software_placed(part, name, version, &m)
            }
            KeyStore::Token {
                token: t,
                trusted_wrap,
            } => {
                let ts = token_spec(&spec)?;
                let made = t
                    .generate(ts, &label(&part.name, name, version), *trusted_wrap)
                    .await?;
                Ok(Placed {
                    public_jwk: made.public,
                    sealed: Vec::new(),
                    material_digest: Self::token_digest(part, &made.id)?,
                    token: Some(object(made.id, ts)),
                    default_ops: token_ops(ts),
                    describe: describe(ts),
                })
            }
        }
    }

    /// Places key material that arrived in the clear (an imported JWK, a
    /// derived key): sealed here, or wrapped under the domain key and
    /// unwrapped inside the token.
    pub async fn place(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        m: &KeyMaterial,
    ) -> Result<Placed, KeyStoreError> {
        match self {
            KeyStore::Software => Self::software_placed(part, name, version, m),
            KeyStore::Token { .. } => {
                let kek = wrap_key(part)?;
                let (kind, wrapped) = m.wrap_for_transfer(&kek)?;
                let public = m.public_jwk();
                let id = self
                    .unwrap_in_token(part, name, version, kind, &wrapped, &public)
                    .await?;
                let ts = spec_of_kind(kind, &public, wrapped.len())?;
                Ok(Placed {
                    public_jwk: public,
                    sealed: Vec::new(),
                    material_digest: Self::token_digest(part, &id)?,
                    token: Some(object(id, ts)),
                    default_ops: token_ops(ts),
                    describe: describe(ts),
                })
            }
        }
    }

    async fn unwrap_in_token(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        kind: WrapKind,
        wrapped: &[u8],
        public: &JsonWebKey,
    ) -> Result<Vec<u8>, KeyStoreError> {
        let KeyStore::Token {
            token: t,
            trusted_wrap,
        } = self
        else {
            return Err(KeyStoreError::Internal("not a token store".into()));
        };
        let spec = spec_of_kind(kind, public, wrapped.len())?;
        let pubattrs = match kind {
            WrapKind::Oct => None,
            _ => Some(Token::public_attributes(public)?),
        };
        let id = t
            .import(
                &part.domain.id(),
                spec,
                wrapped,
                pubattrs,
                &label(&part.name, name, version),
                *trusted_wrap,
            )
            .await?;
        Ok(id)
    }

    /// Places a version that arrived wrapped under the domain key (a clone
    /// or a backup): unwrapped and sealed here, or unwrapped inside the
    /// token. Returns the sealed bytes (software) or the object id (token).
    pub async fn place_wrapped(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        kind: WrapKind,
        wrapped: &[u8],
        public: &JsonWebKey,
    ) -> Result<(Vec<u8>, Option<TokenObject>), KeyStoreError> {
        match self {
            KeyStore::Software => Self::placed_software_wrapped(part, name, version, kind, wrapped),
            KeyStore::Token { .. } => {
                let id = self
                    .unwrap_in_token(part, name, version, kind, wrapped, public)
                    .await?;
                let ts = spec_of_kind(kind, public, wrapped.len())?;
                Ok((Vec::new(), Some(object(id, ts))))
            }
        }
    }

    /// A version's key wrapped under the domain key, for a clone or a
    /// backup: `sealed` and `token` are its record's.
    pub async fn wrapped(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        sealed: &[u8],
        token: Option<&TokenObject>,
    ) -> Result<(WrapKind, Vec<u8>), KeyStoreError> {
        match (self, token) {
            (KeyStore::Token { token: t, .. }, Some(o)) => {
                let w = t
                    .export(&part.domain.id(), o.id.as_slice(), part_of(o.kind))
                    .await?;
                Ok((o.kind, w))
            }
            (_, None) => Self::wrapped_software(part, name, version, sealed),
            (KeyStore::Software, Some(_)) => Err(KeyStoreError::Internal(format!(
                "{name}/{version} lives in a token, and this node has none"
            ))),
        }
    }

    fn wrapped_software(
        part: &PartitionState,
        name: &str,
        version: &str,
        sealed: &[u8],
    ) -> Result<(WrapKind, Vec<u8>), KeyStoreError> {
        let m = part
            .unseal_material(name, version, sealed)
            .map_err(KeyStoreError::Internal)?;
        Ok(m.wrap_for_transfer(&*wrap_key(part)?)?)
    }

    /// Readies a version for use.
    pub fn load(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        sealed: &[u8],
        token: Option<&TokenObject>,
    ) -> Result<Loaded, KeyStoreError> {
        match token {
            Some(o) => Ok(Loaded::Token(TokenKey {
                id: o.id.0.clone(),
                kind: o.kind,
                bits: o.bits,
            })),
            None => {
                let m = part
                    .unseal_material(name, version, sealed)
                    .map_err(KeyStoreError::Internal)?;
                Ok(Loaded::Software(LoadedKey::load(&m)?))
            }
        }
    }

    /// Destroys a token object that no record keeps (an import that lost
    /// its race, a version dropped). Best effort: logged, never fatal.
    pub async fn forget(&self, id: &[u8]) {
        if let KeyStore::Token { token: t, .. } = self {
            if let Err(e) = t.destroy(id).await {
                tracing::warn!(id = %hex::encode(id), error = %e, "token object not destroyed");
            }
        }
    }

    /// Puts a partition's domain wrapping key into the token (no-op for
    /// software, or when it is there).
    pub async fn install_domain(&self, part: &PartitionState) -> Result<(), KeyStoreError> {
        if let KeyStore::Token { token: t, .. } = self {
            let k = wrap_key(part)?;
            let created = t
                .install_domain_key(&part.domain.id(), Zeroizing::new(k.to_vec()))
                .await?;
            if created {
                tracing::info!(partition = %part.name, domain = %part.domain.id(), "domain wrapping key installed in the token");
            }
        }
        Ok(())
    }

    /// Destroys every token object of `partition` and its domain wrapping
    /// key (zeroize, partition delete). Returns how many went.
    pub async fn destroy_partition(
        &self,
        partition: &str,
        domain_id: Option<&str>,
    ) -> Result<usize, KeyStoreError> {
        let KeyStore::Token { token: t, .. } = self else {
            return Ok(0);
        };
        let mut n = t.destroy_labelled(&label_prefix(partition)).await?;
        if let Some(d) = domain_id {
            n += t.destroy(&token::keys::domain_key_id(d)).await?;
        }
        Ok(n)
    }
}

/// The cloning domain's wrapping key: the AES-256 key every member wraps
/// transferred keys under (in software, or installed in its token).
pub fn wrap_key(part: &PartitionState) -> Result<Zeroizing<[u8; 32]>, KeyStoreError> {
    part.domain
        .purpose_key("key wrap v1")
        .map_err(KeyStoreError::Internal)
}

/// Runs a key-store future to its end from synchronous code: on a thread
/// of the runtime's blocking pool (`spawn_blocking`) or outside any
/// runtime (the offline commands). Never call it on an async worker.
fn block_on<T>(
    f: impl std::future::Future<Output = Result<T, KeyStoreError>>,
) -> Result<T, KeyStoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(f),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KeyStoreError::Internal(format!("runtime: {e}")))?
            .block_on(f),
    }
}

impl KeyStore {
    /// [`Self::wrapped`] from synchronous code (clone export, backups);
    /// a software store never touches a runtime.
    pub fn wrapped_blocking(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        sealed: &[u8],
        token: Option<&TokenObject>,
    ) -> Result<(WrapKind, Vec<u8>), KeyStoreError> {
        match (self, token) {
            (KeyStore::Token { .. }, Some(_)) => {
                block_on(self.wrapped(part, name, version, sealed, token))
            }
            _ => Self::wrapped_software(part, name, version, sealed),
        }
    }

    /// [`Self::place_wrapped`] from synchronous code (clone import,
    /// restores).
    pub fn place_wrapped_blocking(
        &self,
        part: &PartitionState,
        name: &str,
        version: &str,
        kind: WrapKind,
        wrapped: &[u8],
        public: &JsonWebKey,
    ) -> Result<(Vec<u8>, Option<TokenObject>), KeyStoreError> {
        match self {
            KeyStore::Software => Self::placed_software_wrapped(part, name, version, kind, wrapped),
            KeyStore::Token { .. } => {
                block_on(self.place_wrapped(part, name, version, kind, wrapped, public))
            }
        }
    }

    /// [`Self::forget`] from synchronous code.
    pub fn forget_blocking(&self, ids: &[Vec<u8>]) {
        if ids.is_empty() || !self.is_token() {
            return;
        }
        let _ = block_on(async {
            for id in ids {
                self.forget(id).await;
            }
            Ok(())
        });
    }
}

/// Opens the key store `node.json` names: the token (blocking: logs in
/// once, reads the mechanism list), or the software store.
pub fn open(settings: Option<&crate::layout::TokenSettings>) -> Result<KeyStore, KeyStoreError> {
    let Some(t) = settings else {
        return Ok(KeyStore::Software);
    };
    let select = match (&t.token_label, &t.token_serial) {
        (Some(l), None) => token::TokenSelect::Label(l.clone()),
        (None, Some(s)) => token::TokenSelect::Serial(s.clone()),
        _ => {
            return Err(KeyStoreError::Internal(
                "token: set exactly one of token_label and token_serial".into(),
            ))
        }
    };
    let cfg = token::TokenConfig {
        module: t.module.clone(),
        select,
        pin_file: t.pin_path().map_err(KeyStoreError::Internal)?,
        sessions: t.sessions,
        call_timeout: std::time::Duration::from_millis(t.call_timeout_ms),
        keygen_timeout: std::time::Duration::from_millis(t.keygen_timeout_ms),
        exclusive_writes: t.exclusive_writes,
    };
    Ok(KeyStore::Token {
        token: Token::open(&cfg)?,
        trusted_wrap: t.wrap_with_trusted,
    })
}

impl KeyStore {
    /// [`Self::install_domain`] from synchronous code (offline restore).
    pub fn install_domain_blocking(&self, part: &PartitionState) -> Result<(), KeyStoreError> {
        if !self.is_token() {
            return Ok(());
        }
        block_on(self.install_domain(part))
    }
}

impl KeyStore {
    /// Zeroization: destroys every object this node made in its token —
    /// every partition's keys and every domain wrapping key (labels
    /// `hsm-ha:…` and `hsm-ha cloning domain`; a token belongs to one
    /// node). Runs on a thread of its own with its own runtime, so it can
    /// be called from anywhere (a request's task, a signal handler's
    /// blocking task, the offline command). Returns how many went.
    pub fn destroy_all_blocking(&self) -> Result<usize, KeyStoreError> {
        let KeyStore::Token { token, .. } = self else {
            return Ok(0);
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| KeyStoreError::Internal(format!("runtime: {e}")))?
                    .block_on(async { Ok(token.destroy_labelled("hsm-ha").await?) })
            })
            .join()
            .map_err(|_| KeyStoreError::Internal("the zeroization thread panicked".into()))?
        })
    }
}
