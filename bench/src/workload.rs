//! What the load sends.
//!
//! Decides: the operations (ES256 and RS256 signatures of a 32-byte
//! digest, A256GCM encryption of 1 KiB), the key each uses (`bench-ec`,
//! `bench-rsa`, `bench-aes`: created by `--setup`), and a mix of them by
//! integer weights (`es256=50,rs256=10,a256gcm=40`). Never: timing
//! (`load`).

use hsm_api::{
    Client, ClientError, Curve, EncryptionAlgorithm, KeyCreateParameters, SignatureAlgorithm,
};
use std::sync::Arc;

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Op {
    /// ES256 signature (P-256) of a 32-byte digest.
    Es256,
    /// RS256 signature (RSA-2048) of a 32-byte digest.
    Rs256,
    /// A256GCM encryption of 1 KiB.
    A256gcm,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Es256, Op::Rs256, Op::A256gcm];

    /// The name in mixes, results and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Op::Es256 => "es256",
            Op::Rs256 => "rs256",
            Op::A256gcm => "a256gcm",
        }
    }

    /// The key the operation uses.
    pub fn key_name(self) -> &'static str {
        match self {
            Op::Es256 => "bench-ec",
            Op::Rs256 => "bench-rsa",
            Op::A256gcm => "bench-aes",
        }
    }

    fn key_params(self) -> KeyCreateParameters {
        match self {
            Op::Es256 => KeyCreateParameters::ec(Curve::P256),
            Op::Rs256 => KeyCreateParameters::rsa(2048),
            Op::A256gcm => KeyCreateParameters::oct(256),
        }
    }

    /// Length of a correct answer's value.
    pub(crate) fn answer_len(self) -> usize {
        match self {
            Op::Es256 => 64,
            Op::Rs256 => 256,
            Op::A256gcm => PLAINTEXT_LEN,
        }
    }

    /// Sends one request and checks the answer's length (a server that
    /// answers without doing the work does not count as fast).
    pub async fn send(self, c: &Client, p: &Payload) -> Result<(), ClientError> {
        let name = self.key_name();
        let r = match self {
            Op::Es256 => {
                c.sign(name, None, SignatureAlgorithm::Es256, &p.digest)
                    .await
            }
            Op::Rs256 => {
                c.sign(name, None, SignatureAlgorithm::Rs256, &p.digest)
                    .await
            }
            Op::A256gcm => {
                c.encrypt(name, None, EncryptionAlgorithm::A256Gcm, &p.plaintext, None)
                    .await
            }
        }?;
        let len = r.value.as_slice().len();
        if len != self.answer_len() {
            return Err(ClientError::Decode {
                url: name.to_string(),
                message: format!("answer of {len} bytes, expected {}", self.answer_len()),
            });
        }
        Ok(())
    }

    /// Creates the operation's key unless it exists (a crypto officer's
    /// client). Returns whether it was created.
    pub async fn ensure_key(self, co: &Client) -> Result<bool, ClientError> {
        match co.get_key(self.key_name(), None).await {
            Ok(_) => Ok(false),
            Err(e) if e.status() == Some(404) => {
                co.create_key(self.key_name(), &self.key_params()).await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}

/// Bytes encrypted per A256GCM request.
pub const PLAINTEXT_LEN: usize = 1024;

/// What requests carry: a 32-byte digest and 1 KiB of plaintext.
#[derive(Clone)]
pub struct Payload {
    pub digest: Arc<Vec<u8>>,
    pub plaintext: Arc<Vec<u8>>,
}

impl Payload {
    pub fn new() -> Payload {
        let digest: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        Payload {
            digest: Arc::new(digest),
            plaintext: Arc::new(vec![0x5a; PLAINTEXT_LEN]),
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::new()
    }
}

/// A weighted mix of operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Op, u32)>,
    total: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    #[error("`{0}` is no operation: use es256, rs256 or a256gcm")]
    UnknownOp(String),
    #[error("`{0}`: a weight is a whole number from 1 to 1000")]
    BadWeight(String),
    #[error("{0} appears twice in the mix")]
    Twice(&'static str),
    #[error("the mix is empty")]
    Empty,
}

impl Mix {
    /// `es256`, or weights: `es256=50,rs256=10,a256gcm=40`.
    pub fn parse(s: &str) -> Result<Mix, MixError> {
        let mut weights: Vec<(Op, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = match part.split_once('=') {
                Some((n, w)) => (n.trim(), w.trim()),
                None => (part, "1"),
            };
            let op = Op::ALL
                .into_iter()
                .find(|o| o.name() == name)
                .ok_or_else(|| MixError::UnknownOp(name.to_string()))?;
            let w: u32 = w
                .parse()
                .ok()
                .filter(|w| (1..=1000).contains(w))
                .ok_or_else(|| MixError::BadWeight(part.to_string()))?;
            if weights.iter().any(|(o, _)| *o == op) {
                return Err(MixError::Twice(op.name()));
            }
            weights.push((op, w));
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err(MixError::Empty);
        }
        Ok(Mix { weights, total })
    }

    /// The operation for a draw `r` (any u32): each is drawn in
    /// proportion to its weight.
    pub fn pick(&self, r: u32) -> Op {
        let mut x = r % self.total;
        for (op, w) in &self.weights {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        self.weights[0].0
    }

    /// The operations of the mix.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.weights.iter().map(|(o, _)| *o)
    }

    /// `es256=50,rs256=10`, for reports.
    pub fn describe(&self) -> String {
        self.weights
            .iter()
            .map(|(o, w)| format!("{}={w}", o.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mixes_parse_and_draw_by_weight() {
        let m = Mix::parse("es256=3, a256gcm=1").unwrap();
        let mut counts = [0u32; 3];
        for r in 0..4000u32 {
            counts[m.pick(r) as usize] += 1;
        }
        assert_eq!(counts, [3000, 0, 1000]);
        assert_eq!(m.describe(), "es256=3,a256gcm=1");
        assert_eq!(Mix::parse("rs256").unwrap().pick(7), Op::Rs256);
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        assert_eq!(Mix::parse(""), Err(MixError::Empty));
        assert_eq!(
            Mix::parse("es384"),
            Err(MixError::UnknownOp("es384".into()))
        );
        assert_eq!(
            Mix::parse("es256=0"),
            Err(MixError::BadWeight("es256=0".into()))
        );
        assert_eq!(
            Mix::parse("es256=x"),
            Err(MixError::BadWeight("es256=x".into()))
        );
        assert_eq!(Mix::parse("es256,es256=2"), Err(MixError::Twice("es256")));
    }
}
