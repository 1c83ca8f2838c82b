//! Throughput of synthetic data generation and of searches served over HTTP.

use fhirsync_core::FhirVersion;
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::{FhirConfig, FhirState};
use fhirsync_sim::testing::SimBuilder;

fn main() {
    divan::main();
}

/// Read (generate) one Patient of a 100,000-patient population by id.
#[divan::bench]
fn read_patient(bencher: divan::Bencher) {
    let state = FhirState::new(FhirConfig { patients: 100_000, ..FhirConfig::default() });
    let ids: Vec<String> = (0..1000).map(|i| state.patient_id(i * 97)).collect();
    let mut n = 0;
    bencher.bench_local(|| {
        n = (n + 1) % ids.len();
        state.resource(FhirVersion::R4, "Patient", &ids[n])
    });
}

/// Read (generate) one vital-sign Observation by id (ids found once through a search).
#[divan::bench]
fn read_observation(bencher: divan::Bencher) {
    let s = serve();
    let url = format!(
        "{}/Observation?patient=eq081-VQEgP8drUUqCWzHfw3&category=vital-signs&_count=50",
        s.sim.fhir_base(FhirVersion::R4)
    );
    let body: serde_json::Value = s.runtime.block_on(async {
        let resp =
            s.http.get(&url).bearer_auth(&s.token).header("accept", "application/json").send().await.unwrap();
        resp.json().await.unwrap()
    });
    let ids: Vec<String> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
        .collect();
    let state = s.sim.state().clone();
    let mut n = 0;
    bencher.bench_local(|| {
        n = (n + 1) % ids.len();
        state.fhir.resource(FhirVersion::R4, "Observation", &ids[n])
    });
}

struct Served {
    runtime: tokio::runtime::Runtime,
    sim: Sim,
    token: String,
    http: reqwest::Client,
}

fn serve() -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sim = runtime.block_on(SimBuilder::new().start());
    let token = sim.read_token("bench");
    Served { runtime, sim, token, http: reqwest::Client::new() }
}

fn fetch(s: &Served, url: &str, accept: &str) -> usize {
    s.runtime.block_on(async {
        let resp = s.http.get(url).bearer_auth(&s.token).header("accept", accept).send().await.unwrap();
        resp.bytes().await.unwrap().len()
    })
}

/// One full page (1000 vital signs) of Derrick Lin, JSON, over HTTP.
#[divan::bench(sample_count = 30)]
fn search_page_1000_json(bencher: divan::Bencher) {
    let s = serve();
    let url = format!(
        "{}/Observation?patient=eq081-VQEgP8drUUqCWzHfw3&category=vital-signs",
        s.sim.fhir_base(FhirVersion::R4)
    );
    bencher.bench_local(|| fetch(&s, &url, "application/fhir+json"));
}

/// The same page as FHIR XML.
#[divan::bench(sample_count = 30)]
fn search_page_1000_xml(bencher: divan::Bencher) {
    let s = serve();
    let url = format!(
        "{}/Observation?patient=eq081-VQEgP8drUUqCWzHfw3&category=vital-signs",
        s.sim.fhir_base(FhirVersion::R4)
    );
    bencher.bench_local(|| fetch(&s, &url, "application/fhir+xml"));
}

/// A small search (one patient's Conditions), JSON, over HTTP: per-request overhead.
#[divan::bench(sample_count = 200)]
fn search_small_json(bencher: divan::Bencher) {
    let s = serve();
    let url = format!("{}/Condition?patient=erXuFYUfucBZaryVksYEcMg3", s.sim.fhir_base(FhirVersion::R4));
    bencher.bench_local(|| fetch(&s, &url, "application/fhir+json"));
}
