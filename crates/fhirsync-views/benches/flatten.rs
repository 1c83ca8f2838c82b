//! Flattening throughput of the default `observation` view on Epic-shaped Observations.
//!
//! `evaluate_preparsed`: resources already parsed to `serde_json::Value` (the landing hot path).
//! `parse_and_evaluate`: includes `serde_json::from_str` of each NDJSON line.
//! `parse_only`: the parsing part alone (each value dropped right away, as in `parse_and_evaluate`).
//! Run: `cargo bench -p fhirsync-views --bench flatten`.

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use fhirsync_views::{View, default_views};
use serde_json::Value;

/// Resources per benchmark iteration.
const BATCH: usize = 1000;

fn main() {
    divan::main();
}

fn observation_view() -> View {
    default_views().into_iter().find(|v| v.name() == "observation").expect("default observation view")
}

/// `BATCH` Observations cycling through the lab, vital-sign and social-history fixtures, as NDJSON lines.
fn lines() -> Vec<String> {
    let fixtures: Vec<Value> =
        serde_json::from_str(include_str!("../tests/fixtures/epic/observation.json")).expect("fixture");
    (0..BATCH)
        .map(|i| {
            let mut r = fixtures[i % fixtures.len()].clone();
            r["id"] = Value::String(format!("obs-{i}"));
            r.to_string()
        })
        .collect()
}

#[divan::bench]
fn evaluate_preparsed(bencher: Bencher) {
    let view = observation_view();
    let resources: Vec<Value> = lines().iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let mut rows = 0;
        for r in &resources {
            rows += view.evaluate(black_box(r)).expect("rows").len();
        }
        rows
    });
}

#[divan::bench]
fn parse_and_evaluate(bencher: Bencher) {
    let view = observation_view();
    let lines = lines();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let mut rows = 0;
        for l in &lines {
            let r: Value = serde_json::from_str(black_box(l)).expect("json");
            rows += view.evaluate(&r).expect("rows").len();
        }
        rows
    });
}

#[divan::bench]
fn parse_only(bencher: Bencher) {
    let lines = lines();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        let mut members = 0;
        for l in &lines {
            let r: Value = serde_json::from_str(black_box(l)).expect("json");
            members += r.as_object().map_or(0, |o| o.len());
        }
        members
    });
}
