//! Fault injection switches and the request log.

use std::time::{Duration, Instant};

use fhirsync_sim::fhir::RetryAfter;
use reqwest::StatusCode;

use crate::common::*;

fn patient_url(env: &Env) -> String {
    format!("{}/Patient/{CAMILA}", env.r4())
}

/// Fixed latency delays every FHIR answer.
#[tokio::test]
async fn latency() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.set_latency(Duration::from_millis(150));
    let start = Instant::now();
    assert_eq!(env.get(&patient_url(&env), Some(JSON)).await.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

/// The next K requests get 429 with Retry-After in seconds, then service resumes.
#[tokio::test]
async fn throttle_next_with_seconds() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.throttle_next(2, RetryAfter::Seconds(7));
    for _ in 0..2 {
        let resp = env.get(&patient_url(&env), Some(JSON)).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "7");
    }
    assert_eq!(env.get(&patient_url(&env), Some(JSON)).await.status(), StatusCode::OK);
}

/// Retry-After can be an HTTP-date in the future.
#[tokio::test]
async fn throttle_with_http_date() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.throttle_next(1, RetryAfter::HttpDate(30));
    let resp = env.get(&patient_url(&env), Some(JSON)).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let when = httpdate::parse_http_date(resp.headers()["retry-after"].to_str().unwrap()).unwrap();
    assert!(when > std::time::SystemTime::now() + Duration::from_secs(20));
}

/// Every Nth request gets 429.
#[tokio::test]
async fn throttle_every_nth() {
    let env = Env::start().await;
    let faults = &env.sim.state().fhir.faults;
    faults.reset_log();
    faults.throttle_every(3, RetryAfter::Seconds(1));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(env.get(&patient_url(&env), Some(JSON)).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
}

/// The next K requests fail with the chosen 5xx.
#[tokio::test]
async fn server_errors() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.fail_next(1, 503);
    assert_eq!(env.get(&patient_url(&env), Some(JSON)).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(env.get(&patient_url(&env), Some(JSON)).await.status(), StatusCode::OK);
}

/// A dropped connection delivers headers and part of the body, then the body read fails.
#[tokio::test]
async fn dropped_mid_body() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.drop_next(1);
    let resp =
        env.get(&format!("{}/Observation?patient={CAMILA}&category=vital-signs", env.r4()), Some(JSON)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.is_err(), "body must not complete");
    assert!(env.get(&patient_url(&env), Some(JSON)).await.bytes().await.is_ok());
}

/// Expiring all tokens turns every FHIR request into 401 until a new token is issued.
#[tokio::test]
async fn token_expiry() {
    let env = Env::start().await;
    env.sim.state().oauth.expire_all_tokens();
    assert_eq!(env.get(&patient_url(&env), Some(JSON)).await.status(), StatusCode::UNAUTHORIZED);
}

/// The request log counts FHIR requests by path.
#[tokio::test]
async fn request_counter() {
    let env = Env::start().await;
    let faults = &env.sim.state().fhir.faults;
    faults.reset_log();
    env.get(&patient_url(&env), Some(JSON)).await;
    env.get(&format!("{}/Condition?patient={CAMILA}", env.r4()), Some(JSON)).await;
    env.get(&format!("{}/Condition?patient={DERRICK}", env.r4()), Some(JSON)).await;
    assert_eq!(faults.requests(), 3);
    assert_eq!(faults.requests_to("/Condition"), 2);
    assert_eq!(faults.request_log()[1].method, "GET");
    assert!(faults.request_log()[1].uri.ends_with(&format!("/Condition?patient={CAMILA}")));
}

async fn post_condition(env: &Env, text: &str) -> Result<reqwest::Response, reqwest::Error> {
    let body = serde_json::json!({
        "resourceType": "Condition",
        "code": {"text": text},
        "subject": {"reference": format!("Patient/{CAMILA}")},
    });
    env.http
        .post(format!("{}/Condition", env.r4()))
        .bearer_auth(&env.token)
        .body(body.to_string())
        .send()
        .await
}

async fn stored(env: &Env, text: &str) -> bool {
    let (_, body) = env.json(&format!("{}/Condition?patient={CAMILA}", env.r4())).await;
    matches(&body).iter().any(|c| c["code"]["text"] == text)
}

/// fail_next_creates answers creates with a 5xx before storing them; searches are unaffected.
#[tokio::test]
async fn failed_create_is_not_stored() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.fail_next_creates(1, 500);
    assert!(!stored(&env, "fail").await, "searches pass");
    assert_eq!(post_condition(&env, "fail").await.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!stored(&env, "fail").await);
    assert_eq!(post_condition(&env, "fail").await.unwrap().status(), StatusCode::CREATED);
}

/// drop_next_creates stores the create but the client never sees a complete answer.
#[tokio::test]
async fn dropped_create_is_stored() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.drop_next_creates(1);
    let outcome = post_condition(&env, "dropped").await;
    let completed = match outcome {
        Ok(resp) => resp.bytes().await.is_ok(),
        Err(_) => false,
    };
    assert!(!completed, "the answer must not complete");
    assert!(stored(&env, "dropped").await);
}

/// delay_next_creates stores the create at once but holds its 201 back for the duration: the
/// record is searchable while the client still waits; later creates answer at once.
#[tokio::test]
async fn delayed_create_is_stored_before_the_answer() {
    let env = Env::start().await;
    env.sim.state().fhir.faults.delay_next_creates(1, Duration::from_millis(1500));
    let start = Instant::now();
    let pending = tokio::spawn({
        let (http, url, token) = (env.http.clone(), format!("{}/Condition", env.r4()), env.token.clone());
        let body = serde_json::json!({
            "resourceType": "Condition",
            "code": {"text": "delayed"},
            "subject": {"reference": format!("Patient/{CAMILA}")},
        });
        async move { http.post(url).bearer_auth(token).body(body.to_string()).send().await.unwrap().status() }
    });
    let mut seen = false;
    while start.elapsed() < Duration::from_millis(1200) && !seen {
        seen = stored(&env, "delayed").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "stored before the answer");
    assert!(!pending.is_finished(), "the answer is still held back");
    assert_eq!(pending.await.unwrap(), StatusCode::CREATED);
    assert!(start.elapsed() >= Duration::from_millis(1500));
    let quick = Instant::now();
    assert_eq!(post_condition(&env, "not delayed").await.unwrap().status(), StatusCode::CREATED);
    assert!(quick.elapsed() < Duration::from_millis(1000));
}
