//! The `hsm-proxy` command line. Every flag is documented in its `--help`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The hsm-ha sidecar: one virtual HSM partition over up to 16 members,
/// in the Azure Key Vault keys REST dialect.
#[derive(Parser)]
#[command(name = "hsm-proxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the group described by a configuration file (TOML or YAML; see
    /// docs/CONFIG.md) until SIGTERM or SIGINT.
    Run {
        /// The configuration file. `HSM_PROXY__…` variables override keys.
        #[arg(long)]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Once listening, write the bound application and metrics
        /// addresses to this file, one per line (for supervisors and tests
        /// when the configuration asks for port 0).
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Print the effective configuration (every default filled in) or every
    /// error with its key and fix; exit 1 when invalid.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// A local group for development: a PKI, N software members sharing a
    /// cloning domain (hsm-node processes) and the proxy in front. Writes
    /// DIR/dev.json; started again on the same DIR it brings back the same
    /// group with its keys.
    Dev {
        /// Where the group lives.
        #[arg(long, default_value = "hsm-dev")]
        dir: PathBuf,
        /// Members to create (first start only).
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// The proxy's address, a loopback one (first start only; port 0
        /// picks a free port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Keep every member's keys in a PKCS#11 token of this module (first
        /// start only). Without --token-labels, dev makes one SoftHSM2 token
        /// per member in the dev directory, each with its own SOFTHSM2_CONF
        /// (needs softhsm2-util); see docs/MEMBERS.md.
        #[arg(long)]
        pkcs11_module: Option<PathBuf>,
        /// Existing tokens of --pkcs11-module, one label per member, comma
        /// separated (first start only).
        #[arg(long, requires = "pkcs11_module", value_delimiter = ',')]
        token_labels: Option<Vec<String>>,
        /// The file holding the user PIN of the --token-labels tokens.
        #[arg(long, requires = "token_labels")]
        token_pin_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn logging(format: LogFormat) {
    let s = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald, files and collectors get
        // plain `key=value` text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => s.json().init(),
        LogFormat::Text => s.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::CheckConfig { file } => {
            let r = ha_config::check_config(&file);
            if r.exit_code == 0 {
                print!("{}", r.text);
                return ExitCode::SUCCESS;
            }
            eprint!("{}", r.text);
            return ExitCode::FAILURE;
        }
        Cmd::Run {
            config,
            log_format,
            addr_file,
        } => {
            logging(log_format);
            run(config, addr_file)
        }
        Cmd::Dev {
            dir,
            members,
            listen,
            pkcs11_module,
            token_labels,
            token_pin_file,
        } => {
            logging(LogFormat::Text);
            let token = pkcs11_module.map(|module| hsm_proxy::dev::TokenRequest {
                module,
                labels: token_labels,
                pin_file: token_pin_file,
            });
            hsm_proxy::dev::run(&dir, members, listen, token.as_ref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsm-proxy: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf, addr_file: Option<PathBuf>) -> Result<(), String> {
    let cfg =
        ha_config::Config::load(&config).map_err(|e| format!("{}:\n{e}", config.display()))?;
    for w in cfg.warnings() {
        tracing::warn!(warning = %w, "configuration");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        hsm_proxy::metrics::install()?;
        hsm_proxy::run::serve(&cfg, Some(&config), hsm_server::shutdown_signal(), |app, metrics| {
            if let Some(f) = &addr_file {
                let text = format!("{app}\n{}\n", metrics.map(|m| m.to_string()).unwrap_or_default());
                if let Err(e) = hsm_server::private_fs::write_atomic(f, text.as_bytes()) {
                    tracing::error!(file = %f.display(), error = %e, "cannot write the address file");
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
    })
}
