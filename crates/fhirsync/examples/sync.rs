//! A full sync through the library alone: the in-process Epic simulator (20 synthetic patients)
//! is landed into a SQLite file with the default SQL-on-FHIR views, then synced again with
//! reload-and-compare, which finds nothing changed.
//!
//! `cargo run --example sync` (writes into a temporary folder and prints where).

use fhirsync::land::{DestinationConfig, SqliteConfig};
use fhirsync::sandbox::Sandbox;
use fhirsync::{Method, Sync};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Sandbox::start(20).await?;
    let dir = std::env::temp_dir().join(format!("fhirsync-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("example.db");
    let destination = DestinationConfig::Sqlite(SqliteConfig { path: db.clone(), ..SqliteConfig::default() });
    let config = sandbox.config(destination, dir.join("state"));
    let tokens = sandbox.tokens(&config).await?;

    for method in [Method::FullLoad, Method::ReloadAndCompare] {
        let report = Sync::new(config.clone()).method(method).tokens(tokens.clone()).run().await?;
        print!("{}", report.summary());
        assert!(!report.has_gaps(), "the simulator serves every scope completely");
    }
    println!(
        "landed into {} (try: sqlite3 {} 'SELECT COUNT(*) FROM view_patient')",
        db.display(),
        db.display()
    );
    Ok(())
}
