//! The node's TLS server configuration, from the files `hsm-node init`
//! puts in the node directory.
//!
//! Decides: TLS 1.3 only, a client certificate from the node's client CA
//! required, ALPN h2 then http/1.1, and what a bad or missing file is
//! reported as. Used by `server` (serving) and `offline` (`init` refuses
//! files that serving would refuse). Never: serving (`server`).

use crate::layout::NodeDir;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

/// A TLS file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    pub path: String,
    pub message: String,
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        path: path.display().to_string(),
        message: format!("{e} (the node's TLS files are made by `hsm-node init`)"),
    })
}

/// The TLS server configuration: TLS 1.3 only, client certificates from
/// the node's client CA required, ALPN h2 then http/1.1.
pub fn server_config(dir: &NodeDir) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let bad = |p: &std::path::Path, m: String| TlsError {
        path: p.display().to_string(),
        message: m,
    };
    let cert_path = dir.server_cert();
    let key_path = dir.server_key();
    let ca_path = dir.client_ca();
    let chain = rustls_pemfile::certs(&mut &read_pem(&cert_path)?[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&cert_path, "no certificate in the file".into()));
    }
    let key = rustls_pemfile::private_key(&mut &read_pem(&key_path)?[..])
        .map_err(|e| bad(&key_path, e.to_string()))?
        .ok_or_else(|| bad(&key_path, "no private key in the file".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &read_pem(&ca_path)?[..]) {
        let c = c.map_err(|e| bad(&ca_path, e.to_string()))?;
        roots.add(c).map_err(|e| bad(&ca_path, e.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(&ca_path, e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&cert_path, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&key_path, e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
