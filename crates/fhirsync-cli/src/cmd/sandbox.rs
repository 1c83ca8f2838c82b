//! `fhirsync sandbox`: runs the Epic simulator as a standalone server until Ctrl-C.
//!
//! The simulator serves R4, STU3 and DSTU2 bases, SMART discovery and the OAuth endpoints, with
//! deterministic synthetic patients. Fault switches set here stay on for the whole run.
//!
//! With `--replay DIR` it serves a folder of recorded answers instead (`fhirsync sync --record
//! DIR`, or fixtures written by hand): see `fhirsync_sim::replay`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fhirsync_core::FhirVersion;
use fhirsync_sim::fhir::{FhirConfig, Members, RetryAfter};
use fhirsync_sim::oauth::{ClientRegistration, OAuthConfig};
use fhirsync_sim::replay::{self, ReplayServer};
use fhirsync_sim::{Sim, SimConfig};

use super::Failure;
use crate::Globals;

/// Arguments of `fhirsync sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 = any free port).
    #[arg(long, short = 'p', default_value_t = 8080)]
    pub port: u16,
    /// Simulator data settings as TOML (fields of `FhirConfig`: patients, seed, lists, groups,
    /// max_page_size, session_ttl_secs, bulk); the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub sim_config: Option<PathBuf>,
    /// Number of synthetic patients (default 50).
    #[arg(long)]
    pub patients: Option<usize>,
    /// Generator seed: same seed, same data (default 42).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Members of the default patient list `systemlist|6442` and Group: the first N patients
    /// (default: all).
    #[arg(long, value_name = "N")]
    pub cohort: Option<usize>,
    /// Fixed delay before every FHIR answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Answer every Nth FHIR request with 429.
    #[arg(long, value_name = "N")]
    pub throttle_every: Option<u64>,
    /// `Retry-After` seconds on injected 429s.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Send `Retry-After` as an HTTP-date instead of seconds.
    #[arg(long)]
    pub retry_after_http_date: bool,
    /// Answer the first K FHIR requests with `--fail-status`.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub fail_first: u64,
    /// Status of injected server errors.
    #[arg(long, default_value_t = 503)]
    pub fail_status: u16,
    /// Cut the body of the first K FHIR answers half-way (dropped connection).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub drop_first: u64,
    /// Lifetime of paging sessions in seconds (expired → 4113).
    #[arg(long)]
    pub session_ttl_secs: Option<u64>,
    /// Simulate "the source changed since the last run": with this seed, edit, delete and add a
    /// fixed set of records at start-up (same seed, same changes).
    #[arg(long, value_name = "SEED")]
    pub churn_seed: Option<u64>,
    /// Number of patients whose records `--churn-seed` changes.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub churn_patients: usize,
    /// Lifetime of issued access tokens in seconds (short values exercise token refresh).
    #[arg(long)]
    pub token_lifetime_secs: Option<u64>,
    /// Register a client with this id (repeat for several).
    #[arg(long = "client-id", value_name = "ID")]
    pub client_ids: Vec<String>,
    /// JWK Set (JSON file) of the registered clients, for backend-services `client_credentials`.
    #[arg(long, value_name = "FILE")]
    pub jwks: Option<PathBuf>,
    /// Datasets the registered clients are not licensed for (e.g. `Observation:social-history`).
    #[arg(long, value_name = "DATASET")]
    pub unlicensed: Vec<String>,
    /// Approve authorize requests without the sign-in form.
    #[arg(long)]
    pub auto_approve: bool,
    /// Serve the recorded answers in DIR (`fhirsync sync --record DIR`) instead of simulated
    /// data: requests match by method, path and query; unrecorded searches answer Epic's empty
    /// searchset (4101), unrecorded reads 404 (59008); any well-formed credential gets a token.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = [
            "sim_config", "patients", "seed", "cohort", "latency_ms", "throttle_every",
            "retry_after_secs", "retry_after_http_date", "fail_first", "fail_status", "drop_first",
            "session_ttl_secs", "churn_seed", "churn_patients", "token_lifetime_secs", "client_ids",
            "jwks", "unlicensed", "auto_approve",
        ]
    )]
    pub replay: Option<PathBuf>,
}

/// Builds the simulator configuration from the arguments.
fn config(args: &Args) -> anyhow::Result<SimConfig> {
    let mut fhir = match &args.sim_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::config(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str::<FhirConfig>(&text).map_err(|e| {
                Failure::config(format!("{} is not a valid simulator configuration: {e}", path.display()))
            })?
        }
        None => FhirConfig::default(),
    };
    if let Some(n) = args.patients {
        fhir.patients = n;
    }
    if let Some(seed) = args.seed {
        fhir.seed = seed;
    }
    if let Some(ttl) = args.session_ttl_secs {
        fhir.session_ttl_secs = ttl;
    }
    if let Some(n) = args.cohort {
        for list in &mut fhir.lists {
            list.members = Members::First(n);
        }
        for group in &mut fhir.groups {
            group.members = Members::First(n);
        }
    }
    let jwks = match &args.jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::config(format!("cannot read JWKS {}: {e}", path.display())))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| Failure::config(format!("{} is not a JSON JWK Set: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let clients = args
        .client_ids
        .iter()
        .map(|id| ClientRegistration {
            client_id: id.clone(),
            unauthorized_datasets: args.unlicensed.clone(),
            jwks: jwks.clone(),
            ..ClientRegistration::default()
        })
        .collect();
    let mut oauth = OAuthConfig { clients, auto_approve: args.auto_approve, ..OAuthConfig::default() };
    if let Some(secs) = args.token_lifetime_secs {
        oauth.token_lifetime = Duration::from_secs(secs);
    }
    Ok(SimConfig { fhir, oauth })
}

/// Runs the command.
pub async fn run(args: Args, _globals: &Globals) -> anyhow::Result<()> {
    if let Some(dir) = &args.replay {
        return run_replay(dir, SocketAddr::new(args.host, args.port)).await;
    }
    let config = config(&args)?;
    let patients = config.fhir.patients;
    let seed = config.fhir.seed;
    let lists: Vec<u32> = config.fhir.lists.iter().map(|l| l.id).collect();
    let groups: Vec<String> = config.fhir.groups.iter().map(|g| g.id.clone()).collect();
    let addr = SocketAddr::new(args.host, args.port);
    let sim =
        Sim::start_on(addr, config).await.with_context(|| format!("cannot start the simulator on {addr}"))?;
    let faults = &sim.state().fhir.faults;
    faults.set_latency(Duration::from_millis(args.latency_ms));
    let retry_after = if args.retry_after_http_date {
        RetryAfter::HttpDate(args.retry_after_secs)
    } else {
        RetryAfter::Seconds(args.retry_after_secs)
    };
    if let Some(n) = args.throttle_every {
        faults.throttle_every(n, retry_after);
    }
    if args.fail_first > 0 {
        faults.fail_next(args.fail_first, args.fail_status);
    }
    if args.drop_first > 0 {
        faults.drop_next(args.drop_first);
    }

    let churn = match args.churn_seed {
        Some(seed) => Some(
            sim.state().fhir.churn(seed, args.churn_patients).context("cannot apply the churn scenario")?,
        ),
        None => None,
    };

    println!("Epic simulator listening on {}", sim.base_url());
    for version in FhirVersion::ALL {
        println!("  FHIR {:<5} {}", version.as_str(), sim.fhir_base(version));
    }
    println!("  token      {}", sim.token_url());
    println!("  authorize  {}", sim.state().authorize_url());
    println!("  patients   {patients} (seed {seed}), first: {}", sim.state().fhir.patient_id(0));
    for id in &lists {
        println!("  list       STU3 List?code=patientlist&identifier=systemlist|{id}");
    }
    for id in &groups {
        println!("  group      R4 Group/{id}/$export");
    }
    if let Some(c) = &churn {
        println!(
            "  churn      {} edited, {} deleted, {} added (seed {})",
            c.edited.len(),
            c.deleted.len(),
            c.added.len(),
            args.churn_seed.unwrap_or_default()
        );
    }
    println!("Press Ctrl-C to stop.");
    tracing::info!(patients, seed, "Simulator started.");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    tracing::info!(requests = sim.state().fhir.faults.requests(), "Simulator stopped.");
    Ok(())
}

/// `--replay DIR`: serves the folder until Ctrl-C.
async fn run_replay(dir: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    let server = ReplayServer::start_on(addr, dir).await.map_err(|e| match e {
        replay::Error::Bind { .. } => anyhow::Error::new(e),
        other => Failure::config(other.to_string()),
    })?;
    println!("Replay server listening on {}", server.base_url());
    println!(
        "  folder     {} ({} answers to {} distinct requests)",
        dir.display(),
        server.answers(),
        server.requests()
    );
    for base in server.fhir_bases() {
        println!("  FHIR       {base}");
    }
    println!("  token      {} (any well-formed client assertion or secret)", server.token_url());
    println!("Unrecorded searches answer Epic's empty searchset (4101), unrecorded reads 404 (59008).");
    println!("Press Ctrl-C to stop.");
    tracing::info!(answers = server.answers(), "Replay server started.");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    tracing::info!(served = server.served(), unmatched = server.unmatched(), "Replay server stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Flags override the defaults and the cohort narrows the default list and group.
    #[test]
    fn flags_build_the_config() {
        let cli = Cli::parse_from([
            "x",
            "--patients",
            "1000",
            "--seed",
            "7",
            "--cohort",
            "10",
            "--client-id",
            "c1",
        ]);
        let config = config(&cli.args).unwrap();
        assert_eq!(config.fhir.patients, 1000);
        assert_eq!(config.fhir.seed, 7);
        assert_eq!(config.fhir.lists[0].members, Members::First(10));
        assert_eq!(config.oauth.clients[0].client_id, "c1");
    }

    /// A simulator TOML file configures lists and groups; unknown keys are rejected.
    #[test]
    fn toml_config() {
        let text = r#"
patients = 500
[[lists]]
id = 5332
title = "Oncology"
members = { indices = [1, 2, 3] }
[[groups]]
id = "g1"
name = "Registry"
members = { first = 100 }
"#;
        let fhir: FhirConfig = toml::from_str(text).unwrap();
        assert_eq!(fhir.patients, 500);
        assert_eq!(fhir.lists[0].members, Members::Indices(vec![1, 2, 3]));
        assert_eq!(fhir.groups[0].members, Members::First(100));
        assert!(toml::from_str::<FhirConfig>("patient = 5").is_err());
    }

    /// `--replay` cannot be combined with the simulator's data flags.
    #[test]
    fn replay_excludes_simulator_flags() {
        let cli = Cli::try_parse_from(["x", "--replay", "dir", "--port", "0"]).unwrap();
        assert_eq!(cli.args.replay.as_deref(), Some(std::path::Path::new("dir")));
        let err = Cli::try_parse_from(["x", "--replay", "dir", "--patients", "5"]).unwrap_err();
        assert!(err.to_string().contains("--patients"), "{err}");
    }
}
