//! Whole extractions through an outage and against the daily budget (simulator switches,
//! scaled-down time).

use std::time::{Duration, Instant};

use fhirsync_extract::{Error, ExtractConfig, Extraction};
use fhirsync_sim::fhir::BulkConfig;

use crate::sim::{client, config, connection, start};
use crate::stub::drain;

/// Fast probes and a short give-up time for tests.
fn outage_config(datasets: &[&str], max_outage_secs: u64) -> ExtractConfig {
    let mut c = config(datasets);
    c.retry.first_probe_ms = 50;
    c.retry.max_probe_interval_secs = 1;
    c.retry.max_outage_secs = max_outage_secs;
    c
}

/// Two seconds of 503 at the start of a run are waited out: no gap, every resource, one
/// outage in the report.
#[tokio::test]
async fn extraction_rides_out_an_outage() {
    let sim = start(3, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let cfg = outage_config(&["Patient", "Encounter"], 30);
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    sim.state().fhir.faults.fail_for(Duration::from_secs(2), 503);
    let t = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let (resources, done) = drain(rx, None).await;
    let report = handle.await.unwrap().unwrap();
    let fhir = &sim.state().fhir;
    let encounters: usize = (0..3).map(|i| fhir.generated_count(i, "Encounter").unwrap()).sum();
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert_eq!(done.len(), 6);
    assert_eq!(resources.len(), 3 + encounters);
    assert_eq!(report.http.outages, 1, "{:?}", report.http);
    assert!(report.http.outage_secs >= 1, "{:?}", report.http);
    eprintln!("extraction through 2 s of 503 took {:?}: {:?}", t.elapsed(), report.http);
}

/// An outage longer than `max_outage_secs` stops the run with the typed, resumable error.
#[tokio::test]
async fn extraction_stops_resumably_after_max_outage() {
    let sim = start(2, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let cfg = outage_config(&["Patient", "Encounter"], 1);
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    sim.state().fhir.faults.fail_for(Duration::from_secs(60), 503);
    let t = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let _ = drain(rx, None).await;
    let err = handle.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Fhir(e @ fhirsync_fhir::Error::ServerUnavailable { .. }) if e.is_resumable_stop()),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("unavailable for 1 s") && msg.contains("resumable"), "{msg}");
    assert!(msg.contains("no scope was read yet"), "what is left: {msg}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    sim.state().fhir.faults.clear();
}

/// An outage that starts mid-run stops it with a message naming what is left: the scopes
/// whose completion was not sent to landing, of those planned.
#[tokio::test]
async fn outage_stop_says_what_is_left() {
    let sim = start(3, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let mut cfg = outage_config(&["Patient", "Encounter"], 1);
    cfg.concurrency = 1;
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    // Capacity 1: the crawl cannot run far ahead of what this test has received.
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let handle = tokio::spawn(run.run(tx));
    let mut complete = 0u64;
    while let Some(event) = rx.recv().await {
        if let fhirsync_core::ExtractEvent::ScopeComplete(_) = event {
            complete += 1;
            if complete == 2 {
                sim.state().fhir.faults.fail_for(Duration::from_secs(60), 503);
            }
        }
    }
    let msg = handle.await.unwrap().unwrap_err().to_string();
    assert!((2..6).contains(&complete), "{complete} scopes completed: {msg}");
    let left = 6 - complete;
    assert!(msg.contains(&format!("{left} of 6 scopes not read yet")), "{complete} complete: {msg}");
    assert!(msg.contains(&format!("the {complete} read completely are kept")), "{msg}");
    sim.state().fhir.faults.clear();
}

/// A run that reaches `daily_request_budget` stops with the typed budget error, having sent no
/// more requests than the budget allows.
#[tokio::test]
async fn extraction_stops_at_the_daily_budget() {
    let sim = start(4, 1000, &[], BulkConfig::default()).await;
    let conn = connection(&sim);
    let mut cfg = config(&["Patient", "Encounter"]);
    cfg.schedule.daily_request_budget = Some(5);
    let run = Extraction::new(client(&sim, &conn, &cfg), &conn, cfg).unwrap();
    let before = sim.state().fhir.faults.requests();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let handle = tokio::spawn(run.run(tx));
    let _ = drain(rx, None).await;
    let err = handle.await.unwrap().unwrap_err();
    assert!(matches!(&err, Error::Fhir(fhirsync_fhir::Error::BudgetExhausted { limit: 5, .. })), "{err}");
    assert!(err.to_string().contains("resumable"), "{err}");
    assert!(sim.state().fhir.faults.requests() - before <= 5);
}
