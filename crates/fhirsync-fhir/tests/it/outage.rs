//! The outage breaker and the budgets against the simulator's fault switches, in scaled-down
//! time (probe intervals of tens of milliseconds, outages of seconds).

use std::time::{Duration, Instant};

use fhirsync_core::FhirVersion;
use fhirsync_fhir::{ClientConfig, Error, FhirClient, OutagePolicy, RateLimit, SchedulePolicy};
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::RetryAfter;
use fhirsync_sim::testing::SimBuilder;
use url::Url;

use crate::stub::fast_config;

const CLIENT: &str = "client";
const PATIENTS: usize = 6;

async fn start() -> Sim {
    SimBuilder::new().patients(PATIENTS).page_size(5).client(CLIENT).start().await
}

/// Default retry counts (5 per request), fast backoff, the breaker on with short probes.
fn config(concurrency: usize, max_outage: Duration) -> ClientConfig {
    let mut c = fast_config(concurrency);
    c.retry.max_retries = 5;
    c.outage = Some(OutagePolicy {
        first_probe: Duration::from_millis(50),
        max_probe_interval: Duration::from_millis(400),
        max_outage,
        ..OutagePolicy::default()
    });
    c
}

fn client(sim: &Sim, config: ClientConfig) -> FhirClient {
    FhirClient::new(config, sim.static_token(CLIENT)).unwrap()
}

/// Reads every page of every patient's laboratory Observations, `concurrency` patients at a
/// time; returns the number of resources read.
async fn crawl(sim: &Sim, c: &FhirClient) -> Result<usize, Error> {
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    let tasks = (0..PATIENTS).map(|i| {
        let (c, base) = (c.clone(), base.clone());
        let patient = sim.state().fhir.patient_id(i);
        async move {
            let params =
                [("patient".to_string(), patient), ("category".to_string(), "laboratory".to_string())];
            let mut page = c.search(&base, "Observation", &params).await?;
            let mut n = page.resources.len();
            let mut url = fhirsync_fhir::join(&base, "Observation").unwrap();
            while let Some(next) = page.next.clone() {
                page = c.next_page(&url, &next).await?;
                url = url.join(&next).unwrap();
                n += page.resources.len();
            }
            Ok::<usize, Error>(n)
        }
    });
    let counts = futures::future::try_join_all(tasks).await?;
    Ok(counts.into_iter().sum())
}

fn expected(sim: &Sim) -> usize {
    (0..PATIENTS).map(|i| sim.state().fhir.generated_count(i, "Observation:laboratory").unwrap()).sum()
}

/// 30 HTTP 500 in a row (more than the retries of any one request) are ridden out at
/// concurrency 4: the run completes with every resource and one outage counted.
#[tokio::test]
async fn thirty_500_in_a_row_are_ridden_out() {
    let sim = start().await;
    let c = client(&sim, config(4, Duration::from_secs(20)));
    sim.state().fhir.faults.fail_next(30, 500);
    let t = Instant::now();
    let n = crawl(&sim, &c).await.unwrap();
    assert_eq!(n, expected(&sim));
    let stats = c.stats();
    assert!(stats.outages >= 1, "{stats:?}");
    assert_eq!(stats.unavailable_secs, 0, "available again: {stats:?}");
    assert!(stats.retries >= 30, "every failed attempt is counted as a retry: {stats:?}");
    eprintln!("30 x 500 at concurrency 4 ridden out in {:?}: {stats:?}", t.elapsed());
}

/// With one request in flight, a request that fails on every retry with no success anywhere
/// waits for the server instead of giving up: 30 × 500 are ridden out sequentially too.
#[tokio::test]
async fn thirty_500_ridden_out_with_one_request_in_flight() {
    let sim = start().await;
    let c = client(&sim, config(1, Duration::from_secs(20)));
    sim.state().fhir.faults.fail_next(30, 500);
    let t = Instant::now();
    let n = crawl(&sim, &c).await.unwrap();
    assert_eq!(n, expected(&sim));
    assert!(c.stats().outages >= 1, "{:?}", c.stats());
    eprintln!("30 x 500 at concurrency 1 ridden out in {:?}: {:?}", t.elapsed(), c.stats());
}

/// Two seconds of 503 ("maintenance") are waited out with few requests: work pauses, one probe
/// at a time, and resumes within one probe interval of the end.
#[tokio::test]
async fn two_seconds_of_503_are_waited_out() {
    let sim = start().await;
    let c = client(&sim, config(4, Duration::from_secs(20)));
    sim.state().fhir.faults.fail_for(Duration::from_secs(2), 503);
    let t = Instant::now();
    let n = crawl(&sim, &c).await.unwrap();
    let took = t.elapsed();
    assert_eq!(n, expected(&sim));
    let stats = c.stats();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_millis(3500), "resumed late: {took:?}");
    assert_eq!(stats.outages, 1, "{stats:?}");
    assert!(stats.outage_secs >= 1, "{stats:?}");
    // Before the pause: at most 10 failures in a row plus the 4 in flight; then one probe per
    // interval (50, 100, 200, 400, 400 ... ms) over 2 s.
    assert!(stats.throttled < 30, "work must pause during the outage: {stats:?}");
    eprintln!("2 s of 503 ridden out in {took:?}: {stats:?}");
}

/// A 429 storm with `Retry-After: 1` longer than the per-request retries: the probes honour
/// the server's pace (≥ 1 s apart) and the run completes.
#[tokio::test]
async fn throttling_storm_with_retry_after_is_ridden_out() {
    let sim = start().await;
    let mut cfg = config(4, Duration::from_secs(20));
    cfg.retry.max_retries = 2;
    let c = client(&sim, cfg);
    sim.state().fhir.faults.throttle_for(Duration::from_millis(3500), Some(RetryAfter::Seconds(1)));
    let t = Instant::now();
    let n = crawl(&sim, &c).await.unwrap();
    let took = t.elapsed();
    assert_eq!(n, expected(&sim));
    let stats = c.stats();
    assert!(stats.outages >= 1, "{stats:?}");
    // 4 requests × 3 attempts at 1 s intervals open the breaker; then ≤ 1 probe per second.
    assert!(stats.throttled <= 16, "Retry-After must space the probes: {stats:?}");
    eprintln!("3.5 s 429 storm (Retry-After 1) ridden out in {took:?}: {stats:?}");
}

/// A 429 storm without `Retry-After` (backoff of milliseconds, so each request's own retries
/// are spent in a few tens of ms) is ridden out by probing at growing intervals.
#[tokio::test]
async fn throttling_storm_without_retry_after_is_ridden_out() {
    let sim = start().await;
    let c = client(&sim, config(4, Duration::from_secs(20)));
    sim.state().fhir.faults.throttle_for(Duration::from_millis(1500), None);
    let t = Instant::now();
    let n = crawl(&sim, &c).await.unwrap();
    let took = t.elapsed();
    assert_eq!(n, expected(&sim));
    let stats = c.stats();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(stats.outages >= 1 && stats.throttled < 30, "{stats:?}");
    eprintln!("1.5 s 429 storm (no Retry-After) ridden out in {took:?}: {stats:?}");
}

/// An outage longer than `max_outage` ends the run with a typed error that says how long the
/// server was down and that the run is resumable.
#[tokio::test]
async fn outage_longer_than_max_outage_fails_with_the_duration() {
    let sim = start().await;
    let c = client(&sim, config(4, Duration::from_secs(1)));
    sim.state().fhir.faults.fail_for(Duration::from_secs(30), 503);
    let t = Instant::now();
    let err = crawl(&sim, &c).await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, Error::ServerUnavailable { max_outage_secs: 1, .. }), "{err}");
    assert!(err.is_fatal_for_run() && err.is_resumable_stop());
    let msg = err.to_string();
    assert!(msg.contains("unavailable for 1 s") && msg.contains("resumable"), "{msg}");
    assert!(took < Duration::from_secs(3), "gave up late: {took:?}");
    assert!(c.unavailable_for().is_some() && c.stats().unavailable_secs >= 1, "{:?}", c.stats());
    sim.state().fhir.faults.clear();
}

/// The daily request budget stops the client with a typed, resumable error once spent.
#[tokio::test]
async fn daily_budget_stops_cleanly() {
    let sim = start().await;
    let mut cfg = config(1, Duration::from_secs(20));
    cfg.schedule = SchedulePolicy { daily_request_budget: Some(3), ..SchedulePolicy::default() };
    let c = client(&sim, cfg);
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    for _ in 0..3 {
        c.metadata(&base).await.unwrap();
    }
    let before = sim.state().fhir.faults.requests();
    let err = c.metadata(&base).await.unwrap_err();
    assert!(matches!(err, Error::BudgetExhausted { limit: 3, .. }), "{err}");
    assert!(err.is_fatal_for_run() && err.is_resumable_stop());
    assert!(
        err.to_string().contains("daily_request_budget") && err.to_string().contains("resumable"),
        "{err}"
    );
    assert_eq!(sim.state().fhir.faults.requests(), before, "nothing is sent past the budget");
}

/// Inside the peak window the peak rate replaces the base rate (window placed around now).
#[tokio::test]
async fn peak_rate_applies_inside_the_window() {
    let sim = start().await;
    let now = chrono::Local::now().time();
    let hour = chrono::Duration::hours(1);
    let window = format!("{}-{}", (now - hour).format("%H:%M"), (now + hour).format("%H:%M"));
    let mut cfg = config(1, Duration::from_secs(20));
    cfg.rate_limit = Some(RateLimit { per_second: 1000.0, burst: 1 });
    cfg.schedule = SchedulePolicy {
        peak: Some(window.parse().unwrap()),
        peak_rate: Some(20.0),
        off_peak_rate: Some(0.0),
        daily_request_budget: None,
    };
    let c = client(&sim, cfg);
    let base = Url::parse(&sim.fhir_base(FhirVersion::R4)).unwrap();
    let t = Instant::now();
    for _ in 0..6 {
        c.metadata(&base).await.unwrap();
    }
    // First free, five more at 50 ms each (the base rate would take 5 ms).
    assert!(t.elapsed() >= Duration::from_millis(240), "{:?}", t.elapsed());
}

/// One search that always fails while the server answers (metadata, other searches) is that
/// search's own failure: it gives up after its retries, even alone in flight, and no outage is
/// declared.
#[tokio::test]
async fn one_failing_search_is_not_an_outage() {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = Router::new()
        .route("/api/FHIR/R4/metadata", get(|| async { r#"{"resourceType":"CapabilityStatement"}"# }))
        .route("/api/FHIR/R4/Good", get(|| async { crate::stub::page(&["a"], None) }))
        .route("/api/FHIR/R4/Bad", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    let base = crate::stub::serve(app).await;
    let c = crate::stub::client(config(1, Duration::from_secs(20)));
    c.search(&base, "Good", &[]).await.unwrap();
    let t = Instant::now();
    let err = c.search(&base, "Bad", &[]).await.unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted { attempts: 6, .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(c.stats().outages, 0, "{:?}", c.stats());
    c.search(&base, "Good", &[]).await.unwrap();
}

/// A port nobody listens on (a configuration error, not an outage) fails after the request's
/// own retries, without waiting for `max_outage`.
#[tokio::test]
async fn wrong_port_fails_fast() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let base = Url::parse(&format!("http://{addr}/api/FHIR/R4")).unwrap();
    let c = crate::stub::client(config(1, Duration::from_secs(20)));
    let t = Instant::now();
    let err = c.metadata(&base).await.unwrap_err();
    assert!(matches!(err, Error::RetriesExhausted { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(c.stats().outages, 0);
}
