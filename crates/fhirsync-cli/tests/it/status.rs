//! `fhirsync status`: recent runs with counts and the latest run's completeness gaps.

use crate::util::{Cli, Env, count, text, toml_path};

/// A sub-type withheld from the first run is an exclusion (the run succeeds, status names it);
/// when the licence narrows before the next reload-and-compare, the newly withheld scopes are
/// gaps: nothing of them is deleted, the run exits 6 "completed with gaps" and status says why;
/// the run after accepts the narrowed licence and deletes what it no longer may see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_exclusions_and_a_narrowed_licence() {
    let env = Env::start_with(3, |client| {
        client.unauthorized_datasets = vec!["Observation:social-history".into()];
    })
    .await;
    let config = env.config("");
    let sync = || Cli::sync(&config);
    let out = sync().run().await;
    out.assert_success();
    assert!(
        text(&out).contains("excluded:  outside records withheld: Observation - Social History"),
        "{}",
        text(&out)
    );
    let inserted = count(&env.db(), "SELECT inserted FROM _fhirsync_runs");
    let run_id: String = rusqlite::Connection::open(env.db())
        .unwrap()
        .query_row("SELECT run_id FROM _fhirsync_runs", [], |r| r.get(0))
        .unwrap();
    assert!(inserted > 0);

    let out = Cli::config(&config).arg("status").run().await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let row = shown.lines().find(|l| l.starts_with(&run_id)).unwrap_or_else(|| panic!("run row: {shown}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["reload-and-compare", "succeeded"], "{row}");
    assert_eq!(cells[6..10], [inserted.to_string().as_str(), "0", "0", "0"], "{row}");
    assert_eq!(cells[11], "3", "patients from the report: {row}");
    assert!(shown.contains("complete:  every scope fetched completely"), "{shown}");
    assert!(
        shown.contains(
            "excluded:  outside records withheld: Observation - Social History (Observation:social-history@R4), 3 patients"
        ),
        "{shown}"
    );
    assert!(shown.contains("outcomes:  ") && shown.contains("59204×"), "{shown}");
    assert!(shown.contains("errors:    none"), "{shown}");

    // The licence narrows: problem-list items are now withheld too.
    let conditions = "SELECT count(*) FROM condition WHERE dataset = 'Condition:problem-list-item'";
    let before = count(&env.db(), conditions);
    assert!(before > 0, "the simulator gives these patients problems");
    let mut client = env.sim.state().oauth.client(crate::util::CLIENT_ID).expect("registered");
    client.unauthorized_datasets.push("Condition:problem-list-item".into());
    env.sim.state().oauth.register_client(client);
    let out = sync().run().await;
    out.assert_code(6);
    assert!(text(&out).contains("completed with gaps"), "{}", text(&out));
    assert!(
        text(&out).contains("licence narrowed: newly withheld Condition - Problem List Item"),
        "{}",
        text(&out)
    );
    assert_eq!(count(&env.db(), conditions), before, "nothing of a narrowed scope is deleted");
    assert_eq!(count(&env.db(), "SELECT deleted FROM _fhirsync_runs ORDER BY started_at DESC LIMIT 1"), 0);

    let out = Cli::config(&config).arg("status").run().await;
    let shown = text(&out);
    assert!(shown.contains("completed_with_gaps"), "{shown}");
    assert!(shown.contains("3 scopes incomplete"), "{shown}");
    assert!(shown.contains("licence narrowed  R4 Condition:problem-list-item: 3 scopes"), "{shown}");
    assert!(shown.contains("newly withheld: Condition - Problem List Item"), "{shown}");

    let out = Cli::config(&config).args(["status", "--json"]).run().await;
    out.assert_success();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    let gaps = json["detail"]["report"]["gaps"].as_array().expect("gaps");
    assert_eq!(gaps.len(), 3);
    assert_eq!(gaps[0]["reason"]["kind"], "licence_narrowed");
    assert_eq!(gaps[0]["scope"]["dataset"]["category"], "problem-list-item");
    assert!(json["detail"]["report"].get("scope").is_none(), "scope lists are left out");

    // The next run reads the narrowed licence as the licence: complete, and the rows it may no
    // longer see are deleted.
    let out = sync().run().await;
    out.assert_success();
    assert_eq!(count(&env.db(), conditions), 0);
}

/// With nothing landed yet, `status` says so, exits 0, and does not create the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_nothing_landed() {
    let env = Env::start(1).await;
    let config = env.config("");
    let out = Cli::config(&config).arg("status").run().await;
    out.assert_code(0);
    assert!(text(&out).contains("nothing landed yet at sqlite:"), "{}", text(&out));
    assert!(!env.db().exists(), "status must not create the database");
}

/// A destination that cannot be read exits 5 with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_unreadable_destination_exits_5() {
    let env = Env::start(1).await;
    let config = env.config("");
    std::fs::write(env.db(), "not a database, just some text that fills more than a header").unwrap();
    let out = Cli::config(&config).arg("status").run().await;
    out.assert_code(5);
    assert!(text(&out).contains("cannot read the run history of sqlite:"), "{}", text(&out));
}

/// An unknown `--run` id is rejected naming the id and how to list the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_unknown_run() {
    let env = Env::start(1).await;
    let config = env.config("");
    Cli::sync(&config).run().await.assert_success();
    let out = Cli::config(&config).args(["status", "--run", "no-such-run"]).run().await;
    out.assert_code(2);
    assert!(text(&out).contains("no run `no-such-run`"), "{}", text(&out));
}

/// `status` needs only `[destination]`: no connection or cohort settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_only_the_destination() {
    let env = Env::start(1).await;
    let config = env.config("");
    Cli::sync(&config).run().await.assert_success();
    let only = env.dir.path().join("destination-only.toml");
    std::fs::write(&only, format!("[destination]\nkind = \"sqlite\"\npath = \"{}\"\n", toml_path(&env.db())))
        .unwrap();
    let out = Cli::config(&only).arg("status").run().await;
    out.assert_code(0);
    assert!(
        text(&out).contains("succeeded") && text(&out).contains("complete:  every scope"),
        "{}",
        text(&out)
    );
}
