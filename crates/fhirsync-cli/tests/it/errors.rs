//! Bad input gets a clear message and a documented exit code, never a panic.

use crate::util::{Cli, ConfigSpec, Env, edit, text};

/// A missing config file: exit 2 and a message telling how to fix it.
#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Cli::bare().current_dir(dir.path()).arg("sync").run_now();
    out.assert_code(2);
    assert!(text(&out).contains("--config"), "{}", text(&out));
}

/// An unknown key is named in the error, exit 2.
#[test]
fn unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "[destination]\nkind = \"sqlite\"\npaht = \"x.db\"\n").unwrap();
    let out = Cli::config(&config).arg("sync").run_now();
    out.assert_code(2);
    assert!(text(&out).contains("paht"), "{}", text(&out));
}

/// Invalid TOML syntax reports the file and position, exit 2.
#[test]
fn bad_toml() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "[connection\nclient_id = 1\n").unwrap();
    let out = Cli::config(&config).arg("sync").run_now();
    out.assert_code(2);
    assert!(text(&out).contains("f.toml"), "{}", text(&out));
}

/// A private key path that does not exist: exit 2, naming the key setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_private_key() {
    let env = Env::start(1).await;
    std::fs::remove_file(&env.key_path).unwrap();
    let config = env.config("");
    let out = Cli::config(&config).arg("sync").run().await;
    out.assert_code(2);
    assert!(text(&out).contains("key"), "{}", text(&out));
}

/// A file that is not a PEM key: exit 2 with a message about the key, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pem() {
    let env = Env::start(1).await;
    std::fs::write(&env.key_path, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let config = env.config("");
    let out = Cli::config(&config).arg("sync").run().await;
    out.assert_code(2);
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

/// An unreachable FHIR server: exit 4 (source), naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host() {
    let env = Env::start(1).await;
    let config = env.config("");
    point_r4_at(&env, &config, "http://127.0.0.1:9/interconnect-fhir-oauth/api/FHIR/R4");
    let out = Cli::config(&config).arg("sync").run().await;
    out.assert_code(4);
    assert!(text(&out).contains("127.0.0.1:9"), "{}", text(&out));
}

/// Replaces the simulator's R4 base in the config with `base`.
fn point_r4_at(env: &Env, config: &std::path::Path, base: &str) {
    edit(config, |t| t.replace(&env.sim.fhir_base(fhirsync_core::FhirVersion::R4), base));
}

/// TLS to a server that does not speak TLS fails cleanly: exit 4, naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_error() {
    let env = Env::start(1).await;
    let config = env.config("");
    let https = env.sim.fhir_base(fhirsync_core::FhirVersion::R4).replace("http://", "https://");
    point_r4_at(&env, &config, &https);
    let out = Cli::config(&config).arg("sync").run().await;
    out.assert_code(4);
    assert!(text(&out).contains("https://127.0.0.1"), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

/// A server answering malformed JSON to discovery: exit 4 with a message, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_json() {
    let env = Env::start(1).await;
    let app = axum::Router::new().fallback(|| async {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], "{\"token_endpoint\": ")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let config = env.config("");
    point_r4_at(&env, &config, &format!("http://{addr}/api/FHIR/R4"));
    let out = Cli::config(&config).arg("sync").run().await;
    out.assert_code(4);
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
}

/// A Bulk NDJSON line over `max_line_bytes` fails the run with the setting to raise, exit 4,
/// and nothing already landed is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_ndjson_line() {
    let env = Env::start(2).await;
    let config = env.config("");
    Cli::sync(&config).run().await.assert_success();
    let landed = crate::util::count(&env.db(), "SELECT COUNT(*) FROM observation");
    let config = env.config_with(
        "mode = \"bulk\"\n",
        "[extract.bulk]\nmax_line_bytes = 64\npoll_floor_secs = 0\n\
         [extract.cohort]\ngroup = \"e3iabhmS8rsueyz7vaimuiaSmfGvi.QwjVXJANlPOgR83\"\n",
    );
    let out = Cli::sync(&config).run().await;
    out.assert_code(4);
    assert!(text(&out).contains("max_line_bytes"), "{}", text(&out));
    assert_eq!(crate::util::count(&env.db(), "SELECT COUNT(*) FROM observation"), landed);
}

/// A password written inline in the PostgreSQL url is refused before anything runs: exit 2,
/// the fix (`password_env`), and the password is not echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_postgres_password_is_refused() {
    let env = Env::start(1).await;
    let destination = "kind = \"postgres\"\nurl = \"postgresql://fhirsync:hunter2@127.0.0.1:1/db\"\n";
    let config = env.write_config(&ConfigSpec { destination: destination.into(), ..env.spec() });
    for (args, code) in [(&["sync", "--no-progress"][..], 2), (&["status"][..], 5)] {
        let out = Cli::config(&config).args(args).run().await;
        let all = text(&out);
        assert!(all.contains("password_env = \"FHIRSYNC_POSTGRES_PASSWORD\""), "{args:?}: {all}");
        assert!(!all.contains("hunter2"), "{args:?}: {all}");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {all}");
    }
}

/// FHIR endpoints on a closed port (token endpoint fine): the run fails saying "connection
/// refused" with the port fix and the URL, not a generic send error or the Auth Base URI hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_fhir_port_says_connection_refused() {
    let env = Env::start(1).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}/api/FHIR/R4");
    let config = env.config(
        "[extract.retry]\nmax_retries = 1\nbase_delay_ms = 10\nmax_delay_ms = 20\nmax_outage_secs = 0\n",
    );
    let auth_base = env.sim.token_url().trim_end_matches("/token").to_string();
    edit(&config, |t| {
        t.replace(&env.sim.fhir_base(fhirsync_core::FhirVersion::R4), &dead)
            .replace(&env.sim.fhir_base(fhirsync_core::FhirVersion::Stu3), &dead.replace("R4", "STU3"))
            .replace("[connection]\n", &format!("[connection]\nauth_base_uri = \"{auth_base}\"\n"))
    });
    let started = std::time::Instant::now();
    let out = Cli::config(&config).arg("sync").run().await;
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("connection refused") && all.contains("check the port"), "{all}");
    assert!(all.contains(&format!("127.0.0.1:{port}")), "{all}");
    assert!(!all.contains("error sending request") && !all.contains("Auth Base URI"), "{all}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

/// A SQLite destination written by a newer fhirsync: `sync` and `status` exit 5 naming both
/// schema versions and the fix, and nothing is written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_of_a_newer_fhirsync_is_refused() {
    let env = Env::start(1).await;
    let config = env.config("");
    rusqlite::Connection::open(env.db())
        .unwrap()
        .execute_batch(
            "CREATE TABLE _fhirsync_schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, \
               fhirsync_version TEXT NOT NULL); \
             INSERT INTO _fhirsync_schema_version VALUES (99, '2030-01-01T00:00:00.000Z', '9.0.0');",
        )
        .unwrap();
    for args in [&["sync", "--no-progress"][..], &["status"][..]] {
        let all = Cli::config(&config).args(args).run().await.assert_code(5);
        for part in ["schema version 99", "fhirsync 9.0.0", "upgrade fhirsync"] {
            assert!(all.contains(part), "{args:?} without `{part}`: {all}");
        }
    }
    let tables: i64 = rusqlite::Connection::open(env.db())
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master WHERE name <> '_fhirsync_schema_version'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 0, "nothing was created");
}
