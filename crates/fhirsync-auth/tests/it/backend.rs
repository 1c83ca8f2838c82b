//! SMART Backend Services: JWT client assertion accepted/refused by the simulator for every
//! Epic rule, and the provider's caching, renewal and invalidation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fhirsync_auth::{BackendServicesAuth, Error, SigningKey, TokenProvider};
use fhirsync_sim::testing::SimBuilder;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::common::{self, EC_P384_SEC1, RSA_PKCS1, RSA_PKCS8};

const CLIENT: &str = "backend-client-1";

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn provider(sim: &fhirsync_sim::Sim, key: SigningKey) -> BackendServicesAuth {
    BackendServicesAuth::new(reqwest::Client::new(), CLIENT, common::token_url(sim), key, None)
}

/// Claims as the provider builds them, for tampering.
fn good_claims(sim: &fhirsync_sim::Sim) -> Value {
    json!({
        "iss": CLIENT, "sub": CLIENT, "aud": sim.token_url(),
        "jti": uuid::Uuid::new_v4().to_string(), "exp": now() + 240, "iat": now() - 30, "nbf": now() - 30,
    })
}

/// POSTs a hand-made assertion; returns (status, body).
async fn post_assertion(sim: &fhirsync_sim::Sim, assertion: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn assert_invalid_client(sim: &fhirsync_sim::Sim, key: &SigningKey, claims: Value) {
    let jwt = key.sign(&claims).unwrap();
    let (status, body) = post_assertion(sim, &jwt).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "invalid_client", "error_description": null}));
}

/// A correctly signed RS384 assertion (PKCS#8 key) yields a bearer token the FHIR side accepts.
#[tokio::test]
async fn good_signature_gets_token() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let auth = provider(&sim, key);
    let token = auth.access_token().await.unwrap();
    assert!(sim.accepts(token.expose_secret()));
    let info = auth.token_info().await.unwrap();
    assert_eq!(info.scopes, vec!["system/Patient.read", "system/Observation.read"]);
    assert!(info.expires_at > SystemTime::now() + Duration::from_secs(3000));
}

/// The hand-built good claims are accepted, so the refusal tests below fail for their one change.
#[tokio::test]
async fn raw_good_assertion_accepted() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let (status, body) = post_assertion(&sim, &key.sign(&good_claims(&sim)).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
}

/// A PKCS#1 PEM of the same key signs assertions the server accepts.
#[tokio::test]
async fn pkcs1_pem_works() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS1);
    assert_eq!(key.kid(), common::key(RSA_PKCS8).kid(), "same key, same thumbprint");
    common::register_backend(&sim, CLIENT, &key, false);
    let token = provider(&sim, key).access_token().await.unwrap();
    assert!(sim.accepts(token.expose_secret()));
}

/// An EC P-384 key signs ES384 and is accepted when the client registered a JWK Set URL.
#[tokio::test]
async fn ec_p384_via_jwks_url() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(EC_P384_SEC1);
    assert_eq!(key.alg(), jsonwebtoken::Algorithm::ES384);
    common::register_backend(&sim, CLIENT, &key, true);
    let token = provider(&sim, key).access_token().await.unwrap();
    assert!(sim.accepts(token.expose_secret()));
}

/// EC keys are refused for a static (uploaded) key registration, as Epic.
#[tokio::test]
async fn ec_refused_for_static_registration() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(EC_P384_SEC1);
    common::register_backend(&sim, CLIENT, &key, false);
    let err = provider(&sim, key).access_token().await.unwrap_err();
    assert!(matches!(err, Error::ClientRejected { ref error, .. } if error == "invalid_client"), "{err}");
}

/// An assertion signed by a key other than the registered one is refused.
#[tokio::test]
async fn bad_signature_refused_with_hint() {
    let sim = SimBuilder::new().start().await;
    common::register_backend(&sim, CLIENT, &common::key(RSA_PKCS8), false);
    let other = fhirsync_auth::generate_private_key(fhirsync_auth::KeyType::Rsa(2048)).unwrap();
    let other = SigningKey::from_pem(&other, "generated", None).unwrap();
    let err = provider(&sim, other).access_token().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::ClientRejected { .. }));
    assert!(
        message.contains("invalid_client") && message.contains("public key") && message.contains("synced"),
        "{message}"
    );
}

/// `exp` in the past is refused.
#[tokio::test]
async fn expired_exp_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["exp"] = json!(now() - 10);
    claims["iat"] = json!(now() - 100);
    claims["nbf"] = json!(now() - 100);
    assert_invalid_client(&sim, &key, claims).await;
}

/// `exp` more than 5 minutes ahead is refused.
#[tokio::test]
async fn exp_too_far_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["exp"] = json!(now() + 301 + 5);
    claims.as_object_mut().unwrap().remove("iat");
    claims.as_object_mut().unwrap().remove("nbf");
    assert_invalid_client(&sim, &key, claims).await;
}

/// `iat` in the future is refused.
#[tokio::test]
async fn future_iat_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["iat"] = json!(now() + 60);
    assert_invalid_client(&sim, &key, claims).await;
}

/// A `jti` used before is refused the second time.
#[tokio::test]
async fn reused_jti_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let jwt = key.sign(&good_claims(&sim)).unwrap();
    assert_eq!(post_assertion(&sim, &jwt).await.0, 200);
    let (status, body) = post_assertion(&sim, &jwt).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client")));
}

/// A numeric or overlong `jti` is refused.
#[tokio::test]
async fn bad_jti_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["jti"] = json!(12345);
    assert_invalid_client(&sim, &key, claims.clone()).await;
    claims["jti"] = json!("x".repeat(152));
    assert_invalid_client(&sim, &key, claims).await;
}

/// An `aud` other than the token URL is refused.
#[tokio::test]
async fn wrong_aud_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["aud"] = json!(format!("{}/interconnect-fhir-oauth/oauth2/authorize", sim.base_url()));
    assert_invalid_client(&sim, &key, claims).await;
}

/// `iss` different from `sub` is refused.
#[tokio::test]
async fn iss_not_sub_refused() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let mut claims = good_claims(&sim);
    claims["sub"] = json!("someone-else");
    assert_invalid_client(&sim, &key, claims).await;
}

/// A client not mapped to a background user gets `unauthorized_client`, reported with the ECSA hint.
#[tokio::test]
async fn unauthorized_client_message() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    sim.state().oauth.register_client(fhirsync_sim::oauth::ClientRegistration {
        background_user_missing: true,
        ..fhirsync_sim::testing::backend_client(CLIENT, key.jwks(), false)
    });
    let err = provider(&sim, key).access_token().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unauthorized_client") && message.contains("background user"), "{message}");
}

/// Form body only: parameters in the query string and JSON bodies get 400 `invalid_request`.
#[tokio::test]
async fn query_string_and_json_refused() {
    let sim = SimBuilder::new().start().await;
    let http = reqwest::Client::new();
    let r = http.post(format!("{}?grant_type=client_credentials", sim.token_url())).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r =
        http.post(sim.token_url()).json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

/// Repeated and concurrent calls share one cached token (single flight).
#[tokio::test]
async fn token_cached_and_single_flight() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let auth = Arc::new(provider(&sim, key));
    let calls = (0..8).map(|_| {
        let auth = auth.clone();
        tokio::spawn(async move { auth.access_token().await.unwrap() })
    });
    let tokens: Vec<SecretString> =
        futures::future::join_all(calls).await.into_iter().map(Result::unwrap).collect();
    assert!(tokens.iter().all(|t| t.expose_secret() == tokens[0].expose_secret()));
    auth.access_token().await.unwrap();
    assert_eq!(sim.state().oauth.tokens_issued(), 1);
}

/// A token about to expire mid-run is renewed before use.
#[tokio::test]
async fn short_lived_token_renewed() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    sim.state().oauth.set_token_lifetime(Duration::from_secs(2));
    let auth = provider(&sim, key);
    let first = auth.access_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(!sim.accepts(first.expose_secret()), "first token expired on the server");
    let second = auth.access_token().await.unwrap();
    assert_ne!(first.expose_secret(), second.expose_secret());
    assert!(sim.accepts(second.expose_secret()));
}

/// After a 401 (server-side expiry) `invalidate` makes the next call mint a new, valid token.
#[tokio::test]
async fn invalidate_after_401_mints_new() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let auth = provider(&sim, key);
    let first = auth.access_token().await.unwrap();
    sim.state().oauth.expire_all_tokens();
    assert!(!sim.accepts(first.expose_secret()));
    assert_eq!(auth.access_token().await.unwrap().expose_secret(), first.expose_secret(), "still cached");
    auth.invalidate(&first);
    let second = auth.access_token().await.unwrap();
    assert!(sim.accepts(second.expose_secret()));
    assert_eq!(sim.state().oauth.tokens_issued(), 2);
}

/// The generated assertion has Epic's header and claim shapes.
#[tokio::test]
async fn assertion_shape() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    let kid = key.kid().to_string();
    let auth = provider(&sim, key);
    let jwt = auth.client_assertion().unwrap();
    let header = jsonwebtoken::decode_header(jwt.expose_secret()).unwrap();
    assert_eq!(
        (header.alg, header.typ.as_deref(), header.kid.as_deref()),
        (jsonwebtoken::Algorithm::RS384, Some("JWT"), Some(kid.as_str()))
    );
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(jwt.expose_secret()).unwrap();
    assert_eq!(claims["iss"], CLIENT);
    assert_eq!(claims["sub"], CLIENT);
    assert_eq!(claims["aud"], sim.token_url());
    assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
    let exp = claims["exp"].as_u64().unwrap();
    assert!((now() + 235..=now() + 241).contains(&exp));
    assert!(claims["iat"].as_u64().unwrap() <= now() - 29);
}

/// Debug output of the provider and of its key never contains key or token material.
#[tokio::test]
async fn debug_is_redacted() {
    let sim = SimBuilder::new().start().await;
    let key = common::key(RSA_PKCS8);
    common::register_backend(&sim, CLIENT, &key, false);
    let auth = provider(&sim, key);
    let token = auth.access_token().await.unwrap();
    let debug = format!("{auth:?} {:?} {token:?}", common::key(RSA_PKCS8));
    assert!(!debug.contains(token.expose_secret()));
    let pem_body: String = RSA_PKCS8.lines().nth(1).unwrap().to_string();
    assert!(!debug.contains(&pem_body));
    assert!(debug.contains("REDACTED"));
}

/// Starts a stub token endpoint answering `responses` in order (then the last one); counts calls.
async fn stub_token_endpoint(
    responses: Vec<(u16, Value)>,
) -> (url::Url, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = responses[n.min(responses.len() - 1)].clone();
            async move { (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(body)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url::Url::parse(&format!("http://{addr}/token")).unwrap(), calls)
}

/// 5xx answers are retried and the third attempt's token is used.
#[tokio::test]
async fn transient_errors_retried() {
    let ok = json!({"access_token": "t-1", "token_type": "Bearer", "expires_in": "3600", "scope": "a b "});
    let (url, calls) = stub_token_endpoint(vec![(503, json!({})), (502, json!({})), (200, ok)]).await;
    let auth = BackendServicesAuth::new(reqwest::Client::new(), CLIENT, url, common::key(RSA_PKCS8), None);
    let info = auth.token_info().await.unwrap();
    assert_eq!(info.scopes, vec!["a", "b"], "Bearer accepted case-insensitively, scope split on whitespace");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// `invalid_client` is not retried: exactly one request, one configuration error.
#[tokio::test]
async fn invalid_client_not_retried() {
    let (url, calls) =
        stub_token_endpoint(vec![(400, json!({"error": "invalid_client", "error_description": null}))]).await;
    let auth = BackendServicesAuth::new(reqwest::Client::new(), CLIENT, url, common::key(RSA_PKCS8), None);
    assert!(matches!(auth.access_token().await.unwrap_err(), Error::ClientRejected { .. }));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A non-OAuth error body (e.g. an HTML page that could echo anything) is not repeated in the error.
#[tokio::test]
async fn non_oauth_error_body_not_echoed() {
    let (url, _) = stub_token_endpoint(vec![(400, json!({"weird": "SECRET-ECHO"}))]).await;
    let auth = BackendServicesAuth::new(reqwest::Client::new(), CLIENT, url, common::key(RSA_PKCS8), None);
    let err = auth.access_token().await.unwrap_err();
    assert!(!err.to_string().contains("SECRET-ECHO"), "{err}");
    assert!(matches!(err, Error::UnexpectedResponse { status: 400, .. }));
}
