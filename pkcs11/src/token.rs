//! The virtual token: sessions, login, objects and the operations on them,
//! in safe Rust, for the FFI layer to call.
//!
//! Decides: what each Cryptoki function does with the proxy's API — which
//! request it sends, what it keeps between calls (operation state, the
//! object cache, keys made for a session) and what it answers. Pointers and
//! C structures never reach this file: `ffi` reads them into [`Attr`]s and
//! [`Mechanism`]s first and writes the answers back.

use crate::backend::Backend;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mechanism::{self, HashAlg, Mechanism};
use crate::objects::*;
use cryptoki_sys::*;
use hsm_api::request::REQUEST_ID_HEADER;
use hsm_api::{
    Curve, JsonWebKey, KeyBundle, KeyCreateParameters, KeyDeriveParameters, KeyFamily,
    KeyImportParameters, KeyOp, KeyOperation, KeyOperationsParameters, KeyType,
    KeyUpdateParameters, MacAlgorithm, Role, Route, SignatureAlgorithm, Tags,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

/// The Luna user type for a crypto user (`CKU_CRYPTO_USER`), accepted here
/// with the same meaning.
pub const CKU_CRYPTO_USER: CK_USER_TYPE = 0x8000_0001;
/// Most bytes a multi-part operation gathers before it is sent.
pub const MAX_PART_BYTES: usize = 4 << 20;
/// Most bytes one `C_GenerateRandom` returns.
pub const MAX_RANDOM_BYTES: usize = 1 << 20;
/// The proxy's `/rng` answers at most this many bytes per call.
const RNG_CHUNK: usize = 128;

/// The answer of a function that returns bytes under the two-call
/// convention.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<T> {
    /// The caller asked for the length (NULL buffer): at most this many.
    Len(usize),
    /// The caller's buffer is short: this many are needed; the result is
    /// kept for the next call.
    TooSmall(usize),
    Done(T),
}

/// What encryption and decryption return: the bytes, and for AES-GCM
/// encryption the IV the partition chose (the FFI layer writes it into the
/// caller's `CK_GCM_PARAMS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypted {
    pub data: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    /// Where the IV goes: the caller's `pIv` from `C_EncryptInit`.
    pub iv_target: Option<IvTarget>,
}

trait Sized_ {
    fn size(&self) -> usize;
}
impl Sized_ for Vec<u8> {
    fn size(&self) -> usize {
        self.len()
    }
}
impl Sized_ for Crypted {
    fn size(&self) -> usize {
        self.data.len()
    }
}

/// The address and length of the caller's `CK_GCM_PARAMS.pIv`, kept (as a
/// number) from `C_EncryptInit` to the end of an AES-GCM encryption when
/// `gcm_iv_write_back` is on; only the FFI layer writes through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvTarget {
    pub addr: usize,
    pub len: usize,
}

/// The two-call convention in one place: `cap` None asks for the length
/// (`max`), and the operation stays; a result longer than `cap` is kept in
/// `cached` for the next call; otherwise the result is returned and the
/// caller ends the operation.
fn deliver<T: Sized_>(
    cached: &mut Option<T>,
    cap: Option<usize>,
    max: usize,
    compute: impl FnOnce() -> Result<T>,
) -> Result<Out<T>> {
    let Some(cap) = cap else {
        return Ok(Out::Len(cached.as_ref().map(|c| c.size()).unwrap_or(max)));
    };
    let result = match cached.take() {
        Some(r) => r,
        None => compute()?,
    };
    if result.size() > cap {
        let n = result.size();
        *cached = Some(result);
        return Ok(Out::TooSmall(n));
    }
    Ok(Out::Done(result))
}

/// Data gathered by a multi-part operation.
enum Gathered {
    Hash(aws_lc_rs::digest::Context),
    Data(Vec<u8>),
}

impl Gathered {
    fn add(&mut self, part: &[u8]) -> Result<()> {
        match self {
            Gathered::Hash(c) => c.update(part),
            Gathered::Data(d) => {
                if d.len() + part.len() > MAX_PART_BYTES {
                    return Err(Error::DataLenRange(format!(
                        "more than {MAX_PART_BYTES} bytes in one operation"
                    )));
                }
                d.extend_from_slice(part);
            }
        }
        Ok(())
    }
    fn take(self) -> Vec<u8> {
        match self {
            Gathered::Hash(c) => c.finish().as_ref().to_vec(),
            Gathered::Data(d) => d,
        }
    }
}

/// How a signing mechanism turns its gathered input into a request.
#[derive(Debug, Clone, Copy)]
enum SignKind {
    /// ECDSA over a hash (given, or computed here).
    Ecdsa(Curve),
    RsaDigestInfo,
    Rs(SignatureAlgorithm),
    /// PSS over a hash of this length (given, or computed here).
    Ps(SignatureAlgorithm, usize),
    EdDsa,
    Hmac(MacAlgorithm),
}

struct SignOp {
    kind: SignKind,
    key: KeyObject,
    gathered: Option<Gathered>,
    max_len: usize,
    cached: Option<Vec<u8>>,
}

impl SignOp {
    /// The request: a signature algorithm and the digest (or, for EdDSA,
    /// the message), or a MAC algorithm and the data.
    fn request(&mut self) -> Result<SignRequest> {
        let data = self.gathered.take().map(Gathered::take).unwrap_or_default();
        Ok(match self.kind {
            SignKind::Ecdsa(crv) => {
                let (alg, d) = mechanism::fit_ecdsa(crv, &data)?;
                SignRequest::Sig(alg, d)
            }
            SignKind::RsaDigestInfo => {
                let (alg, d) = mechanism::unpack_digest_info(&data)?;
                SignRequest::Sig(alg, d)
            }
            SignKind::Rs(alg) => SignRequest::Sig(alg, data),
            SignKind::Ps(alg, len) => {
                if data.len() != len {
                    return Err(Error::DataLenRange(format!(
                        "PSS signs a {len}-byte hash, got {}",
                        data.len()
                    )));
                }
                SignRequest::Sig(alg, data)
            }
            SignKind::EdDsa => SignRequest::Sig(SignatureAlgorithm::EdDsa, data),
            SignKind::Hmac(m) => SignRequest::Mac(m, data),
        })
    }
}

/// What a signing operation sends: `sign`/`verify` or `mac`/`verifymac`.
enum SignRequest {
    Sig(SignatureAlgorithm, Vec<u8>),
    Mac(MacAlgorithm, Vec<u8>),
}

#[derive(Debug, Clone)]
enum CryptKind {
    Gcm(mechanism::GcmParams),
    Oaep(hsm_api::EncryptionAlgorithm),
}

struct CryptOp {
    kind: CryptKind,
    key: KeyObject,
    data: Vec<u8>,
    cached: Option<Crypted>,
    /// The digest of the last part given with a NULL output (a length
    /// query), which the next update may repeat.
    queried: Option<[u8; 32]>,
    iv_target: Option<IvTarget>,
}

struct DigestOp {
    ctx: Option<aws_lc_rs::digest::Context>,
    len: usize,
    cached: Option<Vec<u8>>,
}

#[derive(Default)]
struct Session {
    rw: bool,
    find: Option<VecDeque<u64>>,
    sign: Option<SignOp>,
    verify: Option<SignOp>,
    encrypt: Option<CryptOp>,
    decrypt: Option<CryptOp>,
    digest: Option<DigestOp>,
    /// Partition keys made with `CKA_TOKEN=FALSE`, deleted at close.
    session_keys: Vec<String>,
}

/// `C_GetSessionInfo`'s answer.
pub struct SessionInfo {
    pub state: CK_STATE,
    pub flags: CK_FLAGS,
}

/// The token: one per `C_Initialize`.
pub struct Token {
    pub cfg: Config,
    backend: Backend,
    /// This module instance's id, the value of `pkcs11-session` tags.
    instance: String,
    sessions: Mutex<HashMap<u64, Arc<Mutex<Session>>>>,
    next_handle: AtomicU64,
    objects: RwLock<HashMap<u64, Object>>,
    /// The latest version seen of each key, by name.
    current: Mutex<HashMap<String, Arc<KeyBundle>>>,
    user: Mutex<Option<CK_USER_TYPE>>,
}

fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// `https://host/keys/{name}/{version}` → (name, version).
fn parse_kid(kid: &str) -> Option<(String, String)> {
    let rest = kid.split_once("/keys/")?.1;
    let (name, version) = rest.split_once('/')?;
    Some((name.to_string(), version.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Token {
    pub fn new(cfg: Config) -> Result<Token> {
        let backend = Backend::new(&cfg)?;
        Ok(Token {
            cfg,
            backend,
            instance: random_hex(8),
            sessions: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            objects: RwLock::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            user: Mutex::new(None),
        })
    }

    pub fn check_slot(&self, slot: CK_SLOT_ID) -> Result<()> {
        if slot == self.cfg.slot_id {
            Ok(())
        } else {
            Err(Error::SlotIdInvalid)
        }
    }

    // ----- sessions and login -------------------------------------------

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        self.check_slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::ParallelNotSupported);
        }
        let h = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let s = Session {
            rw: flags & CKF_RW_SESSION != 0,
            ..Session::default()
        };
        lock(&self.sessions).insert(h, Arc::new(Mutex::new(s)));
        Ok(h)
    }

    fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>> {
        lock(&self.sessions)
            .get(&h)
            .cloned()
            .ok_or(Error::SessionHandleInvalid)
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = lock(&self.sessions)
            .remove(&h)
            .ok_or(Error::SessionHandleInvalid)?;
        let keys = std::mem::take(&mut lock(&s).session_keys);
        self.forget_session_objects(h, &keys);
        if lock(&self.sessions).is_empty() {
            // The last session closed: the application is logged out.
            let ended = {
                let mut current = lock(&self.user);
                *current = None;
                self.backend.end_login()
            };
            self.backend.logout(ended);
        }
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.check_slot(slot)?;
        let all: Vec<u64> = lock(&self.sessions).keys().copied().collect();
        for h in all {
            let _ = self.close_session(h);
        }
        Ok(())
    }

    /// Drops a closed session's module-held keys and deletes the partition
    /// keys it made with `CKA_TOKEN=FALSE`.
    fn forget_session_objects(&self, session: u64, keys: &[String]) {
        if let Ok(mut objs) = self.objects.write() {
            objs.retain(|_, o| match o {
                Object::Secret(s) => s.session != session,
                Object::Key(k) => !keys.contains(&k.name),
            });
        }
        for name in keys {
            lock(&self.current).remove(name);
            if let Err(e) = self.delete_key(name) {
                tracing::warn!(key = %name, error = %e, "could not delete a session key");
            }
        }
    }

    /// (sessions, read-write sessions) open now.
    pub fn session_counts(&self) -> (usize, usize) {
        let all: Vec<_> = lock(&self.sessions).values().cloned().collect();
        let rw = all.iter().filter(|s| lock(s).rw).count();
        (all.len(), rw)
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Result<SessionInfo> {
        let s = self.session(h)?;
        let rw = lock(&s).rw;
        let user = lock(&self.user).is_some();
        let state = match (rw, user) {
            (true, true) => CKS_RW_USER_FUNCTIONS,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (false, false) => CKS_RO_PUBLIC_SESSION,
        };
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo { state, flags })
    }

    pub fn login(&self, h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        self.session(h)?;
        let role = match user {
            CKU_USER => self.cfg.user_role,
            CKU_CRYPTO_USER => Role::CryptoUser,
            CKU_CONTEXT_SPECIFIC => return Err(Error::OperationNotInitialized),
            other => return Err(Error::UserTypeInvalid(other)),
        };
        if lock(&self.user).is_some() {
            return Err(Error::UserAlreadyLoggedIn);
        }
        let pin = std::str::from_utf8(pin).map_err(|_| Error::PinIncorrect)?;
        // The login crosses the network: the user lock is not held meanwhile,
        // so other sessions' calls do not wait behind it.
        self.backend.login(role, pin)?;
        let mut current = lock(&self.user);
        if current.is_some() {
            return Err(Error::UserAlreadyLoggedIn);
        }
        *current = Some(user);
        Ok(())
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session(h)?;
        let ended = {
            let mut current = lock(&self.user);
            if current.take().is_none() {
                return Err(Error::UserNotLoggedIn);
            }
            self.backend.end_login()
        };
        // The logout crosses the network: the user lock is not held meanwhile.
        self.backend.logout(ended);
        // Private session objects go with the login (PKCS#11 C_Logout):
        // the module-held secret keys. Partition keys made for a session
        // stay until it closes, unreachable without a login.
        if let Ok(mut objs) = self.objects.write() {
            objs.retain(|_, o| !matches!(o, Object::Secret(_)));
        }
        Ok(())
    }

    fn logged_in(&self) -> Result<()> {
        if lock(&self.user).is_some() {
            Ok(())
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    fn writable(&self, h: CK_SESSION_HANDLE, token: bool) -> Result<Arc<Mutex<Session>>> {
        let s = self.session(h)?;
        if token && !lock(&s).rw {
            return Err(Error::SessionReadOnly);
        }
        self.logged_in()?;
        Ok(s)
    }

    // ----- objects --------------------------------------------------------

    /// Records a key version's objects; returns their handles by class.
    fn register(&self, bundle: KeyBundle) -> Result<Vec<(Class, u64)>> {
        let kid = bundle.key.kid.clone().unwrap_or_default();
        let (name, version) =
            parse_kid(&kid).ok_or_else(|| Error::Failed(format!("key id `{kid}`")))?;
        let family = bundle.key.kty.map(|k| k.family()).unwrap_or(KeyFamily::Oct);
        let bundle = Arc::new(bundle);
        lock(&self.current).insert(name.clone(), bundle.clone());
        let mut out = Vec::new();
        let mut objs = self
            .objects
            .write()
            .map_err(|_| Error::Failed("lock".into()))?;
        for class in Class::of(family) {
            let h = key_handle(&name, &version, *class);
            objs.insert(
                h,
                Object::Key(KeyObject {
                    name: name.clone(),
                    version: version.clone(),
                    class: *class,
                    bundle: bundle.clone(),
                }),
            );
            out.push((*class, h));
        }
        let cert = key_handle(&name, &version, Class::Certificate);
        if cert_der(bundle.tags.as_ref()).is_some() {
            objs.insert(
                cert,
                Object::Key(KeyObject {
                    name: name.clone(),
                    version: version.clone(),
                    class: Class::Certificate,
                    bundle: bundle.clone(),
                }),
            );
            out.push((Class::Certificate, cert));
        } else {
            objs.remove(&cert);
        }
        Ok(out)
    }

    /// Every current key version of the partition (keys other module
    /// instances made for their sessions left out), registered. A list
    /// names keys, not versions: a key whose list entry changed since the
    /// last scan (a new version, new tags) is read again.
    fn scan(&self) -> Result<Vec<u64>> {
        let items = self.backend.call(|c| async move { c.list_keys().await })?;
        let mut handles = Vec::new();
        for item in items {
            let Some(name) = item.kid.rsplit_once("/keys/").map(|(_, n)| n.to_string()) else {
                continue;
            };
            if let Some(owner) = item.tags.as_ref().and_then(|t| t.get(TAG_SESSION)) {
                if *owner != self.instance {
                    continue;
                }
            }
            let known = lock(&self.current).get(&name).cloned().filter(|b| {
                b.attributes.updated == item.attributes.updated
                    && b.attributes.created == item.attributes.created
                    && b.tags == item.tags
            });
            let bundle = match known {
                Some(b) => (*b).clone(),
                None => {
                    let n = name.clone();
                    match self.backend.call(move |c| {
                        let n = n.clone();
                        async move { c.get_key(&n, None).await }
                    }) {
                        Ok(b) => b,
                        // Deleted between the list and now.
                        Err(Error::ObjectHandleInvalid) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            handles.extend(self.register(bundle)?.into_iter().map(|(_, h)| h));
        }
        Ok(handles)
    }

    /// The object behind a handle; a partition key's handle not seen yet in
    /// this process (kept from an earlier run, say) is found by a scan.
    fn object(&self, h: CK_OBJECT_HANDLE) -> Result<Object> {
        let logged_in = lock(&self.user).is_some();
        // Without a login only public objects (public keys, certificates)
        // are visible.
        let visible = |o: Object| {
            let public = matches!(&o, Object::Key(k) if matches!(k.class, Class::Public | Class::Certificate));
            (public || logged_in).then_some(o)
        };
        let cached = |t: &Token| t.objects.read().ok().and_then(|o| o.get(&h).cloned());
        if let Some(o) = cached(self) {
            return visible(o).ok_or(Error::ObjectHandleInvalid);
        }
        if h & SESSION_OBJECT_BIT == 0 && logged_in {
            self.scan()?;
            if let Some(o) = cached(self) {
                return Ok(o);
            }
        }
        Err(Error::ObjectHandleInvalid)
    }

    /// A partition key to operate with.
    fn key(&self, h: CK_OBJECT_HANDLE) -> Result<KeyObject> {
        match self.object(h) {
            Ok(Object::Key(k)) if k.class == Class::Certificate => Err(Error::KeyHandleInvalid),
            Ok(Object::Key(k)) => Ok(k),
            Ok(Object::Secret(_)) => Err(Error::KeyFunctionNotPermitted(
                "an extractable key held by the module can only be wrapped".into(),
            )),
            Err(Error::ObjectHandleInvalid) => Err(Error::KeyHandleInvalid),
            Err(e) => Err(e),
        }
    }

    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: Vec<Attr>) -> Result<()> {
        let s = self.session(h)?;
        if lock(&s).find.is_some() {
            return Err(Error::OperationActive);
        }
        let mut found = Vec::new();
        if lock(&self.user).is_some() {
            let partition = self.scan()?;
            let objs = self
                .objects
                .read()
                .map_err(|_| Error::Failed("lock".into()))?;
            for handle in partition {
                if objs.get(&handle).is_some_and(|o| o.matches(&template)) {
                    found.push(handle);
                }
            }
            for (handle, o) in objs.iter() {
                if matches!(o, Object::Secret(_)) && o.matches(&template) {
                    found.push(*handle);
                }
            }
        }
        lock(&s).find = Some(found.into());
        Ok(())
    }

    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<u64>> {
        let s = self.session(h)?;
        let mut s = lock(&s);
        let q = s.find.as_mut().ok_or(Error::OperationNotInitialized)?;
        let n = max.min(q.len());
        Ok(q.drain(..n).collect())
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        lock(&s).find.take().ok_or(Error::OperationNotInitialized)?;
        Ok(())
    }

    pub fn attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<AttrValue>> {
        self.session(h)?;
        let o = self.object(obj)?;
        Ok(types.iter().map(|t| o.attribute(*t)).collect())
    }

    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: Vec<Attr>,
    ) -> Result<()> {
        let o = self.object(obj)?;
        let token = matches!(&o, Object::Key(k) if !k.is_session());
        self.writable(h, token)?;
        let mut label = None;
        let mut id = None;
        for a in &template {
            match a.ty {
                CKA_LABEL => label = Some(a.value.clone()),
                CKA_ID => id = Some(a.value.clone()),
                // Setting an attribute to the value it has changes nothing.
                t if o.attribute(t) == AttrValue::Bytes(a.value.clone()) => {}
                t => return Err(Error::AttributeReadOnly(t)),
            }
        }
        match o {
            Object::Secret(s) => {
                let new = SecretObject {
                    value: s.value.clone(),
                    key_type: s.key_type,
                    label: label.unwrap_or_else(|| s.label.clone()),
                    id: id.unwrap_or_else(|| s.id.clone()),
                    sensitive: s.sensitive,
                    session: s.session,
                };
                if let Ok(mut objs) = self.objects.write() {
                    objs.insert(obj, Object::Secret(Arc::new(new)));
                }
                Ok(())
            }
            Object::Key(k) => {
                let mut tags = k.tags().cloned().unwrap_or_default();
                if let Some(l) = label {
                    set_label(&mut tags, &k.name, &l)?;
                }
                if let Some(i) = id {
                    tags.insert(TAG_ID.into(), hex::encode(i));
                }
                self.update_tags(&k, tags).map(|_| ())
            }
        }
    }

    pub fn destroy(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<()> {
        let o = self.object(obj)?;
        let token = matches!(&o, Object::Key(k) if !k.is_session());
        let s = self.writable(h, token)?;
        match o {
            Object::Secret(_) => {
                if let Ok(mut objs) = self.objects.write() {
                    objs.remove(&obj);
                }
                Ok(())
            }
            Object::Key(k) if k.class == Class::Certificate => {
                let tags = with_cert(k.tags().unwrap_or(&Tags::new()), None)
                    .map_err(|_| Error::Failed("tags".into()))?;
                self.update_tags(&k, tags).map(|_| ())
            }
            Object::Key(k) if k.class == Class::Public => Err(Error::ActionProhibited(
                "a public key goes with its private key: destroy the private key".into(),
            )),
            Object::Key(k) => {
                self.delete_key(&k.name)?;
                lock(&s).session_keys.retain(|n| *n != k.name);
                if let Ok(mut objs) = self.objects.write() {
                    objs.retain(|_, o| !matches!(o, Object::Key(x) if x.name == k.name));
                }
                lock(&self.current).remove(&k.name);
                Ok(())
            }
        }
    }

    /// Deletes a key and purges it, so its name is free again (a destroyed
    /// object is gone on every HSM). A key already gone is not an error.
    fn delete_key(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        match self.backend.call(move |c| {
            let n = n.clone();
            async move { c.delete_key(&n).await }
        }) {
            Ok(_) | Err(Error::ObjectHandleInvalid) => {}
            Err(e) => return Err(e),
        }
        let n = name.to_string();
        if let Err(e) = self.backend.call(move |c| {
            let n = n.clone();
            async move { c.purge_deleted(&n).await }
        }) {
            tracing::warn!(key = %name, error = %e, "deleted but not purged");
        }
        Ok(())
    }

    /// Replaces a key version's tags and registers the answer.
    fn update_tags(&self, k: &KeyObject, tags: Tags) -> Result<Vec<(Class, u64)>> {
        let (n, v) = (k.name.clone(), k.version.clone());
        let params = KeyUpdateParameters {
            tags: Some(tags),
            ..KeyUpdateParameters::default()
        };
        let bundle = self.backend.call(move |c| {
            let (n, v, p) = (n.clone(), v.clone(), params.clone());
            async move { c.update_key(&n, Some(&v), &p).await }
        })?;
        self.register(bundle)
    }

    /// `C_CreateObject` of an X.509 certificate: stored in the tags of the
    /// key version with the same `CKA_ID` (or, without one, the same
    /// label), so that it is replicated and found with its key. A
    /// certificate with no key in the partition cannot be stored.
    fn store_certificate(&self, h: CK_SESSION_HANDLE, template: &[Attr]) -> Result<u64> {
        self.writable(h, true)?;
        if let Some(t) = template.ulong_of(CKA_CERTIFICATE_TYPE)? {
            if t != CKC_X_509 {
                return Err(Error::TemplateInconsistent(
                    "X.509 certificates only".into(),
                ));
            }
        }
        if template.bool_of(CKA_TOKEN)? == Some(false) {
            return Err(Error::TemplateInconsistent(
                "certificates are stored with their key in the partition (CKA_TOKEN=TRUE)".into(),
            ));
        }
        let der = template
            .find(CKA_VALUE)
            .ok_or_else(|| Error::TemplateIncomplete("CKA_VALUE".into()))?;
        if cert_fields(der).is_none() {
            return Err(Error::AttributeValueInvalid(
                "CKA_VALUE is not a DER X.509 certificate".into(),
            ));
        }
        let id = template.find(CKA_ID);
        let label = template.find(CKA_LABEL);
        if id.is_none() && label.is_none() {
            return Err(Error::TemplateIncomplete(
                "CKA_ID (or CKA_LABEL) naming the certificate's key".into(),
            ));
        }
        // Current versions only: a certificate goes with the key a search
        // finds, never with a version a rotation left behind.
        let current = self.scan()?;
        let mut matching: Vec<KeyObject> = {
            let objs = self
                .objects
                .read()
                .map_err(|_| Error::Failed("lock".into()))?;
            current
                .iter()
                .filter_map(|h| match objs.get(h) {
                    Some(Object::Key(k)) if matches!(k.class, Class::Private | Class::Secret) => {
                        Some(k.clone())
                    }
                    _ => None,
                })
                .filter(|k| match id {
                    Some(id) => k.id() == id,
                    None => Some(k.label().as_slice()) == label,
                })
                .collect()
        };
        if matching.len() > 1 {
            return Err(Error::TemplateInconsistent(format!(
                "{} keys have this CKA_ID; give each key its own id first",
                matching.len()
            )));
        }
        let key = matching.pop().ok_or_else(|| {
            Error::TemplateInconsistent(
                "the partition holds keys, not loose certificates: no key has this CKA_ID".into(),
            )
        })?;
        let tags = with_cert(key.tags().unwrap_or(&Tags::new()), Some(der)).map_err(|over| {
            Error::TemplateInconsistent(format!(
                "the certificate is {over} bytes too large to keep with its key"
            ))
        })?;
        let handles = self.update_tags(&key, tags)?;
        handles
            .iter()
            .find(|(c, _)| *c == Class::Certificate)
            .map(|(_, h)| *h)
            .ok_or_else(|| Error::Failed("the certificate was not stored".into()))
    }

    // ----- making keys ----------------------------------------------------

    /// The name and tags of a new key: the label itself when it is a valid
    /// key name not yet taken, else a generated name with the label in a
    /// tag; `CKA_ID` in a tag; a session key marked as this instance's.
    fn new_key_name(
        &self,
        label: Option<&[u8]>,
        id: Option<&[u8]>,
        session: bool,
    ) -> Result<(String, Tags)> {
        let mut tags = Tags::new();
        if session {
            tags.insert(TAG_SESSION.into(), self.instance.clone());
        }
        if let Some(id) = id {
            tags.insert(TAG_ID.into(), hex::encode(id));
        }
        let generated = || format!("p11-{}", random_hex(12));
        let name = match label {
            Some(l) if !session && is_key_name(l) && !self.name_taken(l)? => {
                String::from_utf8_lossy(l).into_owned()
            }
            Some(l) => {
                let name = generated();
                set_label(&mut tags, &name, l)?;
                name
            }
            None => generated(),
        };
        Ok((name, tags))
    }

    fn name_taken(&self, label: &[u8]) -> Result<bool> {
        let n = String::from_utf8_lossy(label).into_owned();
        match self.backend.call(move |c| {
            let n = n.clone();
            async move { c.get_key(&n, None).await }
        }) {
            Ok(_) => Ok(true),
            Err(Error::ObjectHandleInvalid) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends a creating request once, with a request id so that a retry
    /// (after a proxy restart, say) answers the key the first attempt made.
    fn create(&self, route: Route, body: serde_json::Value) -> Result<KeyBundle> {
        let id = http_value(&format!("pkcs11-{}", random_hex(16)))?;
        self.backend.call(move |c| {
            let (route, body, id) = (route.clone(), body.clone(), id.clone());
            async move {
                let headers = [(http::HeaderName::from_static(REQUEST_ID_HEADER), id)];
                c.call_with(&route, None, &headers, Some(&body)).await
            }
        })
    }

    /// Registers a key a session made and, for `CKA_TOKEN=FALSE`, ties it
    /// to the session.
    fn adopt(
        &self,
        h: CK_SESSION_HANDLE,
        bundle: KeyBundle,
        session: bool,
    ) -> Result<Vec<(Class, u64)>> {
        if session {
            if let Some((name, _)) = bundle.key.kid.as_deref().and_then(parse_kid) {
                let s = self.session(h)?;
                lock(&s).session_keys.push(name);
            }
        }
        self.register(bundle)
    }

    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        public: Vec<Attr>,
        private: Vec<Attr>,
    ) -> Result<(u64, u64)> {
        let token = private.bool_of(CKA_TOKEN)?.unwrap_or(false);
        self.writable(h, token)?;
        for t in [&public[..], &private[..]] {
            refuse_extractable(t)?;
        }
        let mut params = match mech {
            Mechanism::EcKeyPairGen
            | Mechanism::EdwardsKeyPairGen
            | Mechanism::MontgomeryKeyPairGen => {
                let der = public
                    .find(CKA_EC_PARAMS)
                    .ok_or_else(|| Error::TemplateIncomplete("CKA_EC_PARAMS".into()))?;
                let crv = curve_of_params(der)?;
                let want = match mech {
                    Mechanism::EcKeyPairGen => KeyFamily::Ec,
                    _ => KeyFamily::Okp,
                };
                let fits = crv.family() == want
                    && match mech {
                        Mechanism::EdwardsKeyPairGen => crv == Curve::Ed25519,
                        Mechanism::MontgomeryKeyPairGen => crv == Curve::X25519,
                        _ => true,
                    };
                if !fits {
                    return Err(Error::TemplateInconsistent(format!(
                        "curve {crv} does not go with this mechanism"
                    )));
                }
                match want {
                    KeyFamily::Ec => KeyCreateParameters::ec(crv),
                    _ => KeyCreateParameters::okp(crv),
                }
            }
            Mechanism::RsaKeyPairGen => {
                let bits = public
                    .ulong_of(CKA_MODULUS_BITS)?
                    .ok_or_else(|| Error::TemplateIncomplete("CKA_MODULUS_BITS".into()))?;
                if !matches!(bits, 2048 | 3072 | 4096) {
                    return Err(Error::KeySizeRange(format!(
                        "RSA keys of 2048, 3072 or 4096 bits, not {bits}"
                    )));
                }
                if let Some(e) = public.find(CKA_PUBLIC_EXPONENT) {
                    let trimmed: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
                    if trimmed != [1, 0, 1] {
                        return Err(Error::AttributeValueInvalid(
                            "the public exponent is 65537".into(),
                        ));
                    }
                }
                KeyCreateParameters::rsa(bits as u32)
            }
            _ => return Err(Error::MechanismInvalid(0)),
        };
        let label = private.find(CKA_LABEL).or_else(|| public.find(CKA_LABEL));
        let id = private.find(CKA_ID).or_else(|| public.find(CKA_ID));
        let (name, tags) = self.new_key_name(label, id, !token)?;
        params.key_ops = key_ops(family_of(&params), &[&public[..], &private[..]])?;
        params.tags = Some(tags);
        let body = serde_json::to_value(&params).map_err(|e| Error::Failed(e.to_string()))?;
        let bundle = self.create(Route::CreateKey { name }, body)?;
        let handles = self.adopt(h, bundle, !token)?;
        let find = |c| handles.iter().find(|(k, _)| *k == c).map(|(_, h)| *h);
        match (find(Class::Public), find(Class::Private)) {
            (Some(p), Some(q)) => Ok((p, q)),
            _ => Err(Error::Failed("the new key has no key pair".into())),
        }
    }

    pub fn generate_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        template: Vec<Attr>,
    ) -> Result<u64> {
        let token = template.bool_of(CKA_TOKEN)?.unwrap_or(false);
        let s = self.writable(h, token)?;
        let kt = match mech {
            Mechanism::AesKeyGen => CKK_AES,
            Mechanism::GenericSecretKeyGen => CKK_GENERIC_SECRET,
            _ => return Err(Error::MechanismInvalid(0)),
        };
        if let Some(t) = template.ulong_of(CKA_KEY_TYPE)? {
            if t != kt {
                return Err(Error::TemplateInconsistent("CKA_KEY_TYPE".into()));
            }
        }
        let len = template
            .ulong_of(CKA_VALUE_LEN)?
            .ok_or_else(|| Error::TemplateIncomplete("CKA_VALUE_LEN".into()))?;
        check_secret_len(kt, len)?;
        if template.bool_of(CKA_EXTRACTABLE)? == Some(true) {
            if token {
                refuse_extractable(&template)?;
            }
            // An extractable key cannot live in the partition: the module
            // holds it, for this session, so it can be wrapped.
            let value = self.random(h, len as usize)?;
            drop(s);
            return self.hold_secret(h, kt, Zeroizing::new(value), &template);
        }
        refuse_extractable(&template)?;
        let (name, mut tags) =
            self.new_key_name(template.find(CKA_LABEL), template.find(CKA_ID), !token)?;
        tags.insert(TAG_KEY_TYPE.into(), secret_kind_tag(kt, len as usize));
        let mut params = KeyCreateParameters::oct(len as u32 * 8);
        params.key_ops = key_ops(KeyFamily::Oct, &[&template[..]])?;
        params.tags = Some(tags);
        let body = serde_json::to_value(&params).map_err(|e| Error::Failed(e.to_string()))?;
        drop(s);
        let bundle = self.create(Route::CreateKey { name }, body)?;
        first_handle(self.adopt(h, bundle, !token)?)
    }

    /// A secret key held by the module for a session.
    fn hold_secret(
        &self,
        h: CK_SESSION_HANDLE,
        key_type: CK_KEY_TYPE,
        value: Zeroizing<Vec<u8>>,
        template: &[Attr],
    ) -> Result<u64> {
        let handle = SESSION_OBJECT_BIT | self.next_handle.fetch_add(1, Ordering::Relaxed);
        let obj = SecretObject {
            value,
            key_type,
            label: template.find(CKA_LABEL).unwrap_or_default().to_vec(),
            id: template.find(CKA_ID).unwrap_or_default().to_vec(),
            sensitive: template.bool_of(CKA_SENSITIVE)?.unwrap_or(true),
            session: h,
        };
        self.objects
            .write()
            .map_err(|_| Error::Failed("lock".into()))?
            .insert(handle, Object::Secret(Arc::new(obj)));
        Ok(handle)
    }

    /// A secret key from its value (`C_CreateObject`, `C_UnwrapKey`): held
    /// by the module when extractable, else imported into the partition.
    fn secret_from_value(
        &self,
        h: CK_SESSION_HANDLE,
        value: Zeroizing<Vec<u8>>,
        template: &[Attr],
    ) -> Result<u64> {
        let token = template.bool_of(CKA_TOKEN)?.unwrap_or(false);
        let s = self.writable(h, token)?;
        drop(s);
        if let Some(c) = template.ulong_of(CKA_CLASS)? {
            if c != CKO_SECRET_KEY {
                return Err(Error::TemplateInconsistent(
                    "only secret keys can be created or unwrapped here".into(),
                ));
            }
        }
        let kt = template
            .ulong_of(CKA_KEY_TYPE)?
            .unwrap_or(CKK_GENERIC_SECRET);
        if !matches!(kt, CKK_AES | CKK_GENERIC_SECRET) {
            return Err(Error::TemplateInconsistent(
                "CKK_AES or CKK_GENERIC_SECRET".into(),
            ));
        }
        if let Some(len) = template.ulong_of(CKA_VALUE_LEN)? {
            if len as usize != value.len() {
                return Err(Error::TemplateInconsistent(format!(
                    "CKA_VALUE_LEN {len} but the key has {} bytes",
                    value.len()
                )));
            }
        }
        check_secret_len(kt, value.len() as u64)?;
        if template.bool_of(CKA_EXTRACTABLE)? == Some(true) && !token {
            return self.hold_secret(h, kt, value, template);
        }
        refuse_extractable(template)?;
        let (name, mut tags) =
            self.new_key_name(template.find(CKA_LABEL), template.find(CKA_ID), !token)?;
        tags.insert(TAG_KEY_TYPE.into(), secret_kind_tag(kt, value.len()));
        let params = KeyImportParameters {
            hsm: Some(true),
            key: JsonWebKey {
                kty: Some(KeyType::OctHsm),
                k: Some(value.to_vec().into()),
                key_ops: key_ops(KeyFamily::Oct, &[template])?,
                ..JsonWebKey::default()
            },
            tags: Some(tags),
            ..KeyImportParameters::default()
        };
        let body = serde_json::to_value(&params).map_err(|e| Error::Failed(e.to_string()))?;
        let bundle = self.create(Route::ImportKey { name }, body)?;
        first_handle(self.adopt(h, bundle, !token)?)
    }

    pub fn create_object(&self, h: CK_SESSION_HANDLE, template: Vec<Attr>) -> Result<u64> {
        match template.ulong_of(CKA_CLASS)? {
            Some(CKO_SECRET_KEY) => {}
            Some(CKO_CERTIFICATE) => return self.store_certificate(h, &template),
            Some(_) => {
                return Err(Error::TemplateInconsistent(
                    "only secret keys can be created; generate key pairs in the partition".into(),
                ))
            }
            None => return Err(Error::TemplateIncomplete("CKA_CLASS".into())),
        }
        let value = template
            .find(CKA_VALUE)
            .ok_or_else(|| Error::TemplateIncomplete("CKA_VALUE".into()))?;
        self.secret_from_value(h, Zeroizing::new(value.to_vec()), &template)
    }

    // ----- signing and verifying -----------------------------------------

    fn sign_op(&self, mech: &Mechanism, key: KeyObject, verify: bool) -> Result<SignOp> {
        let fam = key.family();
        let want_class = if verify {
            Class::Public
        } else {
            Class::Private
        };
        let class_ok = key.class == want_class
            || key.class == Class::Secret
            || (verify && key.class == Class::Private);
        let op = if verify {
            KeyOperation::Verify
        } else {
            KeyOperation::Sign
        };
        if !key.allows(op) {
            return Err(Error::KeyFunctionNotPermitted(format!(
                "the key's key_ops lack {op}"
            )));
        }
        let mismatch = || Error::KeyTypeInconsistent(format!("{mech:?} with a {:?} key", fam));
        let rsa_len = key.modulus().map(|n| n.len()).unwrap_or(0);
        let hash = |h: HashAlg| Some(Gathered::Hash(h.context()));
        let data = Some(Gathered::Data(Vec::new()));
        let (kind, gathered, max_len) = match (mech, fam) {
            (Mechanism::Ecdsa(hash_alg), KeyFamily::Ec) if class_ok => {
                let crv = key.curve().ok_or_else(mismatch)?;
                let g = match hash_alg {
                    Some(h) => hash(*h),
                    None => data,
                };
                (SignKind::Ecdsa(crv), g, 2 * crv.field_len())
            }
            (Mechanism::RsaPkcs, KeyFamily::Rsa) if class_ok => {
                (SignKind::RsaDigestInfo, data, rsa_len)
            }
            (Mechanism::RsaPkcsHash(h), KeyFamily::Rsa) if class_ok => {
                let alg = match h {
                    HashAlg::Sha256 => SignatureAlgorithm::Rs256,
                    HashAlg::Sha384 => SignatureAlgorithm::Rs384,
                    HashAlg::Sha512 => SignatureAlgorithm::Rs512,
                    _ => return Err(Error::MechanismInvalid(0)),
                };
                (SignKind::Rs(alg), hash(*h), rsa_len)
            }
            (Mechanism::RsaPss(p), KeyFamily::Rsa) if class_ok => {
                let (h, alg) = mechanism::pss_alg(p, None)?;
                (SignKind::Ps(alg, h.output_len()), data, rsa_len)
            }
            (Mechanism::RsaPssHash(h, p), KeyFamily::Rsa) if class_ok => {
                let (h, alg) = mechanism::pss_alg(p, Some(*h))?;
                (SignKind::Ps(alg, h.output_len()), hash(h), rsa_len)
            }
            (Mechanism::EdDsa, KeyFamily::Okp)
                if class_ok && key.curve() == Some(Curve::Ed25519) =>
            {
                (SignKind::EdDsa, data, 64)
            }
            (Mechanism::Hmac(h), KeyFamily::Oct) => {
                let m = h.hs().ok_or(Error::MechanismInvalid(0))?;
                (SignKind::Hmac(m), data, m.tag_len())
            }
            (
                Mechanism::Ecdsa(_)
                | Mechanism::RsaPkcs
                | Mechanism::RsaPkcsHash(_)
                | Mechanism::RsaPss(_)
                | Mechanism::RsaPssHash(..)
                | Mechanism::EdDsa
                | Mechanism::Hmac(_),
                _,
            ) => return Err(mismatch()),
            _ => {
                return Err(Error::MechanismNotFor(format!(
                    "{mech:?} does not sign or verify"
                )))
            }
        };
        Ok(SignOp {
            kind,
            key,
            gathered,
            max_len,
            cached: None,
        })
    }

    fn with_session<T>(
        &self,
        h: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let s = self.session(h)?;
        let mut s = lock(&s);
        f(&mut s)
    }

    /// The sign or verify slot of a session.
    fn signing(s: &mut Session, verify: bool) -> &mut Option<SignOp> {
        if verify {
            &mut s.verify
        } else {
            &mut s.sign
        }
    }

    /// `C_SignInit` and (`verify`) `C_VerifyInit`.
    pub fn sign_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        verify: bool,
    ) -> Result<()> {
        self.logged_in()?;
        let key = self.key(key)?;
        let op = self.sign_op(mech, key, verify)?;
        self.with_session(h, |s| {
            let slot = Self::signing(s, verify);
            if slot.is_some() {
                return Err(Error::OperationActive);
            }
            *slot = Some(op);
            Ok(())
        })
    }

    /// `C_SignUpdate` and (`verify`) `C_VerifyUpdate`; an error ends the
    /// operation.
    pub fn sign_update(&self, h: CK_SESSION_HANDLE, part: &[u8], verify: bool) -> Result<()> {
        self.with_session(h, |s| {
            let slot = Self::signing(s, verify);
            let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
            let r = match op.gathered.as_mut() {
                Some(g) => g.add(part),
                None => Err(Error::OperationNotInitialized),
            };
            if r.is_err() {
                *slot = None;
            }
            r
        })
    }

    /// `C_Sign` (with `data`) and `C_SignFinal` (without).
    pub fn sign(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        cap: Option<usize>,
    ) -> Result<Out<Vec<u8>>> {
        let s = self.session(h)?;
        // Out of the session while it runs, so the session's lock is not
        // held across the network; back in when the caller asks again.
        let mut taken = lock(&s).sign.take().ok_or(Error::OperationNotInitialized)?;
        let op = &mut taken;
        let max = op.max_len;
        let mut cached = op.cached.take();
        let r = deliver(&mut cached, cap, max, || {
            if let (Some(d), Some(g)) = (data, op.gathered.as_mut()) {
                g.add(d)?;
            }
            let (n, v) = (op.key.name.clone(), op.key.version.clone());
            match op.request()? {
                SignRequest::Sig(alg, digest) => self
                    .backend
                    .call(move |c| {
                        let (n, v, d) = (n.clone(), v.clone(), digest.clone());
                        async move { c.sign(&n, Some(&v), alg, &d).await }
                    })
                    .map(|r| r.value.0),
                SignRequest::Mac(m, data) => self
                    .backend
                    .call(move |c| {
                        let (n, v, d) = (n.clone(), v.clone(), data.clone());
                        async move { c.mac(&n, Some(&v), m, &d).await }
                    })
                    .map(|r| r.value.0),
            }
        });
        if let Ok(Out::Len(_) | Out::TooSmall(_)) = &r {
            op.cached = cached;
            lock(&s).sign = Some(taken);
        }
        r
    }

    /// `C_Verify` (with `data`) and `C_VerifyFinal` (without).
    pub fn verify(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let s = self.session(h)?;
        let mut op = lock(&s)
            .verify
            .take()
            .ok_or(Error::OperationNotInitialized)?;
        if signature.len() != op.max_len {
            return Err(Error::SignatureLenRange);
        }
        if let (Some(d), Some(g)) = (data, op.gathered.as_mut()) {
            g.add(d)?;
        }
        let (n, v) = (op.key.name.clone(), op.key.version.clone());
        let sig = signature.to_vec();
        let ok = match op.request()? {
            SignRequest::Sig(alg, digest) => self.backend.call(move |c| {
                let (n, v, d, s) = (n.clone(), v.clone(), digest.clone(), sig.clone());
                async move { c.verify(&n, Some(&v), alg, &d, &s).await }
            })?,
            SignRequest::Mac(m, data) => self.backend.call(move |c| {
                let (n, v, d, s) = (n.clone(), v.clone(), data.clone(), sig.clone());
                async move { c.verify_mac(&n, Some(&v), m, &d, &s).await }
            })?,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::SignatureInvalid)
        }
    }

    // ----- encrypting and decrypting -------------------------------------

    fn crypt_op(&self, mech: &Mechanism, key: KeyObject, encrypt: bool) -> Result<CryptOp> {
        let op = if encrypt {
            KeyOperation::Encrypt
        } else {
            KeyOperation::Decrypt
        };
        if !key.allows(op) {
            return Err(Error::KeyFunctionNotPermitted(format!(
                "the key's key_ops lack {op}"
            )));
        }
        let kind = match (mech, key.family()) {
            (Mechanism::AesGcm(p), KeyFamily::Oct) => {
                if p.iv.len() != 12 {
                    return Err(Error::MechanismParamInvalid(
                        "AES-GCM takes a 12-byte IV (the partition makes it on encryption)".into(),
                    ));
                }
                if p.tag_bits != 128 {
                    return Err(Error::MechanismParamInvalid(
                        "AES-GCM tags are 128 bits".into(),
                    ));
                }
                if key.secret().is_some_and(|(kt, _)| kt != CKK_AES) {
                    return Err(Error::KeyTypeInconsistent(
                        "AES-GCM needs an AES key".into(),
                    ));
                }
                CryptKind::Gcm(p.clone())
            }
            (Mechanism::RsaOaep(p), KeyFamily::Rsa) => {
                let want = if encrypt {
                    Class::Public
                } else {
                    Class::Private
                };
                if key.class != want && !(encrypt && key.class == Class::Private) {
                    return Err(Error::KeyTypeInconsistent(
                        "RSA-OAEP decrypts with the private key".into(),
                    ));
                }
                CryptKind::Oaep(mechanism::oaep_alg(p)?)
            }
            (Mechanism::AesGcm(_) | Mechanism::RsaOaep(_), _) => {
                return Err(Error::KeyTypeInconsistent(format!(
                    "{mech:?} with this key"
                )))
            }
            _ => {
                return Err(Error::MechanismNotFor(format!(
                    "{mech:?} does not encrypt or decrypt"
                )))
            }
        };
        Ok(CryptOp {
            kind,
            key,
            data: Vec::new(),
            cached: None,
            queried: None,
            iv_target: None,
        })
    }

    pub fn crypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
        encrypt: bool,
        iv_target: Option<IvTarget>,
    ) -> Result<()> {
        self.logged_in()?;
        let key = self.key(key)?;
        let mut op = self.crypt_op(mech, key, encrypt)?;
        if encrypt && matches!(op.kind, CryptKind::Gcm(_)) {
            // The partition makes the IV; it reaches the caller only by a
            // write into pIv after C_EncryptInit has returned, which is safe
            // only if the caller keeps that buffer (Java's SunPKCS11 frees
            // it at once).
            if !self.cfg.gcm_iv_write_back {
                return Err(Error::MechanismParamInvalid(
                    "AES-GCM encryption returns the partition's IV through pIv after \
                     C_EncryptInit: set gcm_iv_write_back = true if the caller keeps \
                     CK_GCM_PARAMS.pIv valid until the encryption ends (docs/PKCS11.md)"
                        .into(),
                ));
            }
            match iv_target {
                Some(t) if t.len >= 12 => op.iv_target = Some(t),
                _ => {
                    return Err(Error::MechanismParamInvalid(
                        "AES-GCM encryption needs a 12-byte pIv buffer for the IV".into(),
                    ))
                }
            }
        }
        self.with_session(h, |s| {
            let slot = if encrypt {
                &mut s.encrypt
            } else {
                &mut s.decrypt
            };
            if slot.is_some() {
                return Err(Error::OperationActive);
            }
            *slot = Some(op);
            Ok(())
        })
    }

    /// `C_EncryptUpdate` / `C_DecryptUpdate`. Parts are gathered and sent
    /// whole at the end, so an update outputs nothing. A length query (NULL
    /// output, `query`) gathers its part too, because some callers (PyKCS11)
    /// follow it with the same part and a buffer that may again be NULL
    /// when empty; that repeat is recognised and not gathered twice.
    pub fn crypt_update(
        &self,
        h: CK_SESSION_HANDLE,
        part: &[u8],
        encrypt: bool,
        query: bool,
    ) -> Result<()> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(part).into();
        self.with_session(h, |s| {
            let slot = if encrypt {
                &mut s.encrypt
            } else {
                &mut s.decrypt
            };
            let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
            if !gather_once(&mut op.queried, digest, query) {
                return Ok(());
            }
            if op.data.len() + part.len() > MAX_PART_BYTES {
                *slot = None;
                return Err(Error::DataLenRange(format!(
                    "more than {MAX_PART_BYTES} bytes"
                )));
            }
            op.data.extend_from_slice(part);
            Ok(())
        })
    }

    /// `C_Encrypt`/`C_Decrypt` (with `data`) and their `Final` (without).
    pub fn crypt(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        cap: Option<usize>,
        encrypt: bool,
    ) -> Result<Out<Crypted>> {
        let s = self.session(h)?;
        // Out of the session while it runs (see `sign`).
        let taken = {
            let mut g = lock(&s);
            let slot = if encrypt {
                &mut g.encrypt
            } else {
                &mut g.decrypt
            };
            slot.take()
        };
        let mut taken = taken.ok_or(Error::OperationNotInitialized)?;
        let op = &mut taken;
        let pending = op.data.len() + data.map(|d| d.len()).unwrap_or(0);
        let max = match (&op.kind, encrypt) {
            (CryptKind::Gcm(_), true) => pending + 16,
            (CryptKind::Gcm(_), false) => pending.saturating_sub(16),
            (CryptKind::Oaep(_), _) => op.key.modulus().map(|n| n.len()).unwrap_or(512),
        };
        let mut cached = op.cached.take();
        let r = deliver(&mut cached, cap, max, || {
            if let Some(d) = data {
                op.data.extend_from_slice(d);
            }
            self.crypt_now(op, encrypt)
        });
        if let Ok(Out::Len(_) | Out::TooSmall(_)) = &r {
            op.cached = cached;
            let mut g = lock(&s);
            let slot = if encrypt {
                &mut g.encrypt
            } else {
                &mut g.decrypt
            };
            *slot = Some(taken);
        }
        r
    }

    fn crypt_now(&self, op: &mut CryptOp, encrypt: bool) -> Result<Crypted> {
        let data = std::mem::take(&mut op.data);
        let (n, v) = (op.key.name.clone(), op.key.version.clone());
        let kop = if encrypt {
            KeyOp::Encrypt
        } else {
            KeyOp::Decrypt
        };
        match op.kind.clone() {
            CryptKind::Oaep(alg) => {
                let p = KeyOperationsParameters {
                    alg,
                    value: data.into(),
                    iv: None,
                    aad: None,
                    tag: None,
                };
                let r = self.backend.call(move |c| {
                    let (n, v, p) = (n.clone(), v.clone(), p.clone());
                    async move { c.crypt(&n, Some(&v), kop, &p).await }
                })?;
                Ok(Crypted {
                    data: r.value.0,
                    iv: None,
                    iv_target: None,
                })
            }
            CryptKind::Gcm(g) => {
                let (value, tag) = if encrypt {
                    (data, None)
                } else {
                    if data.len() < 16 {
                        return Err(Error::EncryptedDataInvalid);
                    }
                    let (ct, tag) = data.split_at(data.len() - 16);
                    (ct.to_vec(), Some(tag.to_vec()))
                };
                let aad = (!g.aad.is_empty()).then(|| g.aad.clone());
                let iv = (!encrypt).then(|| g.iv.clone());
                let r = self.with_aes_len(&op.key, |len| {
                    let p = KeyOperationsParameters {
                        alg: mechanism::gcm_alg(len)?,
                        value: value.clone().into(),
                        iv: iv.clone().map(Into::into),
                        aad: aad.clone().map(Into::into),
                        tag: tag.clone().map(Into::into),
                    };
                    let (n, v) = (n.clone(), v.clone());
                    self.backend.call(move |c| {
                        let (n, v, p) = (n.clone(), v.clone(), p.clone());
                        async move { c.crypt(&n, Some(&v), kop, &p).await }
                    })
                })?;
                if encrypt {
                    let mut out = r.value.0;
                    out.extend_from_slice(&r.tag.map(|t| t.0).unwrap_or_default());
                    Ok(Crypted {
                        data: out,
                        iv: r.iv.map(|i| i.0),
                        iv_target: op.iv_target,
                    })
                } else {
                    Ok(Crypted {
                        data: r.value.0,
                        iv: None,
                        iv_target: None,
                    })
                }
            }
        }
    }

    /// Runs `f` with the AES key's length: known from its tag, or (a key
    /// made outside this module) found by trying 256, 128 and 192 bits —
    /// the partition refuses a wrong one before using the key.
    fn with_aes_len<T>(&self, key: &KeyObject, f: impl Fn(usize) -> Result<T>) -> Result<T> {
        if let Some((_, len)) = key.secret() {
            return f(len);
        }
        let mut last = Error::KeyTypeInconsistent("not an AES key".into());
        for len in [32, 16, 24] {
            match f(len) {
                Err(Error::KeyTypeInconsistent(m)) => last = Error::KeyTypeInconsistent(m),
                other => return other,
            }
        }
        Err(last)
    }

    // ----- digests and random --------------------------------------------

    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: &Mechanism) -> Result<()> {
        let Mechanism::Digest(alg) = mech else {
            return Err(Error::MechanismInvalid(0));
        };
        self.with_session(h, |s| {
            if s.digest.is_some() {
                return Err(Error::OperationActive);
            }
            s.digest = Some(DigestOp {
                ctx: Some(alg.context()),
                len: alg.output_len(),
                cached: None,
            });
            Ok(())
        })
    }

    pub fn digest_update(&self, h: CK_SESSION_HANDLE, part: &[u8]) -> Result<()> {
        self.with_session(h, |s| {
            let op = s.digest.as_mut().ok_or(Error::OperationNotInitialized)?;
            op.ctx
                .as_mut()
                .ok_or(Error::OperationNotInitialized)?
                .update(part);
            Ok(())
        })
    }

    /// `C_Digest` (with `data`) and `C_DigestFinal` (without).
    pub fn digest(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        cap: Option<usize>,
    ) -> Result<Out<Vec<u8>>> {
        self.with_session(h, |s| {
            let op = s.digest.as_mut().ok_or(Error::OperationNotInitialized)?;
            let mut cached = op.cached.take();
            let r = deliver(&mut cached, cap, op.len, || {
                let mut ctx = op.ctx.take().ok_or(Error::OperationNotInitialized)?;
                if let Some(d) = data {
                    ctx.update(d);
                }
                Ok(ctx.finish().as_ref().to_vec())
            });
            match &r {
                Ok(Out::Len(_)) | Ok(Out::TooSmall(_)) => op.cached = cached,
                _ => s.digest = None,
            }
            r
        })
    }

    pub fn random(&self, h: CK_SESSION_HANDLE, n: usize) -> Result<Vec<u8>> {
        self.session(h)?;
        if n > MAX_RANDOM_BYTES {
            return Err(Error::DataLenRange(format!(
                "at most {MAX_RANDOM_BYTES} random bytes per call"
            )));
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let k = (n - out.len()).min(RNG_CHUNK) as u32;
            let bytes = self
                .backend
                .call_anonymous(move |c| async move { c.rng(k).await })?;
            if bytes.is_empty() {
                return Err(Error::Device("the proxy returned no random bytes".into()));
            }
            out.extend_from_slice(&bytes[..bytes.len().min(n - out.len())]);
        }
        Ok(out)
    }

    // ----- wrapping and deriving ------------------------------------------

    pub fn wrap(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<Vec<u8>> {
        self.session(h)?;
        self.logged_in()?;
        let wk = self.key(wrapping)?;
        if !wk.allows(KeyOperation::WrapKey) {
            return Err(Error::KeyFunctionNotPermitted(
                "the wrapping key's key_ops lack wrapKey".into(),
            ));
        }
        let value = match self.object(key)? {
            Object::Secret(s) => s.value.clone(),
            Object::Key(_) => return Err(Error::KeyUnextractable),
        };
        self.wrap_call(mech, &wk, KeyOp::WrapKey, value.to_vec())
    }

    /// One wrapkey or unwrapkey request for a mechanism and key.
    fn wrap_call(
        &self,
        mech: &Mechanism,
        wk: &KeyObject,
        kop: KeyOp,
        value: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let (n, v) = (wk.name.clone(), wk.version.clone());
        let send = |alg| {
            let p = KeyOperationsParameters {
                alg,
                value: value.clone().into(),
                iv: None,
                aad: None,
                tag: None,
            };
            let (n, v) = (n.clone(), v.clone());
            self.backend
                .call(move |c| {
                    let (n, v, p) = (n.clone(), v.clone(), p.clone());
                    async move { c.crypt(&n, Some(&v), kop, &p).await }
                })
                .map(|r| r.value.0)
        };
        match (mech, wk.family()) {
            (Mechanism::AesKeyWrap | Mechanism::AesKeyWrapPad, KeyFamily::Oct) => {
                let pad = matches!(mech, Mechanism::AesKeyWrapPad);
                self.with_aes_len(wk, |len| send(mechanism::key_wrap_alg(len, pad)?))
            }
            (Mechanism::RsaOaep(p), KeyFamily::Rsa) => send(mechanism::oaep_alg(p)?),
            _ => Err(Error::KeyTypeInconsistent(format!(
                "{mech:?} with this wrapping key"
            ))),
        }
    }

    pub fn unwrap(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Vec<Attr>,
    ) -> Result<u64> {
        self.session(h)?;
        self.logged_in()?;
        let uk = self.key(unwrapping)?;
        if !uk.allows(KeyOperation::UnwrapKey) {
            return Err(Error::KeyFunctionNotPermitted(
                "the unwrapping key's key_ops lack unwrapKey".into(),
            ));
        }
        let value = match self.wrap_call(mech, &uk, KeyOp::UnwrapKey, wrapped.to_vec()) {
            Err(Error::EncryptedDataInvalid) => {
                return Err(Error::WrappedKeyInvalid(
                    "the partition could not unwrap it".into(),
                ))
            }
            other => Zeroizing::new(other?),
        };
        self.secret_from_value(h, value, &template)
    }

    pub fn derive(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: Vec<Attr>,
    ) -> Result<u64> {
        let token = template.bool_of(CKA_TOKEN)?.unwrap_or(false);
        self.writable(h, token)?;
        refuse_extractable(&template)?;
        let bk = self.key(base)?;
        if !bk.allows(KeyOperation::DeriveKey) {
            return Err(Error::KeyFunctionNotPermitted(
                "the base key's key_ops lack deriveKey".into(),
            ));
        }
        let kt = template
            .ulong_of(CKA_KEY_TYPE)?
            .unwrap_or(CKK_GENERIC_SECRET);
        if !matches!(kt, CKK_AES | CKK_GENERIC_SECRET) {
            return Err(Error::TemplateInconsistent(
                "derive CKK_AES or CKK_GENERIC_SECRET keys".into(),
            ));
        }
        let len = template.ulong_of(CKA_VALUE_LEN)?.map(|l| l as usize);
        let (alg, peer, info, len) = match (mech, bk.family()) {
            (Mechanism::Ecdh1(p), KeyFamily::Ec | KeyFamily::Okp) if bk.class == Class::Private => {
                if p.kdf != CKD_NULL || !p.shared_data.is_empty() {
                    return Err(Error::MechanismParamInvalid(
                        "ECDH1 derivation is offered with CKD_NULL and no shared data".into(),
                    ));
                }
                let crv = bk
                    .curve()
                    .ok_or_else(|| Error::KeyTypeInconsistent("no curve".into()))?;
                let fl = crv.field_len();
                let point = unwrap_point(&p.public_data, fl, crv == Curve::X25519);
                let peer = match crv {
                    Curve::X25519 if point.len() == fl => JsonWebKey {
                        kty: Some(KeyType::Okp),
                        crv: Some(crv),
                        x: Some(point.to_vec().into()),
                        ..JsonWebKey::default()
                    },
                    Curve::P256 | Curve::P384 | Curve::P521
                        if point.len() == 1 + 2 * fl && point[0] == 0x04 =>
                    {
                        JsonWebKey {
                            kty: Some(KeyType::Ec),
                            crv: Some(crv),
                            x: Some(point[1..1 + fl].to_vec().into()),
                            y: Some(point[1 + fl..].to_vec().into()),
                            ..JsonWebKey::default()
                        }
                    }
                    _ => {
                        return Err(Error::MechanismParamInvalid(format!(
                            "the peer's public point does not fit {crv}"
                        )))
                    }
                };
                // CKD_NULL: the derived key is the raw shared secret.
                let len = len.unwrap_or(fl);
                if len != fl {
                    return Err(Error::TemplateInconsistent(format!(
                        "ECDH with CKD_NULL gives the {fl}-byte shared secret: CKA_VALUE_LEN must be {fl}"
                    )));
                }
                (hsm_api::DeriveAlgorithm::Ecdh, Some(peer), None, len)
            }
            (Mechanism::Kbkdf(p), KeyFamily::Oct) => {
                let len = len.ok_or_else(|| Error::TemplateIncomplete("CKA_VALUE_LEN".into()))?;
                check_secret_len(kt, len as u64)?;
                let (alg, info) = mechanism::kbkdf(p, len)?;
                (alg, None, Some(info), len)
            }
            _ => {
                return Err(Error::KeyTypeInconsistent(format!(
                    "{mech:?} with this base key"
                )))
            }
        };
        check_secret_len(kt, len as u64)?;
        let (name, mut tags) =
            self.new_key_name(template.find(CKA_LABEL), template.find(CKA_ID), !token)?;
        tags.insert(TAG_KEY_TYPE.into(), secret_kind_tag(kt, len));
        let params = KeyDeriveParameters {
            alg,
            target: name,
            peer,
            info: info.map(Into::into),
            key_size: Some(len as u32 * 8),
            key_ops: key_ops(KeyFamily::Oct, &[&template[..]])?,
            attributes: None,
            tags: Some(tags),
        };
        let route = Route::Operation {
            name: bk.name.clone(),
            version: Some(bk.version.clone()),
            op: KeyOp::Derive,
        };
        let body = serde_json::to_value(&params).map_err(|e| Error::Failed(e.to_string()))?;
        let bundle = self.create(route, body)?;
        first_handle(self.adopt(h, bundle, !token)?)
    }
}

/// The secret key lengths the partition holds, in bytes, by Cryptoki type:
/// AES 128/192/256 bits, HMAC keys also 384 and 512. One table for
/// generating, creating, unwrapping and deriving.
fn check_secret_len(kt: CK_KEY_TYPE, len: u64) -> Result<()> {
    let sizes: &[u64] = if kt == CKK_AES {
        &[16, 24, 32]
    } else {
        &[16, 24, 32, 48, 64]
    };
    if sizes.contains(&len) {
        Ok(())
    } else {
        Err(Error::KeySizeRange(format!(
            "{len} bytes; offered: {sizes:?}"
        )))
    }
}

/// Whether an update's part is to be gathered: not when it repeats the
/// part of the length query just before it (same bytes). Only a query that
/// gathered arms the check, so equal parts in a row each count once per
/// query-and-call pair.
fn gather_once(queried: &mut Option<[u8; 32]>, digest: [u8; 32], query: bool) -> bool {
    if queried.take() == Some(digest) {
        return false;
    }
    if query {
        *queried = Some(digest);
    }
    true
}

fn http_value(s: &str) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(s).map_err(|e| Error::Failed(e.to_string()))
}

fn first_handle(handles: Vec<(Class, u64)>) -> Result<u64> {
    handles
        .first()
        .map(|(_, h)| *h)
        .ok_or_else(|| Error::Failed("the new key has no object".into()))
}

/// Sets a key's label tag: none when the label is the key's name.
fn set_label(tags: &mut Tags, name: &str, label: &[u8]) -> Result<()> {
    if label == name.as_bytes() {
        tags.remove(TAG_LABEL);
        return Ok(());
    }
    let l = std::str::from_utf8(label)
        .map_err(|_| Error::AttributeValueInvalid("CKA_LABEL must be UTF-8".into()))?;
    if l.chars().count() > 256 {
        return Err(Error::AttributeValueInvalid(
            "CKA_LABEL: at most 256 characters".into(),
        ));
    }
    tags.insert(TAG_LABEL.into(), l.to_string());
    Ok(())
}

/// Keys in the partition are sensitive and never extractable: a template
/// asking otherwise is refused rather than answered with a key that is not
/// what it asked for.
fn refuse_extractable(t: &[Attr]) -> Result<()> {
    if t.bool_of(CKA_EXTRACTABLE)? == Some(true) {
        return Err(Error::TemplateInconsistent(
            "keys in the partition are never extractable (CKA_EXTRACTABLE=TRUE)".into(),
        ));
    }
    if t.bool_of(CKA_SENSITIVE)? == Some(false) {
        return Err(Error::TemplateInconsistent(
            "keys in the partition are always sensitive (CKA_SENSITIVE=FALSE)".into(),
        ));
    }
    Ok(())
}

fn family_of(p: &KeyCreateParameters) -> KeyFamily {
    p.kty.family()
}

/// The `key_ops` of a new key: the family's usual operations less those a
/// template sets to FALSE; `None` (the partition's default) when none is.
fn key_ops(family: KeyFamily, templates: &[&[Attr]]) -> Result<Option<Vec<KeyOperation>>> {
    use KeyOperation::*;
    let usual: &[KeyOperation] = match family {
        KeyFamily::Rsa => &[Sign, Verify, Encrypt, Decrypt, WrapKey, UnwrapKey],
        KeyFamily::Ec => &[Sign, Verify, DeriveKey],
        KeyFamily::Okp => &[Sign, Verify, DeriveKey],
        KeyFamily::Oct => &[
            Encrypt, Decrypt, WrapKey, UnwrapKey, Sign, Verify, DeriveKey,
        ],
    };
    let map = [
        (CKA_SIGN, Sign),
        (CKA_VERIFY, Verify),
        (CKA_ENCRYPT, Encrypt),
        (CKA_DECRYPT, Decrypt),
        (CKA_WRAP, WrapKey),
        (CKA_UNWRAP, UnwrapKey),
        (CKA_DERIVE, DeriveKey),
    ];
    let mut off = Vec::new();
    for t in templates {
        for (a, op) in map {
            if t.bool_of(a)? == Some(false) {
                off.push(op);
            }
        }
    }
    if off.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        usual.iter().copied().filter(|o| !off.contains(o)).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_call_convention_keeps_a_result_for_a_short_buffer() {
        let mut cached = None;
        let mut calls = 0;
        let mut compute = || {
            calls += 1;
            Ok(vec![1u8; 64])
        };
        assert_eq!(
            deliver(&mut cached, None, 72, &mut compute).ok(),
            Some(Out::Len(72))
        );
        assert_eq!(
            deliver(&mut cached, Some(10), 72, &mut compute).ok(),
            Some(Out::TooSmall(64))
        );
        // The kept result answers the length query exactly, then is delivered.
        assert_eq!(
            deliver(&mut cached, None, 72, &mut compute).ok(),
            Some(Out::Len(64))
        );
        assert_eq!(
            deliver(&mut cached, Some(64), 72, &mut compute).ok(),
            Some(Out::Done(vec![1u8; 64]))
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_query_and_its_repeat_gather_a_part_once_and_equal_parts_each_count() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut q = None;
        // PyKCS11: a length query (NULL), then the call (NULL again, as the
        // output is empty), for each of two equal parts, then another part.
        let seen: Vec<bool> = [
            (a, true),
            (a, true),
            (a, true),
            (a, true),
            (b, true),
            (b, false),
        ]
        .iter()
        .map(|(d, query)| gather_once(&mut q, *d, *query))
        .collect();
        assert_eq!(seen, vec![true, false, true, false, true, false]);
        // Callers that pass a buffer: every part counts, equal or not.
        let mut q = None;
        assert!((0..3).all(|_| gather_once(&mut q, a, false)));
    }

    #[test]
    fn a_template_turning_an_operation_off_narrows_key_ops() {
        let t = [Attr {
            ty: CKA_DERIVE,
            value: ck_bool(false),
        }];
        let ops = key_ops(KeyFamily::Ec, &[&t[..]]).unwrap_or_default();
        assert_eq!(ops, Some(vec![KeyOperation::Sign, KeyOperation::Verify]));
        let none = [Attr {
            ty: CKA_SIGN,
            value: ck_bool(true),
        }];
        assert_eq!(
            key_ops(KeyFamily::Ec, &[&none[..]]).unwrap_or_default(),
            None
        );
    }

    #[test]
    fn extractable_or_non_sensitive_partition_keys_are_refused() {
        let t = [Attr {
            ty: CKA_EXTRACTABLE,
            value: ck_bool(true),
        }];
        assert!(matches!(
            refuse_extractable(&t),
            Err(Error::TemplateInconsistent(_))
        ));
        let t = [Attr {
            ty: CKA_SENSITIVE,
            value: ck_bool(false),
        }];
        assert!(matches!(
            refuse_extractable(&t),
            Err(Error::TemplateInconsistent(_))
        ));
        assert!(refuse_extractable(&[]).is_ok());
    }

    #[test]
    fn key_ids_parse_into_name_and_version() {
        assert_eq!(
            parse_kid("https://127.0.0.1:8443/keys/p11-ec-1/0a1b"),
            Some(("p11-ec-1".into(), "0a1b".into()))
        );
        assert_eq!(parse_kid("https://h/keys/only"), None);
    }
}
