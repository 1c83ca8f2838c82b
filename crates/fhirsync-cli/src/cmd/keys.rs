//! `fhirsync keys ...`: key pairs and the public JWK Set for SMART Backend Services.
//!
//! Epic requires backend apps to publish their public keys at a JWK Set URL (JKU): generate a
//! key, host the printed JWKS (or run `keys serve` behind TLS), register the URL on the app.

use std::net::SocketAddr;
use std::path::PathBuf;

use fhirsync_auth::keys::{JWKS_PATH, serve_jwks};
use fhirsync_auth::{KeySource, KeyType, SigningKey, generate_private_key, write_private_key};
use tracing::info;

use super::Failure;
use crate::Globals;

/// Default RSA key size.
const DEFAULT_RSA_BITS: usize = 2048;
/// Default address of `keys serve`.
const DEFAULT_SERVE_ADDR: &str = "127.0.0.1:8089";

/// Subcommands of `fhirsync keys`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate a private key (file mode 0600) and print its public JWK Set.
    Generate {
        /// Where to write the private key (PEM, PKCS#8).
        #[arg(long)]
        out: PathBuf,
        /// Generate an EC P-384 key (ES384; Epic accepts EC keys only from a JWK Set URL) instead of RSA.
        #[arg(long)]
        ec: bool,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = DEFAULT_RSA_BITS, conflicts_with = "ec")]
        bits: usize,
        /// Key id to publish (default: RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Print the public JWK Set of an existing private key.
    Jwks {
        /// Private key: a PEM file, or `env:VAR` for a variable holding the PEM.
        #[arg(long)]
        key: String,
        /// Key id to publish (default: RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Serve the public JWK Set at /.well-known/jwks.json (put TLS in front for Epic).
    Serve {
        /// Private key: a PEM file, or `env:VAR` for a variable holding the PEM.
        #[arg(long)]
        key: String,
        /// Key id to publish (default: RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
        /// Listen address.
        #[arg(long, default_value = DEFAULT_SERVE_ADDR)]
        addr: SocketAddr,
    },
}

/// Maps auth errors about local input to configuration failures (exit code 2).
pub(crate) fn local_error(err: fhirsync_auth::Error) -> anyhow::Error {
    if err.is_config() { Failure::config(err.to_string()) } else { err.into() }
}

/// Prints the public JWK Set on stdout (a closed pipe is an error, not a panic).
fn print_jwks(key: &SigningKey) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&key.jwks())?)?;
    Ok(())
}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Generate { out, ec, bits, kid, force } => {
            let kind = if ec { KeyType::EcP384 } else { KeyType::Rsa(bits) };
            let pem = generate_private_key(kind).map_err(local_error)?;
            let key = SigningKey::from_pem(&pem, &out.display().to_string(), kid).map_err(local_error)?;
            write_private_key(&out, &pem, force).map_err(local_error)?;
            info!(path = %out.display(), kid = %key.kid(), alg = ?key.alg(), "Private key written (mode 0600).");
            print_jwks(&key)
        }
        Command::Jwks { key, kid } => {
            let key = SigningKey::load(&KeySource::parse_path(&key), kid).map_err(local_error)?;
            print_jwks(&key)
        }
        Command::Serve { key, kid, addr } => {
            let key = SigningKey::load(&KeySource::parse_path(&key), kid).map_err(local_error)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::config(format!("cannot listen on {addr}: {e}")))?;
            let bound = listener.local_addr()?;
            info!(url = %format!("http://{bound}{JWKS_PATH}"), kid = %key.kid(), "Serving the JWK Set; Ctrl-C stops.");
            serve_jwks(listener, key.jwks(), async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
    }
}
