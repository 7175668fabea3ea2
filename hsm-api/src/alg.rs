//! The closed vocabularies of the dialect: key types, curves, algorithms and
//! key operations, each spelled exactly as Key Vault spells it on the wire.
//!
//! Every enum serialises as its wire string. Deserialising an unknown string
//! fails with a message starting with [`UNSUPPORTED_MARKER`] that names the
//! vocabulary and the accepted values, so servers can answer with a precise
//! code and clients see what would have been accepted.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Prefix of the message of every "not in this vocabulary" error.
pub const UNSUPPORTED_MARKER: &str = "unsupported value";

/// The error of parsing a vocabulary word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{UNSUPPORTED_MARKER} `{value}` for {what}; expected one of: {expected}")]
pub struct Unsupported {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($(#[$vm:meta])* $var:ident = $($s:literal)|+),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The wire spelling (the first, canonical one where aliases exist).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => wire_enum!(@first $($s)|+)),+ }
            }
        }

        impl FromStr for $name {
            type Err = Unsupported;
            fn from_str(s: &str) -> Result<Self, Unsupported> {
                match s {
                    $($($s)|+ => Ok($name::$var),)+
                    _ => Err(Unsupported {
                        what: $what,
                        value: s.chars().take(64).collect(),
                        expected: concat!($(wire_enum!(@first $($s)|+), " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
    (@first $first:literal $(| $rest:literal)*) => { $first };
}

wire_enum!(
    /// `kty`: the key type. `-HSM` variants are accepted and mean the same
    /// here: every key of this HSM is hardware-protected by definition.
    KeyType, "kty", {
        Rsa = "RSA",
        RsaHsm = "RSA-HSM",
        Ec = "EC",
        EcHsm = "EC-HSM",
        Oct = "oct",
        OctHsm = "oct-HSM",
        Okp = "OKP",
        OkpHsm = "OKP-HSM",
    }
);

/// The family of a key type, with the `-HSM` distinction removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Oct,
    Okp,
}

impl KeyType {
    pub fn family(self) -> KeyFamily {
        match self {
            KeyType::Rsa | KeyType::RsaHsm => KeyFamily::Rsa,
            KeyType::Ec | KeyType::EcHsm => KeyFamily::Ec,
            KeyType::Oct | KeyType::OctHsm => KeyFamily::Oct,
            KeyType::Okp | KeyType::OkpHsm => KeyFamily::Okp,
        }
    }
    /// The `-HSM` spelling of this family, which is what this HSM reports.
    pub fn hsm(family: KeyFamily) -> KeyType {
        match family {
            KeyFamily::Rsa => KeyType::RsaHsm,
            KeyFamily::Ec => KeyType::EcHsm,
            KeyFamily::Oct => KeyType::OctHsm,
            KeyFamily::Okp => KeyType::OkpHsm,
        }
    }
}

wire_enum!(
    /// `crv`: elliptic curves. Ed25519 and X25519 go with `kty` OKP.
    Curve, "crv", {
        P256 = "P-256",
        P384 = "P-384",
        P521 = "P-521",
        Ed25519 = "Ed25519",
        X25519 = "X25519",
    }
);

impl Curve {
    /// Size of one coordinate (EC) or of the key (OKP), in bytes.
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
            Curve::Ed25519 | Curve::X25519 => 32,
        }
    }
    pub fn family(self) -> KeyFamily {
        match self {
            Curve::P256 | Curve::P384 | Curve::P521 => KeyFamily::Ec,
            Curve::Ed25519 | Curve::X25519 => KeyFamily::Okp,
        }
    }
}

wire_enum!(
    /// Signature algorithms for `sign` / `verify`.
    SignatureAlgorithm, "signature alg", {
        Rs256 = "RS256",
        Rs384 = "RS384",
        Rs512 = "RS512",
        Ps256 = "PS256",
        Ps384 = "PS384",
        Ps512 = "PS512",
        Es256 = "ES256",
        Es384 = "ES384",
        Es512 = "ES512",
        /// PureEdDSA (RFC 8032) over `value` as the message, not a digest.
        EdDsa = "EdDSA",
    }
);

impl SignatureAlgorithm {
    /// Length of the digest the caller must send; `None` for EdDSA, which
    /// signs the message itself.
    pub fn digest_len(self) -> Option<usize> {
        use SignatureAlgorithm::*;
        match self {
            Rs256 | Ps256 | Es256 => Some(32),
            Rs384 | Ps384 | Es384 => Some(48),
            Rs512 | Ps512 | Es512 => Some(64),
            EdDsa => None,
        }
    }
}

wire_enum!(
    /// Algorithms for `encrypt` / `decrypt` / `wrapkey` / `unwrapkey`.
    EncryptionAlgorithm, "encryption alg", {
        RsaOaep = "RSA-OAEP",
        RsaOaep256 = "RSA-OAEP-256",
        A128Gcm = "A128GCM",
        A192Gcm = "A192GCM",
        A256Gcm = "A256GCM",
        A128Kw = "A128KW",
        A192Kw = "A192KW",
        A256Kw = "A256KW",
        /// AES key wrap with padding (RFC 5649); Managed HSM spells it
        /// `CKM_AES_KEY_WRAP_PAD`, which is accepted too.
        A128Kwp = "A128KWPAD",
        A192Kwp = "A192KWPAD",
        A256Kwp = "A256KWPAD" | "CKM_AES_KEY_WRAP_PAD",
    }
);

impl EncryptionAlgorithm {
    /// The AES key length in bytes an oct key needs for this algorithm,
    /// `None` for RSA algorithms. `CKM_AES_KEY_WRAP_PAD` is normalised to
    /// A256KWPAD by parsing, so it demands a 256-bit key.
    pub fn aes_key_len(self) -> Option<usize> {
        use EncryptionAlgorithm::*;
        match self {
            RsaOaep | RsaOaep256 => None,
            A128Gcm | A128Kw | A128Kwp => Some(16),
            A192Gcm | A192Kw | A192Kwp => Some(24),
            A256Gcm | A256Kw | A256Kwp => Some(32),
        }
    }
    pub fn is_gcm(self) -> bool {
        use EncryptionAlgorithm::*;
        matches!(self, A128Gcm | A192Gcm | A256Gcm)
    }
    pub fn is_key_wrap(self) -> bool {
        use EncryptionAlgorithm::*;
        matches!(self, A128Kw | A192Kw | A256Kw | A128Kwp | A192Kwp | A256Kwp)
    }
}

wire_enum!(
    /// HMAC algorithms for our `mac` / `verifymac` extension on oct keys.
    MacAlgorithm, "mac alg", {
        Hs256 = "HS256",
        Hs384 = "HS384",
        Hs512 = "HS512",
    }
);

impl MacAlgorithm {
    pub fn tag_len(self) -> usize {
        match self {
            MacAlgorithm::Hs256 => 32,
            MacAlgorithm::Hs384 => 48,
            MacAlgorithm::Hs512 => 64,
        }
    }
}

wire_enum!(
    /// Algorithms for our `derive` extension.
    DeriveAlgorithm, "derive alg", {
        /// Elliptic-curve Diffie-Hellman with an EC P-256/P-384 or OKP
        /// X25519 key and the peer's public JWK; the raw shared secret
        /// becomes an oct key (or is fed through KBKDF when `info` is given).
        Ecdh = "ECDH",
        /// NIST SP 800-108 KBKDF, counter mode, 32-bit big-endian counter
        /// before the fixed input, PRF HMAC-SHA256/384/512.
        KbkdfHmacSha256 = "KBKDF-CTR-HMAC-SHA256",
        KbkdfHmacSha384 = "KBKDF-CTR-HMAC-SHA384",
        KbkdfHmacSha512 = "KBKDF-CTR-HMAC-SHA512",
    }
);

wire_enum!(
    /// `key_ops`: what a key may be used for. `deriveKey` is our extension;
    /// `sign`/`verify` also govern `mac`/`verifymac` on oct keys.
    KeyOperation, "key_ops entry", {
        Encrypt = "encrypt",
        Decrypt = "decrypt",
        Sign = "sign",
        Verify = "verify",
        WrapKey = "wrapKey",
        UnwrapKey = "unwrapKey",
        Import = "import",
        Export = "export",
        DeriveKey = "deriveKey",
    }
);

wire_enum!(
    /// The roles of a partition.
    Role, "role", {
        /// Partition security officer: manages the partition, its roles
        /// and its registered clients; uses no keys.
        SecurityOfficer = "security-officer",
        /// Creates, imports, deletes and uses keys.
        CryptoOfficer = "crypto-officer",
        /// Uses keys.
        CryptoUser = "crypto-user",
        /// Copies keys between the members of a group: reads the inventory,
        /// exports and imports clone blobs (wrapped under the cloning
        /// domain), nothing else. Optional: a partition without its
        /// password has no such credential, and the crypto officer replicates.
        Replication = "replication",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_parse_to_canonical() {
        let a: EncryptionAlgorithm = "CKM_AES_KEY_WRAP_PAD"
            .parse()
            .unwrap_or(EncryptionAlgorithm::RsaOaep);
        assert_eq!(a, EncryptionAlgorithm::A256Kwp);
        assert_eq!(a.as_str(), "A256KWPAD");
    }

    #[test]
    fn unknown_value_names_vocabulary() {
        let e = "RS1"
            .parse::<SignatureAlgorithm>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with(UNSUPPORTED_MARKER), "{e}");
        assert!(e.contains("signature alg") && e.contains("PS256"), "{e}");
    }
}
