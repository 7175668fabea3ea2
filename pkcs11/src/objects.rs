//! Objects: how a key of the partition appears as Cryptoki objects, their
//! handles and their attributes.
//!
//! Decides: a key version is one object (a secret key) or two (a private
//! and a public key); its handle is a hash of (key name, version, class),
//! so it is the same in every process, after every failover and every
//! restart of the proxy or the application; `CKA_LABEL` is the key name,
//! or the `pkcs11-label` tag when the label is not a valid key name;
//! `CKA_ID` is the `pkcs11-id` tag, else the version's bytes; keys in the
//! partition are sensitive and never extractable. Extractable secret keys
//! (the only kind that can be wrapped) live in the module, per session, with
//! handles from a separate range.

use crate::error::{Error, Result};
use cryptoki_sys::*;
use hsm_api::{Curve, KeyBundle, KeyFamily, KeyOperation, Tags};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Tag holding a label that is not a valid key name.
pub const TAG_LABEL: &str = "pkcs11-label";
/// Tag holding `CKA_ID`, in hex.
pub const TAG_ID: &str = "pkcs11-id";
/// Tag marking a key made with `CKA_TOKEN=FALSE`: its value is the making
/// module instance's id; the key is deleted when the session closes.
pub const TAG_SESSION: &str = "pkcs11-session";
/// Tag holding a secret key's Cryptoki type and length (`aes-256`,
/// `generic-secret-512`): the partition does not reveal an oct key's length.
pub const TAG_KEY_TYPE: &str = "pkcs11-key-type";

/// Tags `pkcs11-cert-0`, `-1`, … hold, in order, the base64url of an X.509
/// certificate stored with the key version (`C_CreateObject` of a
/// certificate whose `CKA_ID` is the key's): the partition holds keys only,
/// so the certificate travels in the key's tags, replicated with it.
pub const TAG_CERT_PREFIX: &str = "pkcs11-cert-";
/// Tag values hold at most this many characters (the partition's limit).
pub const TAG_VALUE_MAX: usize = 256;
/// A key version holds at most this many tags (the partition's limit).
pub const TAGS_MAX: usize = 15;

/// The certificate stored in a key's tags, if any.
pub fn cert_der(tags: Option<&Tags>) -> Option<Vec<u8>> {
    use base64::Engine;
    let tags = tags?;
    let mut b64 = String::new();
    for i in 0..TAGS_MAX {
        match tags.get(&format!("{TAG_CERT_PREFIX}{i}")) {
            Some(chunk) => b64.push_str(chunk),
            None => break,
        }
    }
    if b64.is_empty() {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .ok()
}

/// `tags` with the certificate `der` stored in them (replacing any), or
/// the number of bytes too many when it does not fit beside the other tags.
pub fn with_cert(tags: &Tags, der: Option<&[u8]>) -> std::result::Result<Tags, usize> {
    use base64::Engine;
    let mut out: Tags = tags
        .iter()
        .filter(|(k, _)| !k.starts_with(TAG_CERT_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Some(der) = der else {
        return Ok(out);
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
    let room = TAGS_MAX.saturating_sub(out.len()) * TAG_VALUE_MAX;
    if b64.len() > room {
        return Err((b64.len() - room) * 3 / 4 + 1);
    }
    for (i, chunk) in b64.as_bytes().chunks(TAG_VALUE_MAX).enumerate() {
        out.insert(
            format!("{TAG_CERT_PREFIX}{i}"),
            String::from_utf8_lossy(chunk).into_owned(),
        );
    }
    Ok(out)
}

/// One DER element: (tag, content, the whole element, what follows).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let head = input.len() - rest.len();
    Some((tag, &rest[..len], &input[..head + len], &rest[len..]))
}

/// The DER subject, issuer and serial number of an X.509 certificate, as
/// `CKA_SUBJECT`, `CKA_ISSUER` and `CKA_SERIAL_NUMBER` hold them.
pub fn cert_fields(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let (0x30, cert, _, _) = der_tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _, _) = der_tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] EXPLICIT version, when present.
    if rest.first() == Some(&0xa0) {
        rest = der_tlv(rest)?.3;
    }
    let (0x02, _, serial, rest) = der_tlv(rest)? else {
        return None;
    };
    let (_, _, _, rest) = der_tlv(rest)?; // signature algorithm
    let (0x30, _, issuer, rest) = der_tlv(rest)? else {
        return None;
    };
    let (_, _, _, rest) = der_tlv(rest)?; // validity
    let (0x30, _, subject, _) = der_tlv(rest)? else {
        return None;
    };
    Some((subject.to_vec(), issuer.to_vec(), serial.to_vec()))
}

/// Handles of module-held (session) objects have this bit set; handles of
/// partition keys never do.
pub const SESSION_OBJECT_BIT: u64 = 1 << 62;

/// One attribute of a template, read from C memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ty: CK_ATTRIBUTE_TYPE,
    pub value: Vec<u8>,
}

pub fn ck_bool(b: bool) -> Vec<u8> {
    vec![if b { CK_TRUE } else { CK_FALSE }]
}

pub fn ck_ulong(v: u64) -> Vec<u8> {
    (v as CK_ULONG).to_ne_bytes().to_vec()
}

/// Lookups in a template.
pub trait Template {
    fn find(&self, ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]>;
    fn bool_of(&self, ty: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        match self.find(ty) {
            None => Ok(None),
            Some([b]) => Ok(Some(*b != CK_FALSE)),
            Some(_) => Err(Error::AttributeValueInvalid(format!(
                "attribute {ty:#x} must be one CK_BBOOL byte"
            ))),
        }
    }
    fn ulong_of(&self, ty: CK_ATTRIBUTE_TYPE) -> Result<Option<u64>> {
        match self.find(ty) {
            None => Ok(None),
            Some(b) => {
                let a: [u8; 8] = b.try_into().map_err(|_| {
                    Error::AttributeValueInvalid(format!("attribute {ty:#x} must be a CK_ULONG"))
                })?;
                Ok(Some(CK_ULONG::from_ne_bytes(a)))
            }
        }
    }
}

impl Template for [Attr] {
    fn find(&self, ty: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.iter().find(|a| a.ty == ty).map(|a| a.value.as_slice())
    }
}

/// Object classes a partition key appears as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Private,
    Public,
    Secret,
    /// An X.509 certificate stored with its key (see [`TAG_CERT_PREFIX`]).
    Certificate,
}

impl Class {
    pub fn cko(self) -> CK_OBJECT_CLASS {
        match self {
            Class::Private => CKO_PRIVATE_KEY,
            Class::Public => CKO_PUBLIC_KEY,
            Class::Secret => CKO_SECRET_KEY,
            Class::Certificate => CKO_CERTIFICATE,
        }
    }
    /// The classes a key of this family appears as.
    pub fn of(family: KeyFamily) -> &'static [Class] {
        match family {
            KeyFamily::Oct => &[Class::Secret],
            _ => &[Class::Private, Class::Public],
        }
    }
}

/// The handle of a partition key's object: SHA-256 of (name, version,
/// class), 62 bits, never 0.
pub fn key_handle(name: &str, version: &str, class: Class) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"hsm-pkcs11 object handle v1\0");
    h.update(name.as_bytes());
    h.update([0]);
    h.update(version.as_bytes());
    h.update([0, class.cko() as u8]);
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) & (SESSION_OBJECT_BIT - 1)).max(1)
}

/// Whether a label can be a key name as it is.
pub fn is_key_name(label: &[u8]) -> bool {
    (1..=127).contains(&label.len())
        && label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// A secret key's Cryptoki type and length from its tag.
pub fn secret_kind(tags: Option<&Tags>) -> Option<(CK_KEY_TYPE, usize)> {
    let t = tags?.get(TAG_KEY_TYPE)?;
    let (kind, bits) = t.rsplit_once('-')?;
    let bits: usize = bits.parse().ok()?;
    let kt = match kind {
        "aes" => CKK_AES,
        "generic-secret" => CKK_GENERIC_SECRET,
        _ => return None,
    };
    Some((kt, bits / 8))
}

pub fn secret_kind_tag(kt: CK_KEY_TYPE, len: usize) -> String {
    let kind = if kt == CKK_AES {
        "aes"
    } else {
        "generic-secret"
    };
    format!("{kind}-{}", len * 8)
}

/// DER of a curve's `CKA_EC_PARAMS` (the named curve's OID).
pub fn ec_params(crv: Curve) -> &'static [u8] {
    match crv {
        Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        Curve::Ed25519 => &[0x06, 0x03, 0x2b, 0x65, 0x70],
        Curve::X25519 => &[0x06, 0x03, 0x2b, 0x65, 0x6e],
    }
}

/// The curve `CKA_EC_PARAMS` names: an OID, or (Edwards and Montgomery
/// curves, PKCS#11 3.0) a printable string.
pub fn curve_of_params(der: &[u8]) -> Result<Curve> {
    for c in [
        Curve::P256,
        Curve::P384,
        Curve::P521,
        Curve::Ed25519,
        Curve::X25519,
    ] {
        if der == ec_params(c) {
            return Ok(c);
        }
    }
    match der {
        [0x13, n, rest @ ..] if *n as usize == rest.len() => match rest {
            b"edwards25519" => return Ok(Curve::Ed25519),
            b"curve25519" => return Ok(Curve::X25519),
            _ => {}
        },
        _ => {}
    }
    Err(Error::AttributeValueInvalid(
        "CKA_EC_PARAMS: P-256, P-384, P-521, Ed25519 and X25519 are offered".into(),
    ))
}

/// DER OCTET STRING around `content` (`CKA_EC_POINT`).
pub fn octet_string(content: &[u8]) -> Vec<u8> {
    let mut v = vec![0x04];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend_from_slice(&[0x81, n as u8]);
    } else {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

/// A peer's public point as `CKM_ECDH1_DERIVE` gets it: raw, or wrapped in
/// a DER OCTET STRING (both are seen in the field).
pub fn unwrap_point(data: &[u8], field_len: usize, montgomery: bool) -> &[u8] {
    let raw_len = if montgomery {
        field_len
    } else {
        1 + 2 * field_len
    };
    if data.len() == raw_len {
        return data;
    }
    match data {
        [0x04, n, rest @ ..] if *n as usize == rest.len() && rest.len() == raw_len => rest,
        [0x04, 0x81, n, rest @ ..] if *n as usize == rest.len() && rest.len() == raw_len => rest,
        _ => data,
    }
}

/// A key version of the partition, as one of its objects.
#[derive(Debug, Clone)]
pub struct KeyObject {
    pub name: String,
    pub version: String,
    pub class: Class,
    pub bundle: Arc<KeyBundle>,
}

/// A secret key held by the module (extractable keys only), owned by a
/// session. Its `Debug` leaves the value out.
pub struct SecretObject {
    pub value: Zeroizing<Vec<u8>>,
    pub key_type: CK_KEY_TYPE,
    pub label: Vec<u8>,
    pub id: Vec<u8>,
    pub sensitive: bool,
    pub session: u64,
}

#[derive(Debug, Clone)]
pub enum Object {
    Key(KeyObject),
    Secret(Arc<SecretObject>),
}

/// What `C_GetAttributeValue` says of one attribute.
#[derive(Debug, PartialEq, Eq)]
pub enum AttrValue {
    Bytes(Vec<u8>),
    Sensitive,
    Invalid,
}

impl KeyObject {
    pub fn family(&self) -> KeyFamily {
        self.bundle
            .key
            .kty
            .map(|k| k.family())
            .unwrap_or(KeyFamily::Oct)
    }
    pub fn tags(&self) -> Option<&Tags> {
        self.bundle.tags.as_ref()
    }
    pub fn label(&self) -> Vec<u8> {
        match self.tags().and_then(|t| t.get(TAG_LABEL)) {
            Some(l) => l.as_bytes().to_vec(),
            None => self.name.as_bytes().to_vec(),
        }
    }
    pub fn id(&self) -> Vec<u8> {
        match self
            .tags()
            .and_then(|t| t.get(TAG_ID))
            .and_then(|h| hex::decode(h).ok())
        {
            Some(id) => id,
            None => hex::decode(&self.version).unwrap_or_else(|_| self.version.as_bytes().to_vec()),
        }
    }
    pub fn is_session(&self) -> bool {
        self.tags().is_some_and(|t| t.contains_key(TAG_SESSION))
    }
    pub fn curve(&self) -> Option<Curve> {
        self.bundle.key.crv
    }
    /// The modulus, for RSA keys.
    pub fn modulus(&self) -> Option<&[u8]> {
        self.bundle.key.n.as_ref().map(|b| b.0.as_slice())
    }
    /// The secret key's type and length, when known.
    pub fn secret(&self) -> Option<(CK_KEY_TYPE, usize)> {
        secret_kind(self.tags())
    }
    pub fn key_type(&self) -> CK_KEY_TYPE {
        match self.family() {
            KeyFamily::Rsa => CKK_RSA,
            KeyFamily::Ec => CKK_EC,
            KeyFamily::Okp => match self.curve() {
                Some(Curve::X25519) => CKK_EC_MONTGOMERY,
                _ => CKK_EC_EDWARDS,
            },
            KeyFamily::Oct => self.secret().map(|s| s.0).unwrap_or(CKK_GENERIC_SECRET),
        }
    }
    /// Whether the key's `key_ops` allow `op` (absent `key_ops`: all).
    pub fn allows(&self, op: KeyOperation) -> bool {
        match &self.bundle.key.key_ops {
            Some(ops) => ops.contains(&op),
            None => true,
        }
    }
    /// The EC point (`04 || x || y`, or the OKP public key), raw.
    pub fn point(&self) -> Option<Vec<u8>> {
        let k = &self.bundle.key;
        match self.family() {
            KeyFamily::Ec => {
                let mut p = vec![0x04];
                p.extend_from_slice(&k.x.as_ref()?.0);
                p.extend_from_slice(&k.y.as_ref()?.0);
                Some(p)
            }
            KeyFamily::Okp => Some(k.x.as_ref()?.0.clone()),
            _ => None,
        }
    }

    /// The attributes of the certificate stored with this key.
    fn cert_attribute(&self, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        use AttrValue::*;
        let Some(der) = cert_der(self.tags()) else {
            return Invalid;
        };
        let fields = cert_fields(&der);
        let b = |v: bool| Bytes(ck_bool(v));
        match ty {
            CKA_CLASS => Bytes(ck_ulong(CKO_CERTIFICATE)),
            CKA_CERTIFICATE_TYPE => Bytes(ck_ulong(CKC_X_509)),
            CKA_TOKEN => b(!self.is_session()),
            CKA_PRIVATE | CKA_TRUSTED | CKA_COPYABLE => b(false),
            CKA_MODIFIABLE | CKA_DESTROYABLE => b(true),
            CKA_CERTIFICATE_CATEGORY => Bytes(ck_ulong(0)),
            CKA_LABEL => Bytes(self.label()),
            CKA_ID => Bytes(self.id()),
            CKA_VALUE => Bytes(der),
            CKA_SUBJECT => fields.map(|f| Bytes(f.0)).unwrap_or(Invalid),
            CKA_ISSUER => fields.map(|f| Bytes(f.1)).unwrap_or(Invalid),
            CKA_SERIAL_NUMBER => fields.map(|f| Bytes(f.2)).unwrap_or(Invalid),
            CKA_START_DATE
            | CKA_END_DATE
            | CKA_URL
            | CKA_HASH_OF_SUBJECT_PUBLIC_KEY
            | CKA_HASH_OF_ISSUER_PUBLIC_KEY => Bytes(Vec::new()),
            CKA_JAVA_MIDP_SECURITY_DOMAIN => Bytes(ck_ulong(0)),
            _ => Invalid,
        }
    }

    pub fn attribute(&self, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        use AttrValue::*;
        if self.class == Class::Certificate {
            return self.cert_attribute(ty);
        }
        let private = self.class != Class::Public;
        let fam = self.family();
        let b = |v: bool| Bytes(ck_bool(v));
        let enabled = self.bundle.attributes.enabled.unwrap_or(true);
        let op = |o: KeyOperation| b(enabled && self.allows(o));
        match (ty, self.class) {
            (CKA_CLASS, c) => Bytes(ck_ulong(c.cko())),
            (CKA_KEY_TYPE, _) => Bytes(ck_ulong(self.key_type())),
            (CKA_TOKEN, _) => b(!self.is_session()),
            (CKA_PRIVATE, _) => b(private),
            (CKA_MODIFIABLE, _) => b(true),
            (CKA_COPYABLE, _) => b(false),
            (CKA_DESTROYABLE, _) => b(true),
            (CKA_LABEL, _) => Bytes(self.label()),
            (CKA_ID, _) => Bytes(self.id()),
            (CKA_LOCAL, _) => b(true),
            (CKA_START_DATE | CKA_END_DATE, _) => Bytes(Vec::new()),
            (CKA_KEY_GEN_MECHANISM, _) => Bytes(ck_ulong(match fam {
                KeyFamily::Rsa => CKM_RSA_PKCS_KEY_PAIR_GEN,
                KeyFamily::Ec => CKM_EC_KEY_PAIR_GEN,
                KeyFamily::Okp if self.key_type() == CKK_EC_MONTGOMERY => {
                    CKM_EC_MONTGOMERY_KEY_PAIR_GEN
                }
                KeyFamily::Okp => CKM_EC_EDWARDS_KEY_PAIR_GEN,
                KeyFamily::Oct if self.key_type() == CKK_AES => CKM_AES_KEY_GEN,
                KeyFamily::Oct => CKM_GENERIC_SECRET_KEY_GEN,
            })),
            (CKA_DERIVE, Class::Private | Class::Secret) => op(KeyOperation::DeriveKey),
            (CKA_DERIVE, Class::Public) => b(false),
            (CKA_SUBJECT, Class::Private | Class::Public) => Bytes(Vec::new()),
            (
                CKA_SENSITIVE | CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE,
                Class::Private | Class::Secret,
            ) => b(true),
            (
                CKA_EXTRACTABLE | CKA_ALWAYS_AUTHENTICATE | CKA_WRAP_WITH_TRUSTED,
                Class::Private | Class::Secret,
            ) => b(false),
            (CKA_SIGN, Class::Private | Class::Secret) => op(KeyOperation::Sign),
            (CKA_VERIFY, Class::Public | Class::Secret) => op(KeyOperation::Verify),
            (CKA_DECRYPT, Class::Private | Class::Secret) => op(KeyOperation::Decrypt),
            (CKA_ENCRYPT, Class::Public | Class::Secret) => op(KeyOperation::Encrypt),
            (CKA_UNWRAP, Class::Private | Class::Secret) => op(KeyOperation::UnwrapKey),
            (CKA_WRAP, Class::Public | Class::Secret) => op(KeyOperation::WrapKey),
            (CKA_SIGN_RECOVER, Class::Private) | (CKA_VERIFY_RECOVER, Class::Public) => b(false),
            (CKA_TRUSTED, Class::Public | Class::Secret) => b(false),
            (CKA_VALUE, Class::Private | Class::Secret) => Sensitive,
            (CKA_VALUE_LEN, Class::Secret) => match self.secret() {
                Some((_, len)) => Bytes(ck_ulong(len as u64)),
                None => Invalid,
            },
            (CKA_MODULUS, _) if fam == KeyFamily::Rsa => match self.modulus() {
                Some(n) => Bytes(n.to_vec()),
                None => Invalid,
            },
            (CKA_MODULUS_BITS, Class::Public) if fam == KeyFamily::Rsa => match self.modulus() {
                Some(n) => Bytes(ck_ulong(bit_len(n))),
                None => Invalid,
            },
            (CKA_PUBLIC_EXPONENT, _) if fam == KeyFamily::Rsa => match self.bundle.key.e.as_ref() {
                Some(e) => Bytes(e.0.clone()),
                None => Invalid,
            },
            (
                CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1 | CKA_EXPONENT_2
                | CKA_COEFFICIENT,
                Class::Private,
            ) if fam == KeyFamily::Rsa => Sensitive,
            (CKA_EC_PARAMS, _) if matches!(fam, KeyFamily::Ec | KeyFamily::Okp) => {
                match self.curve() {
                    Some(c) => Bytes(ec_params(c).to_vec()),
                    None => Invalid,
                }
            }
            // The public point on the private object too: OpenSSL's engine
            // and others read it there to learn the key without a lookup.
            (CKA_EC_POINT, _) if matches!(fam, KeyFamily::Ec | KeyFamily::Okp) => {
                match self.point() {
                    Some(p) => Bytes(octet_string(&p)),
                    None => Invalid,
                }
            }
            _ => Invalid,
        }
    }
}

fn bit_len(n: &[u8]) -> u64 {
    let mut bytes = n.iter().skip_while(|b| **b == 0);
    match bytes.next() {
        Some(first) => (bytes.count() as u64) * 8 + (8 - first.leading_zeros() as u64),
        None => 0,
    }
}

impl std::fmt::Debug for SecretObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretObject")
            .field("key_type", &self.key_type)
            .field("len", &self.value.len())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl SecretObject {
    pub fn attribute(&self, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        use AttrValue::*;
        let b = |v: bool| Bytes(ck_bool(v));
        match ty {
            CKA_CLASS => Bytes(ck_ulong(CKO_SECRET_KEY)),
            CKA_KEY_TYPE => Bytes(ck_ulong(self.key_type)),
            CKA_TOKEN | CKA_LOCAL | CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE => b(false),
            CKA_PRIVATE | CKA_MODIFIABLE | CKA_DESTROYABLE | CKA_EXTRACTABLE => b(true),
            CKA_COPYABLE | CKA_TRUSTED | CKA_WRAP_WITH_TRUSTED | CKA_DERIVE => b(false),
            // Held in the module: only wrapped, or read when not sensitive.
            CKA_ENCRYPT | CKA_DECRYPT | CKA_SIGN | CKA_VERIFY | CKA_WRAP | CKA_UNWRAP => b(false),
            CKA_SENSITIVE => b(self.sensitive),
            CKA_LABEL => Bytes(self.label.clone()),
            CKA_ID => Bytes(self.id.clone()),
            CKA_START_DATE | CKA_END_DATE => Bytes(Vec::new()),
            CKA_VALUE_LEN => Bytes(ck_ulong(self.value.len() as u64)),
            CKA_VALUE if self.sensitive => Sensitive,
            CKA_VALUE => Bytes(self.value.to_vec()),
            _ => Invalid,
        }
    }
}

impl Object {
    pub fn attribute(&self, ty: CK_ATTRIBUTE_TYPE) -> AttrValue {
        match self {
            Object::Key(k) => k.attribute(ty),
            Object::Secret(s) => s.attribute(ty),
        }
    }
    /// Whether every attribute of `template` has exactly the given value.
    pub fn matches(&self, template: &[Attr]) -> bool {
        template
            .iter()
            .all(|a| self.attribute(a.ty) == AttrValue::Bytes(a.value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_depend_on_name_version_and_class_only() {
        let a = key_handle("k", "v1", Class::Private);
        assert_eq!(a, key_handle("k", "v1", Class::Private));
        assert_ne!(a, key_handle("k", "v1", Class::Public));
        assert_ne!(a, key_handle("k", "v2", Class::Private));
        assert_ne!(a, 0);
        assert_eq!(a & SESSION_OBJECT_BIT, 0);
    }

    #[test]
    fn ec_params_round_trip_and_points_are_octet_strings() {
        for c in [
            Curve::P256,
            Curve::P384,
            Curve::P521,
            Curve::Ed25519,
            Curve::X25519,
        ] {
            assert_eq!(curve_of_params(ec_params(c)).ok(), Some(c));
        }
        let s = [&[0x13u8, 12][..], b"edwards25519"].concat();
        assert_eq!(curve_of_params(&s).ok(), Some(Curve::Ed25519));
        assert!(curve_of_params(&[0x06, 0x01, 0x00]).is_err());
        let p521 = vec![4u8; 133];
        let der = octet_string(&p521);
        assert_eq!(&der[..3], &[0x04, 0x81, 133]);
        assert_eq!(unwrap_point(&der, 66, false), &p521[..]);
        assert_eq!(unwrap_point(&p521, 66, false), &p521[..]);
        assert_eq!(bit_len(&[0x00, 0x80, 0x00]), 16);
    }

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.extend_from_slice(&[0x82, (content.len() >> 8) as u8, content.len() as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    #[test]
    fn a_certificate_round_trips_through_tags_and_yields_its_names() {
        let issuer = der(0x30, &der(0x31, b"issuer-rdn"));
        let subject = der(0x30, &der(0x31, &[b's'; 200]));
        let serial = der(0x02, &[0x01, 0x02]);
        let tbs = [
            der(0xa0, &der(0x02, &[2])),
            serial.clone(),
            der(0x30, b"alg"),
            issuer.clone(),
            der(0x30, b"validity"),
            subject.clone(),
            der(0x30, &[0u8; 600]),
        ]
        .concat();
        let cert = der(
            0x30,
            &[der(0x30, &tbs), der(0x30, b"alg"), der(0x03, &[0; 64])].concat(),
        );
        assert_eq!(cert_fields(&cert), Some((subject, issuer, serial)));
        assert_eq!(cert_fields(&cert[..cert.len() - 1]), None);

        let mut tags = Tags::new();
        tags.insert(TAG_ID.into(), "01".into());
        let with = with_cert(&tags, Some(&cert)).unwrap_or_default();
        assert!(with.len() > 2 && with.values().all(|v| v.len() <= TAG_VALUE_MAX));
        assert_eq!(cert_der(Some(&with)), Some(cert.clone()));
        let without = with_cert(&with, None).unwrap_or_default();
        assert_eq!(without, tags);
        assert_eq!(cert_der(Some(&without)), None);
        // Too large to fit beside the other tags: refused with the excess.
        let huge = vec![0u8; 4000];
        assert!(with_cert(&tags, Some(&huge)).is_err());
    }

    #[test]
    fn only_key_name_characters_make_a_label_a_name() {
        assert!(is_key_name(b"p11-ec-1"));
        assert!(!is_key_name(b"my key"));
        assert!(!is_key_name(b""));
        assert!(!is_key_name(&[b'a'; 128]));
    }
}
