//! Shared helpers: the binary under test, an in-process simulator with a registered backend
//! client, and a config file pointing at it.

use std::path::{Path, PathBuf};
use std::process::Output;

use fhirsync_auth::{KeyType, SigningKey, generate_private_key};
use fhirsync_core::FhirVersion;
use fhirsync_sim::Sim;
use fhirsync_sim::fhir::FhirConfig;
use fhirsync_sim::oauth::ClientRegistration;
use fhirsync_sim::testing::{SimBuilder, backend_client};
use secrecy::ExposeSecret;

/// Client id registered by [`Env::start`].
pub const CLIENT_ID: &str = "cli-test-client";

/// The binary under test.
pub fn fhirsync() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("fhirsync").expect("binary built");
    cmd.env_remove("FHIRSYNC_CONFIG").env_remove("FHIRSYNC_LOG").env_remove("RUST_LOG");
    cmd
}

/// Runs a command on the blocking pool (the simulator keeps serving on the runtime).
pub async fn output(mut cmd: assert_cmd::Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("command runs")).await.expect("join")
}

/// Both output streams as one string.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A simulator, a registered backend client with a key on disk, and a temp dir.
pub struct Env {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub key_path: PathBuf,
    pub key_pem: String,
}

impl Env {
    /// Starts a simulator with `patients` patients and registers [`CLIENT_ID`].
    pub async fn start(patients: usize) -> Env {
        Env::start_with(patients, |_| {}).await
    }

    /// [`Env::start`] with the client registration adjusted by `tweak` (e.g. unlicensed datasets).
    pub async fn start_with(patients: usize, tweak: impl FnOnce(&mut ClientRegistration)) -> Env {
        Env::start_fhir(FhirConfig { patients, ..FhirConfig::default() }, tweak).await
    }

    /// [`Env::start`] against a generic (non-Epic) SMART server.
    pub async fn start_generic(patients: usize) -> Env {
        let fhir = FhirConfig {
            patients,
            profile: fhirsync_sim::fhir::ServerProfile::GenericSmart,
            ..FhirConfig::default()
        };
        Env::start_fhir(fhir, |_| {}).await
    }

    /// A simulator with `fhir` settings and the client registration adjusted by `tweak`.
    pub async fn start_fhir(fhir: FhirConfig, tweak: impl FnOnce(&mut ClientRegistration)) -> Env {
        let pem = generate_private_key(KeyType::Rsa(2048)).expect("key");
        let key = SigningKey::from_pem(&pem, "test", None).expect("key loads");
        let mut registration = backend_client(CLIENT_ID, key.jwks(), true);
        tweak(&mut registration);
        let sim = SimBuilder::new().fhir(fhir).register(registration).start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&key_path, pem.expose_secret()).expect("write key");
        Env { sim, dir, key_path, key_pem: pem.expose_secret().to_string() }
    }

    /// Writes `fhirsync.toml` for this simulator plus `extra` TOML; returns its path.
    pub fn config(&self, extra: &str) -> PathBuf {
        self.config_with("", extra)
    }

    /// [`Env::config`] with `extract` lines added to the `[extract]` table (e.g. `mode = "bulk"`).
    pub fn config_with(&self, extract: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join("fhirsync.toml");
        let text = format!(
            "[connection]\nclient_id = \"{CLIENT_ID}\"\nfhir_r4_endpoint = \"{}\"\nfhir_stu3_endpoint = \"{}\"\n\
             private_key = \"{}\"\npatient_list_identifier = \"systemlist|6442\"\n\n\
             [extract]\nconcurrency = 8\nrate_limit = 1000.0\n{extract}\n\
             [sync]\nstate_dir = \"{}\"\n\n\
             [destination]\nkind = \"sqlite\"\npath = \"{}\"\n\n{extra}",
            self.sim.fhir_base(FhirVersion::R4),
            self.sim.fhir_base(FhirVersion::Stu3),
            toml_path(&self.key_path),
            toml_path(&self.dir.path().join("state")),
            toml_path(&self.db()),
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The SQLite destination file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("landed.db")
    }
}

/// A path as a TOML string body (forward slashes, no escapes needed).
pub fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

/// Row count of a table in a SQLite file.
pub fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row(sql, [], |r| r.get(0)).expect("query")
}
