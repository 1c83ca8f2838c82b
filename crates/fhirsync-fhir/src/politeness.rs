//! Politeness: a token-bucket rate limit and an adaptive (AIMD) concurrency limit.
//!
//! Epic publishes no numeric rate limit and asks apps to throttle themselves, so every request
//! first takes a token from [`RateLimiter`] and then a permit from [`AdaptiveLimiter`].
//!
//! The concurrency limit starts at the configured ceiling and adapts like TCP congestion
//! control: a congestion signal (429/503, a timeout, or a smoothed latency far above the best
//! latency seen) halves the limit (at most once per round trip); every `limit` successful
//! requests add one permit back, up to the ceiling. Lowering the limit never cancels requests in
//! flight: the permits are retired as they come back ("debt").

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default smoothed-latency / best-latency ratio that counts as congestion.
pub const DEFAULT_LATENCY_FACTOR: f64 = 4.0;
/// Latency increases below this are never treated as congestion (jitter on fast links).
const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// Minimum spacing of two decreases when latency is tiny.
const MIN_DECREASE_INTERVAL: Duration = Duration::from_millis(100);
/// Weight of a new sample in the latency moving average.
const EWMA_ALPHA: f64 = 0.2;
/// Share of the gap to the average the best latency moves up per sample.
const BEST_DRIFT: f64 = 0.01;

/// A token bucket: `rate` requests per second on average, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A bucket refilled at `rate` per second holding at most `burst` tokens (both ≥ 1 enforced
    /// by the caller's validation; values below are raised to keep the limiter live).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter { rate: rate.max(0.001), burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Waits until a token is available and takes it. Callers are served in arrival order:
    /// tokens may go negative, each waiter sleeping for its own place in the queue.
    pub async fn acquire(&self) {
        let wait = {
            let mut s = self.state.lock().unwrap();
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - 1.0;
            s.1 = now;
            if s.0 >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.0 / self.rate) }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Settings of [`AdaptiveLimiter`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyConfig {
    /// Upper bound (and starting value) of requests in flight.
    pub max: usize,
    /// Lower bound the limit may shrink to.
    pub min: usize,
    /// Adapt the limit to throttling and latency (AIMD); `false` keeps it at `max`.
    pub adaptive: bool,
    /// Smoothed latency above `factor ×` the best latency seen counts as congestion.
    pub latency_factor: f64,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig { max: 4, min: 1, adaptive: true, latency_factor: DEFAULT_LATENCY_FACTOR }
    }
}

#[derive(Debug)]
struct AimdState {
    limit: usize,
    debt: usize,
    successes: usize,
    last_decrease: Option<Instant>,
    ewma: Option<Duration>,
    best: Option<Duration>,
}

/// A concurrency limit that adapts to congestion signals (see module docs).
#[derive(Debug)]
pub struct AdaptiveLimiter {
    sem: Arc<Semaphore>,
    config: ConcurrencyConfig,
    state: Mutex<AimdState>,
}

/// A slot for one request in flight; returned (or retired) on drop.
#[derive(Debug)]
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<AdaptiveLimiter>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock().unwrap();
        if let Some(p) = self.permit.take()
            && s.debt > 0
        {
            s.debt -= 1;
            p.forget();
        }
    }
}

impl AdaptiveLimiter {
    /// A limiter starting at `config.max` permits.
    pub fn new(mut config: ConcurrencyConfig) -> Arc<Self> {
        config.max = config.max.max(1);
        config.min = config.min.clamp(1, config.max);
        Arc::new(AdaptiveLimiter {
            sem: Arc::new(Semaphore::new(config.max)),
            state: Mutex::new(AimdState {
                limit: config.max,
                debt: 0,
                successes: 0,
                last_decrease: None,
                ewma: None,
                best: None,
            }),
            config,
        })
    }

    /// Waits for a slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self.sem.clone().acquire_owned().await.ok();
        Permit { permit, limiter: self.clone() }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().unwrap().limit
    }

    /// A request succeeded after `latency`.
    pub fn on_success(&self, latency: Duration) {
        if !self.config.adaptive {
            return;
        }
        let mut s = self.state.lock().unwrap();
        let ewma = match s.ewma {
            Some(e) => e.mul_f64(1.0 - EWMA_ALPHA) + latency.mul_f64(EWMA_ALPHA),
            None => latency,
        };
        s.ewma = Some(ewma);
        // The best latency drifts slowly towards the average, so a server whose normal latency
        // really changed is not treated as congested forever.
        let best = s.best.map_or(latency, |b| {
            let drifted = if ewma > b { b + (ewma - b).mul_f64(BEST_DRIFT) } else { b };
            drifted.min(latency)
        });
        s.best = Some(best);
        if ewma > best.mul_f64(self.config.latency_factor) && ewma > best + LATENCY_SLACK {
            self.decrease(&mut s);
            return;
        }
        s.successes += 1;
        if s.successes >= s.limit && s.limit < self.config.max {
            s.successes = 0;
            s.limit += 1;
            if s.debt > 0 {
                s.debt -= 1;
            } else {
                self.sem.add_permits(1);
            }
        }
    }

    /// The server signalled congestion (429/503, timeout).
    pub fn on_congestion(&self) {
        if self.config.adaptive {
            let mut s = self.state.lock().unwrap();
            self.decrease(&mut s);
        }
    }

    fn decrease(&self, s: &mut AimdState) {
        let interval = s.ewma.unwrap_or_default().max(MIN_DECREASE_INTERVAL);
        if s.last_decrease.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        let new = (s.limit / 2).max(self.config.min);
        let cut = s.limit - new;
        s.limit = new;
        s.successes = 0;
        s.last_decrease = Some(Instant::now());
        // Retire idle permits now, the rest as they come back.
        let mut retired = 0;
        while retired < cut {
            match self.sem.try_acquire() {
                Ok(p) => {
                    p.forget();
                    retired += 1;
                }
                Err(_) => break,
            }
        }
        s.debt += cut - retired;
        if cut > 0 {
            tracing::debug!(limit = new, "Concurrency limit lowered.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: usize) -> Arc<AdaptiveLimiter> {
        AdaptiveLimiter::new(ConcurrencyConfig { max, min: 1, adaptive: true, latency_factor: 4.0 })
    }

    /// Congestion halves the limit and the semaphore really shrinks; successes grow it back.
    #[tokio::test]
    async fn aimd_halves_then_grows() {
        let l = limiter(8);
        l.on_congestion();
        assert_eq!(l.limit(), 4);
        assert_eq!(l.sem.available_permits(), 4);
        // A second signal within the same round trip is ignored.
        l.on_congestion();
        assert_eq!(l.limit(), 4);
        for _ in 0..4 {
            l.on_success(Duration::from_millis(10));
        }
        assert_eq!(l.limit(), 5);
        assert_eq!(l.sem.available_permits(), 5);
    }

    /// Permits held while the limit drops are retired on return instead of released.
    #[tokio::test]
    async fn decrease_while_busy_retires_returning_permits() {
        let l = limiter(4);
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| l.acquire())).await;
        l.on_congestion();
        assert_eq!(l.limit(), 2);
        drop(held);
        assert_eq!(l.sem.available_permits(), 2);
    }

    /// Latency far above the best seen counts as congestion.
    #[tokio::test]
    async fn latency_spike_lowers_limit() {
        let l = limiter(8);
        for _ in 0..3 {
            l.on_success(Duration::from_millis(10));
        }
        for _ in 0..20 {
            l.on_success(Duration::from_millis(500));
        }
        assert!(l.limit() < 8, "limit {}", l.limit());
    }

    /// Non-adaptive limiters keep the ceiling.
    #[tokio::test]
    async fn non_adaptive_is_fixed() {
        let l = AdaptiveLimiter::new(ConcurrencyConfig { adaptive: false, ..ConcurrencyConfig::default() });
        l.on_congestion();
        assert_eq!(l.limit(), 4);
    }

    /// The token bucket spaces requests beyond the burst at 1/rate.
    #[tokio::test]
    async fn rate_limiter_spaces_requests() {
        let r = RateLimiter::new(50.0, 1);
        let t = Instant::now();
        for _ in 0..6 {
            r.acquire().await;
        }
        // First is free, five more at 20 ms each.
        assert!(t.elapsed() >= Duration::from_millis(95), "{:?}", t.elapsed());
    }
}
