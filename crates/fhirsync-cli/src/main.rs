//! `fhirsync`: land Epic on FHIR (and any SMART-on-FHIR server) into analytics destinations.

mod cmd;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator. Extraction threads allocate the resources that
/// the landing thread frees; glibc serialises such cross-thread frees on an arena lock. The
/// `fhirsync-land` `land` bench, which uses the same allocator, measured 0.5 CPU-s less per
/// 1 M resources landed into SQLite (full load and reload), for ~10 MiB more peak RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long (ms) mimalloc keeps a freed page before it returns it to the OS. Its default, 1,000,
/// let a run's RSS reach 1.2-1.4x the memory in use: landing frees tens of MiB per second, and
/// a second of it stays resident. At 100 a Parquet full load of 1.1 M resources peaked at 94 MiB
/// instead of 114-130, for no measurable CPU (at 10: 86 MiB, +15 % CPU). `MIMALLOC_PURGE_DELAY`
/// in the environment still wins.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 100;
/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v3), which libmimalloc-sys names no
/// constant for.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[allow(unsafe_code)] // A C library's option setter; the only way to set it from code.
fn tune_allocator() {
    // SAFETY: sets one of mimalloc's documented options, before any other thread exists;
    // `set_default` leaves an option the environment set alone.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) }
}

use clap::{Parser, Subcommand, ValueEnum};

/// Replicate clinical data out of Epic on FHIR into SQLite, PostgreSQL, Parquet or NDJSON.
#[derive(Debug, Parser)]
#[command(name = "fhirsync", version, about, max_term_width = 100)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', global = true, env = "FHIRSYNC_CONFIG", default_value = "fhirsync.toml")]
    config: PathBuf,
    /// More logging (-v debug, -vv trace). Secrets are never logged at any level.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for schedulers.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local simulated Epic on FHIR server, or replay a recorded one (`--replay DIR`).
    Sandbox(Box<cmd::sandbox::Args>),
    /// Start the simulator in-process and sync it into ./fhirsync-demo.db (SQLite).
    Demo(cmd::demo::Args),
    /// Write a commented fhirsync.toml and a key pair for your own Epic (or SMART server).
    Init(cmd::init::Args),
    /// Sync the configured Epic connection into the configured destination.
    Sync(cmd::sync::Args),
    /// Recent runs of the destination with their counts, and the latest run's completeness gaps.
    Status(cmd::status::Args),
    /// List each endpoint's datasets, probe which this client may read, write a catalog.
    Discover(cmd::discover::Args),
    /// Create resources from an NDJSON file on the FHIR server (write-back).
    Push(cmd::push::Args),
    /// SMART standalone launch: log in, show status.
    #[command(subcommand)]
    Auth(cmd::auth::Command),
    /// Key pairs and JWKS for SMART Backend Services.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// SQL-on-FHIR ViewDefinitions.
    #[command(subcommand)]
    Views(cmd::views::Command),
}

/// Settings every command may read.
#[derive(Debug, Clone)]
pub struct Globals {
    /// Path of the configuration file.
    pub config: PathBuf,
    /// Verbosity.
    pub verbose: u8,
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FHIRSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal, and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let globals = Globals { config: cli.config, verbose: cli.verbose };
    let globals_verbose = globals.verbose;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cmd::EXIT_INTERNAL);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Sandbox(args) => cmd::sandbox::run(*args, &globals).await,
            Command::Demo(args) => cmd::demo::run(args, &globals).await,
            Command::Init(args) => cmd::init::run(args, &globals).await,
            Command::Sync(args) => cmd::sync::run(args, &globals).await,
            Command::Status(args) => cmd::status::run(args, &globals).await,
            Command::Discover(args) => cmd::discover::run(args, &globals).await,
            Command::Push(args) => cmd::push::run(args, &globals).await,
            Command::Auth(c) => cmd::auth::run(c, &globals).await,
            Command::Keys(c) => cmd::keys::run(c, &globals).await,
            Command::Views(c) => cmd::views::run(c, &globals).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cmd::chain_text(&err));
            if let Some(hint) = err.chain().find_map(|c| c.downcast_ref::<fhirsync::Error>()?.hint()) {
                eprintln!("{hint}");
            }
            if globals_verbose > 0 {
                eprintln!("debug: {err:?}");
            }
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
