//! The offline commands: initialising a node directory and creating,
//! listing, deleting partitions, changing role passwords, registering
//! clients, and backing up and restoring partitions to and from files. The
//! CLI calls these on a stopped node (the database is locked by a running
//! one, and that is reported as such); the HTTP admin API of a running node
//! is `service::admin_api`.
//!
//! Decides: what a new node and a new partition consist of, and the rules
//! for names and passwords. Every change is one store transaction. The
//! backup format is `replication::backup`'s, the TLS checks `tls`'s.

use crate::auth;
use crate::clock::now_secs;
use crate::crypto;
use crate::domain::Domain;
use crate::keystore::KeyStore;
use crate::layout::{LayoutError, NodeDir, NodeSettings};
use crate::partition::{domain_aad, kek_aad, PartitionState};
use crate::pki::{self, Ca, CertKind};
use crate::replication::backup::{self, BackupError};
use crate::store::{ClientRecord, PartitionRecord, RoleRecord, Store, StoreError};
use hsm_api::Role;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("key store: {0}")]
    KeyStore(#[from] crate::keystore::KeyStoreError),
}

/// A backup's errors read as they did when the backup code lived here.
impl From<BackupError> for OfflineError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Store(s) => OfflineError::Store(s),
            BackupError::Invalid(m) => OfflineError::Invalid(m),
        }
    }
}

fn invalid(m: impl Into<String>) -> OfflineError {
    OfflineError::Invalid(m.into())
}

/// Where `init` gets the node's TLS identity.
pub enum TlsSource {
    /// Issue a server certificate from the CA in this directory and trust
    /// that CA for clients.
    Ca { dir: PathBuf, sans: Vec<String> },
    /// Use these files as they are.
    Files {
        cert: PathBuf,
        key: PathBuf,
        client_ca: PathBuf,
    },
}

/// Creates a node directory: settings, master key, TLS files, database.
pub fn init(
    dir: &Path,
    listen: std::net::SocketAddr,
    tls: TlsSource,
    admin_password: Option<&str>,
    token: Option<crate::layout::TokenSettings>,
) -> Result<NodeSettings, OfflineError> {
    let nd = NodeDir::new(dir);
    if nd.settings().exists() {
        return Err(LayoutError::AlreadyInitialised(dir.display().to_string()).into());
    }
    if let Some(t) = &token {
        // Refuse now what `run` would refuse later: the token is opened
        // and logged in to once (a refused PIN is not tried again), and it
        // must wrap and unwrap with RFC 5649 for replication.
        t.check().map_err(invalid)?;
        let keys = crate::keystore::open(Some(t))?;
        if let Some(tok) = keys.token() {
            tok.require(
                cryptoki::mechanism::MechanismType::AES_KEY_WRAP_PAD,
                "replication (export and import of keys)",
            )
            .map_err(|e| invalid(e.to_string()))?;
        }
    }
    hsm_server::private_fs::create_dir_all(&nd.tls_dir()).map_err(|e| LayoutError::Io {
        path: nd.tls_dir(),
        source: e,
    })?;
    match tls {
        TlsSource::Ca { dir: ca_dir, sans } => {
            let ca = Ca::load(&ca_dir)?;
            let (cert, key) = ca.issue(&nd.tls_dir(), "server", CertKind::Server, &sans, 825)?;
            debug_assert!(cert == nd.server_cert() && key == nd.server_key());
            copy(&Ca::cert_path(&ca_dir), &nd.client_ca())?;
        }
        TlsSource::Files {
            cert,
            key,
            client_ca,
        } => {
            copy(&cert, &nd.server_cert())?;
            copy(&key, &nd.server_key())?;
            copy(&client_ca, &nd.client_ca())?;
            // Refuse now what `run` would refuse later.
            crate::tls::server_config(&nd).map_err(|e| invalid(e.to_string()))?;
        }
    }
    let master = crypto::random_bytes(32).map_err(|e| invalid(e.to_string()))?;
    pki::write_new(&nd.master_key(), &master)?;
    let id = hex::encode(crypto::random_bytes(8).map_err(|e| invalid(e.to_string()))?);
    let mut settings = NodeSettings::new(id, listen);
    settings.admin_password_hash = admin_hash(admin_password)?;
    settings.token = token;
    Store::open(&nd.database())?;
    nd.save_settings(&settings)?;
    Ok(settings)
}

fn admin_hash(password: Option<&str>) -> Result<Option<String>, OfflineError> {
    match password {
        None => Ok(None),
        Some(p) => {
            auth::check_new_password(p).map_err(invalid)?;
            Ok(Some(auth::hash_password(p).map_err(invalid)?))
        }
    }
}

/// Initialises a zeroized node again: a new master key and an empty
/// database; settings and TLS identity are kept (the admin password is
/// replaced when one is given).
pub fn reinit(nd: &NodeDir, admin_password: Option<&str>) -> Result<(), OfflineError> {
    let mut settings = nd.load_settings()?;
    if nd.database().exists() {
        // A stale database (zeroization interrupted): destroy it first.
        crate::zeroization::destroy(nd, "re-initialisation of an interrupted zeroization")
            .map_err(invalid)?;
    }
    let master = crypto::random_bytes(32).map_err(|e| invalid(e.to_string()))?;
    pki::write_new(&nd.master_key(), &master)?;
    Store::open(&nd.database())?;
    if admin_password.is_some() {
        settings.admin_password_hash = admin_hash(admin_password)?;
        nd.save_settings(&settings)?;
    }
    crate::zeroization::clear_marker(nd).map_err(invalid)?;
    Ok(())
}

/// Copies a TLS file into the node directory (0600, like every file there;
/// the bytes may be a private key, so they are zeroized after).
fn copy(from: &Path, to: &Path) -> Result<(), OfflineError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(from).map_err(|e| LayoutError::Io {
        path: from.to_path_buf(),
        source: e,
    })?);
    pki::write_new(to, &bytes)?;
    Ok(())
}

/// Partition names: 1-32 characters of `a-z`, `0-9` and `-`, starting with a letter.
pub fn check_partition_name(name: &str) -> Result<(), OfflineError> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "partition name `{name}`: use 1-32 characters of a-z, 0-9 and -, starting with a letter"
        )))
    }
}

/// An opened, stopped node: its directory, settings, master key and store.
pub struct Offline {
    pub dir: NodeDir,
    pub settings: NodeSettings,
    pub master: zeroize::Zeroizing<[u8; 32]>,
    pub store: Store,
}

impl Offline {
    pub fn open(dir: &Path) -> Result<Offline, OfflineError> {
        let nd = NodeDir::new(dir);
        let settings = nd.load_settings()?;
        let master = nd.load_master_key()?;
        let store = Store::open(&nd.database())?;
        Ok(Offline {
            dir: nd,
            settings,
            master,
            store,
        })
    }

    /// Creates a partition with its role passwords (security officer, crypto
    /// officer and crypto user required; replication optional) and its
    /// cloning domain.
    pub fn create_partition(
        &self,
        name: &str,
        passwords: &BTreeMap<Role, String>,
        domain: &Domain,
    ) -> Result<(), OfflineError> {
        check_partition_name(name)?;
        let existing = self.store.partitions()?;
        if existing.len() >= self.settings.max_partitions {
            return Err(invalid(format!(
                "this node holds its maximum of {} partitions (max_partitions in node.json)",
                self.settings.max_partitions
            )));
        }
        let mut roles = BTreeMap::new();
        for role in Role::ALL {
            let Some(pw) = passwords.get(role) else {
                if *role == Role::Replication {
                    continue; // optional: without it the crypto officer replicates
                }
                return Err(invalid(format!(
                    "a password for the {role} role is required"
                )));
            };
            auth::check_new_password(pw).map_err(invalid)?;
            let hash = auth::hash_password(pw).map_err(invalid)?;
            roles.insert(
                role.as_str().to_string(),
                RoleRecord {
                    password_hash: hash,
                    failures: 0,
                    locked_until: None,
                },
            );
        }
        let kek = crypto::random_bytes(32).map_err(|e| invalid(e.to_string()))?;
        let seal = |aad: &[u8], data: &[u8]| {
            crypto::seal(&self.master, aad, data).map_err(|e| invalid(e.to_string()))
        };
        let rec = PartitionRecord {
            name: name.to_string(),
            created: now_secs(),
            kek_sealed: seal(&kek_aad(name), &kek)?.into(),
            domain_sealed: seal(&domain_aad(name), domain.secret())?.into(),
            roles,
            clients: BTreeMap::new(),
        };
        self.store.create_partition(&rec)?;
        Ok(())
    }

    pub fn delete_partition(&self, name: &str) -> Result<(), OfflineError> {
        self.store.delete_partition(name)?;
        Ok(())
    }

    /// Sets a role's password and clears its lockout.
    pub fn set_password(
        &self,
        partition: &str,
        role: Role,
        password: &str,
    ) -> Result<(), OfflineError> {
        auth::check_new_password(password).map_err(invalid)?;
        let hash = auth::hash_password(password).map_err(invalid)?;
        self.store.update_partition(partition, |p| {
            p.roles.insert(
                role.as_str().to_string(),
                RoleRecord {
                    password_hash: hash,
                    failures: 0,
                    locked_until: None,
                },
            );
        })?;
        Ok(())
    }

    /// Registers a client certificate to a partition; returns its fingerprint.
    pub fn register_client(
        &self,
        partition: &str,
        cert: &Path,
        label: &str,
    ) -> Result<String, OfflineError> {
        let fp = pki::fingerprint_pem_file(cert)?;
        let rec = ClientRecord {
            label: label.to_string(),
            added: now_secs(),
        };
        let f = fp.clone();
        self.store.update_partition(partition, move |p| {
            p.clients.insert(f, rec);
        })?;
        Ok(fp)
    }

    /// Removes a client registration by fingerprint or label.
    pub fn unregister_client(&self, partition: &str, who: &str) -> Result<usize, OfflineError> {
        let n = self.store.update_partition(partition, |p| {
            let before = p.clients.len();
            p.clients.retain(|fp, c| fp != who && c.label != who);
            before - p.clients.len()
        })?;
        if n == 0 {
            return Err(invalid(format!(
                "no client `{who}` is registered to partition `{partition}`"
            )));
        }
        Ok(n)
    }
}

impl Offline {
    fn partition_state(&self, name: &str) -> Result<PartitionState, OfflineError> {
        let rec = self.store.partition(name)?;
        PartitionState::unseal(&self.master, &rec).map_err(invalid)
    }

    /// The node's key store (a token member's token is opened and logged
    /// in to once).
    fn keys(&self) -> Result<KeyStore, OfflineError> {
        Ok(crate::keystore::open(self.settings.token.as_ref())?)
    }

    /// Writes every object of a partition to `out`, sealed for the cloning
    /// domain ([`backup::write_backup`]). The file is written beside `out` and
    /// renamed into place when whole.
    pub fn backup_partition(&self, partition: &str, out: &Path) -> Result<usize, OfflineError> {
        let part = self.partition_state(partition)?;
        let tmp = out.with_extension("partial");
        let io_err = |p: &Path, e: std::io::Error| {
            OfflineError::Layout(LayoutError::Io {
                path: p.to_path_buf(),
                source: e,
            })
        };
        let file = hsm_server::private_fs::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        let n = backup::write_backup(&self.store, &part, &self.keys()?, &mut w)?;
        let file = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        if out.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(invalid(format!(
                "{} already exists; refusing to overwrite it",
                out.display()
            )));
        }
        std::fs::rename(&tmp, out).map_err(|e| io_err(out, e))?;
        Ok(n)
    }

    /// Restores a partition backup file into an empty partition of a node
    /// of the same cloning domain ([`backup::restore_backup`]); all or
    /// nothing.
    pub fn restore_partition(&self, partition: &str, input: &Path) -> Result<usize, OfflineError> {
        let part = self.partition_state(partition)?;
        let text = std::fs::read_to_string(input).map_err(|e| {
            OfflineError::Layout(LayoutError::Io {
                path: input.to_path_buf(),
                source: e,
            })
        })?;
        let keys = self.keys()?;
        keys.install_domain_blocking(&part)?;
        Ok(backup::restore_backup(
            &self.store,
            &part,
            &keys,
            &text,
            &input.display().to_string(),
        )?)
    }
}
