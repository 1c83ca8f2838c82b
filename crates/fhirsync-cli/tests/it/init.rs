//! `fhirsync init` end to end: the files it writes, the JWK Set it prints, and that the result
//! authenticates and syncs against the simulator without another edit.

use fhirsync_core::FhirVersion;
use fhirsync_sim::oauth::ClientRegistration;

use crate::util::{Cli, Env, count, text};

/// The JWK Set printed by `init`: the first pretty-printed JSON object on stdout.
fn printed_jwks(stdout: &str) -> serde_json::Value {
    let start = stdout.find("\n{\n").expect("a JWK Set on stdout") + 1;
    let end = stdout[start..].find("\n}\n").expect("end of the JWK Set") + start + 2;
    serde_json::from_str(&stdout[start..end]).expect("the JWK Set is JSON")
}

/// With flags only (no terminal), `init` writes a config and a 0600 key in the current folder,
/// prints the JWK Set, the JKU hosting options and the next commands; once that set is
/// registered, `auth test` and `sync` work with the written file unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_then_auth_test_and_sync() {
    let env = Env::start(2).await;
    let work = tempfile::tempdir().unwrap();
    let out = Cli::bare()
        .current_dir(work.path())
        .args(["init", "--target", "epic-production", "--client-id", "init-client"])
        .arg("--fhir-base")
        .arg(env.sim.fhir_base(FhirVersion::R4))
        .arg("--stu3-base")
        .arg(env.sim.fhir_base(FhirVersion::Stu3))
        .args(["--patient-list", "systemlist|6442"])
        .run()
        .await;
    out.assert_success();
    let stdout = out.stdout_text();
    for expected in [
        "fhirsync keys serve --key keys/fhirsync.pem",
        "keys jwks",
        "JWK Set URL (JKU)",
        "auth test",
        "discover",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}: {stdout}");
    }
    let key = work.path().join("keys/fhirsync.pem");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!stdout.contains(pem.lines().nth(1).unwrap()), "the private key is never printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let jwks = printed_jwks(&stdout);
    assert!(jwks["keys"][0]["kid"].is_string(), "{jwks}");
    assert!(jwks["keys"][0].get("d").is_none(), "no private parts in the JWK Set: {jwks}");
    env.sim.state().oauth.register_client(ClientRegistration {
        client_id: "init-client".into(),
        jwks: Some(jwks),
        jwks_from_url: true,
        ..Default::default()
    });

    let out = Cli::bare().current_dir(work.path()).args(["auth", "test"]).run().await;
    out.assert_success();
    let out = Cli::bare().current_dir(work.path()).args(["sync", "--no-progress"]).run().await;
    out.assert_success();
    assert_eq!(count(&work.path().join("fhirsync.db"), "SELECT COUNT(*) FROM patient"), 2);
}

/// An existing config or key is never overwritten without `--force`: exit 2 naming the file
/// and the flag, the files unchanged; with `--force` both are replaced.
#[test]
fn init_refuses_to_overwrite_without_force() {
    let work = tempfile::tempdir().unwrap();
    let init = |extra: &[&str]| {
        Cli::bare()
            .current_dir(work.path())
            .args(["init", "--target", "epic-sandbox", "--client-id", "sandbox-client", "--ec"])
            .args(extra)
            .run_now()
    };
    let out = init(&[]);
    out.assert_success();
    let config = work.path().join("fhirsync.toml");
    let key = work.path().join("keys/fhirsync.pem");
    let (config_before, key_before) = (std::fs::read(&config).unwrap(), std::fs::read(&key).unwrap());
    let written = String::from_utf8_lossy(&config_before).to_string();
    assert!(written.contains("fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4"), "{written}");
    assert!(written.contains("# Camila Lopez"), "commented: {written}");

    let out = init(&[]);
    out.assert_code(2);
    assert!(
        text(&out).contains("fhirsync.toml already exists") && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(&config).unwrap();
    let out = init(&[]);
    out.assert_code(2);
    assert!(
        text(&out).contains("fhirsync.pem already exists") && text(&out).contains("--key-out"),
        "{}",
        text(&out)
    );
    assert!(!config.exists(), "nothing written when the key exists");
    assert_eq!(std::fs::read(&key).unwrap(), key_before);

    let out = init(&["--force"]);
    out.assert_success();
    assert_ne!(std::fs::read(&key).unwrap(), key_before, "a new key with --force");
    assert_eq!(std::fs::read(&config).unwrap(), config_before, "same answers, same file");
}

/// Without a terminal, a missing value is an error naming its flag (exit 2), not a prompt
/// that hangs; nothing is written.
#[test]
fn init_without_terminal_names_missing_flags() {
    let work = tempfile::tempdir().unwrap();
    let out = Cli::bare().current_dir(work.path()).args(["init", "--target", "smart"]).run_now();
    out.assert_code(2);
    assert!(text(&out).contains("--client-id is missing"), "{}", text(&out));
    let out = Cli::bare()
        .current_dir(work.path())
        .args(["init", "--target", "smart", "--client-id", "c", "--fhir-base", "https://smart.example/fhir"])
        .run_now();
    out.assert_code(2);
    assert!(text(&out).contains("--patient-id"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "nothing written");
}
