//! Live progress of a sync: a bar on a terminal, a plain log line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use fhirsync::{ProgressSink, ProgressSnapshot};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// How often a non-terminal progress line is logged.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

/// The sink for this process's stderr.
pub fn sink() -> Arc<dyn ProgressSink> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} scopes {pos}/{len} [{bar:30}] {msg} ({elapsed_precise}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Arc::new(Bar(bar))
    } else {
        Arc::new(Lines)
    }
}

/// A progress bar on stderr.
struct Bar(ProgressBar);

impl ProgressSink for Bar {
    fn update(&self, s: &ProgressSnapshot, elapsed: Duration) {
        self.0.set_length(s.scopes_total);
        self.0.set_position(s.scopes_done + s.scopes_failed);
        let rate = s.resources as f64 / elapsed.as_secs_f64().max(0.001);
        self.0.set_message(format!("{} resources, {} pages, {rate:.0} res/s", s.resources, s.pages));
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A structured log line every [`PLAIN_INTERVAL`].
struct Lines;

impl ProgressSink for Lines {
    fn update(&self, s: &ProgressSnapshot, _elapsed: Duration) {
        info!(
            scopes_done = s.scopes_done,
            scopes_failed = s.scopes_failed,
            scopes_total = s.scopes_total,
            resources = s.resources,
            "Progress."
        );
    }

    fn interval(&self) -> Duration {
        PLAIN_INTERVAL
    }
}
