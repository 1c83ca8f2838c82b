//! `sync --record DIR` and `sandbox --replay DIR`: a recorded run replays to the same landed
//! rows, the recording holds no credential, unrecorded searches land as empty, and the
//! hand-written Epic fixture replays.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use fhirsync_core::FhirVersion;
use fhirsync_sim::replay::ReplayServer;
use url::Url;

use crate::util::{Cli, ConfigSpec, Env, count, process, toml_path};

/// One landed row: table, FHIR version, id, content hash.
type Row = (String, String, String, String);

/// Every landed row of every type table of a SQLite destination.
fn landed(db: &Path) -> BTreeSet<Row> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut tables = conn.prepare("SELECT table_name FROM _fhirsync_types").unwrap();
    let tables: Vec<String> = tables.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut rows = BTreeSet::new();
    for table in tables {
        let mut q = conn.prepare(&format!("SELECT fhir_version, id, content_hash FROM \"{table}\"")).unwrap();
        let found = q.query_map([], |r| Ok((table.clone(), r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        rows.extend(found.map(Result::unwrap));
    }
    rows
}

/// Syncs the simulator of `env` with `--record`; returns the recording folder.
async fn record(env: &Env) -> PathBuf {
    let config = env.config("");
    let dir = env.dir.path().join("recording");
    let out = Cli::sync(&config).args(["--record"]).arg(&dir).run().await;
    out.assert_success();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds patient data (PHI)"), "{stderr}");
    dir
}

/// A config like [`Env::config`] whose endpoints are the replay server's, landing into a fresh
/// SQLite file `{name}.db`; returns the config and database paths.
fn replay_config(env: &Env, replay: &ReplayServer, name: &str) -> (PathBuf, PathBuf) {
    let on_replay = |v: FhirVersion| {
        let recorded = Url::parse(&env.sim.fhir_base(v)).unwrap();
        format!("{}{}", replay.base_url(), recorded.path())
    };
    let db = env.dir.path().join(format!("{name}.db"));
    let path = env.write_config(&ConfigSpec {
        file: format!("{name}.toml"),
        r4: on_replay(FhirVersion::R4),
        stu3: on_replay(FhirVersion::Stu3),
        state: env.dir.path().join(format!("{name}-state")),
        destination: format!("kind = \"sqlite\"\npath = \"{}\"\n", toml_path(&db)),
        ..env.spec()
    });
    (path, db)
}

/// Syncs with `config`; panics with the output when it fails.
async fn sync(config: &Path) {
    Cli::sync(config).run().await.assert_success();
}

/// Names of the files of a folder, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A sync recorded against the simulator, replayed into a fresh SQLite file, lands the same
/// rows (type, version, id, content hash), with every request answered from the recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_lands_the_same_rows() {
    let env = Env::start(3).await;
    let dir = record(&env).await;
    let names = files(&dir);
    assert!(names.iter().all(|n| n.ends_with(".json") && n.as_bytes()[..6].iter().all(u8::is_ascii_digit)));
    assert!(names.iter().any(|n| n.ends_with("-GET-metadata.json")), "{names:?}");
    let recorded = landed(&env.db());
    assert!(recorded.len() > 10, "{recorded:?}");

    let replay = ReplayServer::start(&dir).await.unwrap();
    assert_eq!(replay.answers(), names.len());
    let (config, db) = replay_config(&env, &replay, "replayed");
    sync(&config).await;
    assert_eq!(landed(&db), recorded);
    assert_eq!(replay.unmatched(), 0, "every request of the replayed run was recorded");
    assert_eq!(replay.served() as usize, names.len(), "as many requests as recorded answers");
}

/// True if `s` contains a simulator access token (`sim-` + 32 hex digits).
fn contains_sim_token(s: &str) -> bool {
    s.match_indices("sim-").any(|(i, _)| {
        let rest = &s[i + 4..];
        rest.len() >= 32 && rest[..32].chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// True if `s` contains a compact JWT (`eyJ….eyJ…`), i.e. a client assertion or id token.
fn contains_jwt(s: &str) -> bool {
    s.match_indices("eyJ").any(|(i, _)| {
        let rest = &s[i..];
        let head =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
        rest[head..].starts_with(".eyJ")
    })
}

/// The recorded files hold no access token the simulator issued, no `Authorization` header,
/// no bearer and no client assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_holds_no_token_or_assertion() {
    assert!(
        contains_sim_token("x sim-0123456789abcdef0123456789abcdef y") && contains_jwt("eyJhbGc.eyJpc3M.sig")
    );
    let env = Env::start(2).await;
    let dir = record(&env).await;
    assert!(env.sim.state().oauth.tokens_issued() > 0, "the recorded run used a token");
    for name in files(&dir) {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let lower = text.to_ascii_lowercase();
        assert!(!contains_sim_token(&text), "{name} holds an access token");
        assert!(!contains_jwt(&text), "{name} holds a JWT");
        for word in ["authorization", "bearer ", "client_assertion", "access_token", "set-cookie"] {
            assert!(!lower.contains(word), "{name} holds {word:?}");
        }
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(!file["url"].as_str().unwrap().contains("/oauth2/"), "{name} is token endpoint traffic");
    }
}

/// Searches missing from the recording answer Epic's empty searchset: the replayed sync
/// succeeds and lands everything else, none of that type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_searches_land_as_empty() {
    let env = Env::start(2).await;
    let dir = record(&env).await;
    let recorded = landed(&env.db());
    let table = "condition";
    assert!(recorded.iter().any(|r| r.0 == table), "the simulator has conditions");
    let mut removed = 0;
    for name in files(&dir).into_iter().filter(|n| n.ends_with("-GET-Condition.json")) {
        std::fs::remove_file(dir.join(name)).unwrap();
        removed += 1;
    }
    let replay = ReplayServer::start(&dir).await.unwrap();
    let (config, db) = replay_config(&env, &replay, "partial");
    sync(&config).await;
    let expected: BTreeSet<Row> = recorded.into_iter().filter(|r| r.0 != table).collect();
    assert_eq!(landed(&db), expected);
    assert!(replay.unmatched() >= removed, "{} unmatched, {removed} files removed", replay.unmatched());
}

/// The replay server process; killed when dropped.
struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fhirsync sandbox --replay DIR --port 0` and reads its address from stdout.
fn sandbox_replay(dir: &Path) -> Server {
    let child = process()
        .args(["sandbox", "--port", "0", "--replay"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox starts");
    let mut server = Server { child, base_url: String::new() };
    let stdout = server.child.stdout.take().expect("stdout piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().expect("a first line").expect("readable stdout");
    server.base_url = first.strip_prefix("Replay server listening on ").expect(&first).to_string();
    // Keep reading (and discarding) so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    server
}

/// The hand-written Epic fixture (59204 next to data, paged vitals with the outcome on the last
/// page, an empty 59204 + 4101 answer) served by `sandbox --replay` lands its rows.
#[test]
fn hand_written_fixture_replays() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay/epic-outside-record");
    let server = sandbox_replay(&fixture);
    let dir = tempfile::tempdir().unwrap();
    let pem = fhirsync_auth::generate_private_key(fhirsync_auth::KeyType::Rsa(2048)).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
    let db = dir.path().join("fixture.db");
    let config = dir.path().join("fhirsync.toml");
    std::fs::write(
        &config,
        format!(
            "[connection]\nclient_id = \"replay-fixture-client\"\nfhir_r4_endpoint = \"{}/FHIR/api/FHIR/R4\"\n\
             private_key = \"{}\"\n\n\
             [extract]\npage_size = 2\nrate_limit = 1000.0\n\
             datasets = [\"Patient\", \"Condition:problem-list-item\", \"Observation:vital-signs\", \"AllergyIntolerance\"]\n\n\
             [extract.cohort]\npatient_ids = [\"eSynthReplayPt0000001A3\"]\n\n\
             [sync]\nstate_dir = \"{}\"\n\n[destination]\nkind = \"sqlite\"\npath = \"{}\"\n",
            server.base_url,
            toml_path(&key),
            toml_path(&dir.path().join("state")),
            toml_path(&db),
        ),
    )
    .unwrap();
    let out = Cli::sync(&config).run_now();
    out.assert_success();
    let ids = |table: &str| -> BTreeSet<String> {
        landed(&db).into_iter().filter(|r| r.0 == table).map(|r| r.2).collect()
    };
    assert_eq!(
        ids("condition"),
        BTreeSet::from(["eSynthCond0001.ProbA3".into(), "eSynthCond0002.ProbA3".into()])
    );
    assert_eq!(ids("observation").len(), 3, "both pages of vital signs");
    assert!(ids("observation").contains("eSynthVital0003.ObsA3"), "the last page is read");
    assert_eq!(ids("patient"), BTreeSet::from(["eSynthReplayPt0000001A3".to_string()]));
    assert!(ids("allergyintolerance").is_empty());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM view_patient"), 1);
}
