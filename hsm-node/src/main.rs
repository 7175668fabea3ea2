//! The `hsm-node` command line. Every flag is documented in its `--help`.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use hsm_api::Role;
use hsm_node::audit::{Audit, AuditEvent};
use hsm_node::domain::Domain;
use hsm_node::layout::NodeDir;
use hsm_node::offline::{self, Offline, TlsSource};
use hsm_node::pki::{Ca, CertKind};
use hsm_node::service::Node;
use hsm_node::store::{Store, StoreError};
use hsm_node::{audit, metrics, server, tls};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// A software network HSM: partitions, roles, keys encrypted at rest, the
/// Key Vault keys REST dialect over mutual TLS.
#[derive(Parser)]
#[command(name = "hsm-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Development PKI: a CA and the certificates it issues.
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Create a node directory: settings, master key, TLS identity, database.
    /// On a zeroized node: a new master key and an empty database, keeping
    /// settings and TLS identity.
    Init(InitArgs),
    /// Serve the node in DIR until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Manage partitions of a stopped node.
    #[command(subcommand)]
    Partition(PartitionCmd),
    /// Destroy the master key and every partition's keys irreversibly (a
    /// stopped node; a running one: the admin API or SIGUSR2, the tamper
    /// trigger). Settings, TLS identity and audit trail are kept; the node
    /// refuses key requests until `hsm-node init --dir DIR` again.
    Zeroize {
        /// The node directory.
        #[arg(long)]
        dir: PathBuf,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// The audit log in DIR/audit (see docs/AUDIT.md).
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every record's MAC and the chain across rotated files: prints
    /// one OK line, or each edited, missing, reordered or relinked record
    /// (file:line, seq) and exits non-zero. Works on a running node too
    /// (its last line may then show as incomplete).
    Verify {
        /// The node directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create a CA (ca.pem, ca.key) in DIR.
    InitCa {
        /// Directory for the CA files; created if missing.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "hsm-ha development CA")]
        cn: String,
    },
    /// Issue a client or server certificate (NAME.pem, NAME.key) from the CA in DIR.
    Issue {
        /// The CA's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Certificate name: its common name and its file names.
        #[arg(long)]
        name: String,
        /// Issue a server certificate (default: client).
        #[arg(long)]
        server: bool,
        /// DNS names or IP addresses of a server certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Where to write the files (default: the CA's directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct InitArgs {
    /// The node directory to create (must not hold a node yet).
    #[arg(long)]
    dir: PathBuf,
    /// Address the node will listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Issue the server certificate from the CA in this directory (see `pki init-ca`)
    /// and accept client certificates from that CA.
    #[arg(long, conflicts_with_all = ["server_cert", "server_key", "client_ca"])]
    pki: Option<PathBuf>,
    /// Names for the issued server certificate (repeatable; default localhost and 127.0.0.1).
    #[arg(long = "san", requires = "pki")]
    sans: Vec<String>,
    /// Use this server certificate chain (PEM) instead of issuing one.
    #[arg(long, requires_all = ["server_key", "client_ca"])]
    server_cert: Option<PathBuf>,
    /// The private key (PEM) of --server-cert.
    #[arg(long)]
    server_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) whose client certificates may connect.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Password of the node administrator, enabling the admin API
    /// (`/admin/login`, `/admin/zeroize`). Without it the admin API is off.
    #[arg(long, env = "HSM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Keep this node's keys in a PKCS#11 token: the vendor's module (a
    /// shared library). Needs --token-label or --token-serial; the PIN is
    /// read from --pin-file or the systemd credential `token-pin`, never
    /// a flag. Written to node.json `token` (docs/MEMBERS.md).
    #[arg(long)]
    pkcs11_module: Option<PathBuf>,
    /// The token, by its label (with --pkcs11-module).
    #[arg(long, requires = "pkcs11_module", conflicts_with = "token_serial")]
    token_label: Option<String>,
    /// The token, by its serial number (with --pkcs11-module).
    #[arg(long, requires = "pkcs11_module")]
    token_serial: Option<String>,
    /// File holding the token user's PIN (with --pkcs11-module; default
    /// the systemd credential `token-pin`).
    #[arg(long, requires = "pkcs11_module")]
    pin_file: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The node directory.
    #[arg(long)]
    dir: PathBuf,
    /// Override `listen` from node.json (port 0 picks a free port; the
    /// address bound is written to DIR/listen.addr).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `metrics_listen` from node.json: plain HTTP /health and /metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum PartitionCmd {
    /// Create a partition with its three role passwords and cloning domain.
    Create {
        #[command(flatten)]
        at: PartitionAt,
        /// Partition security officer password.
        #[arg(long, env = "HSM_SO_PASSWORD", hide_env_values = true)]
        so_password: String,
        /// Crypto officer password.
        #[arg(long, env = "HSM_CO_PASSWORD", hide_env_values = true)]
        co_password: String,
        /// Crypto user password.
        #[arg(long, env = "HSM_CU_PASSWORD", hide_env_values = true)]
        cu_password: String,
        /// Password of the optional replication credential (inventory and
        /// clone blobs only), for the proxy's background work.
        #[arg(long, env = "HSM_REPLICATION_PASSWORD", hide_env_values = true)]
        replication_password: Option<String>,
        /// Cloning-domain secret file shared by the members of one group;
        /// created (random, mode 0600) if it does not exist. Without it the
        /// partition gets a domain of its own.
        #[arg(long)]
        domain_file: Option<PathBuf>,
    },
    /// List partitions with their key counts and registered clients.
    List {
        /// The node directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Delete a partition and every key in it, irreversibly.
    Delete {
        #[command(flatten)]
        at: PartitionAt,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Set a role's password (and clear its lockout).
    Passwd {
        #[command(flatten)]
        at: PartitionAt,
        /// security-officer, crypto-officer, crypto-user or replication.
        #[arg(long)]
        role: Role,
        /// The new password.
        #[arg(long, env = "HSM_NEW_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Allow a client certificate to use the partition.
    RegisterClient {
        #[command(flatten)]
        at: PartitionAt,
        /// The client's certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// A label for listings (default: the file name).
        #[arg(long)]
        label: Option<String>,
    },
    /// Write every key object of a partition (with deleted keys and
    /// tombstones) to a file sealed for its cloning domain.
    Backup {
        #[command(flatten)]
        at: PartitionAt,
        /// The backup file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a partition backup into an empty partition of a node of the
    /// same cloning domain; all or nothing.
    Restore {
        #[command(flatten)]
        at: PartitionAt,
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Withdraw a client registration, by fingerprint or label.
    UnregisterClient {
        #[command(flatten)]
        at: PartitionAt,
        /// Fingerprint or label of the client.
        #[arg(long)]
        client: String,
    },
}

#[derive(Args)]
struct PartitionAt {
    /// The node directory (the node must be stopped).
    #[arg(long)]
    dir: PathBuf,
    /// The partition's name.
    #[arg(long)]
    name: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsm-node: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Records an administrative change in the node's audit trail (a stopped
/// node: the running one would hold the log).
fn audit_admin(dir: &std::path::Path, ev: AuditEvent) -> Result<(), String> {
    let nd = NodeDir::new(dir);
    let settings = nd.load_settings().map_err(|e| e.to_string())?;
    let audit = Audit::open(dir, &settings.audit, &settings.node_id).map_err(|e| e.to_string())?;
    audit.record(ev.role("admin-cli"));
    audit.flush();
    Ok(())
}

fn offline(dir: &std::path::Path) -> Result<Offline, String> {
    Offline::open(dir).map_err(|e| match e {
        offline::OfflineError::Store(StoreError::InUse) => format!(
            "the node in {} is running; stop it first (partition commands work on a stopped node)",
            dir.display()
        ),
        other => other.to_string(),
    })
}

fn run(cli: Cli) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    match cli.cmd {
        Cmd::Pki(PkiCmd::InitCa { dir, cn }) => {
            Ca::create(&dir, &cn).map_err(|e| s(&e))?;
            eprintln!("CA created: {}", Ca::cert_path(&dir).display());
        }
        Cmd::Pki(PkiCmd::Issue {
            dir,
            name,
            server,
            sans,
            days,
            out,
        }) => {
            let ca = Ca::load(&dir).map_err(|e| s(&e))?;
            let kind = if server {
                CertKind::Server
            } else {
                CertKind::Client
            };
            let (c, k) = ca
                .issue(out.as_deref().unwrap_or(&dir), &name, kind, &sans, days)
                .map_err(|e| s(&e))?;
            eprintln!("issued {} and {}", c.display(), k.display());
        }
        Cmd::Init(a) => {
            let nd = NodeDir::new(&a.dir);
            if hsm_node::zeroization::marker(&nd).is_some() {
                offline::reinit(&nd, a.admin_password.as_deref()).map_err(|e| s(&e))?;
                audit_admin(
                    &a.dir,
                    AuditEvent::new("node.init", "ok").detail("re-initialised after zeroization"),
                )?;
                eprintln!(
                    "zeroized node in {} initialised again: new master key, empty database",
                    a.dir.display()
                );
                return Ok(());
            }
            let tls = match (a.pki, a.server_cert, a.server_key, a.client_ca) {
                (Some(dir), None, None, None) => {
                    let sans = if a.sans.is_empty() {
                        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
                    } else {
                        a.sans
                    };
                    TlsSource::Ca { dir, sans }
                }
                (None, Some(cert), Some(key), Some(client_ca)) => TlsSource::Files {
                    cert,
                    key,
                    client_ca,
                },
                _ => {
                    return Err(
                        "give either --pki DIR, or --server-cert, --server-key and --client-ca"
                            .into(),
                    )
                }
            };
            let token = a
                .pkcs11_module
                .map(|module| hsm_node::layout::TokenSettings {
                    module,
                    token_label: a.token_label,
                    token_serial: a.token_serial,
                    pin_file: a.pin_file,
                    sessions: hsm_node::keystore::token::DEFAULT_SESSIONS,
                    call_timeout_ms: hsm_node::keystore::token::DEFAULT_CALL_TIMEOUT.as_millis()
                        as u64,
                    keygen_timeout_ms: hsm_node::keystore::token::DEFAULT_KEYGEN_TIMEOUT.as_millis()
                        as u64,
                    exclusive_writes: None,
                    wrap_with_trusted: false,
                });
            let settings = offline::init(&a.dir, a.listen, tls, a.admin_password.as_deref(), token)
                .map_err(|e| s(&e))?;
            eprintln!(
                "node {} initialised in {}",
                settings.node_id,
                a.dir.display()
            );
        }
        Cmd::Zeroize { dir, yes } => {
            if !yes {
                return Err("zeroize destroys the master key and every key of every partition, irreversibly; add --yes".into());
            }
            let nd = NodeDir::new(&dir);
            nd.load_settings().map_err(|e| s(&e))?;
            if let Some(m) = hsm_node::zeroization::marker(&nd) {
                return Err(format!(
                    "the node in {} is already zeroized ({})",
                    dir.display(),
                    m.reason
                ));
            }
            // Refuse while the node runs: it holds the keys in memory.
            let settings = offline(&dir)?.settings;
            // A token member's keys are in its token: destroyed there too.
            if let Some(t) = &settings.token {
                let keys = hsm_node::keystore::open(Some(t)).map_err(|e| {
                    format!(
                        "the token in node.json could not be opened, nothing was destroyed: {e}"
                    )
                })?;
                let n = keys.destroy_all_blocking().map_err(|e| s(&e))?;
                eprintln!("{n} token objects destroyed");
                audit_admin(
                    &dir,
                    AuditEvent::new("zeroize.token", "ok")
                        .detail(format!("{n} token objects destroyed")),
                )?;
            }
            let m = hsm_node::zeroization::destroy(&nd, "command").map_err(|e| s(&e))?;
            eprintln!("node in {} zeroized at {}", dir.display(), m.time);
            audit_admin(&dir, AuditEvent::new("zeroize", "ok").detail("command"))?;
        }
        Cmd::Run(a) => return serve(a),
        Cmd::Partition(p) => partition(p)?,
        Cmd::Audit(AuditCmd::Verify { dir }) => {
            let report = audit::verify(&dir).map_err(|e| s(&e))?;
            if !report.is_ok() {
                let mut text = report.to_string();
                for p in &report.problems {
                    text.push_str(&format!("\n  {p}"));
                }
                return Err(text);
            }
            // The result line of `audit verify`.
            println!("{report}");
        }
    }
    Ok(())
}

fn partition(cmd: PartitionCmd) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    match cmd {
        PartitionCmd::Create {
            at,
            so_password,
            co_password,
            cu_password,
            replication_password,
            domain_file,
        } => {
            let node = offline(&at.dir)?;
            let domain = match &domain_file {
                Some(f) => {
                    let (d, created) = Domain::load_or_create(f)?;
                    if created {
                        eprintln!("new cloning domain written to {}", f.display());
                    }
                    d
                }
                None => Domain::generate()?,
            };
            let mut pw = BTreeMap::from([
                (Role::SecurityOfficer, so_password),
                (Role::CryptoOfficer, co_password),
                (Role::CryptoUser, cu_password),
            ]);
            if let Some(r) = replication_password {
                pw.insert(Role::Replication, r);
            }
            node.create_partition(&at.name, &pw, &domain)
                .map_err(|e| s(&e))?;
            eprintln!(
                "partition {} created (cloning domain {})",
                at.name,
                domain.id()
            );
            audit_admin(
                &at.dir,
                AuditEvent::new("partition.create", "ok")
                    .partition(&at.name)
                    .detail(format!("cloning domain {}", domain.id())),
            )?;
        }
        PartitionCmd::List { dir } => {
            let node = offline(&dir)?;
            let counts = node.store.live_key_counts().map_err(|e| s(&e))?;
            for p in node.store.partitions().map_err(|e| s(&e))? {
                let clients: Vec<String> = p
                    .clients
                    .iter()
                    .map(|(fp, c)| format!("{}={}", c.label, &fp[..16]))
                    .collect();
                // The one place this binary writes to stdout: a listing.
                println!(
                    "{}\tkeys={}\tclients=[{}]",
                    p.name,
                    counts.get(&p.name).copied().unwrap_or(0),
                    clients.join(",")
                );
            }
        }
        PartitionCmd::Delete { at, yes } => {
            if !yes {
                return Err(format!(
                    "deleting partition {} destroys its keys; add --yes to confirm",
                    at.name
                ));
            }
            offline(&at.dir)?
                .delete_partition(&at.name)
                .map_err(|e| s(&e))?;
            eprintln!("partition {} deleted", at.name);
            audit_admin(
                &at.dir,
                AuditEvent::new("partition.delete", "ok").partition(&at.name),
            )?;
        }
        PartitionCmd::Passwd { at, role, password } => {
            offline(&at.dir)?
                .set_password(&at.name, role, &password)
                .map_err(|e| s(&e))?;
            eprintln!("password of {role} in {} changed", at.name);
            audit_admin(
                &at.dir,
                AuditEvent::new("role.password", "ok")
                    .partition(&at.name)
                    .detail(role.as_str()),
            )?;
        }
        PartitionCmd::RegisterClient { at, cert, label } => {
            let label = label.unwrap_or_else(|| {
                cert.file_stem()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            let fp = offline(&at.dir)?
                .register_client(&at.name, &cert, &label)
                .map_err(|e| s(&e))?;
            eprintln!("client {label} ({fp}) registered to {}", at.name);
            audit_admin(
                &at.dir,
                AuditEvent::new("client.register", "ok")
                    .partition(&at.name)
                    .client(&fp[..16])
                    .detail(label),
            )?;
        }
        PartitionCmd::Backup { at, out } => {
            let n = offline(&at.dir)?
                .backup_partition(&at.name, &out)
                .map_err(|e| s(&e))?;
            eprintln!("{n} objects of {} written to {}", at.name, out.display());
            audit_admin(
                &at.dir,
                AuditEvent::new("partition.backup", "ok")
                    .partition(&at.name)
                    .detail(format!("{n} objects")),
            )?;
        }
        PartitionCmd::Restore { at, input } => {
            let n = offline(&at.dir)?
                .restore_partition(&at.name, &input)
                .map_err(|e| s(&e))?;
            eprintln!("{n} objects restored into {}", at.name);
            audit_admin(
                &at.dir,
                AuditEvent::new("partition.restore", "ok")
                    .partition(&at.name)
                    .detail(format!("{n} objects")),
            )?;
        }
        PartitionCmd::UnregisterClient { at, client } => {
            offline(&at.dir)?
                .unregister_client(&at.name, &client)
                .map_err(|e| s(&e))?;
            eprintln!("client {client} unregistered from {}", at.name);
            audit_admin(
                &at.dir,
                AuditEvent::new("client.unregister", "ok")
                    .partition(&at.name)
                    .detail(client),
            )?;
        }
    }
    Ok(())
}

fn serve(a: RunArgs) -> Result<(), String> {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            // cryptoki logs an ERROR for every vendor mechanism it has no
            // name for when the node reads a token's mechanism list: noise,
            // not a fault, so off unless RUST_LOG asks for it.
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,cryptoki::mechanism=off")
            }),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald, files and collectors get
        // plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match a.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let nd = NodeDir::new(&a.dir);
    let mut settings = nd.load_settings().map_err(|e| e.to_string())?;
    if let Some(l) = a.listen {
        settings.listen = l;
    }
    if let Some(m) = a.metrics_listen {
        settings.metrics_listen = Some(m);
    }
    // A zeroized node has no master key; it starts and refuses key requests.
    let master = match hsm_node::zeroization::marker(&nd) {
        Some(_) => None,
        None => Some(nd.load_master_key().map_err(|e| e.to_string())?),
    };
    let store = Store::open(&nd.database()).map_err(|e| match e {
        StoreError::InUse => format!("the node in {} is already running", a.dir.display()),
        other => other.to_string(),
    })?;
    let tls = tls::server_config(&nd).map_err(|e| e.to_string())?;
    // A token member logs in to its token once, here: a refused PIN ends
    // the process with the reason and is never tried again. A zeroized
    // node holds nothing and opens no token.
    let keys = match (&master, &settings.token) {
        (Some(_), Some(t)) => hsm_node::keystore::open(Some(t))
            .map_err(|e| format!("the token in node.json could not be opened: {e}"))?,
        _ => hsm_node::keystore::KeyStore::Software,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let listener = server::bind(settings.listen)
            .await
            .map_err(|e| e.to_string())?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        settings.listen = bound;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => Some(server::bind(addr).await.map_err(|e| e.to_string())?),
            None => None,
        };
        metrics::install()?;
        let audit =
            Audit::open(&nd.root, &settings.audit, &settings.node_id).map_err(|e| e.to_string())?;
        audit.record(AuditEvent::new("node.start", "ok").detail(format!("listening on {bound}")));
        if let Some(t) = keys.token() {
            audit.record(AuditEvent::new("token.login", "ok").detail(t.describe().to_string()));
        }
        let node = Arc::new(Node::new(
            settings,
            nd.clone(),
            Arc::new(store),
            keys,
            master.as_deref(),
            Some(audit.clone()),
        )?);
        drop(master);
        if let Err(e) = node.install_domain_keys().await {
            audit.record(AuditEvent::new("token.domain_key", "error").detail(e.clone()));
            audit.flush();
            return Err(format!(
                "installing the domain wrapping keys in the token: {e}"
            ));
        }
        let addr_file = nd.root.join("listen.addr");
        hsm_server::private_fs::write_atomic(&addr_file, bound.to_string().as_bytes())
            .map_err(|e| format!("{}: {e}", addr_file.display()))?;
        tracing::info!(node = %node.settings.node_id, addr = %bound, "hsm-node listening");
        server::serve(node, listener, tls, metrics_listener).await;
        audit.record(AuditEvent::new("node.stop", "ok"));
        audit.flush();
        let _ = std::fs::remove_file(&addr_file);
        Ok::<(), String>(())
    })
}
