//! Client behaviour: paging, outcomes, retry classification, token refresh, politeness.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fhirsync_fhir::{ConnectionConfig, Error, FhirClient, RetryReason, codes};

use crate::stub::{RotatingToken, client, fast_config, outcome, page, raw_server, serve, token};

type Params = Query<std::collections::HashMap<String, String>>;

fn fhir(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/fhir+json")], body).into_response()
}

/// Pages are followed through `next` links only, across three pages, ignoring `Bundle.total`.
#[tokio::test]
async fn pages_follow_next_links_only() {
    let app = Router::new().route(
        "/api/FHIR/R4/Observation",
        get(|Query(q): Params, headers: HeaderMap| async move {
            assert_eq!(headers[header::ACCEPT], "application/fhir+json");
            let body = match q.get("sessionID").map(String::as_str) {
                None => page(&["a", "b"], Some("Observation?sessionID=2")),
                Some("2") => page(&["c"], Some("/api/FHIR/R4/Observation?sessionID=3")),
                _ => page(&["d"], None),
            };
            fhir(StatusCode::OK, body)
        }),
    );
    let base = serve(app).await;
    let c = client(fast_config(2));
    let mut url = fhirsync_fhir::join(&base, "Observation").unwrap();
    let mut page = c.search(&base, "Observation", &[("patient".into(), "p1".into())]).await.unwrap();
    let mut ids = Vec::new();
    loop {
        ids.extend(page.resources.iter().map(|r| r.to_string()));
        let Some(next) = page.next.clone() else { break };
        url = url.join(&next).unwrap();
        page = c.page(&url).await.unwrap();
    }
    assert_eq!(ids.len(), 4);
    assert!(ids[3].contains(r#""id":"d""#));
}

/// Outcome entries (4101, 59204) are returned as outcomes, never as data.
#[tokio::test]
async fn outcome_entries_are_not_data() {
    let app = Router::new().route(
        "/api/FHIR/R4/Condition",
        get(|| async {
            let body = format!(
                r#"{{"resourceType":"Bundle","type":"searchset","total":0,"entry":[
                  {{"fullUrl":"urn:uuid:1","resource":{},"search":{{"mode":"outcome"}}}},
                  {{"fullUrl":"urn:uuid:2","resource":{},"search":{{"mode":"outcome"}}}}]}}"#,
                outcome("4101", "warning", "Resource request returns no results."),
                outcome("59204", "warning", "Client not authorized for Condition - Outside Record Problems"),
            );
            fhir(StatusCode::OK, body)
        }),
    );
    let base = serve(app).await;
    let p = client(fast_config(1)).search(&base, "Condition", &[]).await.unwrap();
    assert!(p.resources.is_empty());
    assert!(p.has_outcome(codes::NO_RESULTS));
    assert!(p.has_outcome(codes::UNAUTHORIZED_SUB_RESOURCE));
    assert!(p.next.is_none());
}

/// Counts requests and answers the first `fail` of them with `status` + headers.
fn flaky(fail: usize, status: StatusCode, retry_after: Option<String>) -> (Router, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/api/FHIR/R4/Observation",
            get(
                |State((count, fail, status, ra)): State<(
                    Arc<AtomicUsize>,
                    usize,
                    StatusCode,
                    Option<String>,
                )>| async move {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    if n < fail {
                        let mut resp = fhir(status, outcome("59999", "error", "Something went wrong"));
                        if let Some(ra) = ra {
                            resp.headers_mut().insert(header::RETRY_AFTER, ra.parse().unwrap());
                        }
                        resp
                    } else {
                        fhir(StatusCode::OK, page(&["ok"], None))
                    }
                },
            ),
        )
        .with_state((count.clone(), fail, status, retry_after));
    (app, count)
}

/// A 429 with `Retry-After: 1` (seconds) is retried after about one second.
#[tokio::test]
async fn retry_429_honours_retry_after_seconds() {
    let (app, count) = flaky(1, StatusCode::TOO_MANY_REQUESTS, Some("1".into()));
    let base = serve(app).await;
    let c = client(fast_config(1));
    let t = Instant::now();
    let p = c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(p.resources.len(), 1);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());
    assert_eq!(c.stats().throttled, 1);
    assert_eq!(c.stats().retries, 1);
}

/// A 503 with an HTTP-date `Retry-After` far in the future waits only the configured ceiling.
#[tokio::test]
async fn retry_503_http_date_is_clamped() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let (app, count) = flaky(1, StatusCode::SERVICE_UNAVAILABLE, Some(date));
    let base = serve(app).await;
    let mut cfg = fast_config(1);
    cfg.retry.retry_after_ceiling = Duration::from_millis(300);
    let c = client(cfg);
    let t = Instant::now();
    c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let e = t.elapsed();
    assert!(e >= Duration::from_millis(290) && e < Duration::from_secs(3), "{e:?}");
}

/// An HTTP-date `Retry-After` a couple of seconds ahead is honoured (not replaced by backoff).
#[tokio::test]
async fn retry_429_honours_http_date() {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    let (app, _) = flaky(1, StatusCode::TOO_MANY_REQUESTS, Some(date));
    let base = serve(app).await;
    let t = Instant::now();
    client(fast_config(1)).search(&base, "Observation", &[]).await.unwrap();
    // HTTP-dates have one-second resolution: at least one second remains.
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
}

/// 5xx answers are retried with backoff until success.
#[tokio::test]
async fn retry_5xx_then_success() {
    let (app, count) = flaky(2, StatusCode::INTERNAL_SERVER_ERROR, None);
    let base = serve(app).await;
    let c = client(fast_config(1));
    c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(c.stats().retries, 2);
}

/// Retries stop at `max_retries` and the error names the last reason.
#[tokio::test]
async fn retries_exhausted_reports_reason() {
    let (app, count) = flaky(100, StatusCode::BAD_GATEWAY, None);
    let base = serve(app).await;
    let err = client(fast_config(1)).search(&base, "Observation", &[]).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 4);
    match err {
        Error::RetriesExhausted { attempts, reason, .. } => {
            assert_eq!(attempts, 4);
            assert_eq!(reason, RetryReason::ServerError(502));
        }
        other => panic!("unexpected {other}"),
    }
}

/// A 400 is not retried and the error carries the OperationOutcome text.
#[tokio::test]
async fn no_retry_on_400_and_outcome_in_error() {
    let (app, count) = flaky(100, StatusCode::BAD_REQUEST, None);
    let base = serve(app).await;
    let err = client(fast_config(1)).search(&base, "Observation", &[]).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("Something went wrong"), "{err}");
    assert!(err.has_outcome("59999"));
}

/// Epic's IIS HTML 404 for an unknown resource type gets its own error.
#[tokio::test]
async fn html_404_is_unknown_resource_type() {
    let app = Router::new().fallback(|| async {
        (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], "<html><body>404</body></html>")
    });
    let base = serve(app).await;
    let err = client(fast_config(1)).search(&base, "Nope", &[]).await.unwrap_err();
    assert!(matches!(err, Error::UnknownResourceType { .. }), "{err}");
    assert!(err.to_string().contains("unknown resource type"));
}

/// A connection closed without an answer is retried.
#[tokio::test]
async fn dropped_connection_is_retried() {
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: 57\r\nconnection: close\r\n\r\n{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[]}  ";
    let (base, count) = raw_server(vec!["", ok]).await;
    let p = client(fast_config(1)).search(&base, "Observation", &[]).await.unwrap();
    assert!(p.resources.is_empty());
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// A body cut short (Content-Length larger than what arrives) is retried.
#[tokio::test]
async fn truncated_body_is_retried() {
    let cut = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: 500\r\nconnection: close\r\n\r\n{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":";
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: 57\r\nconnection: close\r\n\r\n{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[]}  ";
    let (base, count) = raw_server(vec![cut, ok]).await;
    let c = client(fast_config(1));
    c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().retries, 1);
}

/// A 401 invalidates the token and retries once with a fresh one; a second 401 fails.
#[tokio::test]
async fn unauthorized_refreshes_token_once() {
    let app = Router::new().route(
        "/api/FHIR/R4/Observation",
        get(|headers: HeaderMap| async move {
            if headers[header::AUTHORIZATION] == "Bearer t2" {
                fhir(StatusCode::OK, page(&["x"], None))
            } else {
                StatusCode::UNAUTHORIZED.into_response()
            }
        }),
    );
    let base = serve(app).await;
    let tokens = Arc::new(RotatingToken::default());
    let c = FhirClient::new(fast_config(1), tokens.clone()).unwrap();
    c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().token_refreshes, 1);

    // A server that never accepts: exactly one refresh, then Unauthorized.
    let never = Router::new().fallback(|| async { StatusCode::UNAUTHORIZED });
    let base = serve(never).await;
    let tokens = Arc::new(RotatingToken::default());
    let c = FhirClient::new(fast_config(1), tokens.clone()).unwrap();
    let err = c.search(&base, "Observation", &[]).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.is_fatal_for_run());
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
}

/// No more than `max` requests are ever in flight, and the cap is reached.
#[tokio::test]
async fn concurrency_cap_is_respected() {
    let state = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let app = Router::new()
        .route(
            "/api/FHIR/R4/Observation",
            get(|State(s): State<Arc<(AtomicUsize, AtomicUsize)>>| async move {
                let now = s.0.fetch_add(1, Ordering::SeqCst) + 1;
                s.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
                s.0.fetch_sub(1, Ordering::SeqCst);
                fhir(StatusCode::OK, page(&["x"], None))
            }),
        )
        .with_state(state.clone());
    let base = serve(app).await;
    let c = client(fast_config(3));
    let calls = (0..12).map(|_| c.search(&base, "Observation", &[]));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(state.1.load(Ordering::SeqCst), 3);
}

/// The rate limit spaces requests: 6 requests at 20/s with burst 1 take ≥ 250 ms.
#[tokio::test]
async fn rate_limit_is_respected() {
    let (app, _) = flaky(0, StatusCode::OK, None);
    let base = serve(app).await;
    let mut cfg = fast_config(4);
    cfg.rate_limit = Some(fhirsync_fhir::RateLimit { per_second: 20.0, burst: 1 });
    let c = client(cfg);
    let t = Instant::now();
    let calls = (0..6).map(|_| c.search(&base, "Observation", &[]));
    futures::future::join_all(calls).await;
    assert!(t.elapsed() >= Duration::from_millis(245), "{:?}", t.elapsed());
}

/// Throttling lowers the adaptive concurrency limit.
#[tokio::test]
async fn throttling_lowers_adaptive_limit() {
    let (app, _) = flaky(1, StatusCode::TOO_MANY_REQUESTS, Some("0".into()));
    let base = serve(app).await;
    let mut cfg = fast_config(8);
    cfg.concurrency.adaptive = true;
    let c = client(cfg);
    c.search(&base, "Observation", &[]).await.unwrap();
    assert_eq!(c.concurrency_limit(), 4);
}

/// "Requested this Group too recently" is a cooldown: never retried even on 429.
#[tokio::test]
async fn too_recently_is_not_retried() {
    let count = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(|State(count): State<Arc<AtomicUsize>>| async move {
            count.fetch_add(1, Ordering::SeqCst);
            let body = outcome("59999", "fatal", "Error processing Bulk Data Kickoff request: Request not allowed: The Client requested this Group too recently.");
            fhir(StatusCode::TOO_MANY_REQUESTS, body)
        })
        .with_state(count.clone());
    let base = serve(app).await;
    let err = client(fast_config(1)).search(&base, "Group", &[]).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(err.to_string().contains("too recently"), "{err}");
}

/// A missing or certificate-less CA bundle is a clear error naming the file.
#[tokio::test]
async fn bad_ca_bundle_is_reported() {
    let dir = std::env::temp_dir().join(format!("fhirsync-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut connection = ConnectionConfig { ca_bundle: Some(dir.join("missing.pem")), ..Default::default() };
    let err = FhirClient::with_connection(fast_config(1), &connection, token()).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    connection.ca_bundle = Some(empty);
    let err = FhirClient::with_connection(fast_config(1), &connection, token()).unwrap_err();
    assert!(err.to_string().contains("empty.pem"), "{err}");
    assert!(err.is_fatal_for_run());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `[connection] client_id` goes out as `Epic-Client-ID` on metadata calls; a client built
/// without the section sends none.
#[tokio::test]
async fn metadata_sends_the_connection_client_id() {
    let app = Router::new().route(
        "/api/FHIR/R4/metadata",
        get(|headers: HeaderMap| async move {
            let id = headers.get("epic-client-id").map(|v| v.to_str().unwrap_or("?").to_string());
            fhir(
                StatusCode::OK,
                serde_json::json!({"resourceType": "CapabilityStatement", "id": id}).to_string(),
            )
        }),
    );
    let base = serve(app).await;
    let connection = ConnectionConfig { client_id: Some("app-1".into()), ..Default::default() };
    let with = FhirClient::with_connection(fast_config(1), &connection, token()).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&with.metadata(&base).await.unwrap()).unwrap();
    assert_eq!(body["id"], "app-1");
    let body: serde_json::Value =
        serde_json::from_slice(&client(fast_config(1)).metadata(&base).await.unwrap()).unwrap();
    assert_eq!(body["id"], serde_json::Value::Null);
}

/// An HTTPS proxy URL that cannot be parsed is rejected when the client is built.
#[tokio::test]
async fn bad_proxy_is_reported() {
    let connection = ConnectionConfig { https_proxy: Some("http://[::1".into()), ..Default::default() };
    let err = FhirClient::with_connection(fast_config(1), &connection, token()).unwrap_err();
    assert!(matches!(err, Error::TransportSetup(fhirsync_core::TransportSetupError::Proxy { .. })), "{err}");
}

/// With `https_proxy` set, HTTPS requests are tunnelled through the proxy (CONNECT).
#[tokio::test]
async fn https_requests_go_through_proxy() {
    let (addr, seen) = fhirsync_sim::testing::recording_proxy().await;
    let mut cfg = fast_config(1);
    cfg.retry.max_retries = 0;
    let connection = ConnectionConfig { https_proxy: Some(format!("http://{addr}")), ..Default::default() };
    let c = FhirClient::with_connection(cfg, &connection, token()).unwrap();
    let base = url::Url::parse("https://ehr.example/api/FHIR/R4").unwrap();
    assert!(c.search(&base, "Patient", &[]).await.is_err());
    let request = seen.await.unwrap();
    assert!(request.starts_with("CONNECT ehr.example:443"), "{request}");
}

/// A POST (create) is never retried automatically: a 503 fails after one attempt.
#[tokio::test]
async fn post_is_never_retried() {
    let count = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(|State(count): State<Arc<AtomicUsize>>| async move {
            count.fetch_add(1, Ordering::SeqCst);
            StatusCode::SERVICE_UNAVAILABLE
        })
        .with_state(count.clone());
    let base = serve(app).await;
    let url = fhirsync_fhir::join(&base, "Observation").unwrap();
    let req = fhirsync_fhir::Request::post_json(url, r#"{"resourceType":"Observation"}"#);
    let err = client(fast_config(1)).execute(&req).await.unwrap_err();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(matches!(err, Error::RetriesExhausted { attempts: 1, .. }), "{err}");
}
