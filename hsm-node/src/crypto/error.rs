//! The errors of the crypto module, each mapped to one wire error code.

use hsm_api::{ErrorCode, SignatureAlgorithm};

/// A failure of a cryptographic operation or of key validation.
///
/// Messages are meant for the API caller: they name algorithms, curves,
/// sizes and lengths, never key bytes or plaintexts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The algorithm does not fit this key's type, curve or size.
    #[error("{0}")]
    AlgorithmKeyMismatch(String),
    /// The digest's length does not match the signature algorithm.
    #[error("the digest for {alg} must be {expected} bytes, got {actual}")]
    InvalidDigestLength {
        alg: SignatureAlgorithm,
        expected: usize,
        actual: usize,
    },
    /// A parameter is out of range, missing or inconsistent.
    #[error("{0}")]
    BadParameter(String),
    /// Key material (a JWK) that does not form a valid key.
    #[error("{0}")]
    InvalidKeyMaterial(String),
    /// Authenticated decryption or unwrapping failed. Deliberately vague.
    #[error("{0}")]
    DecryptionFailed(&'static str),
    /// Something this HSM does not offer.
    #[error("{0}")]
    NotSupported(String),
    /// The operation needs the private part and the key has only the public one.
    #[error("{0}")]
    PublicKeyOnly(String),
    /// Stored key material that does not parse: corruption, or a blob that
    /// was never made by [`crate::crypto::KeyMaterial::to_bytes`].
    #[error("stored key material is corrupt: {0}")]
    CorruptMaterial(&'static str),
    /// An unexpected failure inside the crypto library.
    #[error("internal cryptographic failure: {0}")]
    Internal(&'static str),
}

impl CryptoError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CryptoError::AlgorithmKeyMismatch(_) => ErrorCode::AlgorithmKeyMismatch,
            CryptoError::InvalidDigestLength { .. } => ErrorCode::InvalidDigestLength,
            CryptoError::BadParameter(_) => ErrorCode::BadParameter,
            CryptoError::InvalidKeyMaterial(_) => ErrorCode::InvalidKeyMaterial,
            CryptoError::DecryptionFailed(_) => ErrorCode::DecryptionFailed,
            CryptoError::NotSupported(_) => ErrorCode::NotSupported,
            CryptoError::PublicKeyOnly(_) => ErrorCode::OperationNotPermitted,
            CryptoError::CorruptMaterial(_) | CryptoError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> CryptoError {
        CryptoError::BadParameter(msg.into())
    }

    pub(crate) fn mismatch(msg: impl Into<String>) -> CryptoError {
        CryptoError::AlgorithmKeyMismatch(msg.into())
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> CryptoError {
        CryptoError::InvalidKeyMaterial(msg.into())
    }
}
