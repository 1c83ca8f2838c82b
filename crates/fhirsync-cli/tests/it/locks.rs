//! One writer per destination, wherever it runs: the lock lives with the data (a PostgreSQL
//! advisory lock, a lock file next to the SQLite database or inside the destination folder), so
//! two processes with different state folders cannot both write; a killed run's lock goes with
//! it, `status` shows the run `interrupted` and the next run takes over and converges.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fhirsync_land::DestinationConfig;

use crate::util::{Cli, ConfigSpec, Env, count, process, text, toml_path};

/// The config of `env` with its `[destination]` section replaced by `destination` and its own
/// state folder `state`.
fn config_with(env: &Env, name: &str, state: &str, destination: &str) -> PathBuf {
    env.write_config(&ConfigSpec {
        file: name.into(),
        state: env.dir.path().join(state),
        destination: destination.into(),
        ..env.spec()
    })
}

/// A destination held open (and so its writer lock) on a thread of this process.
struct Held {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Held {
    /// Closes the destination and waits until its lock is released.
    fn release(self) {
        drop(self.stop);
        self.thread.join().expect("the first writer closes");
    }
}

/// Holds `destination` open until [`Held::release`].
fn hold(destination: DestinationConfig) -> Held {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let dest = fhirsync_land::open(&destination).expect("the first writer opens the destination");
        ready_tx.send(()).unwrap();
        let _ = stop_rx.recv();
        drop(dest);
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).expect("the first writer is ready");
    Held { stop: stop_tx, thread }
}

/// A sync from another state folder while this process writes fails at once with exit 5 naming
/// this process; once it lets go, the same sync succeeds.
async fn second_writer_refused(env: &Env, destination_toml: &str, destination: DestinationConfig) {
    let config = config_with(env, "second.toml", "other-state", destination_toml);
    let first = hold(destination);
    let started = Instant::now();
    let out = Cli::sync(&config).run().await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(5), "{all}");
    assert!(all.contains("another fhirsync run is writing"), "{all}");
    assert!(all.contains(&format!("pid {}", std::process::id())), "the holder is named: {all}");
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast: {:?}", started.elapsed());
    first.release();
    let out = Cli::sync(&config).run().await;
    out.assert_success();
}

/// SQLite: the second writer exits 5 naming the first (host, pid), then runs once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_on_sqlite_exits_5() {
    let env = Env::start(2).await;
    let db = env.db();
    let toml = format!("kind = \"sqlite\"\npath = \"{}\"", toml_path(&db));
    let config = fhirsync_land::SqliteConfig { path: db, ..Default::default() };
    second_writer_refused(&env, &toml, DestinationConfig::Sqlite(config)).await;
}

/// Parquet: the lock file inside the destination folder refuses a second writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_on_parquet_exits_5() {
    let env = Env::start(2).await;
    let dir = env.dir.path().join("lake");
    let toml = format!("kind = \"parquet\"\ndir = \"{}\"", toml_path(&dir));
    let config: fhirsync_land::ParquetConfig =
        toml::from_str(&format!("dir = \"{}\"", toml_path(&dir))).expect("parquet config");
    second_writer_refused(&env, &toml, DestinationConfig::Parquet(config)).await;
}

/// The `[destination]` TOML of the test server: its url, `schema`, and the CA of a TLS server
/// (`FHIRSYNC_TEST_POSTGRES_CA`, as `.ci/run` sets it up).
fn postgres_toml(url: &str, schema: &str) -> String {
    let mut toml = format!("kind = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"");
    if let Some(ca) = std::env::var_os("FHIRSYNC_TEST_POSTGRES_CA") {
        toml.push_str(&format!("\nca_file = \"{}\"", toml_path(std::path::Path::new(&ca))));
    }
    toml
}

/// PostgreSQL (with `FHIRSYNC_TEST_POSTGRES_URL`): the schema's advisory lock refuses a second
/// writer from another state folder, naming the first one's host and pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_on_postgres_exits_5() {
    let Ok(url) = std::env::var("FHIRSYNC_TEST_POSTGRES_URL") else { return };
    let env = Env::start(2).await;
    let schema = format!("fhirsync_lock_{}", std::process::id());
    let toml = postgres_toml(&url, &schema);
    let mut config = fhirsync_land::PostgresConfig::new(url);
    config.schema = schema;
    config.ca_file = std::env::var_os("FHIRSYNC_TEST_POSTGRES_CA").map(std::path::PathBuf::from);
    second_writer_refused(&env, &toml, DestinationConfig::Postgres(config)).await;
}

/// Whether `status --json` shows a run in progress.
async fn run_in_progress(config: &Path) -> bool {
    let stdout = Cli::config(config).args(["status", "--json"]).run().await.stdout_text();
    stdout.contains("\"status\": \"running\"") || stdout.contains("\"status\":\"running\"")
}

/// Starts a slowed-down sync with `config`, kills it (SIGKILL) once its run is recorded, checks
/// that `status` shows it `interrupted`, and reruns at once: the rerun takes over, resumes the
/// same run and succeeds within a bounded time. Returns the rerun's output.
async fn kill_and_rerun(env: &Env, config: &Path) -> String {
    let faults = &env.sim.state().fhir.faults;
    faults.set_latency(Duration::from_millis(150));
    let mut child = process()
        .arg("--config")
        .arg(config)
        .args(["sync", "--no-progress"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sync starts");
    let started = Instant::now();
    while !run_in_progress(config).await {
        assert!(started.elapsed() < Duration::from_secs(30), "the run never began");
        assert!(child.try_wait().expect("child state").is_none(), "sync ended before it was killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().expect("child state").is_none(), "the run was still going");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let out = Cli::config(config).arg("status").run().await;
    assert!(text(&out).contains("interrupted"), "{}", text(&out));

    faults.set_latency(Duration::ZERO);
    let rerun = Instant::now();
    let out = Cli::sync(config).run().await;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("marked interrupted"), "the dead run is named: {all}");
    assert!(all.contains(", resumed)"), "the rerun resumes the killed run: {all}");
    assert!(rerun.elapsed() < Duration::from_secs(60), "bounded: {:?}", rerun.elapsed());
    assert!(!run_in_progress(config).await, "no run left `running`");
    all
}

/// SQLite: kill -9 mid-run, then `status` says `interrupted` and an immediate rerun takes over,
/// resumes and lands every patient, with no manual step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_sqlite_is_interrupted_and_taken_over() {
    const PATIENTS: usize = 6;
    let env = Env::start(PATIENTS).await;
    let config = env.config("");
    kill_and_rerun(&env, &config).await;
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM patient"), PATIENTS as i64);
}

/// PostgreSQL (with `FHIRSYNC_TEST_POSTGRES_URL`): the killed run's session lock dies with it;
/// the rerun takes over at once and lands every patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_on_postgres_is_interrupted_and_taken_over() {
    const PATIENTS: usize = 6;
    let Ok(url) = std::env::var("FHIRSYNC_TEST_POSTGRES_URL") else { return };
    let env = Env::start(PATIENTS).await;
    let schema = format!("fhirsync_kill_{}", std::process::id());
    let config = config_with(&env, "pg.toml", "state", &postgres_toml(&url, &schema));
    let all = kill_and_rerun(&env, &config).await;
    assert!(all.contains(&format!("extracted: {PATIENTS} patients")), "{all}");
}
