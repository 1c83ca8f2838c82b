//! Live progress of a sync: bars on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fhirsync_extract::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tracing::info;

/// How often a non-terminal progress line is logged.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

/// Starts reporting `progress` until the returned task is aborted.
pub fn spawn(progress: Arc<Progress>, enabled: bool) -> JoinHandle<()> {
    let tty = enabled && std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let started = Instant::now();
        if tty {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} scopes {pos}/{len} [{bar:30}] {msg} ({elapsed_precise}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            loop {
                let s = progress.snapshot();
                bar.set_length(s.scopes_total);
                bar.set_position(s.scopes_done + s.scopes_failed);
                let rate = s.resources as f64 / started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{} resources, {} pages, {rate:.0} res/s", s.resources, s.pages));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } else {
            loop {
                tokio::time::sleep(PLAIN_INTERVAL).await;
                let done = progress.scopes_done.load(Ordering::Relaxed);
                let failed = progress.scopes_failed.load(Ordering::Relaxed);
                let total = progress.scopes_total.load(Ordering::Relaxed);
                let resources = progress.resources.load(Ordering::Relaxed);
                info!(
                    scopes_done = done,
                    scopes_failed = failed,
                    scopes_total = total,
                    resources,
                    "Progress."
                );
            }
        }
    })
}
