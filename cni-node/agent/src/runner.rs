//! The bounded-frequency runner's token bucket: at most `burst` runs back to back, then one per `min_interval`
//! (kube-proxy's `BoundedFrequencyRunner`, `minSyncPeriod` with `burstSyncs = 2`). Pure: time is passed in.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket over explicit instants.
#[derive(Clone, Debug)]
pub struct Bucket {
    min_interval: Duration,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(min_interval: Duration, burst: u32, now: Instant) -> Self {
        Self { min_interval, burst: burst.max(1), tokens: f64::from(burst.max(1)), last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        if self.min_interval.is_zero() {
            self.tokens = f64::from(self.burst);
            return;
        }
        let gained = elapsed.as_secs_f64() / self.min_interval.as_secs_f64();
        self.tokens = (self.tokens + gained).min(f64::from(self.burst));
    }

    /// How long to wait before a run is allowed (zero when a token is available).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 { Duration::ZERO } else { self.min_interval.mul_f64(1.0 - self.tokens) }
    }

    /// Takes a token for a run at `now` (call after `wait_time` returned zero).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_of_two_then_one_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = Bucket::new(s, 2, t0);
        // (offset ms, expected wait ms before a run, run?)
        let steps: &[(u64, u64)] =
            &[(0, 0), (0, 0), (0, 1000), (500, 500), (1000, 0), (1000, 1000), (3000, 0), (3000, 0), (3000, 1000)];
        for (i, (at, want)) in steps.iter().enumerate() {
            let now = t0 + Duration::from_millis(*at);
            let w = b.wait_time(now);
            assert_eq!(w.as_millis() as u64, *want, "step {i}");
            if w.is_zero() {
                b.take(now);
            }
        }
    }
}
