//! `fhirsync auth` reads `[connection]` from the configuration file.

use crate::util::{CLIENT_ID, Cli, Env, Run, edit, text, toml_path};

/// `auth test` with only a config file gets a backend-services token and prints its scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_test_uses_the_config_file() {
    let env = Env::start(1).await;
    let config = env.config("");
    let out = Cli::config(&config).args(["auth", "test"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("Access token obtained"), "{}", text(&out));
    assert_eq!(env.sim.state().oauth.tokens_issued(), 1);
}

/// A sync whose credentials are refused exits 3 and creates nothing at the destination: no
/// database file, so no failed run that a rerun would "resume".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_create_nothing() {
    let env = Env::start(1).await;
    let config = env.config("");
    edit(&config, |t| t.replace(CLIENT_ID, "unregistered-client"));
    let out = Cli::sync(&config).run().await;
    out.assert_code(3);
    assert!(text(&out).contains("nothing was changed at the destination"), "{}", text(&out));
    assert!(!text(&out).contains("rerun to resume"), "{}", text(&out));
    assert!(!env.db().exists(), "the database must not be created");
}

/// `auth status` without a login says "Not authenticated" and exits with the auth code 3.
#[test]
fn auth_status_without_login() {
    let dir = tempfile::tempdir().unwrap();
    let out = Cli::bare().current_dir(dir.path()).args(["auth", "status"]).run_now();
    out.assert_code(3);
    assert!(text(&out).contains("Not authenticated"), "{}", text(&out));
}

/// Without a config file, `auth login` asks for the flags it needs (exit 2, no panic).
#[test]
fn auth_login_without_config_or_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = Cli::bare().current_dir(dir.path()).args(["auth", "login"]).run_now();
    out.assert_code(2);
    assert!(text(&out).contains("--client-id"), "{}", text(&out));
}

/// Writes a token store in `dir` whose access token expires `expires_in_secs` from now.
fn store_with(
    dir: &std::path::Path,
    expires_in_secs: i64,
    refused: Option<fhirsync_auth::RefreshRefusal>,
) -> std::path::PathBuf {
    let path = dir.join("tokens.json");
    let now = chrono::Utc::now();
    let tokens = fhirsync_auth::StoredTokens {
        client_id: "status-client".into(),
        token_url: url::Url::parse("https://auth.example/oauth2/token").unwrap(),
        fhir_base: None,
        access_token: secrecy::SecretString::from("access-token-value-123"),
        access_expires_at: now + chrono::Duration::seconds(expires_in_secs),
        refresh_token: Some(secrecy::SecretString::from("refresh-token-value-456")),
        scopes: vec!["openid".into()],
        updated_at: now,
        refresh_refused: refused,
    };
    fhirsync_auth::TokenStore::new(&path).save(&tokens).unwrap();
    path
}

fn auth_status(dir: &std::path::Path, store: &std::path::Path) -> Run {
    Cli::bare().current_dir(dir).args(["auth", "status", "--token-store"]).arg(store).run_now()
}

/// Within the renewal margin `auth status` says "Renewing soon" (exit 0), not "expired".
#[test]
fn auth_status_renewing_soon() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 20, None);
    let out = auth_status(dir.path(), &store);
    out.assert_code(0);
    assert!(text(&out).contains("Renewing soon"), "{}", text(&out));
    assert!(!text(&out).to_lowercase().contains("expired"), "{}", text(&out));
    let far = store_with(dir.path(), 3600, None);
    assert!(text(&auth_status(dir.path(), &far)).contains("Verified"));
}

/// After a refused refresh `auth status` says "Refresh refused at ... (login needed)", never
/// "Verified", exits 3, and shows no token.
#[test]
fn auth_status_refresh_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = chrono::Utc::now();
    let refusal = fhirsync_auth::RefreshRefusal { at, reason: "HTTP 400 `invalid_grant`".into() };
    let store = store_with(dir.path(), 3600, Some(refusal));
    let out = auth_status(dir.path(), &store);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    let when = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    assert!(t.contains(&format!("Refresh refused at {when} (login needed)")), "{t}");
    assert!(t.contains("invalid_grant") && t.contains("fhirsync auth login"), "{t}");
    assert!(!t.contains("Verified"), "{t}");
    assert!(!t.contains("access-token-value-123") && !t.contains("refresh-token-value-456"), "{t}");
}

/// A sync on a standalone-login token store whose refresh is refused, while the access token
/// still has time left, completes on that token (exit 0) and leaves "refresh refused" for
/// `auth status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rides_on_the_access_token_after_a_refused_refresh() {
    let env = Env::start(1).await;
    let store_path = env.dir.path().join("tokens.json");
    let now = chrono::Utc::now();
    let access = env.sim.state().oauth.issue_token(CLIENT_ID, &["system/*.read"]);
    let tokens = fhirsync_auth::StoredTokens {
        client_id: CLIENT_ID.into(),
        token_url: url::Url::parse(&env.sim.token_url()).unwrap(),
        fhir_base: None,
        access_token: secrecy::SecretString::from(access.clone()),
        // Inside the renewal margin: every use asks for a refresh, which the server refuses.
        access_expires_at: now + chrono::Duration::seconds(25),
        refresh_token: Some(secrecy::SecretString::from("simrt-revoked")),
        scopes: vec!["system/*.read".into()],
        updated_at: now,
        refresh_refused: None,
    };
    fhirsync_auth::TokenStore::new(&store_path).save(&tokens).unwrap();
    let config = env.config("");
    let key_line = format!("private_key = \"{}\"\n", toml_path(&env.key_path));
    edit(&config, |t| {
        let t = t.replace(&key_line, &format!("token_store = \"{}\"\n", toml_path(&store_path)));
        assert!(!t.contains("private_key"), "{t}");
        t
    });
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    assert!(!text(&out).contains(&access) && !text(&out).contains("simrt-revoked"), "{}", text(&out));
    let saved = fhirsync_auth::TokenStore::new(&store_path).load().unwrap().unwrap();
    assert!(saved.refresh_refused.is_some(), "the refusal is recorded");
    let status = auth_status(env.dir.path(), &store_path);
    status.assert_code(3);
    assert!(text(&status).contains("(login needed)"), "{}", text(&status));
}
