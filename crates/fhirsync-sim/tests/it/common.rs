//! Shared test harness: a running simulator, a bearer token and request helpers.

use fhirsync_core::FhirVersion;
use fhirsync_fhir::outcome::{Effect, Exclusion, parse_outcome};
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::FhirConfig;
use fhirsync_sim::testing::SimBuilder;
use reqwest::StatusCode;
use serde_json::Value;

/// Derrick Lin: more than 1000 vital signs.
pub const DERRICK: &str = "eq081-VQEgP8drUUqCWzHfw3";
/// Camila Lopez.
pub const CAMILA: &str = "erXuFYUfucBZaryVksYEcMg3";
/// Client id used by tests.
pub const CLIENT: &str = "test-client";
/// Accept header for JSON.
pub const JSON: &str = "application/fhir+json";

/// A running simulator with a token.
pub struct Env {
    pub sim: Sim,
    pub token: String,
    pub http: reqwest::Client,
}

impl Env {
    /// Simulator with the default configuration.
    pub async fn start() -> Env {
        Env::with(FhirConfig::default()).await
    }

    /// Simulator with `fhir` configuration.
    pub async fn with(fhir: FhirConfig) -> Env {
        let sim = SimBuilder::new().fhir(fhir).start().await;
        let token = sim.read_token(CLIENT);
        Env { sim, token, http: reqwest::Client::new() }
    }

    /// R4 base URL.
    pub fn r4(&self) -> String {
        self.sim.fhir_base(FhirVersion::R4)
    }

    /// Base URL of `version`.
    pub fn base(&self, version: FhirVersion) -> String {
        self.sim.fhir_base(version)
    }

    /// GET with the token and `accept` (none when `None`).
    pub async fn get(&self, url: &str, accept: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url).bearer_auth(&self.token);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send().await.expect("request sent")
    }

    /// GET as JSON: status and body.
    pub async fn json(&self, url: &str) -> (StatusCode, Value) {
        let resp = self.get(url, Some(JSON)).await;
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, body)
    }
}

/// Resources with `search.mode = match`.
pub fn matches(bundle: &Value) -> Vec<&Value> {
    entries(bundle, "match")
}

/// Entries with `search.mode = mode`, as resources.
pub fn entries<'a>(bundle: &'a Value, mode: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["search"]["mode"] == mode).map(|e| &e["resource"]).collect())
        .unwrap_or_default()
}

/// Epic codes of all issues of the outcome entries.
pub fn outcome_codes(bundle: &Value) -> Vec<String> {
    entries(bundle, "outcome").iter().flat_map(|o| issue_codes(o)).collect()
}

/// Epic codes of an OperationOutcome.
pub fn issue_codes(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .filter_map(|i| i["details"]["coding"][0]["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// URL of the `next` link, if any.
pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == "next")?["url"].as_str().map(str::to_string)
}

/// The outcome entries of a bundle, as OperationOutcome resources.
pub fn outcome_entries(bundle: &Value) -> Vec<&Value> {
    entries(bundle, "outcome")
}

/// What fhirsync's own OperationOutcome parser reads from the outcome entries: the exclusions
/// as `(code, "Type - Sub-type")`; panics on any issue that is neither an exclusion nor neutral.
pub fn exclusions(bundle: &Value) -> Vec<(String, String)> {
    outcome_entries(bundle)
        .iter()
        .flat_map(|o| parse_outcome(&o.to_string()))
        .filter_map(|o| match o.effect() {
            Effect::Excluded(Exclusion { code, resource_type, subtype }) => {
                Some((code, format!("{resource_type} - {subtype}")))
            }
            Effect::Neutral => None,
            Effect::Gap(why) => panic!("the client would read a gap: {why} ({o})"),
        })
        .collect()
}

/// Ids of the match entries.
pub fn ids(bundle: &Value) -> Vec<String> {
    matches(bundle).iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect()
}

/// Jason Argonaut.
pub const JASON: &str = "eD.LxhDyX35TntF77l7etUA3";
/// Elijah Davis.
pub const ELIJAH: &str = "egqBHVfQlt4Bw3XGXoxVxHg3";
/// Linda Ross.
pub const LINDA: &str = "eIXesllypH3M9tAA5WdJftQ3";
