//! Importing JWKs: the validation rules.
//!
//! - `kty` is required; `key_hsm` (BYOK transfer blobs) is not supported.
//! - Members that do not belong to the key type are refused, not ignored.
//! - RSA: `n` and `e` required (leading zero bytes tolerated); a private key
//!   needs all of `d`, `p`, `q`, `dp`, `dq`, `qi`, checked for consistency by
//!   the library (`n = p q`, `d e = 1 mod (p-1)(q-1)`, CRT values). Moduli of
//!   2048, 3072 or 4096 bits.
//! - EC: `crv` P-256/P-384/P-521, `x` and `y` (at most the field width after
//!   leading zeros; left-padded), the point must be on the curve; `d`, when
//!   present, must match (x, y).
//! - OKP: `crv` Ed25519 or X25519, `x` of 32 bytes; `d` (32 bytes), when
//!   present, must produce `x`.
//! - oct: `k` of 128, 192, 256, 384 or 512 bits.

use super::material::{
    ecdsa_signing, oct_from_bytes, EcParts, Inner, KeyMaterial, OkpParts, RsaParts,
};
use super::CryptoError;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use hsm_api::{Curve, JsonWebKey, KeyFamily, KeyType, B64};
use zeroize::Zeroizing;

/// The key members of a JWK and whether each is present.
fn members(j: &JsonWebKey) -> [(&'static str, bool); 13] {
    [
        ("n", j.n.is_some()),
        ("e", j.e.is_some()),
        ("d", j.d.is_some()),
        ("dp", j.dp.is_some()),
        ("dq", j.dq.is_some()),
        ("qi", j.qi.is_some()),
        ("p", j.p.is_some()),
        ("q", j.q.is_some()),
        ("k", j.k.is_some()),
        ("key_hsm", j.key_hsm.is_some()),
        ("crv", j.crv.is_some()),
        ("x", j.x.is_some()),
        ("y", j.y.is_some()),
    ]
}

fn refuse_foreign(j: &JsonWebKey, kty: KeyType, allowed: &[&str]) -> Result<(), CryptoError> {
    for (name, present) in members(j) {
        if present && !allowed.contains(&name) {
            return Err(CryptoError::invalid(format!(
                "JWK member `{name}` does not belong to a kty {kty} key"
            )));
        }
    }
    Ok(())
}

fn required<'a>(v: &'a Option<B64>, name: &str, kty: KeyType) -> Result<&'a [u8], CryptoError> {
    v.as_ref()
        .map(B64::as_slice)
        .ok_or_else(|| CryptoError::invalid(format!("a kty {kty} JWK needs `{name}`")))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// A big-endian integer as exactly `width` bytes (leading zeros stripped,
/// then left-padded).
fn fixed_width(
    b: &[u8],
    width: usize,
    name: &str,
    crv: Curve,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let s = strip_leading_zeros(b);
    if s.len() > width {
        return Err(CryptoError::invalid(format!(
            "`{name}` is {} bytes, longer than the {width} bytes of {crv}",
            b.len()
        )));
    }
    let mut out = Zeroizing::new(vec![0u8; width]);
    out[width - s.len()..].copy_from_slice(s);
    Ok(out)
}

pub(crate) fn check_ed25519_public(x: &[u8; 32]) -> Result<(), CryptoError> {
    signature::ParsedPublicKey::new(&signature::ED25519, x)
        .map(|_| ())
        .map_err(|_| CryptoError::invalid("`x` is not a valid Ed25519 public key"))
}

/// Builds validated key material from an import JWK.
pub(crate) fn material_from_jwk(j: &JsonWebKey) -> Result<KeyMaterial, CryptoError> {
    let kty = j
        .kty
        .ok_or_else(|| CryptoError::invalid("the JWK has no `kty`"))?;
    if j.key_hsm.is_some() {
        return Err(CryptoError::NotSupported(
            "`key_hsm` (BYOK transfer blobs) is not supported; import the key's JWK members"
                .to_string(),
        ));
    }
    let inner = match kty.family() {
        KeyFamily::Rsa => Inner::Rsa(rsa_from_jwk(j, kty)?),
        KeyFamily::Ec => Inner::Ec(ec_from_jwk(j, kty)?),
        KeyFamily::Okp => okp_from_jwk(j, kty)?,
        KeyFamily::Oct => {
            refuse_foreign(j, kty, &["k"])?;
            Inner::Oct(oct_from_bytes(required(&j.k, "k", kty)?)?)
        }
    };
    Ok(KeyMaterial { inner })
}

fn rsa_from_jwk(j: &JsonWebKey, kty: KeyType) -> Result<RsaParts, CryptoError> {
    refuse_foreign(j, kty, &["n", "e", "d", "dp", "dq", "qi", "p", "q"])?;
    let n = strip_leading_zeros(required(&j.n, "n", kty)?);
    let e = strip_leading_zeros(required(&j.e, "e", kty)?);
    if n.is_empty() || e.is_empty() {
        return Err(CryptoError::invalid("RSA `n` and `e` must not be zero"));
    }
    let private = [
        ("d", &j.d),
        ("p", &j.p),
        ("q", &j.q),
        ("dp", &j.dp),
        ("dq", &j.dq),
        ("qi", &j.qi),
    ];
    let missing: Vec<&str> = private
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(name, _)| *name)
        .collect();
    if missing.len() == private.len() {
        return RsaParts::from_public(n, e);
    }
    if !missing.is_empty() {
        return Err(CryptoError::invalid(format!(
            "an RSA private JWK needs all of d, p, q, dp, dq and qi; missing: {}",
            missing.join(", ")
        )));
    }
    // Sizes first, so the message names the real problem.
    RsaParts::from_public(n, e)?;
    fn part(v: &Option<B64>) -> &[u8] {
        v.as_ref().map(B64::as_slice).unwrap_or_default()
    }
    let comps = rsa::KeyPairComponents {
        public_key: rsa::PublicKeyComponents { n, e },
        d: part(&j.d),
        p: part(&j.p),
        q: part(&j.q),
        dP: part(&j.dp),
        dQ: part(&j.dq),
        qInv: part(&j.qi),
    };
    let kp = rsa::KeyPair::from_components(&comps).map_err(|_| {
        CryptoError::invalid(
            "the RSA private key is inconsistent: n, e, d, p, q, dp, dq and qi do not form one key",
        )
    })?;
    let parts = RsaParts::from_keypair(&kp)?;
    if parts.n != n || parts.e != e {
        return Err(CryptoError::Internal("RSA key import changed n or e"));
    }
    Ok(parts)
}

fn ec_from_jwk(j: &JsonWebKey, kty: KeyType) -> Result<EcParts, CryptoError> {
    refuse_foreign(j, kty, &["crv", "x", "y", "d"])?;
    let crv = j
        .crv
        .ok_or_else(|| CryptoError::invalid(format!("a kty {kty} JWK needs `crv`")))?;
    let alg = ecdsa_signing(crv).ok_or_else(|| {
        CryptoError::invalid(format!(
            "crv {crv} is not an EC curve; kty {kty} takes P-256, P-384 or P-521"
        ))
    })?;
    let width = crv.field_len();
    let x = fixed_width(required(&j.x, "x", kty)?, width, "x", crv)?;
    let y = fixed_width(required(&j.y, "y", kty)?, width, "y", crv)?;
    let mut point = Vec::with_capacity(1 + 2 * width);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let public = EcParts::from_point(crv, &point)?;
    let Some(d) = &j.d else {
        return Ok(public);
    };
    let d = fixed_width(d.as_slice(), width, "d", crv)?;
    let kp = EcdsaKeyPair::from_private_key_and_public_key(alg, &d, &point).map_err(|_| {
        CryptoError::invalid(format!(
            "the EC private key `d` is out of range for {crv} or does not match `x` and `y`"
        ))
    })?;
    EcParts::from_keypair(crv, &kp)
}

fn okp_from_jwk(j: &JsonWebKey, kty: KeyType) -> Result<Inner, CryptoError> {
    refuse_foreign(j, kty, &["crv", "x", "d"])?;
    let crv = j
        .crv
        .ok_or_else(|| CryptoError::invalid(format!("a kty {kty} JWK needs `crv`")))?;
    if !matches!(crv, Curve::Ed25519 | Curve::X25519) {
        return Err(CryptoError::invalid(format!(
            "crv {crv} is not an OKP curve; kty {kty} takes Ed25519 or X25519"
        )));
    }
    let x = required(&j.x, "x", kty)?;
    let x: [u8; 32] = x.try_into().map_err(|_| {
        CryptoError::invalid(format!("`x` must be 32 bytes for {crv}, got {}", x.len()))
    })?;
    let d = match &j.d {
        None => None,
        Some(d) => Some(Zeroizing::new(<[u8; 32]>::try_from(d.as_slice()).map_err(
            |_| CryptoError::invalid(format!("`d` must be 32 bytes for {crv}, got {}", d.0.len())),
        )?)),
    };
    match (crv, d) {
        (Curve::Ed25519, None) => {
            check_ed25519_public(&x)?;
            Ok(Inner::Ed25519(OkpParts {
                public: x,
                private: None,
            }))
        }
        (Curve::Ed25519, Some(seed)) => {
            Ed25519KeyPair::from_seed_and_public_key(seed.as_slice(), &x).map_err(|_| {
                CryptoError::invalid("the Ed25519 private key `d` does not match `x`")
            })?;
            Ok(Inner::Ed25519(OkpParts::ed25519_from_seed(&seed)?))
        }
        (_, None) => Ok(Inner::X25519(OkpParts {
            public: x,
            private: None,
        })),
        (_, Some(raw)) => {
            let parts = OkpParts::x25519_from_private(&raw)?;
            if parts.public != x {
                return Err(CryptoError::invalid(
                    "the X25519 private key `d` does not match `x`",
                ));
            }
            Ok(Inner::X25519(parts))
        }
    }
}

/// The peer of an ECDH: a public EC or X25519 JWK, as (curve, public bytes:
/// uncompressed point or 32-byte u-coordinate).
pub(crate) fn peer_public(j: &JsonWebKey) -> Result<(Curve, Vec<u8>), CryptoError> {
    let kty = j
        .kty
        .ok_or_else(|| CryptoError::bad("the peer JWK has no `kty`"))?;
    if !matches!(kty.family(), KeyFamily::Ec | KeyFamily::Okp) {
        return Err(CryptoError::bad(format!(
            "the peer JWK must be an EC or OKP (X25519) public key, not kty {kty}"
        )));
    }
    for (name, present) in members(j) {
        if present && matches!(name, "d" | "p" | "q" | "dp" | "dq" | "qi" | "k") {
            return Err(CryptoError::bad(format!(
                "the peer JWK must hold only the public key; remove `{name}`"
            )));
        }
    }
    let m = material_from_jwk(j)?;
    match m.inner {
        Inner::Ec(p) => Ok((p.curve, p.point)),
        Inner::X25519(p) => Ok((Curve::X25519, p.public.to_vec())),
        Inner::Ed25519(_) => Err(CryptoError::mismatch(
            "the peer key is Ed25519, a signing curve; ECDH needs X25519",
        )),
        Inner::Rsa(_) | Inner::Oct(_) => Err(CryptoError::bad(
            "the peer JWK must be an EC or OKP (X25519) public key",
        )),
    }
}
