//! Per-client and per-listener limits: a DNS rate limit and a cap on open TCP connections.
//!
//! [`RateLimiter`] is a token bucket per client address (`[dns] rate_limit_qps` and
//! `rate_limit_burst`), kept in a map split into [`SHARDS`] mutex-guarded shards so concurrent
//! sockets rarely contend; one query costs a hash, a short lock and a little arithmetic. Memory
//! is bounded: at most `max_clients` addresses are tracked; a full shard first forgets clients
//! whose bucket has refilled (they lose nothing), and if it is still full it starts over (every
//! client in it gets a fresh burst), so a flood of spoofed sources cannot grow the map.
//! [`ConnLimit`] caps the concurrent connections of one TCP listener: excess connections are
//! accepted and closed at once, and counted.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Shards of the rate limiter's map.
pub const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    per_shard: usize,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl RateLimiter {
    /// A limiter refilling `qps` tokens a second up to `burst`, tracking at most `max_clients`
    /// addresses; `None` when `qps` is 0 (no limit).
    pub fn new(qps: u32, burst: u32, max_clients: usize) -> Option<RateLimiter> {
        if qps == 0 {
            return None;
        }
        Some(RateLimiter {
            qps: f64::from(qps),
            burst: f64::from(burst.max(1)),
            per_shard: (max_clients / SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    /// Takes one token for `client` at `now`; `false` when its bucket is empty.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        let shard = (self.hasher.hash_one(client) as usize) % SHARDS;
        let Ok(mut map) = self.shards[shard].lock() else {
            return true;
        };
        if map.len() >= self.per_shard && !map.contains_key(&client) {
            let full_after = self.burst / self.qps;
            map.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < full_after);
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.qps).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }
}

/// A cap on the concurrent connections of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimit {
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl ConnLimit {
    /// At most `max` connections at once (0 = a practically unbounded number).
    pub fn new(max: usize, metrics: Arc<Metrics>) -> ConnLimit {
        let max = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        ConnLimit {
            slots: Arc::new(Semaphore::new(max)),
            metrics,
        }
    }

    /// A slot for a new connection, held until dropped; `None` (counted in
    /// `blocklab_connections_rejected_total`) when every slot is taken.
    pub fn try_acquire(&self, listener: &'static str) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                Metrics::inc(&self.metrics.connections_rejected);
                tracing::debug!(
                    listener,
                    "connection limit reached: closing a new connection"
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let r = RateLimiter::new(10, 5, 100).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| r.allow(ip, t0)).count(), 5);
        // 0.5 s later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| r.allow(ip, t1)).count(), 5);
        // Another client has its own bucket.
        assert!(r.allow("192.0.2.2".parse().unwrap(), t1));
    }

    #[test]
    fn tracked_clients_stay_bounded() {
        let r = RateLimiter::new(10, 10, 160).unwrap();
        let t = Instant::now();
        for i in 0..100_000u32 {
            r.allow(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(r.tracked() <= 160, "{}", r.tracked());
    }

    #[test]
    fn zero_qps_is_no_limiter() {
        assert!(RateLimiter::new(0, 10, 10).is_none());
    }

    #[test]
    fn connection_slots_are_capped_and_freed() {
        let m = Arc::new(Metrics::default());
        let l = ConnLimit::new(2, Arc::clone(&m));
        let a = l.try_acquire("t");
        let b = l.try_acquire("t");
        assert!(a.is_some() && b.is_some());
        assert!(l.try_acquire("t").is_none());
        drop(a);
        assert!(l.try_acquire("t").is_some());
        assert_eq!(
            m.connections_rejected
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
