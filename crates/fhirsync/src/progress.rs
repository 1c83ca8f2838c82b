//! Live progress of a run, pushed to a [`ProgressSink`] of the caller's (a terminal bar, log
//! lines, a scheduler's heartbeat).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirsync_extract::{Progress, ProgressSnapshot};
use tokio::task::JoinHandle;

/// Receives the counters of a running sync.
pub trait ProgressSink: Send + std::marker::Sync + 'static {
    /// Called every [`ProgressSink::interval`] while the run extracts, with the counters so far
    /// and the time since extraction started.
    fn update(&self, snapshot: &ProgressSnapshot, elapsed: Duration);

    /// How often [`ProgressSink::update`] is called.
    fn interval(&self) -> Duration {
        Duration::from_millis(200)
    }

    /// Called once when extraction has ended (also when it failed).
    fn finish(&self) {}
}

/// The task that feeds a sink; [`Reporter::finish`] stops it.
pub(crate) struct Reporter {
    task: JoinHandle<()>,
    sink: Arc<dyn ProgressSink>,
}

/// Starts feeding `sink` from `progress`.
pub(crate) fn spawn(progress: Arc<Progress>, sink: Arc<dyn ProgressSink>) -> Reporter {
    let feed = sink.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(feed.interval()).await;
            feed.update(&progress.snapshot(), started.elapsed());
        }
    });
    Reporter { task, sink }
}

impl Reporter {
    /// Stops the updates and tells the sink.
    pub(crate) async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        self.sink.finish();
    }
}
