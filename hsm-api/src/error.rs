//! The error vocabulary: one code per cause, each with its HTTP status.
//!
//! Servers (node and proxy) answer every failure with
//! `{"error":{"code":CODE,"message":…}}` and `status()`; clients match on
//! the code. Adding a cause means adding a variant here, nowhere else.

use std::fmt;

macro_rules! codes {
    ($($(#[$m:meta])* $var:ident = $status:literal),+ $(,)?) => {
        /// Every error code of the dialect.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($(#[$m])* $var),+ }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$var),+];
            /// The code as it appears in the error body.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$var => stringify!($var)),+ }
            }
            /// The HTTP status that goes with this code.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$var => $status),+ }
            }
            /// Parses a code from an error body; unknown codes give `None`.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $(stringify!($var) => Some(ErrorCode::$var),)+ _ => None }
            }
        }
    };
}

codes! {
    /// The body is not valid JSON, or not the expected shape.
    InvalidJson = 400,
    /// The body has a field this operation does not know.
    UnknownField = 400,
    /// A byte field is not valid base64url.
    InvalidBase64 = 400,
    /// `alg`, `kty`, `crv`, a role or a key operation outside the vocabulary.
    UnsupportedAlgorithm = 400,
    /// The algorithm does not fit this key's type, curve or size.
    AlgorithmKeyMismatch = 400,
    /// The digest's length does not match the signature algorithm.
    InvalidDigestLength = 400,
    /// Key names are 1-127 characters of `0-9a-zA-Z-`.
    InvalidKeyName = 400,
    /// A parameter is out of range or inconsistent (key size, count, times…).
    BadParameter = 400,
    /// JWK material that does not form a valid key.
    InvalidKeyMaterial = 400,
    /// Authenticated decryption or unwrapping failed.
    DecryptionFailed = 400,
    /// A backup blob that is corrupt or from another cloning domain.
    InvalidBackup = 400,
    /// A clone blob that is corrupt, inconsistent or from another cloning domain.
    InvalidClone = 400,
    /// A feature this HSM does not offer (release policies, exportable keys).
    NotSupported = 400,
    /// No valid bearer token.
    Unauthorized = 401,
    /// Wrong role password.
    LoginFailed = 401,
    /// The role is locked after too many failed logins.
    RoleLocked = 403,
    /// The TLS client certificate is not registered to this partition.
    ClientNotRegistered = 403,
    /// The caller's role may not do this.
    Forbidden = 403,
    /// The key's `key_ops` do not include this operation.
    OperationNotPermitted = 403,
    /// The key is disabled.
    KeyDisabled = 403,
    /// The key is past its `exp`.
    KeyExpired = 403,
    /// The key is before its `nbf`.
    KeyNotYetValid = 403,
    /// No such key (or version).
    KeyNotFound = 404,
    /// No such deleted key.
    DeletedKeyNotFound = 404,
    /// No such partition.
    PartitionNotFound = 404,
    /// No such path.
    NotFound = 404,
    /// The path exists but not with this method.
    MethodNotAllowed = 405,
    /// The name is taken (for example by a deleted key awaiting purge).
    Conflict = 409,
    /// The request body is larger than the limit.
    BodyTooLarge = 413,
    /// The request took too long to arrive.
    RequestTimeout = 408,
    /// An unexpected failure inside the server; details are in its log.
    Internal = 500,
    /// The server cannot serve now (starting, shutting down, no member).
    Unavailable = 503,
    /// The node was zeroized: it holds no keys until initialised again.
    Zeroized = 503,
    /// The admin API is not enabled (no admin password was set at init).
    AdminDisabled = 403,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_an_error_status() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!((400..600).contains(&c.status()), "{c}");
        }
    }
}
