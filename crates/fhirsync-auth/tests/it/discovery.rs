//! Discovery: smart-configuration, fallback to `/metadata`, explicit Auth Base URI.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::HeaderMap;
use axum::routing::get;
use fhirsync_auth::Endpoints;
use fhirsync_auth::discovery::discover;
use fhirsync_sim::testing::SimBuilder;
use serde_json::json;
use url::Url;

use crate::common;

/// The simulator's smart-configuration gives its token and authorize endpoints.
#[tokio::test]
async fn smart_configuration_discovered() {
    let sim = SimBuilder::new().start().await;
    let endpoints = discover(&reqwest::Client::new(), &common::r4_base(&sim), "c1").await.unwrap();
    assert_eq!(endpoints, common::endpoints(&sim));
}

/// The Auth Base URI gives token = base + /token and authorize = base + /authorize.
#[test]
fn auth_base_override() {
    let base = Url::parse("https://fhir.epic.com/interconnect-fhir-oauth/oauth2/").unwrap();
    let e = Endpoints::from_auth_base(&base).unwrap();
    assert_eq!(e.token.as_str(), "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token");
    assert_eq!(
        e.authorize.unwrap().as_str(),
        "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/authorize"
    );
}

/// Without smart-configuration, `/metadata` is asked for JSON with `Epic-Client-ID` and its oauth-uris used.
#[tokio::test]
async fn metadata_fallback() {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/fhir/metadata",
        get(move |headers: HeaderMap| {
            let seen = seen2.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                seen.lock().unwrap().push((h("accept"), h("epic-client-id")));
                Json(json!({
                    "resourceType": "CapabilityStatement",
                    "rest": [{"mode": "server", "security": {"extension": [{
                        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                        "extension": [
                            {"url": "authorize", "valueUri": "https://auth.example/oauth2/authorize"},
                            {"url": "token", "valueUri": "https://auth.example/oauth2/token"}
                        ]
                    }]}}]
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = Url::parse(&format!("http://{addr}/fhir/")).unwrap();
    let e = discover(&reqwest::Client::new(), &base, "client-42").await.unwrap();
    assert_eq!(e.token.as_str(), "https://auth.example/oauth2/token");
    assert_eq!(e.authorize.unwrap().as_str(), "https://auth.example/oauth2/authorize");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[("application/fhir+json".to_string(), "client-42".to_string())]
    );
}

/// When neither document is available the error says to set the Auth Base URI, and keeps both
/// failures typed: the metadata one as its source.
#[tokio::test]
async fn discovery_failure_names_fix() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await.unwrap() });
    let base = Url::parse(&format!("http://{addr}/fhir")).unwrap();
    let err = discover(&reqwest::Client::new(), &base, "c").await.unwrap_err();
    assert!(err.to_string().contains("Auth Base URI"), "{err}");
    let fhirsync_auth::Error::Discovery { smart_configuration, source, .. } = &err else {
        panic!("not a discovery error: {err}");
    };
    let status = |e: &fhirsync_auth::Error| match e {
        fhirsync_auth::Error::UnexpectedResponse { status, .. } => Some(*status),
        _ => None,
    };
    assert_eq!((status(smart_configuration), status(source)), (Some(404), Some(404)), "{err}");
    let chained = std::error::Error::source(&err).map(|s| s.to_string());
    assert_eq!(chained, Some(source.to_string()));
}

/// The simulator's `/metadata` oauth-uris agree with its smart-configuration.
#[tokio::test]
async fn sim_metadata_matches_smart_configuration() {
    let sim = SimBuilder::new().start().await;
    let http = reqwest::Client::new();
    let base = common::r4_base(&sim);
    let from_metadata = fhirsync_auth::discovery::from_metadata(&http, &base, "c1").await.unwrap();
    assert_eq!(from_metadata, common::endpoints(&sim));
}

/// The simulator's smart-configuration advertises what Epic's sandbox does (PKCE S256 only, auth methods, grants).
#[tokio::test]
async fn sim_smart_configuration_content() {
    let sim = SimBuilder::new().start().await;
    let url = format!("{}/.well-known/smart-configuration", common::r4_base(&sim));
    let doc: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post", "client_secret_basic", "private_key_jwt"])
    );
    let grants = doc["grant_types_supported"].as_array().unwrap();
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(grants.contains(&json!(g)), "{g}");
    }
    let caps = doc["capabilities"].as_array().unwrap();
    assert!(
        caps.contains(&json!("launch-standalone")) && caps.contains(&json!("client-confidential-asymmetric"))
    );
    assert!(doc.get("token_endpoint_auth_signing_alg_values_supported").is_none(), "absent at Epic");
}

/// A FHIR base nobody listens on is a network failure named as such (connection refused, check
/// the port), not a discovery failure asking for the Auth Base URI.
#[tokio::test]
async fn unreachable_server_says_refused_not_auth_base_uri() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = url::Url::parse(&format!("http://127.0.0.1:{port}/api/FHIR/R4")).unwrap();
    let http = fhirsync_auth::http_client(&Default::default()).unwrap();
    let err = fhirsync_auth::discovery::discover(&http, &base, "client").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, fhirsync_auth::Error::Unreachable { .. }), "{text}");
    assert!(text.contains("connection refused: check the port"), "{text}");
    assert!(!text.contains("Auth Base URI") && !text.contains("error sending request"), "{text}");
}

/// An unknown host says the DNS lookup failed and points at the host name and proxy.
#[tokio::test]
async fn unknown_host_says_dns() {
    let base = url::Url::parse("http://fhirsync-test.invalid/api/FHIR/R4").unwrap();
    let http = fhirsync_auth::http_client(&Default::default()).unwrap();
    let text = fhirsync_auth::discovery::discover(&http, &base, "client").await.unwrap_err().to_string();
    assert!(text.contains("host not found (DNS lookup failed)"), "{text}");
}

/// The auth client takes `[connection] https_proxy` as the FHIR client does: discovery of an
/// HTTPS server is tunnelled through the proxy (CONNECT), not sent around it.
#[tokio::test]
async fn discovery_goes_through_the_https_proxy() {
    let (addr, seen) = fhirsync_sim::testing::recording_proxy().await;
    let connection =
        fhirsync_core::ConnectionConfig { https_proxy: Some(format!("http://{addr}")), ..Default::default() };
    let http = fhirsync_auth::http_client(&connection).unwrap();
    let base = url::Url::parse("https://ehr.example/api/FHIR/R4").unwrap();
    assert!(discover(&http, &base, "client").await.is_err());
    let request = seen.await.unwrap();
    assert!(request.starts_with("CONNECT ehr.example:443"), "{request}");
}

/// A CA bundle that holds no certificate is a configuration error naming the file, before any
/// request is sent.
#[test]
fn bad_ca_bundle_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corp-ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let connection = fhirsync_core::ConnectionConfig { ca_bundle: Some(path), ..Default::default() };
    let err = fhirsync_auth::http_client(&connection).unwrap_err();
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("corp-ca.pem"), "{err}");
}
