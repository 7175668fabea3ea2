//! The module's one error type, and the only place it becomes a `CK_RV`.
//!
//! Decides which Cryptoki return value every failure gives: a proxy that
//! cannot be reached is `CKR_DEVICE_ERROR`, a refused password
//! `CKR_PIN_INCORRECT`, a key the partition does not hold
//! `CKR_OBJECT_HANDLE_INVALID`, and so on. The FFI layer calls [`Error::rv`]
//! and nothing else maps errors.

use cryptoki_sys::*;
use hsm_api::{ClientError, ErrorCode};

/// Every way a call into the module can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("C_Initialize has not been called")]
    NotInitialized,
    #[error("C_Initialize was already called")]
    AlreadyInitialized,
    #[error("configuration: {0}")]
    Config(String),
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    #[error("application locking callbacks without CKF_OS_LOCKING_OK")]
    CantLock,
    #[error("no such slot")]
    SlotIdInvalid,
    #[error("no such session")]
    SessionHandleInvalid,
    #[error("CKF_SERIAL_SESSION is required")]
    ParallelNotSupported,
    #[error("the session is read-only")]
    SessionReadOnly,
    #[error("not logged in")]
    UserNotLoggedIn,
    #[error("already logged in")]
    UserAlreadyLoggedIn,
    #[error("a read-only session exists, so the SO may not log in")]
    SessionReadOnlyExists,
    #[error("user type {0:#x} is not offered")]
    UserTypeInvalid(CK_ULONG),
    #[error("wrong PIN")]
    PinIncorrect,
    #[error("the role is locked after too many failed logins")]
    PinLocked,
    #[error("no such object")]
    ObjectHandleInvalid,
    #[error("no such key")]
    KeyHandleInvalid,
    #[error("mechanism {0:#x} is not offered")]
    MechanismInvalid(CK_ULONG),
    #[error("the mechanism does not do this: {0}")]
    MechanismNotFor(String),
    #[error("mechanism parameters: {0}")]
    MechanismParamInvalid(String),
    #[error("the key's type does not fit the mechanism: {0}")]
    KeyTypeInconsistent(String),
    #[error("the key may not be used this way: {0}")]
    KeyFunctionNotPermitted(String),
    #[error("keys in the partition are never extractable")]
    KeyUnextractable,
    #[error("the key size is not offered: {0}")]
    KeySizeRange(String),
    #[error("another operation is active in this session")]
    OperationActive,
    #[error("no operation of this kind is active in this session")]
    OperationNotInitialized,
    #[error("input length out of range: {0}")]
    DataLenRange(String),
    #[error("input not valid for the mechanism: {0}")]
    DataInvalid(String),
    #[error("the ciphertext or its tag is not valid")]
    EncryptedDataInvalid,
    #[error("the signature is not valid")]
    SignatureInvalid,
    #[error("the signature has the wrong length")]
    SignatureLenRange,
    #[error("template incomplete: {0}")]
    TemplateIncomplete(String),
    #[error("template inconsistent: {0}")]
    TemplateInconsistent(String),
    #[error("attribute value invalid: {0}")]
    AttributeValueInvalid(String),
    #[error("attribute {0:#x} cannot be changed")]
    AttributeReadOnly(CK_ULONG),
    #[error("attribute {0:#x} is not known for this object")]
    AttributeTypeInvalid(CK_ULONG),
    #[error("the wrapped key is not valid: {0}")]
    WrappedKeyInvalid(String),
    #[error("not offered by this module: {0}")]
    FunctionNotSupported(&'static str),
    #[error("refused: {0}")]
    ActionProhibited(String),
    #[error("random seeding is not offered")]
    RandomSeedNotSupported,
    #[error("the proxy cannot be reached or cannot serve: {0}")]
    Device(String),
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// The Cryptoki return value for this error.
    pub fn rv(&self) -> CK_RV {
        use Error::*;
        match self {
            NotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            AlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Config(_) => CKR_GENERAL_ERROR,
            ArgumentsBad(_) => CKR_ARGUMENTS_BAD,
            CantLock => CKR_CANT_LOCK,
            SlotIdInvalid => CKR_SLOT_ID_INVALID,
            SessionHandleInvalid => CKR_SESSION_HANDLE_INVALID,
            ParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            SessionReadOnly => CKR_SESSION_READ_ONLY,
            UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
            SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS,
            UserTypeInvalid(_) => CKR_USER_TYPE_INVALID,
            PinIncorrect => CKR_PIN_INCORRECT,
            PinLocked => CKR_PIN_LOCKED,
            ObjectHandleInvalid => CKR_OBJECT_HANDLE_INVALID,
            KeyHandleInvalid => CKR_KEY_HANDLE_INVALID,
            MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            MechanismNotFor(_) => CKR_MECHANISM_INVALID,
            MechanismParamInvalid(_) => CKR_MECHANISM_PARAM_INVALID,
            KeyTypeInconsistent(_) => CKR_KEY_TYPE_INCONSISTENT,
            KeyFunctionNotPermitted(_) => CKR_KEY_FUNCTION_NOT_PERMITTED,
            KeyUnextractable => CKR_KEY_UNEXTRACTABLE,
            KeySizeRange(_) => CKR_KEY_SIZE_RANGE,
            OperationActive => CKR_OPERATION_ACTIVE,
            OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            DataLenRange(_) => CKR_DATA_LEN_RANGE,
            DataInvalid(_) => CKR_DATA_INVALID,
            EncryptedDataInvalid => CKR_ENCRYPTED_DATA_INVALID,
            SignatureInvalid => CKR_SIGNATURE_INVALID,
            SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
            TemplateIncomplete(_) => CKR_TEMPLATE_INCOMPLETE,
            TemplateInconsistent(_) => CKR_TEMPLATE_INCONSISTENT,
            AttributeValueInvalid(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            AttributeReadOnly(_) => CKR_ATTRIBUTE_READ_ONLY,
            AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            WrappedKeyInvalid(_) => CKR_WRAPPED_KEY_INVALID,
            FunctionNotSupported(_) => CKR_FUNCTION_NOT_SUPPORTED,
            ActionProhibited(_) => CKR_ACTION_PROHIBITED,
            RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
            Device(_) => CKR_DEVICE_ERROR,
            Failed(_) => CKR_FUNCTION_FAILED,
        }
    }

    /// Whether this failure is worth logging at WARN: the caller's own
    /// mistakes (a bad template, a wrong signature) are DEBUG.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Error::Device(_) | Error::Failed(_) | Error::Config(_) | Error::PinLocked
        )
    }

    /// The error for a proxy answer about a key operation.
    pub fn from_api(e: ClientError) -> Error {
        match e.code() {
            Some(ErrorCode::LoginFailed) => Error::PinIncorrect,
            Some(ErrorCode::RoleLocked) => Error::PinLocked,
            Some(ErrorCode::Unauthorized) => Error::UserNotLoggedIn,
            Some(ErrorCode::KeyNotFound) => Error::ObjectHandleInvalid,
            Some(ErrorCode::DecryptionFailed) => Error::EncryptedDataInvalid,
            Some(ErrorCode::InvalidDigestLength) => Error::DataLenRange(e.to_string()),
            Some(ErrorCode::AlgorithmKeyMismatch) => Error::KeyTypeInconsistent(e.to_string()),
            Some(
                ErrorCode::OperationNotPermitted
                | ErrorCode::KeyDisabled
                | ErrorCode::KeyExpired
                | ErrorCode::KeyNotYetValid,
            ) => Error::KeyFunctionNotPermitted(e.to_string()),
            Some(ErrorCode::Forbidden) => Error::ActionProhibited(e.to_string()),
            Some(ErrorCode::Unavailable | ErrorCode::Zeroized) => Error::Device(e.to_string()),
            _ => match e {
                ClientError::Connect { .. }
                | ClientError::Transport { .. }
                | ClientError::Timeout { .. } => Error::Device(e.to_string()),
                other => Error::Failed(other.to_string()),
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
