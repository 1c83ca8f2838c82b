//! The harness of the CLI tests: [`Cli`] builds and runs a command line of the binary and
//! gives a [`Run`] to assert on; [`Env`] starts an in-process simulator with a registered
//! backend client and writes configurations pointing at it ([`ConfigSpec`]); [`edit`] rewrites
//! one; [`count`] reads the SQLite destination.

use std::ffi::OsStr;
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

/// A command line of the binary under test, built by value: [`Cli::config`] or [`Cli::sync`]
/// for the usual `--config FILE ...`, then [`Cli::run`] (tests with a simulator) or
/// [`Cli::run_now`]. The variables that would change its behaviour are removed.
pub struct Cli(assert_cmd::Command);

impl Cli {
    /// `fhirsync` without arguments.
    pub fn bare() -> Cli {
        let mut cmd = assert_cmd::Command::cargo_bin("fhirsync").expect("binary built");
        cmd.env_remove("FHIRSYNC_CONFIG").env_remove("FHIRSYNC_LOG").env_remove("RUST_LOG");
        Cli(cmd)
    }

    /// `fhirsync --config CONFIG`.
    pub fn config(config: &Path) -> Cli {
        Cli::bare().arg("--config").arg(config)
    }

    /// `fhirsync --config CONFIG sync --no-progress`.
    pub fn sync(config: &Path) -> Cli {
        Cli::config(config).args(["sync", "--no-progress"])
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cli {
        self.0.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Cli {
        self.0.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cli {
        self.0.env(key, value);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Cli {
        self.0.current_dir(dir);
        self
    }

    /// Runs on the blocking pool (the simulator keeps serving on the runtime).
    pub async fn run(self) -> Run {
        let mut cmd = self.0;
        tokio::task::spawn_blocking(move || Run(cmd.output().expect("command runs"))).await.expect("join")
    }

    /// Runs on this thread (tests without a simulator).
    pub fn run_now(mut self) -> Run {
        Run(self.0.output().expect("command runs"))
    }
}

/// The binary as a child process, for tests that kill it or read it while it runs; the same
/// variables are removed as for [`Cli`].
pub fn process() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    cmd.env_remove("FHIRSYNC_CONFIG").env_remove("FHIRSYNC_LOG").env_remove("RUST_LOG");
    cmd
}

/// A finished run: its exit status and both output streams (it derefs to the [`Output`]).
pub struct Run(Output);

impl std::ops::Deref for Run {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.0
    }
}

impl Run {
    /// Both output streams as one string.
    pub fn text(&self) -> String {
        text(&self.0)
    }

    /// Standard output as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    /// Asserts that the run succeeded (showing both streams when it did not); returns them.
    #[track_caller]
    pub fn assert_success(&self) -> String {
        let all = self.text();
        assert!(self.0.status.success(), "{all}");
        all
    }

    /// Asserts the exit code (showing both streams when it differs); returns them.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> String {
        let all = self.text();
        assert_eq!(self.0.status.code(), Some(code), "{all}");
        all
    }
}

/// Both output streams as one string.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Rewrites a text file (a configuration) through `edit`.
pub fn edit(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).expect("read file to edit");
    std::fs::write(path, edit(text)).expect("write edited file");
}

/// What a configuration written by [`Env::write_config`] reads and where it lands; start from
/// [`Env::spec`] and change what the test needs.
pub struct ConfigSpec {
    /// File name in the env's folder.
    pub file: String,
    /// R4 endpoint.
    pub r4: String,
    /// STU3 endpoint.
    pub stu3: String,
    /// Lines added to `[extract]` (e.g. `mode = "bulk"`).
    pub extract: String,
    /// Run state folder.
    pub state: PathBuf,
    /// Body of `[destination]`.
    pub destination: String,
    /// TOML appended at the end.
    pub extra: String,
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
        self.write_config(&ConfigSpec { extract: extract.into(), extra: extra.into(), ..self.spec() })
    }

    /// The configuration of [`Env::config`]: `fhirsync.toml` reading this simulator's R4 and STU3
    /// endpoints and patient list with the registered key, landing into [`Env::db`].
    pub fn spec(&self) -> ConfigSpec {
        ConfigSpec {
            file: "fhirsync.toml".into(),
            r4: self.sim.fhir_base(FhirVersion::R4),
            stu3: self.sim.fhir_base(FhirVersion::Stu3),
            extract: String::new(),
            state: self.dir.path().join("state"),
            destination: format!("kind = \"sqlite\"\npath = \"{}\"\n", toml_path(&self.db())),
            extra: String::new(),
        }
    }

    /// Writes the configuration `spec` describes; returns its path.
    pub fn write_config(&self, spec: &ConfigSpec) -> PathBuf {
        let path = self.dir.path().join(&spec.file);
        let text = format!(
            "[connection]\nclient_id = \"{CLIENT_ID}\"\nfhir_r4_endpoint = \"{}\"\nfhir_stu3_endpoint = \"{}\"\n\
             private_key = \"{}\"\npatient_list_identifier = \"systemlist|6442\"\n\n\
             [extract]\nconcurrency = 8\nrate_limit = 1000.0\n{}\n\
             [sync]\nstate_dir = \"{}\"\n\n\
             [destination]\n{}\n{}",
            spec.r4,
            spec.stu3,
            toml_path(&self.key_path),
            spec.extract,
            toml_path(&spec.state),
            spec.destination,
            spec.extra,
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
