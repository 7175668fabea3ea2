//! A small development PKI: a CA, server certificates and client
//! certificates, as PEM files in one directory.
//!
//! Decides: file names (`ca.pem`, `ca.key`, `NAME.pem`, `NAME.key`), key
//! types (ECDSA P-256), validity and extensions. Production deployments bring
//! their own CA and never need this module; `hsm-node init` accepts either.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it")]
    Exists { path: PathBuf },
    #[error("{path}: not a usable {what}: {message}")]
    Bad {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("certificate generation: {0}")]
    Gen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file that must not exist yet, mode 0600 (certificates too:
/// one rule for every file the node writes, see `hsm_server::private_fs`).
pub fn write_new(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    hsm_server::private_fs::write_new(path, contents).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            PkiError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// A CA whose certificate and key live in a directory.
pub struct Ca {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// The CA certificate's path.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join("ca.pem")
    }

    /// Creates `ca.pem` and `ca.key` (mode 0600) in `dir`, valid 10 years.
    pub fn create(dir: &Path, common_name: &str) -> Result<Ca, PkiError> {
        hsm_server::private_fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "hsm-ha");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        write_new(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
        write_new(&Ca::cert_path(dir), cert.pem().as_bytes())?;
        Ca::load(dir)
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = Ca::cert_path(dir);
        let key_path = dir.join("ca.key");
        let cert = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key).map_err(|e| PkiError::Bad {
            path: key_path.clone(),
            what: "CA private key",
            message: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| PkiError::Bad {
            path: cert_path.clone(),
            what: "CA certificate",
            message: e.to_string(),
        })?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            issuer,
        })
    }

    /// Issues a certificate for `name` and writes `out/NAME.pem` and
    /// `out/NAME.key`. Servers get their DNS names and IP addresses as SANs;
    /// clients get `name` as their common name. Valid `days` days.
    pub fn issue(
        &self,
        out: &Path,
        name: &str,
        kind: CertKind,
        sans: &[String],
        days: i64,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        hsm_server::private_fs::create_dir_all(out).map_err(io(out))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match kind {
            CertKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
            CertKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_path = out.join(format!("{name}.pem"));
        let key_path = out.join(format!("{name}.key"));
        write_new(&key_path, key.serialize_pem().as_bytes())?;
        write_new(&cert_path, cert.pem().as_bytes())?;
        Ok((cert_path, key_path))
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Server,
    Client,
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex: how a
/// partition names the clients registered to it.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hsm_server::fingerprint(cert_der)
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_pem_file(path: &Path) -> Result<String, PkiError> {
    let pem = fs::read(path).map_err(io(path))?;
    let cert = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or_else(|| PkiError::Bad {
            path: path.to_path_buf(),
            what: "certificate",
            message: "no CERTIFICATE block in the file".into(),
        })?
        .map_err(|e| PkiError::Bad {
            path: path.to_path_buf(),
            what: "certificate",
            message: e.to_string(),
        })?;
    Ok(fingerprint(&cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_certificates_and_refuses_overwrite() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let Ok(dir) = dir else { panic!("tempdir") };
        let ca = Ca::create(dir.path(), "test CA");
        assert!(ca.is_ok());
        let Ok(ca) = ca else { return };
        let client = ca.issue(dir.path(), "app", CertKind::Client, &[], 30);
        assert!(client.is_ok());
        let again = ca.issue(dir.path(), "app", CertKind::Client, &[], 30);
        assert!(matches!(again, Err(PkiError::Exists { .. })));
        assert!(matches!(
            Ca::create(dir.path(), "x"),
            Err(PkiError::Exists { .. })
        ));
        let Ok((cert, _)) = client else { return };
        let fp = fingerprint_pem_file(&cert).unwrap_or_default();
        assert_eq!(fp.len(), 64);
    }
}
