//! Rate limits: a token bucket per API key for requests and another for images. The rate is
//! given with each check, because tenants may have their own.

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

/// Token buckets, one per tenant.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `cost` tokens from `key`'s bucket, which holds `per_minute` and refills at that
    /// rate, if it has them; otherwise takes nothing.
    pub fn check(&self, key: &str, per_minute: u32, cost: u32) -> Decision {
        self.check_at(key, per_minute, cost, Instant::now())
    }

    fn check_at(&self, key: &str, per_minute: u32, cost: u32, now: Instant) -> Decision {
        let per_minute = per_minute.max(1);
        let cap = f64::from(per_minute);
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
            limit: per_minute,
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
        const RATE: u32 = 60;
        let l = RateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..60 {
            assert!(l.check_at("k", RATE, 1, t0).allowed);
        }
        let d = l.check_at("k", RATE, 1, t0);
        assert!(!d.allowed);
        assert!((d.retry_after - 1.0).abs() < 1e-6, "{d:?}");
        // Other keys are not affected.
        assert!(l.check_at("other", RATE, 1, t0).allowed);
        // One token a second comes back.
        assert!(l.check_at("k", RATE, 1, t0 + Duration::from_millis(1001)).allowed);
        assert!(!l.check_at("k", RATE, 1, t0 + Duration::from_millis(1002)).allowed);
    }

    #[test]
    fn a_refused_request_takes_nothing_and_costs_count() {
        const RATE: u32 = 10;
        let l = RateLimiter::new();
        let t0 = Instant::now();
        assert!(l.check_at("k", RATE, 8, t0).allowed);
        let d = l.check_at("k", RATE, 4, t0);
        assert!(!d.allowed && d.remaining == 2);
        assert!(l.check_at("k", RATE, 2, t0).allowed);
        assert!(l.check_at("k", RATE, 11, t0).retry_after.is_infinite());
    }

    #[test]
    fn a_new_rate_applies_to_an_existing_bucket() {
        let l = RateLimiter::new();
        let t0 = Instant::now();
        assert!(l.check_at("k", 10, 10, t0).allowed);
        assert!(!l.check_at("k", 10, 1, t0).allowed);
        // Raised: the bucket refills at the new rate (100/min), up to the new size.
        let d = l.check_at("k", 100, 50, t0 + Duration::from_secs(30));
        assert!(d.allowed && d.limit == 100, "{d:?}");
        // Lowered: the tokens are capped at the new size.
        let d = l.check_at("k", 5, 1, t0 + Duration::from_secs(600));
        assert!(d.allowed && d.remaining == 4, "{d:?}");
    }
}
