//! Standalone launch end to end against the simulator: authorize URL, loopback capture, pasted
//! redirect, state check, code exchange with a URL-encoded secret, token store, refresh, status.

use std::time::Duration;

use fhirsync_auth::launch::DEFAULT_SCOPE;
use fhirsync_auth::{
    AuthSettings, AuthStatus, Callback, Error, LoopbackListener, PendingLogin, StoredTokenAuth,
    TokenProvider, TokenState, TokenStore, parse_pasted,
};
use fhirsync_core::ConnectionConfig;
use fhirsync_sim::Sim;
use fhirsync_sim::testing::{SimBuilder, launch_client};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::common;

const CLIENT: &str = "launch-client";
/// A secret with every character Epic's URL-encoding rule is about (`%41` would decode to `A`).
const SECRET: &str = "s3/cr+t=%41x";
const REMOTE_REDIRECT: &str = "https://app.example/callback";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn register(sim: &Sim, redirect: &str, refresh: bool) {
    sim.state().oauth.register_client(launch_client(CLIENT, SECRET, redirect, refresh));
}

/// The `[connection]` section of a standalone login to `sim`.
fn connection(sim: &Sim, redirect: &str, store: &std::path::Path) -> ConnectionConfig {
    ConnectionConfig {
        client_id: Some(CLIENT.into()),
        fhir_r4_endpoint: Some(common::r4_base(sim)),
        redirect_uri: Some(Url::parse(redirect).unwrap()),
        token_store: Some(store.to_path_buf()),
        ..ConnectionConfig::default()
    }
}

/// The settings of `connection` with the registered client secret.
fn settings(connection: &ConnectionConfig) -> AuthSettings<'_> {
    AuthSettings::new(connection).unwrap().with_client_secret(Some(SecretString::from(SECRET)))
}

async fn auto_sim() -> Sim {
    let sim = SimBuilder::new().start().await;
    sim.state().oauth.set_auto_approve(true);
    sim
}

/// Follows the authorize URL like a browser; returns the redirect `Location`.
async fn browse(url: &Url) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 302, "authorize should redirect");
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Logs in through a pasted remote redirect URL; returns the store and the tokens.
async fn login_pasted(
    sim: &Sim,
    dir: &tempfile::TempDir,
    refresh: bool,
) -> (TokenStore, fhirsync_auth::StoredTokens) {
    register(sim, REMOTE_REDIRECT, refresh);
    let http = reqwest::Client::new();
    let connection = connection(sim, REMOTE_REDIRECT, &dir.path().join("tokens.json"));
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let location = browse(pending.authorize_url()).await;
    let store = TokenStore::new(dir.path().join("tokens.json"));
    let tokens = pending.finish(&http, parse_pasted(&location).unwrap(), &store).await.unwrap();
    (store, tokens)
}

/// The authorize URL carries every SMART parameter, a short state and an S256 challenge.
#[tokio::test]
async fn authorize_url_parameters() {
    let sim = auto_sim().await;
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let connection = connection(&sim, REMOTE_REDIRECT, &dir.path().join("t.json"));
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let url = pending.authorize_url();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/interconnect-fhir-oauth/oauth2/authorize", sim.base_url())
    );
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["redirect_uri"], REMOTE_REDIRECT);
    assert_eq!(q["scope"], DEFAULT_SCOPE);
    assert_eq!(q["aud"], common::r4_base(&sim).as_str());
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!((22..=32).contains(&q["state"].len()));
    assert!(!url.as_str().contains(SECRET) && !url.as_str().contains("s3%2Fcr"));
}

/// Loopback redirect: the listener captures the code, the exchange succeeds, tokens are stored
/// 0600, and the browser gets "Login complete" only after the exchange.
#[tokio::test]
async fn loopback_login_end_to_end() {
    let sim = auto_sim().await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    register(&sim, &redirect, true);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("sub").join("tokens.json");
    let connection = connection(&sim, &redirect, &store_path);
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let listener = LoopbackListener::bind(pending.redirect_uri()).await.unwrap();
    let wait = tokio::spawn(listener.wait(Duration::from_secs(10)));
    let location = browse(pending.authorize_url()).await;
    assert!(location.starts_with(&redirect));
    let browser = tokio::spawn(async move {
        let page = reqwest::get(&location).await.unwrap();
        (page.status(), page.text().await.unwrap())
    });
    let redirect = tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!browser.is_finished(), "the browser must wait for the code exchange");
    assert_eq!(sim.state().oauth.tokens_issued(), 0);
    let store = TokenStore::new(&store_path);
    let tokens = pending.finish_redirect(&http, redirect, &store).await.unwrap();
    let (status, page) = tokio::time::timeout(Duration::from_secs(10), browser).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("Login complete"), "{page}");
    assert!(sim.accepts(tokens.access_token.expose_secret()));
    assert!(tokens.refresh_token.is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&store_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.access_token.expose_secret(), tokens.access_token.expose_secret());
    assert_eq!(loaded.scopes, vec!["openid", "fhirUser", "offline_access"]);
}

/// A code exchange the token endpoint refuses is reported on the browser page ("Login failed"
/// with the endpoint's error), never as "Login complete"; nothing is stored.
#[tokio::test]
async fn loopback_page_reports_failed_exchange() {
    let sim = auto_sim().await;
    let redirect = format!("http://127.0.0.1:{}/callback", free_port());
    register(&sim, &redirect, true);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("tokens.json");
    let connection = connection(&sim, &redirect, &store_path);
    let settings = settings(&connection).with_client_secret(Some(SecretString::from("not-the-secret")));
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let listener = LoopbackListener::bind(pending.redirect_uri()).await.unwrap();
    let wait = tokio::spawn(listener.wait(Duration::from_secs(10)));
    let location = browse(pending.authorize_url()).await;
    let browser = tokio::spawn(async move { reqwest::get(&location).await.unwrap().text().await.unwrap() });
    let redirect = tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap().unwrap();
    let store = TokenStore::new(&store_path);
    let err = pending.finish_redirect(&http, redirect, &store).await.unwrap_err();
    assert!(matches!(err, Error::ClientRejected { ref error, .. } if error == "invalid_client"), "{err}");
    let page = tokio::time::timeout(Duration::from_secs(10), browser).await.unwrap().unwrap();
    assert!(page.contains("Login failed") && page.contains("invalid_client"), "{page}");
    assert!(!page.contains("Login complete"), "{page}");
    assert!(!page.contains("not-the-secret"), "{page}");
    assert!(!store_path.exists());
}

/// An error redirect from the authorization server is answered with a failure page at once.
#[tokio::test]
async fn loopback_page_reports_denied_login() {
    let addr = format!("http://127.0.0.1:{}/callback", free_port());
    let listener = LoopbackListener::bind(&Url::parse(&addr).unwrap()).await.unwrap();
    let wait = tokio::spawn(listener.wait(Duration::from_secs(10)));
    let page =
        reqwest::get(format!("{addr}?error=access_denied&state=s")).await.unwrap().text().await.unwrap();
    assert!(page.contains("Login failed") && page.contains("access_denied"), "{page}");
    let err = wait.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::AuthorizationDenied { .. }), "{err}");
}

/// Pasted redirect URL of a non-loopback redirect URI completes the login.
#[tokio::test]
async fn pasted_redirect_url_login() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (_store, tokens) = login_pasted(&sim, &dir, false).await;
    assert!(sim.accepts(tokens.access_token.expose_secret()));
    assert!(tokens.refresh_token.is_none(), "client not configured for refresh tokens");
}

/// A redirect whose state differs from the one sent is refused before any exchange.
#[tokio::test]
async fn wrong_state_rejected() {
    let sim = auto_sim().await;
    register(&sim, REMOTE_REDIRECT, false);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let connection = connection(&sim, REMOTE_REDIRECT, &dir.path().join("t.json"));
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let location = browse(pending.authorize_url()).await;
    let mut callback = parse_pasted(&location).unwrap();
    callback.state = Some("forged-state".into());
    let store = TokenStore::new(dir.path().join("t.json"));
    let err = pending.finish(&http, callback, &store).await.unwrap_err();
    assert!(matches!(err, Error::StateMismatch));
    assert_eq!(sim.state().oauth.tokens_issued(), 0);
    assert!(!store.path().exists());
}

/// The secret with `/+=%` works URL-encoded (ours) and fails sent raw; codes are single-use.
#[tokio::test]
async fn secret_must_be_url_encoded() {
    use base64::Engine;
    let sim = auto_sim().await;
    register(&sim, REMOTE_REDIRECT, false);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let connection = connection(&sim, REMOTE_REDIRECT, &dir.path().join("t.json"));
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let location = browse(pending.authorize_url()).await;
    let callback = parse_pasted(&location).unwrap();
    // Raw (not URL-encoded) secret: refused, and the code is burned like at Epic.
    let raw = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"));
    let r = http
        .post(sim.token_url())
        .header("Authorization", format!("Basic {raw}"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", callback.code.expose_secret()),
            ("redirect_uri", REMOTE_REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_client");
    // Encoded: a fresh login works.
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let callback = parse_pasted(&browse(pending.authorize_url()).await).unwrap();
    let store = TokenStore::new(dir.path().join("t.json"));
    let code = callback.code.clone();
    pending.finish(&http, callback, &store).await.unwrap();
    // The same code again: invalid_grant.
    let again = pending.finish(&http, Callback { code, state: None }, &store).await.unwrap_err();
    assert!(matches!(again, Error::TokenEndpoint { ref error, .. } if error == "invalid_grant"), "{again}");
}

/// The simulator refuses PKCE `plain` and a missing scope with an error redirect.
#[tokio::test]
async fn authorize_refuses_plain_pkce_and_no_scope() {
    let sim = auto_sim().await;
    register(&sim, REMOTE_REDIRECT, false);
    let aud = common::r4_base(&sim);
    let base = format!("{}/interconnect-fhir-oauth/oauth2/authorize", sim.base_url());
    let mut url = Url::parse(&base).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT)
        .append_pair("redirect_uri", REMOTE_REDIRECT)
        .append_pair("scope", "openid")
        .append_pair("state", "s1")
        .append_pair("aud", aud.as_str())
        .append_pair("code_challenge", "abc")
        .append_pair("code_challenge_method", "plain");
    assert!(browse(&url).await.contains("error=invalid_request"));
    let no_scope = Url::parse(&url.as_str().replace("scope=openid&", "").replace("plain", "S256")).unwrap();
    assert!(browse(&no_scope).await.contains("error=invalid_scope"));
}

/// Without auto-approve the simulator shows a sign-in form; the sandbox user gets the redirect.
#[tokio::test]
async fn sign_in_form() {
    let sim = SimBuilder::new().start().await;
    register(&sim, REMOTE_REDIRECT, false);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let connection = connection(&sim, REMOTE_REDIRECT, &dir.path().join("t.json"));
    let settings = settings(&connection);
    let pending = PendingLogin::new(settings.launch_settings(&http).await.unwrap()).unwrap();
    let page = http.get(pending.authorize_url().clone()).send().await.unwrap().text().await.unwrap();
    let id =
        page.split("name=\"request_id\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let signin = format!("{}/interconnect-fhir-oauth/oauth2/signin", sim.base_url());
    let bad = http
        .post(&signin)
        .form(&[("request_id", id.as_str()), ("username", "FHIR"), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 200, "form shown again");
    let good = http
        .post(&signin)
        .form(&[("request_id", id.as_str()), ("username", "FHIR"), ("password", "EpicFhir11!")])
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 302);
    let location = good.headers()["location"].to_str().unwrap();
    let store = TokenStore::new(dir.path().join("t.json"));
    let tokens = pending.finish(&http, parse_pasted(location).unwrap(), &store).await.unwrap();
    assert!(sim.accepts(tokens.access_token.expose_secret()));
}

/// A 401 on the stored token triggers a refresh that keeps the old refresh token and persists.
#[tokio::test]
async fn refresh_keeps_refresh_token() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, tokens) = login_pasted(&sim, &dir, true).await;
    let old_refresh = tokens.refresh_token.clone().unwrap();
    let auth = StoredTokenAuth::open(reqwest::Client::new(), store.clone(), Some(SecretString::from(SECRET)))
        .unwrap();
    let first = auth.access_token().await.unwrap();
    assert_eq!(first.expose_secret(), tokens.access_token.expose_secret());
    sim.state().oauth.expire_all_tokens();
    assert!(!sim.accepts(first.expose_secret()));
    auth.invalidate(&first);
    let second = auth.access_token().await.unwrap();
    assert_ne!(second.expose_secret(), first.expose_secret());
    assert!(sim.accepts(second.expose_secret()));
    let saved = store.load().unwrap().unwrap();
    assert_eq!(saved.access_token.expose_secret(), second.expose_secret());
    assert_eq!(saved.refresh_token.unwrap().expose_secret(), old_refresh.expose_secret());
}

/// An access token that expires mid-run is refreshed on the next call.
#[tokio::test]
async fn expiry_mid_run_refreshes() {
    let sim = auto_sim().await;
    sim.state().oauth.set_token_lifetime(Duration::from_secs(31));
    let dir = tempfile::tempdir().unwrap();
    let (store, tokens) = login_pasted(&sim, &dir, true).await;
    let auth =
        StoredTokenAuth::open(reqwest::Client::new(), store, Some(SecretString::from(SECRET))).unwrap();
    // 31 s lifetime minus the 30 s margin: stale after one second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let token = auth.access_token().await.unwrap();
    assert_ne!(token.expose_secret(), tokens.access_token.expose_secret());
    assert_eq!(sim.state().oauth.tokens_issued(), 2);
}

/// Status reads Not authenticated / Verified / renewing soon / expired from the store without
/// showing tokens; "renewing soon" covers the renewal margin before the real expiry.
#[tokio::test]
async fn status_states() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = TokenStore::new(dir.path().join("nope.json"));
    assert_eq!(missing.status().unwrap(), AuthStatus::NotAuthenticated);
    let (store, mut tokens) = login_pasted(&sim, &dir, false).await;
    let state = |store: &TokenStore| match store.status().unwrap() {
        AuthStatus::Stored { state, refreshable, .. } => (state, refreshable),
        other => panic!("{other:?}"),
    };
    assert_eq!(state(&store), (TokenState::Verified, false));
    tokens.access_expires_at = chrono::Utc::now() + chrono::Duration::seconds(10);
    store.save(&tokens).unwrap();
    assert_eq!(state(&store), (TokenState::RenewingSoon, false));
    tokens.access_expires_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    store.save(&tokens).unwrap();
    assert_eq!(state(&store), (TokenState::Expired, false));
    assert!(TokenState::Expired.login_needed(false) && !TokenState::Expired.login_needed(true));
    let debug = format!("{:?}", store.status().unwrap());
    assert!(!debug.contains(tokens.access_token.expose_secret()));
    let err =
        StoredTokenAuth::open(reqwest::Client::new(), store, None).unwrap().access_token().await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated { .. }));
}

/// A refused refresh (`invalid_grant`) while the access token still has life left keeps using
/// that token, records the refusal (time + reason, no token) in the store, does not ask again,
/// and fails with the re-login hint only once the token has really expired.
#[tokio::test]
async fn refused_refresh_rides_out_the_access_token() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut tokens) = login_pasted(&sim, &dir, true).await;
    tokens.refresh_token = Some(SecretString::from("simrt-revoked"));
    // Within the renewal margin (a refresh is due) but 2 s from the real expiry.
    tokens.access_expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    store.save(&tokens).unwrap();
    let before = chrono::Utc::now();
    let auth = StoredTokenAuth::open(reqwest::Client::new(), store.clone(), Some(SecretString::from(SECRET)))
        .unwrap();
    let token = auth.access_token().await.unwrap();
    assert_eq!(token.expose_secret(), tokens.access_token.expose_secret(), "the current token is kept");
    assert!(sim.accepts(token.expose_secret()));
    let refusal = store.load().unwrap().unwrap().refresh_refused.expect("refusal recorded");
    assert!(refusal.at >= before && refusal.at <= chrono::Utc::now());
    assert!(refusal.reason.contains("invalid_grant"), "{}", refusal.reason);
    let file = std::fs::read_to_string(store.path()).unwrap();
    let recorded = file.split("\"refresh_refused\"").nth(1).unwrap();
    assert!(!recorded.contains("simrt-revoked") && !recorded.contains(tokens.access_token.expose_secret()));
    match store.status().unwrap() {
        AuthStatus::Stored { state: TokenState::RefreshRefused(r), refreshable, .. } => {
            assert_eq!(r, refusal);
            assert!(TokenState::RefreshRefused(r).login_needed(refreshable));
        }
        other => panic!("after a refused refresh the status must not be Verified: {other:?}"),
    }
    // Still usable: the same token again, without another refresh request.
    assert_eq!(auth.access_token().await.unwrap().expose_secret(), token.expose_secret());
    // A new run on the same store rides on it too.
    let again =
        StoredTokenAuth::open(reqwest::Client::new(), store.clone(), Some(SecretString::from(SECRET)))
            .unwrap();
    assert_eq!(again.access_token().await.unwrap().expose_secret(), token.expose_secret());
    assert_eq!(sim.state().oauth.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = auth.access_token().await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("refused the refresh") && message.contains("fhirsync auth login"), "{message}");
    assert!(!message.contains("simrt-revoked"));
}

/// A new login clears a recorded refusal: the status is Verified again.
#[tokio::test]
async fn login_clears_refusal() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut tokens) = login_pasted(&sim, &dir, true).await;
    tokens.refresh_refused = Some(fhirsync_auth::RefreshRefusal {
        at: chrono::Utc::now(),
        reason: "HTTP 400 `invalid_grant`".into(),
    });
    store.save(&tokens).unwrap();
    assert!(matches!(
        store.status().unwrap(),
        AuthStatus::Stored { state: TokenState::RefreshRefused(_), .. }
    ));
    let (store, _) = login_pasted(&sim, &dir, true).await;
    assert!(matches!(store.status().unwrap(), AuthStatus::Stored { state: TokenState::Verified, .. }));
}

/// Debug of every secret-holding type shows no secret, code, verifier or token.
#[tokio::test]
async fn debug_redacts_secrets() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, tokens) = login_pasted(&sim, &dir, true).await;
    let http = reqwest::Client::new();
    let connection = connection(&sim, REMOTE_REDIRECT, store.path());
    let settings = settings(&connection).with_private_key(SecretString::from(common::RSA_PKCS8));
    let launch = settings.launch_settings(&http).await.unwrap();
    let pending = PendingLogin::new(launch.clone()).unwrap();
    let callback = Callback { code: SecretString::from("the-code-123"), state: None };
    let auth = StoredTokenAuth::open(http, store, Some(SecretString::from(SECRET))).unwrap();
    let all = format!("{settings:?}{launch:?}{pending:?}{callback:?}{tokens:?}{auth:?}");
    for secret in [
        SECRET,
        "the-code-123",
        tokens.access_token.expose_secret(),
        tokens.refresh_token.as_ref().unwrap().expose_secret(),
    ] {
        assert!(!all.contains(secret), "leaked {secret}");
    }
    assert!(!all.contains(common::RSA_PKCS8.lines().nth(1).unwrap()));
}

/// An unregistered redirect URI gets a 400 page (never a redirect); a foreign `aud` an error redirect.
#[tokio::test]
async fn authorize_checks_redirect_and_aud() {
    let sim = auto_sim().await;
    register(&sim, REMOTE_REDIRECT, false);
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let mut c = connection(&sim, "https://evil.example/callback", &dir.path().join("t.json"));
    let pending = PendingLogin::new(settings(&c).launch_settings(&http).await.unwrap()).unwrap();
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(pending.authorize_url().clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    c.redirect_uri = Some(Url::parse(REMOTE_REDIRECT).unwrap());
    c.audience = Some(Url::parse("https://other.example/FHIR/R4").unwrap());
    let pending = PendingLogin::new(settings(&c).launch_settings(&http).await.unwrap()).unwrap();
    assert!(browse(pending.authorize_url()).await.contains("error=invalid_request"));
}

/// A refresh token the server no longer knows ends in "not authenticated, log in again".
#[tokio::test]
async fn refused_refresh_token_asks_for_login() {
    let sim = auto_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, mut tokens) = login_pasted(&sim, &dir, true).await;
    tokens.refresh_token = Some(SecretString::from("simrt-unknown"));
    tokens.access_expires_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    store.save(&tokens).unwrap();
    let auth =
        StoredTokenAuth::open(reqwest::Client::new(), store, Some(SecretString::from(SECRET))).unwrap();
    let err = auth.access_token().await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated { .. }), "{err}");
    assert!(err.to_string().contains("fhirsync auth login"));
    assert!(store_path_refused(&dir), "the refusal is recorded");
}

fn store_path_refused(dir: &tempfile::TempDir) -> bool {
    TokenStore::new(dir.path().join("tokens.json")).load().unwrap().unwrap().refresh_refused.is_some()
}
