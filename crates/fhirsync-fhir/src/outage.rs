//! A run-level circuit breaker above the per-request retries.
//!
//! Every attempt of every request of one [`crate::FhirClient`] reports to one [`Breaker`]. A
//! transient failure (429, 5xx, timeout, connection reset) counts as a failure, any other answer
//! (2xx, or a 4xx other than 401/429) as a success: the server is up. Transport failures
//! (refused, timeout, reset) count only once the server has answered at least once with any
//! HTTP status: before that a wrong host, port or proxy is likelier than an outage, and the
//! request fails after its own retries as it always did. The breaker **opens** (the server is considered unavailable) when
//! - `consecutive_failures` attempts in a row failed, or
//! - at least `failure_ratio` of the last `window` attempts failed, or
//! - a request is about to give up on its own retries and no attempt succeeded since it began
//!   (with one request in flight this is the only evidence there is).
//!
//! While open, no new attempt is sent: requests wait at [`Breaker::enter`], and a single
//! **probe** (one of the waiting requests) goes out at growing intervals (`first_probe`,
//! doubling up to `max_probe_interval`, never earlier than a server's `Retry-After`). The first
//! success closes the breaker and every waiting request proceeds with its retry budget intact:
//! failures during an outage never exhaust a request's own retries. After `max_outage` the
//! waiting requests fail with the time the server was down.
//!
//! Logs: one warning when the breaker opens ("server unavailable, waiting (0 s)"), then one
//! every `log_every`, and one when the server answers again.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::warn;

/// Default number of recent attempts the failure ratio is taken over.
pub const DEFAULT_WINDOW: usize = 20;
/// Default share of failed attempts in the window that opens the breaker.
pub const DEFAULT_FAILURE_RATIO: f64 = 0.5;
/// Default number of failed attempts in a row that opens the breaker. Above the default retries
/// of one request (1 + 5), so one failing URL among working ones does not stop the run.
pub const DEFAULT_CONSECUTIVE_FAILURES: usize = 10;
/// Default wait before the first probe.
pub const DEFAULT_FIRST_PROBE: Duration = Duration::from_secs(2);
/// Default longest wait between two probes.
pub const DEFAULT_MAX_PROBE_INTERVAL: Duration = Duration::from_secs(15);
/// Default longest outage waited out before the run gives up.
pub const DEFAULT_MAX_OUTAGE: Duration = Duration::from_secs(900);
/// Default interval of the "server unavailable, waiting" warning.
pub const DEFAULT_LOG_EVERY: Duration = Duration::from_secs(30);

/// When the breaker opens, how it probes, and how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct OutagePolicy {
    /// Recent attempts the failure ratio is taken over (the ratio applies once the window is full).
    pub window: usize,
    /// Share (0–1] of failed attempts in the window that opens the breaker.
    pub failure_ratio: f64,
    /// Failed attempts in a row that open the breaker.
    pub consecutive_failures: usize,
    /// Wait before the first probe.
    pub first_probe: Duration,
    /// Longest wait between two probes (the wait doubles after each failed probe).
    pub max_probe_interval: Duration,
    /// Longest outage waited out; then waiting requests fail with [`crate::Error::ServerUnavailable`].
    pub max_outage: Duration,
    /// Interval of the "server unavailable, waiting" warning.
    pub log_every: Duration,
}

impl Default for OutagePolicy {
    fn default() -> Self {
        OutagePolicy {
            window: DEFAULT_WINDOW,
            failure_ratio: DEFAULT_FAILURE_RATIO,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            first_probe: DEFAULT_FIRST_PROBE,
            max_probe_interval: DEFAULT_MAX_PROBE_INTERVAL,
            max_outage: DEFAULT_MAX_OUTAGE,
            log_every: DEFAULT_LOG_EVERY,
        }
    }
}

/// What one attempt told about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The server answered (2xx, or a 4xx that is not throttling).
    Up,
    /// The server answered with a transient failure (429, 5xx); `retry_after` is its (clamped)
    /// `Retry-After`, if any.
    Down {
        /// Server-requested wait.
        retry_after: Option<Duration>,
    },
    /// No HTTP answer (refused, timeout, reset): a failure once the server has answered before,
    /// ignored until then.
    Unreachable,
}

#[derive(Debug)]
struct Open {
    since: Instant,
    next_probe: Instant,
    interval: Duration,
    probing: bool,
    last_log: Instant,
}

#[derive(Debug, Default)]
struct State {
    armed: bool,
    recent: VecDeque<bool>,
    failures_in_window: usize,
    consecutive: usize,
    successes: u64,
    open: Option<Open>,
    outages: u64,
    closed_outage_time: Duration,
}

/// The shared breaker (see module docs).
#[derive(Debug)]
pub struct Breaker {
    policy: OutagePolicy,
    state: Mutex<State>,
    notify: Notify,
}

/// Permission to send one attempt; a probe's permission is handed back on drop if the attempt
/// never reported (cancelled), so another request can probe.
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    /// Successes counted when the ticket was issued.
    pub(crate) successes_before: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.probe {
            let mut s = self.breaker.state.lock().unwrap();
            if let Some(o) = &mut s.open {
                o.probing = false;
            }
            drop(s);
            self.breaker.notify.notify_waiters();
        }
    }
}

/// Formats a duration as operators read it: `45 s`, `3 m 10 s`, `1 h 2 m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        _ => format!("{} h {} m", s / 3600, (s % 3600) / 60),
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(mut policy: OutagePolicy) -> Self {
        policy.window = policy.window.max(1);
        policy.consecutive_failures = policy.consecutive_failures.max(1);
        policy.first_probe = policy.first_probe.max(Duration::from_millis(1));
        policy.max_probe_interval = policy.max_probe_interval.max(policy.first_probe);
        policy.log_every = policy.log_every.max(Duration::from_millis(100));
        Breaker { policy, state: Mutex::new(State::default()), notify: Notify::new() }
    }

    /// Waits until an attempt may be sent: at once while the server is available, else until
    /// this request is the probe or a probe succeeded. `Err(down_for)` once the outage has
    /// lasted `max_outage`.
    pub async fn enter(&self) -> Result<Ticket<'_>, Duration> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut s = self.state.lock().unwrap();
                let successes = s.successes;
                let Some(o) = &mut s.open else {
                    return Ok(Ticket { breaker: self, probe: false, successes_before: successes });
                };
                let now = Instant::now();
                let down = now - o.since;
                if down >= self.policy.max_outage {
                    return Err(down);
                }
                if now - o.last_log >= self.policy.log_every {
                    o.last_log = now;
                    warn!(down_for_secs = down.as_secs(), "server unavailable, waiting ({})", human(down));
                }
                if !o.probing && now >= o.next_probe {
                    o.probing = true;
                    return Ok(Ticket { breaker: self, probe: true, successes_before: successes });
                }
                let mut wake = (o.since + self.policy.max_outage).min(o.last_log + self.policy.log_every);
                if !o.probing {
                    wake = wake.min(o.next_probe);
                }
                wake.saturating_duration_since(now)
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reports the outcome of the attempt `ticket` allowed. Returns true when the server is now
    /// considered unavailable: the request should go back to [`Breaker::enter`] instead of
    /// spending its own retries.
    pub fn record(&self, mut ticket: Ticket<'_>, signal: Signal) -> bool {
        let mut s = self.state.lock().unwrap();
        // `None` = the server is up; `Some(retry_after)` = a failure.
        let down: Option<Option<Duration>> = match signal {
            Signal::Unreachable if !s.armed => return false,
            Signal::Unreachable => Some(None),
            Signal::Down { retry_after } => {
                s.armed = true;
                Some(retry_after)
            }
            Signal::Up => {
                s.armed = true;
                None
            }
        };
        let probe = std::mem::replace(&mut ticket.probe, false);
        let failed = down.is_some();
        s.recent.push_back(failed);
        s.failures_in_window += usize::from(failed);
        if s.recent.len() > self.policy.window && s.recent.pop_front() == Some(true) {
            s.failures_in_window -= 1;
        }
        let now = Instant::now();
        match down {
            None => {
                s.consecutive = 0;
                s.successes += 1;
                if let Some(o) = s.open.take() {
                    let down = now - o.since;
                    s.closed_outage_time += down;
                    // Forget the failures of the outage, so the next failure does not reopen at once.
                    s.recent.clear();
                    s.failures_in_window = 0;
                    drop(s);
                    warn!(down_for_secs = down.as_secs(), "server available again after {}", human(down));
                    self.notify.notify_waiters();
                }
                false
            }
            Some(retry_after) => {
                s.consecutive += 1;
                let ask = retry_after.unwrap_or_default();
                if let Some(o) = &mut s.open {
                    if probe {
                        o.probing = false;
                        o.interval = (o.interval * 2).min(self.policy.max_probe_interval);
                        o.next_probe = now + o.interval.max(ask);
                        drop(s);
                        self.notify.notify_waiters();
                    }
                    return true;
                }
                let ratio_tripped = s.recent.len() >= self.policy.window
                    && s.failures_in_window as f64 >= self.policy.failure_ratio * self.policy.window as f64;
                if s.consecutive >= self.policy.consecutive_failures || ratio_tripped {
                    self.open(&mut s, now, ask);
                    return true;
                }
                false
            }
        }
    }

    /// True while the server is considered unavailable.
    pub fn is_open(&self) -> bool {
        self.state.lock().unwrap().open.is_some()
    }

    /// A request is about to give up on its own retries after a transient failure: true when
    /// the server has answered before and no attempt succeeded since `successes_at_start` (the
    /// request's first ticket), so the failure may be an outage rather than this request's own.
    /// The caller confirms with a second opinion and then calls [`Breaker::open_now`].
    pub fn suspects(&self, successes_at_start: u64) -> bool {
        let s = self.state.lock().unwrap();
        s.open.is_none() && s.armed && s.successes == successes_at_start
    }

    /// Opens the breaker (no-op when open).
    pub fn open_now(&self) {
        let mut s = self.state.lock().unwrap();
        if s.open.is_none() {
            self.open(&mut s, Instant::now(), Duration::ZERO);
        }
    }

    fn open(&self, s: &mut State, now: Instant, ask: Duration) {
        s.outages += 1;
        s.open = Some(Open {
            since: now,
            next_probe: now + self.policy.first_probe.max(ask),
            interval: self.policy.first_probe,
            probing: false,
            last_log: now,
        });
        warn!(
            consecutive_failures = s.consecutive,
            failures_in_window = s.failures_in_window,
            window = s.recent.len(),
            max_outage_secs = self.policy.max_outage.as_secs(),
            "server unavailable, waiting ({}); all requests paused, probing at growing intervals",
            human(Duration::ZERO)
        );
    }

    /// Outages so far, total time unavailable (including a current outage), and the time the
    /// current outage has lasted (`None` when the server is available).
    pub fn figures(&self) -> (u64, Duration, Option<Duration>) {
        let s = self.state.lock().unwrap();
        let current = s.open.as_ref().map(|o| o.since.elapsed());
        (s.outages, s.closed_outage_time + current.unwrap_or_default(), current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutagePolicy {
        OutagePolicy {
            window: 4,
            failure_ratio: 0.5,
            consecutive_failures: 3,
            first_probe: Duration::from_millis(20),
            max_probe_interval: Duration::from_millis(80),
            max_outage: Duration::from_millis(400),
            log_every: Duration::from_secs(30),
        }
    }

    const DOWN: Signal = Signal::Down { retry_after: None };

    /// N failures in a row open the breaker; a success before that resets the count.
    #[tokio::test]
    async fn consecutive_failures_open() {
        let b = Breaker::new(OutagePolicy { window: 100, ..policy() });
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(!b.record(b.enter().await.unwrap(), Signal::Up));
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(b.figures().2.is_none());
        assert!(b.record(b.enter().await.unwrap(), DOWN));
        assert_eq!(b.figures().0, 1);
        assert!(b.figures().2.is_some());
    }

    /// Half of a full window failing opens the breaker even without a run of failures.
    #[tokio::test]
    async fn failure_ratio_opens_once_window_is_full() {
        let b = Breaker::new(OutagePolicy { consecutive_failures: 100, ..policy() });
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(!b.record(b.enter().await.unwrap(), Signal::Up));
        assert!(!b.record(b.enter().await.unwrap(), DOWN));
        assert!(!b.record(b.enter().await.unwrap(), Signal::Up));
        assert!(b.figures().2.is_none(), "window not full yet");
        // Window [up, down, up, down] after this one: 2 of 4.
        assert!(b.record(b.enter().await.unwrap(), DOWN));
    }

    /// While open only one probe goes out; its success closes the breaker and frees the waiters.
    #[tokio::test]
    async fn one_probe_then_everyone_resumes() {
        let b = Breaker::new(policy());
        for _ in 0..3 {
            b.record(b.enter().await.unwrap(), DOWN);
        }
        let t0 = Instant::now();
        let probe = b.enter().await.unwrap();
        assert!(probe.probe);
        assert!(t0.elapsed() >= Duration::from_millis(15), "{:?}", t0.elapsed());
        // A second request waits while the probe is out.
        let waiter = tokio::time::timeout(Duration::from_millis(50), b.enter()).await;
        assert!(waiter.is_err(), "a second request must wait for the probe");
        assert!(!b.record(probe, Signal::Up));
        let t = b.enter().await.unwrap();
        assert!(!t.probe);
        assert!(b.figures().2.is_none());
    }

    /// Failed probes double the interval and honour a longer Retry-After.
    #[tokio::test]
    async fn probe_interval_grows_and_honours_retry_after() {
        let b = Breaker::new(OutagePolicy { max_outage: Duration::from_secs(5), ..policy() });
        for _ in 0..3 {
            b.record(b.enter().await.unwrap(), DOWN);
        }
        let p = b.enter().await.unwrap();
        b.record(p, Signal::Down { retry_after: Some(Duration::from_millis(150)) });
        let t0 = Instant::now();
        let p = b.enter().await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(140), "Retry-After honoured: {:?}", t0.elapsed());
        b.record(p, DOWN);
        let t0 = Instant::now();
        let _p = b.enter().await.unwrap();
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(75) && waited < Duration::from_millis(140), "{waited:?}");
    }

    /// An outage longer than max_outage fails the waiters with how long the server was down.
    #[tokio::test]
    async fn gives_up_after_max_outage() {
        let b = Breaker::new(policy());
        for _ in 0..3 {
            b.record(b.enter().await.unwrap(), DOWN);
        }
        let down = loop {
            match b.enter().await {
                Ok(t) => {
                    b.record(t, DOWN);
                }
                Err(d) => break d,
            }
        };
        assert!(down >= Duration::from_millis(400), "{down:?}");
    }

    /// A cancelled probe hands its turn back.
    #[tokio::test]
    async fn dropped_probe_frees_the_turn() {
        let b = Breaker::new(policy());
        for _ in 0..3 {
            b.record(b.enter().await.unwrap(), DOWN);
        }
        drop(b.enter().await.unwrap());
        let t = tokio::time::timeout(Duration::from_millis(50), b.enter()).await.unwrap().unwrap();
        assert!(t.probe);
    }

    /// A request giving up with no success since it began is suspect; after a success it is not.
    #[tokio::test]
    async fn exhaustion_without_any_success_is_suspect() {
        let b = Breaker::new(OutagePolicy { consecutive_failures: 100, window: 100, ..policy() });
        let t = b.enter().await.unwrap();
        let start = t.successes_before;
        b.record(t, DOWN);
        b.record(b.enter().await.unwrap(), Signal::Up);
        assert!(!b.suspects(start), "another request succeeded meanwhile");
        let t = b.enter().await.unwrap();
        let start = t.successes_before;
        b.record(t, DOWN);
        assert!(b.suspects(start));
        b.open_now();
        assert!(b.is_open() && !b.suspects(start));
    }

    /// Transport failures before the server ever answered neither open the breaker nor hold a
    /// request (a wrong host or port fails fast); after one answer they count.
    #[tokio::test]
    async fn unreachable_counts_only_after_a_first_answer() {
        let b = Breaker::new(policy());
        for _ in 0..5 {
            assert!(!b.record(b.enter().await.unwrap(), Signal::Unreachable));
        }
        assert!(!b.suspects(0), "never answered: fail fast");
        assert!(b.figures().2.is_none());
        b.record(b.enter().await.unwrap(), DOWN);
        b.record(b.enter().await.unwrap(), Signal::Unreachable);
        assert!(b.record(b.enter().await.unwrap(), Signal::Unreachable), "third failure in a row opens");
    }

    /// Durations read as operators expect.
    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(45)), "45 s");
        assert_eq!(human(Duration::from_secs(190)), "3 m 10 s");
        assert_eq!(human(Duration::from_secs(3720)), "1 h 2 m");
    }
}
