//! Paging: sessionID next links, page-sized totals, the _count cap, session expiry.

use fhirsync_sim::fhir::FhirConfig;
use reqwest::StatusCode;

use crate::common::*;

/// More than 1000 results page at 1000 with a sessionID next link (params dropped), and
/// Bundle.total is the number of entries on each page.
#[tokio::test]
async fn pages_with_session_id() {
    let env = Env::start().await;
    let expected = env.sim.state().fhir.generated_count(1, "Observation:vital-signs").unwrap();
    assert!(expected > 1000);
    let (status, first) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs", env.r4())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["total"], 1000);
    assert_eq!(matches(&first).len(), 1000);
    let next = next_link(&first).expect("next link");
    let prefix = format!("{}/Observation?sessionID=", env.r4());
    assert!(next.starts_with(&prefix), "{next}");
    let session = &next[prefix.len()..];
    let (n, hex) = session.split_once('-').unwrap();
    assert!(
        n.parse::<u64>().is_ok() && hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{session}"
    );
    let (status, second) = env.json(&next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["total"], expected - 1000);
    assert_eq!(matches(&second).len(), expected - 1000);
    assert!(next_link(&second).is_none());
    let mut ids: Vec<&str> =
        matches(&first).iter().chain(matches(&second).iter()).map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "pages do not overlap");
}

/// _count is honoured below the maximum and capped at 1000 above it.
#[tokio::test]
async fn count_is_capped() {
    let env = Env::start().await;
    let (_, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs&_count=5", env.r4())).await;
    assert_eq!(matches(&body).len(), 5);
    assert_eq!(body["total"], 5);
    let relations: Vec<&str> =
        body["link"].as_array().unwrap().iter().map(|l| l["relation"].as_str().unwrap()).collect();
    assert_eq!(relations, ["next", "self"], "Epic lists next before self");
    let self_url = body["link"][1]["url"].as_str().unwrap();
    assert!(
        self_url.ends_with(&format!("/Observation?category=vital-signs&patient={DERRICK}&_count=5")),
        "self link params sorted, _count last: {self_url}"
    );
    let (_, page2) = env.json(&next_link(&body).unwrap()).await;
    assert_eq!(matches(&page2).len(), 5);
    let (_, body) = env
        .json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs&_count=5000", env.r4()))
        .await;
    assert_eq!(matches(&body).len(), 1000);
}

/// Expired sessions (fault switch) answer 400 with OperationOutcome 4113.
#[tokio::test]
async fn expired_session_is_4113() {
    let env = Env::start().await;
    let (_, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs&_count=10", env.r4())).await;
    let next = next_link(&body).unwrap();
    env.sim.state().fhir.expire_sessions();
    let (status, body) = env.json(&next).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["4113"]);
    assert!(
        body["issue"][0]["details"]["text"]
            .as_str()
            .unwrap()
            .contains("Session ID for cached search results has expired")
    );
}

/// Sessions older than the configured TTL expire on their own.
#[tokio::test]
async fn session_ttl_expires() {
    let env = Env::with(FhirConfig { session_ttl_secs: 0, ..FhirConfig::default() }).await;
    let (_, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs&_count=10", env.r4())).await;
    let (status, body) = env.json(&next_link(&body).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(issue_codes(&body), ["4113"]);
}

/// A session id cannot be used by another client.
#[tokio::test]
async fn session_is_per_client() {
    let env = Env::start().await;
    let (_, body) =
        env.json(&format!("{}/Observation?patient={DERRICK}&category=vital-signs&_count=10", env.r4())).await;
    let other = env.sim.read_token("other-client");
    let resp = env
        .http
        .get(next_link(&body).unwrap())
        .bearer_auth(other)
        .header("accept", JSON)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
