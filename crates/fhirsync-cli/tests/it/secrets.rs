//! Secrets never reach stdout/stderr, even with trace logging.

use crate::util::{Cli, Env, text};

/// True if `s` contains a simulator access token (`sim-` + 32 hex digits).
fn contains_sim_token(s: &str) -> bool {
    s.match_indices("sim-").any(|(i, _)| {
        let rest = &s[i + 4..];
        rest.len() >= 32 && rest[..32].chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// `sync -vv`, `keys jwks -vv` and a failing secret-based login print no key, token or secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_commands_leak_no_secret() {
    let env = Env::start(2).await;
    let config = env.config("");
    let key_body: Vec<String> =
        env.key_pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_string).collect();
    let secret = "s3cr3t/with+odd=chars%";

    let runs = [
        Cli::config(&config).args(["-vv", "sync", "--no-progress"]).run().await,
        Cli::bare().args(["-vv", "keys", "jwks", "--key"]).arg(&env.key_path).run().await,
        Cli::config(&config)
            .args(["-vv", "sync", "--no-progress"])
            .env("FHIRSYNC_CLIENT_SECRET", secret)
            .env("FHIRSYNC_PRIVATE_KEY", "env:NOT_SET_ANYWHERE")
            .run()
            .await,
    ];

    assert!(runs[0].status.success(), "{}", text(&runs[0]));
    assert!(env.sim.state().oauth.tokens_issued() > 0, "a token was really issued");
    for out in &runs {
        let all = text(out);
        assert!(!all.contains("PRIVATE KEY"), "{all}");
        for line in &key_body {
            assert!(!all.contains(line.as_str()), "key material leaked: {all}");
        }
        assert!(!contains_sim_token(&all), "access token leaked: {all}");
        assert!(!all.contains(secret), "client secret leaked: {all}");
    }
}
