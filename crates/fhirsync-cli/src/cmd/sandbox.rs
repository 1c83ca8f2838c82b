//! `fhirsync sandbox`: runs the Epic simulator as a standalone server until Ctrl-C
//! ([`fhirsync::sandbox::Options`]), or serves a folder of recorded answers (`--replay DIR`,
//! see `fhirsync_sim::replay`).

use std::net::SocketAddr;

use anyhow::Context;
use fhirsync::core::FhirVersion;
use fhirsync::sim::replay::{self, ReplayServer};

use super::Failure;
use crate::Globals;

/// Arguments of `fhirsync sandbox`.
pub type Args = fhirsync::sandbox::Options;

/// Runs the command.
pub async fn run(args: Args, _globals: &Globals) -> anyhow::Result<()> {
    if let Some(dir) = &args.replay {
        return run_replay(dir, SocketAddr::new(args.host, args.port)).await;
    }
    let started = args.start().await?;
    let sim = &started.sim;
    let fhir = &sim.state().fhir;
    println!("Epic simulator listening on {}", sim.base_url());
    for version in FhirVersion::ALL {
        println!("  FHIR {:<5} {}", version.as_str(), sim.fhir_base(version));
    }
    println!("  token      {}", sim.token_url());
    println!("  authorize  {}", sim.state().authorize_url());
    let (patients, seed) = (started.fhir.patients, started.fhir.seed);
    println!("  patients   {patients} (seed {seed}), first: {}", fhir.patient_id(0));
    for list in &started.fhir.lists {
        println!("  list       STU3 List?code=patientlist&identifier=systemlist|{}", list.id);
    }
    for group in &started.fhir.groups {
        println!("  group      R4 Group/{}/$export", group.id);
    }
    if let Some(c) = &started.churn {
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
    tracing::info!(requests = fhir.faults.requests(), "Simulator stopped.");
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
