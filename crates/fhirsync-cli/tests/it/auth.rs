//! `fhirsync auth` reads `[connection]` from the configuration file.

use crate::util::{Env, fhirsync, output, text};

/// `auth test` with only a config file gets a backend-services token and prints its scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_test_uses_the_config_file() {
    let env = Env::start(1).await;
    let config = env.config("");
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["auth", "test"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Access token obtained"), "{}", text(&out));
    assert_eq!(env.sim.state().oauth.tokens_issued(), 1);
}

/// A sync whose credentials are refused exits 3 and creates nothing at the destination: no
/// database file, so no failed run that a rerun would "resume".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_create_nothing() {
    let env = crate::util::Env::start(1).await;
    let config = env.config("");
    let text_config =
        std::fs::read_to_string(&config).unwrap().replace(crate::util::CLIENT_ID, "unregistered-client");
    std::fs::write(&config, text_config).unwrap();
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["sync", "--no-progress"]);
    let out = crate::util::output(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("nothing was changed at the destination"), "{}", text(&out));
    assert!(!text(&out).contains("rerun to resume"), "{}", text(&out));
    assert!(!env.db().exists(), "the database must not be created");
}

/// `auth status` without a login says "Not authenticated" and exits with the auth code 3.
#[test]
fn auth_status_without_login() {
    let dir = tempfile::tempdir().unwrap();
    let out = fhirsync().current_dir(dir.path()).args(["auth", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("Not authenticated"), "{}", text(&out));
}

/// Without a config file, `auth login` asks for the flags it needs (exit 2, no panic).
#[test]
fn auth_login_without_config_or_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = fhirsync().current_dir(dir.path()).args(["auth", "login"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--client-id"), "{}", text(&out));
}
