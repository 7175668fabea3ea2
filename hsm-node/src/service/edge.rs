//! The edge of the node: every internal error becomes one Key Vault error
//! body here, and request bodies are read and parsed here.
//!
//! Decides: which code each failure gets (one mapping per error type),
//! how a malformed body is classified, and the response shapes.

use crate::crypto::CryptoError;
use crate::store::StoreError;
use bytes::Bytes;
use hsm_api::{ErrorBody, ErrorCode, ErrorDetail};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// A failure as the client will see it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<crate::keystore::token::TokenError> for ApiError {
    fn from(e: crate::keystore::token::TokenError) -> Self {
        use crate::keystore::token::TokenError as T;
        match &e {
            // An operation or key kind the token does not offer: the
            // caller's request, named with the mechanism.
            T::Unsupported { .. } | T::NotYet { .. } => {
                ApiError::new(ErrorCode::NotSupported, e.to_string())
            }
            T::Invalid(_) => ApiError::new(ErrorCode::BadParameter, e.to_string()),
            // The token failed: this member cannot serve now (the proxy
            // tries another).
            _ => {
                tracing::warn!(error = %e, "token call failed");
                ApiError::new(ErrorCode::Unavailable, format!("the key store failed: {e}"))
            }
        }
    }
}

impl From<crate::keystore::KeyStoreError> for ApiError {
    fn from(e: crate::keystore::KeyStoreError) -> Self {
        use crate::keystore::KeyStoreError as K;
        match e {
            K::Crypto(c) => c.into(),
            K::Token(t) => t.into(),
            K::Internal(m) => {
                tracing::error!(error = %m, "key store failure");
                ApiError::new(ErrorCode::Internal, "internal key store error")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NoPartition(_) => ErrorCode::PartitionNotFound,
            StoreError::PartitionExists(_)
            | StoreError::KeyIsDeleted(_)
            | StoreError::NameTaken(_)
            | StoreError::VersionConflict { .. } => ErrorCode::Conflict,
            StoreError::NoKey(_) | StoreError::NoVersion { .. } | StoreError::NoPending { .. } => {
                ErrorCode::KeyNotFound
            }
            StoreError::NoDeletedKey(_) => ErrorCode::DeletedKeyNotFound,
            StoreError::InUse
            | StoreError::Db(_)
            | StoreError::Corrupt { .. }
            | StoreError::NewerSchema(_) => {
                tracing::error!(error = %e, "store failure");
                return ApiError::new(ErrorCode::Internal, "internal storage error");
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<crate::replication::ReplicaError> for ApiError {
    fn from(e: crate::replication::ReplicaError) -> Self {
        use crate::replication::ReplicaError as R;
        match e {
            R::NotFound(n) => ApiError::new(ErrorCode::KeyNotFound, format!("key `{n}` not found")),
            R::Invalid(m) => ApiError::new(ErrorCode::InvalidClone, m),
            R::Store(s) => s.into(),
            R::Internal(m) => {
                tracing::error!(error = %m, "replication failure");
                ApiError::new(ErrorCode::Internal, "internal error while cloning")
            }
        }
    }
}

/// Parses a JSON request body, classifying every failure precisely.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "a JSON request body is required",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.contains(hsm_api::b64::INVALID_BASE64_MARKER) {
            ErrorCode::InvalidBase64
        } else if msg.contains(hsm_api::alg::UNSUPPORTED_MARKER) {
            ErrorCode::UnsupportedAlgorithm
        } else if msg.starts_with("unknown field") {
            ErrorCode::UnknownField
        } else {
            ErrorCode::InvalidJson
        };
        ApiError::new(code, msg)
    })
}

/// Reads a whole body, refusing more than `limit` bytes or a body that
/// takes longer than `timeout` to arrive.
pub async fn read_body<B>(body: B, limit: usize, timeout: Duration) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limited = Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            "request body did not arrive in time",
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body exceeds {limit} bytes"),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("reading body: {e}"),
        )),
    }
}

pub type Resp = Response<Full<Bytes>>;

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    match serde_json::to_vec(v) {
        Ok(body) => with_body(status, "application/json; charset=utf-8", body.into()),
        Err(e) => error(&ApiError::new(
            ErrorCode::Internal,
            format!("encoding answer: {e}"),
        )),
    }
}

/// An empty answer (204).
pub fn no_content() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The Key Vault error body with the code's status.
pub fn error(e: &ApiError) -> Resp {
    let body = ErrorBody {
        error: ErrorDetail {
            code: e.code.as_str().to_string(),
            message: e.message.clone(),
        },
    };
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = with_body(status, "application/json; charset=utf-8", bytes.into());
    // For the request metrics' outcome label.
    r.extensions_mut().insert(e.code);
    r
}

/// 401 with the bearer challenge the Key Vault SDKs expect.
pub fn challenge(e: &ApiError, base: &str) -> Resp {
    let mut r = error(e);
    let v = format!("Bearer authorization=\"{base}/login\", resource=\"{base}\"");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
