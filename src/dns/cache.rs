//! The TTL cache of upstream answers, in front of the resolver.
//!
//! It holds what the upstream said (records, rcode, SOA), never a policy decision: the policy
//! may be reloaded and differs per jurisdiction, so every answer served from the cache is
//! screened again. Entries live for the answer's TTL (negative answers for their SOA's
//! negative TTL), capped at [`MAX_TTL`]; served records carry the TTL left. The map is split
//! into shards, each behind its own mutex held only for a lookup or an insert. A full shard
//! first drops its expired entries, then an arbitrary one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::template::Template;
use crate::resolve::Answer;

/// Longest time an answer is kept, whatever its TTL says (one day).
pub const MAX_TTL: u32 = 86_400;
/// Longest time a negative answer is kept (one hour).
pub const MAX_NEGATIVE_TTL: u32 = 3_600;
const SHARDS: usize = 16;

/// A cached answer and when it was stored.
#[derive(Debug)]
pub struct Entry {
    /// The upstream's answer, TTLs as received.
    pub answer: Answer,
    /// The answer pre-encoded for the fast path, if it could be.
    pub template: Option<Template>,
    stored: Instant,
    expires: Instant,
}

impl Entry {
    /// Whole seconds spent in the cache by `now`.
    pub fn spent(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
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

type Key = (String, RecordType);

/// The sharded TTL cache.
#[derive(Debug)]
pub struct Cache {
    shards: Vec<Mutex<HashMap<Key, Arc<Entry>>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl Cache {
    /// A cache of at most about `capacity` answers (0 disables it).
    pub fn new(capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Arc<Entry>>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The live entry for `name` (lower-case, as [`Cache::insert`] was given it) and `qtype`.
    pub fn get(&self, name: &str, qtype: RecordType, now: Instant) -> Option<Arc<Entry>> {
        if self.per_shard == 0 {
            return None;
        }
        let key = (name.to_owned(), qtype);
        let shard = self.shard(&key);
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(e) if e.expires > now => Some(Arc::clone(e)),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Stores `answer` (and its pre-encoded form) for its TTL (not at all if that is 0).
    pub fn insert(
        &self,
        name: String,
        qtype: RecordType,
        answer: Answer,
        template: Option<Template>,
        now: Instant,
    ) {
        let cap = if answer.records.is_empty() {
            MAX_NEGATIVE_TTL
        } else {
            MAX_TTL
        };
        let ttl = answer.ttl.min(cap);
        if self.per_shard == 0 || ttl == 0 {
            return;
        }
        let key = (name, qtype);
        let entry = Arc::new(Entry {
            answer,
            template,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        });
        let shard = self.shard(&key);
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard {
                if let Some(k) = map.keys().next().cloned() {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, entry);
    }

    /// Number of entries, expired ones included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
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

    #[test]
    fn entries_age_and_expire() {
        let c = Cache::new(100);
        let t0 = Instant::now();
        c.insert("a.test.".into(), RecordType::A, answer(60), None, t0);
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
        c.insert("a.test.".into(), RecordType::A, answer(0), None, t0);
        assert!(c.is_empty());
        let off = Cache::new(0);
        off.insert("a.test.".into(), RecordType::A, answer(60), None, t0);
        assert!(off.get("a.test.", RecordType::A, t0).is_none());
    }

    #[test]
    fn size_is_bounded() {
        let c = Cache::new(32);
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(format!("n{i}.test."), RecordType::A, answer(60), None, t0);
        }
        assert!(c.len() <= 32, "{} entries", c.len());
    }
}
