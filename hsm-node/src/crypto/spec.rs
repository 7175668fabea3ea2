//! What to generate, validated from a create request.

use super::CryptoError;
use hsm_api::{Curve, KeyCreateParameters, KeyFamily};

/// RSA moduli this HSM generates and imports.
pub(crate) const RSA_BITS: [u32; 3] = [2048, 3072, 4096];
/// oct key sizes: AES (128/192/256) and HMAC-only (384/512).
pub(crate) const OCT_BITS: [u32; 5] = [128, 192, 256, 384, 512];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// RSA with public exponent 65537; `bits` is 2048, 3072 or 4096.
    Rsa { bits: u32 },
    /// ECDSA/ECDH on a NIST curve (P-256, P-384 or P-521 only).
    Ec(Curve),
    /// EdDSA signing key.
    Ed25519,
    /// X25519 key-agreement key.
    X25519,
    /// Symmetric key of 128, 192, 256 (AES and HMAC), 384 or 512 bits (HMAC).
    Oct { bits: u32 },
}

fn list(v: &[u32]) -> String {
    let words: Vec<String> = v.iter().map(u32::to_string).collect();
    words.join(", ")
}

impl KeySpec {
    /// Validates a create request's kty / key_size / crv / public_exponent.
    ///
    /// Defaults: RSA 2048, EC P-256, OKP Ed25519, oct 256. Every parameter
    /// that does not belong to the key type is refused, not ignored.
    /// (`key_ops`, attributes, tags and `release_policy` are the caller's.)
    pub fn from_create(p: &KeyCreateParameters) -> Result<KeySpec, CryptoError> {
        let kty = p.kty;
        let family = kty.family();
        if family != KeyFamily::Rsa {
            if let Some(e) = p.public_exponent {
                return Err(CryptoError::bad(format!(
                    "public_exponent ({e}) applies only to RSA keys, not kty {kty}"
                )));
            }
        }
        match family {
            KeyFamily::Rsa => {
                if let Some(crv) = p.crv {
                    return Err(CryptoError::bad(format!(
                        "crv ({crv}) does not apply to kty {kty}; RSA keys take key_size"
                    )));
                }
                let bits = p.key_size.unwrap_or(2048);
                if !RSA_BITS.contains(&bits) {
                    return Err(CryptoError::bad(format!(
                        "key_size {bits} is not supported for kty {kty}; expected one of {}",
                        list(&RSA_BITS)
                    )));
                }
                match p.public_exponent {
                    None | Some(65537) => {}
                    Some(e) => {
                        return Err(CryptoError::bad(format!(
                            "public_exponent {e} is not supported; only 65537 is"
                        )))
                    }
                }
                Ok(KeySpec::Rsa { bits })
            }
            KeyFamily::Ec => {
                let crv = p.crv.unwrap_or(Curve::P256);
                let curve_bits = match crv {
                    Curve::P256 => 256,
                    Curve::P384 => 384,
                    Curve::P521 => 521,
                    Curve::Ed25519 | Curve::X25519 => {
                        return Err(CryptoError::bad(format!(
                            "crv {crv} is not an EC curve; kty {kty} takes P-256, P-384 or P-521 \
                             ({crv} keys are kty OKP)"
                        )))
                    }
                };
                if let Some(size) = p.key_size {
                    if size != curve_bits {
                        return Err(CryptoError::bad(format!(
                            "key_size {size} does not match crv {crv} ({curve_bits} bits)"
                        )));
                    }
                }
                Ok(KeySpec::Ec(crv))
            }
            KeyFamily::Okp => {
                let crv = p.crv.unwrap_or(Curve::Ed25519);
                let spec = match crv {
                    Curve::Ed25519 => KeySpec::Ed25519,
                    Curve::X25519 => KeySpec::X25519,
                    Curve::P256 | Curve::P384 | Curve::P521 => {
                        return Err(CryptoError::bad(format!(
                            "crv {crv} is not an OKP curve; kty {kty} takes Ed25519 or X25519 \
                             ({crv} keys are kty EC)"
                        )))
                    }
                };
                if let Some(size) = p.key_size {
                    if size != 256 {
                        return Err(CryptoError::bad(format!(
                            "key_size {size} does not match crv {crv} (256 bits)"
                        )));
                    }
                }
                Ok(spec)
            }
            KeyFamily::Oct => {
                if let Some(crv) = p.crv {
                    return Err(CryptoError::bad(format!(
                        "crv ({crv}) does not apply to kty {kty}; oct keys take key_size"
                    )));
                }
                let bits = p.key_size.unwrap_or(256);
                if !OCT_BITS.contains(&bits) {
                    return Err(CryptoError::bad(format!(
                        "key_size {bits} is not supported for kty {kty}; expected one of {}",
                        list(&OCT_BITS)
                    )));
                }
                Ok(KeySpec::Oct { bits })
            }
        }
    }

    /// The family of the keys this spec generates.
    pub fn family(&self) -> KeyFamily {
        match self {
            KeySpec::Rsa { .. } => KeyFamily::Rsa,
            KeySpec::Ec(_) => KeyFamily::Ec,
            KeySpec::Ed25519 | KeySpec::X25519 => KeyFamily::Okp,
            KeySpec::Oct { .. } => KeyFamily::Oct,
        }
    }
}
