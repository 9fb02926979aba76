//! Per-client and per-listener limits: the token bucket, a DNS rate limit and a cap on open
//! TCP connections.
//!
//! [`Bucket`] is the one token bucket of the gateway (pure arithmetic on the caller's clock):
//! every `throttle` (`crate::enforce::throttle`) and the DNS rate limit use it.
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
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Shards of the rate limiter's map.
pub const SHARDS: usize = 16;

/// The smallest grant worth waking up for (unless the bucket is smaller).
const MIN_GRANT: usize = 512;

/// A token bucket: `rate` tokens a second, at most `burst` saved up, starting full.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket refilling `rate` tokens a second up to `burst`, full at `now`.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// A byte bucket refilling at `kbps` kilobits per second (1 kbit = 1000 bit), with a small
    /// burst: a quarter second of traffic, at least one full-size segment, at most 64 KiB.
    pub fn for_kbps(kbps: u32, now: Instant) -> Bucket {
        let rate = f64::from(kbps.max(1)) * 1000.0 / 8.0;
        Bucket::new(rate, (rate / 4.0).clamp(1500.0, 64.0 * 1024.0), now)
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// How many of `want` tokens may be used now, or how long to wait before asking again
    /// (a stream's read or write asks for what fits; pass what was used to [`Bucket::consume`]).
    pub fn grant(&mut self, want: usize, now: Instant) -> Result<usize, Duration> {
        self.refill(now);
        let floor = (want.min(MIN_GRANT) as f64).min(self.burst);
        if self.tokens >= floor && self.tokens >= 1.0 {
            return Ok((self.tokens as usize).min(want).max(1));
        }
        let missing = floor.max(1.0) - self.tokens;
        Err(Duration::from_secs_f64(missing / self.rate))
    }

    /// Records that `n` granted tokens were used.
    pub fn consume(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Takes `n` tokens at `now` if the bucket holds them (a rate limit: `false` = over it).
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Spends `len` tokens at `now` and returns how long the packet must wait until the rate
    /// has paid for it (zero within the burst). Later packets queue behind it.
    pub fn delay(&mut self, len: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= len as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Whether the bucket, untouched since its last use, is full again at `now` even if it
    /// was empty then (a limiter may forget it without changing any answer).
    pub fn refilled(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last).as_secs_f64() >= self.burst / self.rate
    }
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
            map.retain(|_, b| !b.refilled(now));
            if map.len() >= self.per_shard {
                map.clear();
            }
        }
        map.entry(client)
            .or_insert_with(|| Bucket::new(self.qps, self.burst, now))
            .take(1.0, now)
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
