//! Counters of the DNS frontend (exported by the admin listener once it exists; read by tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the DNS frontend has done since it started. Relaxed atomics: counts, not a log.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets received (UDP datagrams and TCP frames).
    pub queries: AtomicU64,
    /// Malformed packets (dropped, or answered FORMERR).
    pub malformed: AtomicU64,
    /// Queries from clients in no configured network (answered REFUSED).
    pub refused_clients: AtomicU64,
    /// Queries blocked by a DNS technique (the name, a CNAME target or an address).
    pub blocked: AtomicU64,
    /// Queries that got no answer on purpose (`dns-drop`).
    pub dropped: AtomicU64,
    /// Allowed queries answered from the cache.
    pub cache_hits: AtomicU64,
    /// Allowed queries sent upstream.
    pub cache_misses: AtomicU64,
    /// Upstream failures (answered SERVFAIL).
    pub upstream_errors: AtomicU64,
}

impl Stats {
    /// Adds one to `counter`.
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
