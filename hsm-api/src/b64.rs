//! Base64url byte fields as Key Vault sends them: unpadded URL-safe alphabet
//! on output; on input padding is tolerated, any other alphabet is refused.
//!
//! A decoding failure surfaces as a serde error whose message starts with
//! [`INVALID_BASE64_MARKER`], so a server can map it to its own precise code.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Prefix of the message of every base64url decoding error.
pub const INVALID_BASE64_MARKER: &str = "invalid base64url";

/// Bytes carried as a base64url string on the wire.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct B64(pub Vec<u8>);

impl B64 {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for B64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print contents: these fields carry plaintexts and key parts.
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for B64 {
    fn from(v: Vec<u8>) -> Self {
        B64(v)
    }
}

impl From<&[u8]> for B64 {
    fn from(v: &[u8]) -> Self {
        B64(v.to_vec())
    }
}

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, padded or not.
pub fn decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if s.ends_with('=') {
        URL_SAFE.decode(s)
    } else {
        URL_SAFE_NO_PAD.decode(s)
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&s)
            .map(B64)
            .map_err(|e| serde::de::Error::custom(format!("{INVALID_BASE64_MARKER}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_unpadded_and_accepts_padding() {
        let v = B64(vec![0xfb, 0xff, 0x01]);
        let json = serde_json::to_string(&v).unwrap_or_default();
        assert_eq!(json, "\"-_8B\"");
        let back: B64 = serde_json::from_str("\"-_8B\"").unwrap_or_default();
        assert_eq!(back, v);
        let padded: B64 = serde_json::from_str("\"AQ==\"").unwrap_or_default();
        assert_eq!(padded.0, vec![1]);
    }

    #[test]
    fn refuses_standard_alphabet_with_marker() {
        let err = serde_json::from_str::<B64>("\"+/8B\"").err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with(INVALID_BASE64_MARKER), "{msg}");
    }
}
