//! Crawl throughput with a fixed latency `L` per request.
//!
//! With `C` requests in flight and every request taking `L`, the best possible rate is `C / L`.
//! Each sample runs a search-mode extraction of `60 · C` single-page scopes (one Encounter search
//! per patient, explicit patient ids) and prints the achieved rate as a share of `C / L`, and the
//! concurrency limit the adaptive controller ended at. Target: ≥ 90 %.
//!
//! - `sim_*`: against the in-process Epic simulator (`Faults::set_latency`).
//! - `sim_capacity`: the simulator with `L = 0`, i.e. the CPU-bound rate of simulator + client on
//!   this machine. When `C / L` exceeds it, no client can reach the target against the simulator.
//! - `stub_*`: against a trivial server that sleeps `L` and answers a fixed bundle, isolating the
//!   client's ability to keep `C` requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use fhirsync_extract::{CohortConfig, ConnectionConfig, ExtractConfig, Extraction};
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::FhirConfig;
use fhirsync_sim::testing::SimBuilder;
use tokio::runtime::Runtime;

/// Default fixed latency per request, in milliseconds.
const DEFAULT_LATENCY_MS: u64 = 20;

/// Fixed latency per request: `FHIRSYNC_BENCH_LATENCY_MS`, else [`DEFAULT_LATENCY_MS`]
/// (production Epic answers take ~100 ms or more, where per-request overhead matters less).
fn latency() -> Duration {
    let ms = std::env::var("FHIRSYNC_BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok());
    Duration::from_millis(ms.unwrap_or(DEFAULT_LATENCY_MS))
}
/// Scopes per unit of concurrency (keeps the ideal run time at `60 · L`).
const SCOPES_PER_SLOT: usize = 60;

const CAPS: &str = r#"{"resourceType":"CapabilityStatement","rest":[{"resource":[{"type":"Encounter","interaction":[{"code":"search-type"}],"searchParam":[{"name":"patient"}]}]}]}"#;
const PAGE: &str = r#"{"resourceType":"Bundle","type":"searchset","total":1,"link":[{"relation":"self","url":"x"}],"entry":[{"fullUrl":"x","resource":{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/p"}},"search":{"mode":"match"}}]}"#;

fn main() {
    divan::main();
}

/// Simulator, adaptive (AIMD) concurrency (the default).
#[divan::bench(args = [8, 32], sample_count = 3, sample_size = 1)]
fn sim_adaptive(bencher: divan::Bencher, c: usize) {
    let (rt, sim) = sim(c, latency());
    run(bencher, &rt, sim_conn(&sim), sim_ids(&sim), c, true, latency(), Some(&sim));
}

/// Simulator, fixed concurrency.
#[divan::bench(args = [8, 32], sample_count = 3, sample_size = 1)]
fn sim_fixed(bencher: divan::Bencher, c: usize) {
    let (rt, sim) = sim(c, latency());
    run(bencher, &rt, sim_conn(&sim), sim_ids(&sim), c, false, latency(), Some(&sim));
}

/// Simulator without latency: the machine's CPU-bound rate.
#[divan::bench(args = [32], sample_count = 3, sample_size = 1)]
fn sim_capacity(bencher: divan::Bencher, c: usize) {
    let (rt, sim) = sim(c, Duration::ZERO);
    run(bencher, &rt, sim_conn(&sim), sim_ids(&sim), c, false, Duration::ZERO, Some(&sim));
}

/// Trivial server sleeping `L`, adaptive concurrency (C = 1 shows the per-request overhead).
#[divan::bench(args = [1, 8, 32], sample_count = 3, sample_size = 1)]
fn stub_adaptive(bencher: divan::Bencher, c: usize) {
    let (rt, conn) = stub(latency());
    let ids = (0..SCOPES_PER_SLOT * c).map(|i| format!("p{i}")).collect();
    run(bencher, &rt, conn, ids, c, true, latency(), None);
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn sim(c: usize, latency: Duration) -> (Runtime, Sim) {
    let rt = runtime();
    let fhir =
        FhirConfig { patients: SCOPES_PER_SLOT * c, sandbox_identities: false, ..FhirConfig::default() };
    let sim = rt.block_on(SimBuilder::new().fhir(fhir).client("bench").start());
    sim.state().fhir.faults.set_latency(latency);
    (rt, sim)
}

fn sim_conn(sim: &Sim) -> ConnectionConfig {
    ConnectionConfig {
        client_id: Some("bench".into()),
        fhir_r4_endpoint: Some(
            url::Url::parse(&sim.fhir_base(fhirsync_core::FhirVersion::R4)).expect("simulator base is a URL"),
        ),
        ..ConnectionConfig::default()
    }
}

fn sim_ids(sim: &Sim) -> Vec<String> {
    sim.state().fhir.patient_ids()
}

fn stub(latency: Duration) -> (Runtime, ConnectionConfig) {
    let rt = runtime();
    let root = rt.block_on(async move {
        let app = axum::Router::new().route("/R4/metadata", get(|| async { CAPS })).route(
            "/R4/Encounter",
            get(move || async move {
                tokio::time::sleep(latency).await;
                PAGE
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/R4")
    });
    let conn = ConnectionConfig {
        client_id: Some("bench".into()),
        fhir_r4_endpoint: Some(url::Url::parse(&root).expect("stub base is a URL")),
        ..ConnectionConfig::default()
    };
    (rt, conn)
}

#[allow(clippy::too_many_arguments)]
fn run(
    bencher: divan::Bencher,
    rt: &Runtime,
    conn: ConnectionConfig,
    ids: Vec<String>,
    c: usize,
    adaptive: bool,
    latency: Duration,
    sim: Option<&Sim>,
) {
    let cfg = ExtractConfig {
        datasets: vec!["Encounter".into()],
        cohort: CohortConfig { patient_ids: ids, ..CohortConfig::default() },
        concurrency: c,
        adaptive_concurrency: adaptive,
        rate_limit: 0.0,
        ..ExtractConfig::default()
    };
    let server = if sim.is_some() { "sim" } else { "stub" };
    bencher.bench_local(|| {
        rt.block_on(async {
            let tokens = match sim {
                Some(s) => s.static_token("bench"),
                None => Arc::new(fhirsync_auth::StaticToken("t".to_string().into())),
            };
            let client = fhirsync_extract::build_client(&conn, &cfg, tokens).expect("client");
            let run = Extraction::new(client.clone(), &conn, cfg.clone()).expect("extraction");
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let started = Instant::now();
            let report = run.run(tx).await.expect("run");
            let elapsed = started.elapsed().as_secs_f64();
            drain.await.expect("drain");
            let rate = report.http.requests as f64 / elapsed;
            let share = if latency.is_zero() {
                String::new()
            } else {
                let ideal = c as f64 / latency.as_secs_f64();
                format!("; C/L = {ideal:.0} req/s; {:.1} % of ideal", 100.0 * rate / ideal)
            };
            // Little's law: mean requests in flight = busy time / wall time.
            let occupancy = report.http.busy_micros as f64 / 1e6 / elapsed;
            let mean_ms = report.http.busy_micros as f64 / 1e3 / report.http.requests.max(1) as f64;
            eprintln!(
                "{server} C={c} L={}ms adaptive={adaptive}: {} requests in {elapsed:.3} s = {rate:.0} req/s{share}; \
                 in flight {occupancy:.1} of {c}; mean latency {mean_ms:.1} ms; final limit {}",
                latency.as_millis(),
                report.http.requests,
                client.concurrency_limit()
            );
            divan::black_box(report);
        })
    });
}
