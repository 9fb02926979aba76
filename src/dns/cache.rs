//! The TTL cache of upstream answers, in front of the forwarder.
//!
//! It holds what the upstream said (records, rcode, SOA), never a policy decision: the policy
//! may be reloaded and differs per jurisdiction, so every answer served from the cache is
//! screened again. Entries live for the answer's TTL (negative answers for their SOA's
//! negative TTL), capped at [`MAX_TTL`]; served records carry the TTL left.
//!
//! Storage is `quick_cache` (sharded, S3-FIFO-style eviction): inserting into a full cache is
//! O(1) and scan-resistant, so a flood of one-off names (random subdomains) passes through the
//! small probationary queue and does not evict the names clients keep asking for. Lookups
//! borrow the caller's name (`Lookup`, hashed like the stored key): no allocation per lookup.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};
use quick_cache::Equivalent;

use super::template::Template;
use crate::resolve::Answer;

/// Longest time an answer is kept, whatever its TTL says (one day).
pub const MAX_TTL: u32 = 86_400;
/// Longest time a negative answer is kept (one hour).
pub const MAX_NEGATIVE_TTL: u32 = 3_600;

/// A cached answer and when it was stored.
#[derive(Debug)]
pub struct Entry {
    /// The upstream's answer, TTLs as received.
    pub answer: Answer,
    /// The answer pre-encoded for the fast path, if it could be.
    pub template: Option<Template>,
    /// What screening checks, in record order: CNAME targets (as text) and addresses.
    pub targets: Vec<Screened>,
    stored: Instant,
    expires: Instant,
}

impl Entry {
    /// An entry for `answer` received at `now`, living for its (capped) TTL.
    pub fn new(answer: Answer, template: Option<Template>, now: Instant) -> Entry {
        let cap = if answer.records.is_empty() {
            MAX_NEGATIVE_TTL
        } else {
            MAX_TTL
        };
        let ttl = answer.ttl.min(cap);
        let targets = answer
            .records
            .iter()
            .filter_map(|r| match r.data() {
                RData::CNAME(c) => Some(Screened::Name(c.0.to_ascii().into())),
                RData::A(a) => Some(Screened::Ip(IpAddr::V4(a.0))),
                RData::AAAA(a) => Some(Screened::Ip(IpAddr::V6(a.0))),
                _ => None,
            })
            .collect();
        Entry {
            targets,
            answer,
            template,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        }
    }

    /// Whole seconds spent in the cache by `now`.
    pub fn spent(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether the entry may still be served at `now`.
    pub fn live(&self, now: Instant) -> bool {
        self.expires > now
    }

    /// The answer with every TTL lowered by the time spent in the cache.
    pub fn aged(&self, now: Instant) -> Answer {
        let spent = self.spent(now);
        let mut a = self.answer.clone();
        for r in a.records.iter_mut().chain(a.authority.iter_mut()) {
            let ttl = r.ttl().saturating_sub(spent);
            r.set_ttl(ttl);
        }
        a.ttl = a.ttl.saturating_sub(spent);
        a
    }
}

/// A CNAME target or an address of a cached answer, as the policy is asked about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// A CNAME target, as text (`cdn.example.net.`).
    Name(Box<str>),
    /// An A or AAAA address.
    Ip(IpAddr),
}

/// A stored key: the lower-case name and the type.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    name: Box<str>,
    qtype: u16,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.name.hash(h);
        self.qtype.hash(h);
    }
}

/// A borrowed key for lookups, hashed exactly like [`Key`].
struct Lookup<'a> {
    name: &'a str,
    qtype: u16,
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.name.hash(h);
        self.qtype.hash(h);
    }
}

impl Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.qtype == k.qtype && self.name == &*k.name
    }
}

/// The TTL cache.
pub struct Cache {
    map: Option<quick_cache::sync::Cache<Key, Arc<Entry>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("len", &self.len()).finish()
    }
}

impl Cache {
    /// A cache of at most `capacity` answers (0 disables it).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            map: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The live entry for `name` (lower-case, as [`Cache::insert`] was given it) and `qtype`.
    pub fn get(&self, name: &str, qtype: RecordType, now: Instant) -> Option<Arc<Entry>> {
        let map = self.map.as_ref()?;
        let key = Lookup {
            name,
            qtype: u16::from(qtype),
        };
        let e = map.get(&key)?;
        if e.live(now) {
            Some(e)
        } else {
            map.remove(&key);
            None
        }
    }

    /// Stores `entry` under `name` (lower-case) and `qtype`, unless its TTL is 0.
    pub fn insert(&self, name: &str, qtype: RecordType, entry: Arc<Entry>) {
        let Some(map) = &self.map else { return };
        if !entry.live(entry.stored) {
            return;
        }
        let key = Key {
            name: name.into(),
            qtype: u16::from(qtype),
        };
        map.insert(key, entry);
    }

    /// Number of entries, expired ones included.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::{rdata::A, Name, RData, Record};

    fn answer(ttl: u32) -> Answer {
        let r = Record::from_rdata(
            Name::from_ascii("a.test.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        );
        Answer {
            rcode: ResponseCode::NoError,
            records: vec![r],
            authority: vec![],
            ttl,
        }
    }

    fn put(c: &Cache, name: &str, ttl: u32, now: Instant) {
        c.insert(
            name,
            RecordType::A,
            Arc::new(Entry::new(answer(ttl), None, now)),
        );
    }

    #[test]
    fn entries_age_and_expire() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        put(&c, "a.test.", 60, t0);
        let hit = c
            .get("a.test.", RecordType::A, t0 + Duration::from_secs(20))
            .unwrap();
        let aged = hit.aged(t0 + Duration::from_secs(20));
        assert_eq!((aged.ttl, aged.records[0].ttl()), (40, 40));
        assert!(c.get("a.test.", RecordType::AAAA, t0).is_none());
        assert!(c
            .get("a.test.", RecordType::A, t0 + Duration::from_secs(61))
            .is_none());
        assert!(c.is_empty(), "an expired entry is removed when looked up");
    }

    #[test]
    fn zero_ttl_and_zero_capacity_store_nothing() {
        let t0 = Instant::now();
        let c = Cache::new(100);
        put(&c, "a.test.", 0, t0);
        assert!(c.is_empty());
        let off = Cache::new(0);
        put(&off, "a.test.", 60, t0);
        assert!(off.get("a.test.", RecordType::A, t0).is_none());
    }

    #[test]
    fn size_is_bounded() {
        let c = Cache::new(32);
        let t0 = Instant::now();
        for i in 0..1000 {
            put(&c, &format!("n{i}.test."), 60, t0);
        }
        assert!(c.len() <= 40, "{} entries", c.len());
    }

    #[test]
    fn a_flood_of_one_off_names_does_not_evict_popular_ones() {
        let c = Cache::new(1000);
        let t0 = Instant::now();
        let popular: Vec<String> = (0..100).map(|i| format!("popular-{i}.test.")).collect();
        for p in &popular {
            put(&c, p, 3600, t0);
        }
        for round in 0..50 {
            // Clients keep asking for the popular names ...
            for p in &popular {
                std::hint::black_box(c.get(p, RecordType::A, t0));
            }
            // ... while a flood of random subdomains, each asked once, goes through.
            for i in 0..1000 {
                put(&c, &format!("r{round}-{i}.flood.test."), 30, t0);
            }
        }
        let kept = popular
            .iter()
            .filter(|p| c.get(p, RecordType::A, t0).is_some())
            .count();
        assert_eq!(
            kept,
            popular.len(),
            "popular names evicted by a scan of 50000 one-off names"
        );
    }
}
