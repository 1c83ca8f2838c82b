//! `fhirsync auth ...`: SMART standalone launch (`login`, `status`) and a backend-services
//! check (`test`). The logic lives in `fhirsync-auth`; this module only lays the flags over the
//! `[connection]` section, builds [`AuthSettings`] on it and prints results (never a token,
//! secret or code).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use fhirsync::core::ConnectionConfig;
use fhirsync_auth::launch::DEFAULT_LOGIN_TIMEOUT;
use fhirsync_auth::{
    AuthSettings, AuthStatus, DEFAULT_TOKEN_STORE, KeySource, LoopbackListener, PendingLogin, TokenState,
    TokenStore, http_client, is_loopback, parse_pasted,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::Failure;
use super::keys::local_error;
use crate::Globals;
use fhirsync::Config as FileConfig;

/// Connection flags shared by the subcommands. Each overrides the `[connection]` setting of the
/// configuration file; without a configuration file `--fhir-base` and `--client-id` are required.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// FHIR base URL (e.g. https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4).
    #[arg(long)]
    fhir_base: Option<Url>,
    /// Epic client id of the app.
    #[arg(long)]
    client_id: Option<String>,
    /// Auth Base URI (the authorize URL without `/authorize`); skips discovery.
    #[arg(long)]
    auth_base_uri: Option<Url>,
    /// Scopes to request (space-separated).
    #[arg(long)]
    scope: Option<String>,
}

/// Subcommands of `fhirsync auth`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Standalone launch: open the authorize URL, capture or paste the code, store the tokens.
    Login(Box<LoginArgs>),
    /// Show Verified / renewing soon / expired / refresh refused / Not authenticated for a token
    /// store (never the tokens).
    Status {
        /// Token store file (default: `[connection] token_store`, else .fhirsync-tokens.json).
        #[arg(long)]
        token_store: Option<PathBuf>,
    },
    /// Backend services: obtain a token with the private key and print granted scopes and expiry.
    Test(Box<TestArgs>),
}

/// Flags of `fhirsync auth login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    connection: Connection,
    /// Environment variable holding the client secret (default: `[connection] client_secret`,
    /// else FHIRSYNC_CLIENT_SECRET; a public client has none).
    #[arg(long)]
    client_secret_env: Option<String>,
    /// Redirect URI registered for the app; an http loopback URI is listened on directly.
    #[arg(long)]
    redirect_uri: Option<Url>,
    /// `aud` of the authorize request, a URL (default: `[connection] audience`, else the FHIR
    /// base).
    #[arg(long)]
    aud: Option<Url>,
    /// Token store file, written with mode 0600 (default: `[connection] token_store`).
    #[arg(long)]
    token_store: Option<PathBuf>,
    /// Seconds to wait for the loopback redirect.
    #[arg(long, default_value_t = DEFAULT_LOGIN_TIMEOUT.as_secs())]
    timeout: u64,
}

/// Flags of `fhirsync auth test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    connection: Connection,
    /// Private key: a PEM file, or `env:VAR` for a variable holding the PEM (default:
    /// `[connection] private_key`).
    #[arg(long)]
    private_key: Option<String>,
    /// Key id (default: `[connection] key_id`, else the RFC 7638 thumbprint of the key).
    #[arg(long)]
    kid: Option<String>,
}

/// The `[connection]` section of the configuration file (if it exists) with the flags applied
/// on top; without a file, the flags alone.
fn connection(flags: Connection, globals: &Globals) -> anyhow::Result<ConnectionConfig> {
    let mut c = if globals.config.exists() {
        FileConfig::load(&globals.config)?.connection
    } else if flags.client_id.is_some() && flags.fhir_base.is_some() {
        ConnectionConfig::default()
    } else {
        return Err(Failure::config(format!(
            "no configuration file {} and no --client-id/--fhir-base: pass both flags or write a \
             [connection] table (see the README)",
            globals.config.display()
        )));
    };
    let Connection { fhir_base, client_id, auth_base_uri, scope } = flags;
    // The FHIR base authentication uses is the R4 endpoint when one is set.
    set(&mut c.fhir_r4_endpoint, fhir_base);
    set(&mut c.client_id, client_id);
    set(&mut c.auth_base_uri, auth_base_uri);
    set(&mut c.scope, scope);
    Ok(c)
}

/// Replaces a setting by the flag given for it.
fn set<T>(setting: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *setting = flag;
    }
}

fn local_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Runs the command.
pub async fn run(command: Command, globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Login(args) => {
            let LoginArgs { connection: flags, client_secret_env, redirect_uri, aud, token_store, timeout } =
                *args;
            let mut c = connection(flags, globals)?;
            set(&mut c.redirect_uri, redirect_uri);
            set(&mut c.audience, aud);
            set(&mut c.token_store, token_store);
            let mut s = AuthSettings::new(&c).map_err(local_error)?;
            if let Some(var) = client_secret_env {
                s = s.with_client_secret(
                    std::env::var(&var).ok().filter(|v| !v.is_empty()).map(SecretString::from),
                );
            }
            login(&s, Duration::from_secs(timeout)).await
        }
        Command::Status { token_store } => {
            let path = match token_store {
                Some(p) => p,
                None if globals.config.exists() => FileConfig::load(&globals.config)?
                    .connection
                    .token_store
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_STORE)),
                None => PathBuf::from(DEFAULT_TOKEN_STORE),
            };
            status(&TokenStore::new(path))
        }
        Command::Test(args) => {
            let TestArgs { connection: flags, private_key, kid } = *args;
            let mut c = connection(flags, globals)?;
            set(&mut c.private_key, private_key.as_deref().map(KeySource::parse_path));
            set(&mut c.key_id, kid);
            let s = AuthSettings::new(&c).map_err(local_error)?;
            let http = http_client(&c)?;
            let provider = s.backend_services(&http).await.map_err(local_error)?;
            let info = provider.token_info().await?;
            let expires: DateTime<Utc> = info.expires_at.into();
            let left = info.expires_at.duration_since(SystemTime::now()).unwrap_or_default().as_secs();
            println!("Token endpoint: {}", provider.token_url());
            println!("Access token obtained; expires {} (in {left} s).", local_time(expires));
            println!(
                "Granted scopes: {}",
                if info.scopes.is_empty() { "(none listed)".into() } else { info.scopes.join(" ") }
            );
            Ok(())
        }
    }
}

async fn login(s: &AuthSettings<'_>, timeout: Duration) -> anyhow::Result<()> {
    let http = http_client(s.connection())?;
    let pending =
        PendingLogin::new(s.launch_settings(&http).await.map_err(local_error)?).map_err(local_error)?;
    let store = TokenStore::new(s.token_store());
    let tokens = if is_loopback(pending.redirect_uri()) {
        let listener = LoopbackListener::bind(pending.redirect_uri()).await.map_err(local_error)?;
        eprintln!(
            "Open this URL in a browser and sign in (waiting {} s for the redirect):",
            timeout.as_secs()
        );
        println!("{}", pending.authorize_url());
        let redirect = listener.wait(timeout).await?;
        // Exchange first, then tell the browser how it went.
        pending.finish_redirect(&http, redirect, &store).await.map_err(local_error)?
    } else {
        eprintln!("Open this URL in a browser and sign in:");
        println!("{}", pending.authorize_url());
        eprintln!(
            "Then paste the code shown by the redirect page, or the whole redirect URL, and press Enter:"
        );
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await??;
        let line = SecretString::from(line);
        let callback = parse_pasted(line.expose_secret())?;
        pending.finish(&http, callback, &store).await.map_err(local_error)?
    };
    println!(
        "Verified: access token valid until {}; refresh token {}; scopes: {}.",
        local_time(tokens.access_expires_at),
        if tokens.refresh_token.is_some() { "stored" } else { "not issued" },
        tokens.scopes.join(" ")
    );
    println!("Tokens saved to {} (mode 0600).", store.path().display());
    Ok(())
}

/// An authentication failure (exit code 3).
fn auth_failure(message: &str) -> anyhow::Error {
    Failure { code: super::EXIT_AUTH, message: message.to_string() }.into()
}

fn status(store: &TokenStore) -> anyhow::Result<()> {
    let AuthStatus::Stored { state, client_id, access_expires_at, refreshable, scopes } =
        store.status().map_err(local_error)?
    else {
        println!("Not authenticated: no token store at {}.", store.path().display());
        return Err(auth_failure("run `fhirsync auth login` first"));
    };
    let expires = local_time(access_expires_at);
    let refresh = if refreshable { "stored" } else { "none" };
    match &state {
        TokenState::Verified => {
            println!("Verified (client {client_id}): access token valid until {expires}.");
        }
        TokenState::RenewingSoon if refreshable => println!(
            "Renewing soon (client {client_id}): the access token expires at {expires} and is refreshed on \
             next use."
        ),
        TokenState::RenewingSoon => println!(
            "Renewing soon (client {client_id}): the access token expires at {expires} and no refresh \
             token is stored; log in again before then."
        ),
        TokenState::Expired if refreshable => println!(
            "Expired (client {client_id}): the access token expired at {expires}; the stored refresh \
             token renews it on next use."
        ),
        TokenState::Expired => println!(
            "Expired (client {client_id}): the access token expired at {expires} and no refresh token is \
             stored."
        ),
        TokenState::RefreshRefused(refusal) => println!(
            "Refresh refused at {} (login needed) (client {client_id}): {}; the access token {} {expires}.",
            local_time(refusal.at),
            refusal.reason,
            if access_expires_at > Utc::now() { "is usable until" } else { "expired at" },
        ),
    }
    println!("Refresh token: {refresh}.");
    println!("Scopes: {}", scopes.join(" "));
    if state.login_needed(refreshable) {
        return Err(auth_failure("run `fhirsync auth login` again"));
    }
    Ok(())
}
