//! Rate limits: a token bucket per API key for requests and another for images.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A bucket of `capacity` tokens refilled at `capacity` per minute.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a limit said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Tokens left after this request.
    pub remaining: u32,
    /// Seconds until the request would be allowed (0 when allowed).
    pub retry_after: f64,
    /// Seconds until the bucket is full again.
    pub reset: f64,
}

/// Token buckets per key, all with the same per-minute rate.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `key`'s bucket if it has them; otherwise takes nothing.
    pub fn check(&self, key: &str, cost: u32) -> Decision {
        self.check_at(key, cost, Instant::now())
    }

    fn check_at(&self, key: &str, cost: u32, now: Instant) -> Decision {
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 100_000 {
            // Full buckets carry no state; dropping them bounds memory.
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < cap);
        }
        let b = buckets
            .entry(key.to_owned())
            .or_insert(Bucket { tokens: cap, at: now });
        b.tokens = (b.tokens + rate * now.duration_since(b.at).as_secs_f64()).min(cap);
        b.at = now;
        let cost = f64::from(cost);
        let allowed = b.tokens >= cost;
        if allowed {
            b.tokens -= cost;
        }
        let retry_after = if allowed {
            0.0
        } else if cost > cap {
            f64::INFINITY
        } else {
            (cost - b.tokens) / rate
        };
        Decision {
            allowed,
            limit: self.per_minute,
            remaining: b.tokens.floor() as u32,
            retry_after,
            reset: (cap - b.tokens) / rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_empties_then_refills_at_the_rate() {
        let l = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(l.check_at("k", 1, t0).allowed);
        }
        let d = l.check_at("k", 1, t0);
        assert!(!d.allowed);
        assert!((d.retry_after - 1.0).abs() < 1e-6, "{d:?}");
        // Other keys are not affected.
        assert!(l.check_at("other", 1, t0).allowed);
        // One token a second comes back.
        assert!(l.check_at("k", 1, t0 + Duration::from_millis(1001)).allowed);
        assert!(!l.check_at("k", 1, t0 + Duration::from_millis(1002)).allowed);
    }

    #[test]
    fn a_refused_request_takes_nothing_and_costs_count() {
        let l = RateLimiter::new(10);
        let t0 = Instant::now();
        assert!(l.check_at("k", 8, t0).allowed);
        let d = l.check_at("k", 4, t0);
        assert!(!d.allowed && d.remaining == 2);
        assert!(l.check_at("k", 2, t0).allowed);
        assert!(l.check_at("k", 11, t0).retry_after.is_infinite());
    }
}
