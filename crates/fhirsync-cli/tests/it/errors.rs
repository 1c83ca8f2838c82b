//! Bad input gets a clear message and a documented exit code, never a panic.

use crate::util::{Env, fhirsync, output, text};

/// A missing config file: exit 2 and a message telling how to fix it.
#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = fhirsync().current_dir(dir.path()).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--config"), "{}", text(&out));
}

/// An unknown key is named in the error, exit 2.
#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "[destination]\nkind = \"sqlite\"\npaht = \"x.db\"\n").unwrap();
    let out = fhirsync().arg("--config").arg(&config).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("paht"), "{}", text(&out));
}

/// Invalid TOML syntax reports the file and position, exit 2.
#[test]
fn bad_toml() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "[connection\nclient_id = 1\n").unwrap();
    let out = fhirsync().arg("--config").arg(&config).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("f.toml"), "{}", text(&out));
}

/// A private key path that does not exist: exit 2, naming the key setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_private_key() {
    let env = Env::start(1).await;
    std::fs::remove_file(&env.key_path).unwrap();
    let config = env.config("");
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).arg("sync");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("key"), "{}", text(&out));
}

/// A file that is not a PEM key: exit 2 with a message about the key, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pem() {
    let env = Env::start(1).await;
    std::fs::write(&env.key_path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let config = env.config("");
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).arg("sync");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

/// An unreachable FHIR server: exit 4 (source), naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host() {
    let env = Env::start(1).await;
    let config = env.config("");
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let dead = "http://127.0.0.1:9/interconnect-fhir-oauth/api/FHIR/R4";
    let text_cfg = text_cfg.replace(&env.sim.fhir_base(fhirsync_core::FhirVersion::R4), dead);
    std::fs::write(&config, text_cfg).unwrap();
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).arg("sync");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
}
