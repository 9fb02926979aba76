//! The bounded flow table: flows keyed by (client, server, transport), oldest evicted.
//!
//! A flow is found from either direction of a packet. The table holds at most `capacity`
//! flows; inserting into a full table first removes idle flows, then the oldest one, and
//! counts every eviction. Lookups allocate nothing; an insertion may grow the table up to its
//! capacity (reserved up front, so it does not reallocate on the packet path).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Transport of a flow: the rules' protocol type, so a flow's key feeds a `ports` condition as is.
pub use crate::rules::Proto;

/// A flow's identity, client side first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The side that opened the flow.
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// Transport.
    pub proto: Proto,
}

impl FlowKey {
    /// The two keys a packet from `src` to `dst` may belong to: `src` as the client, then
    /// `dst` as the client.
    pub const fn both_ways(src: SocketAddr, dst: SocketAddr, proto: Proto) -> (FlowKey, FlowKey) {
        (
            FlowKey {
                client: src,
                server: dst,
                proto,
            },
            FlowKey {
                client: dst,
                server: src,
                proto,
            },
        )
    }
}

/// Direction of a packet within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    serial: u64,
    last_ns: u64,
}

/// A bounded map of flows.
#[derive(Debug)]
pub struct FlowTable<V> {
    map: HashMap<FlowKey, Slot<V>>,
    /// Insertion order: (key, serial); stale entries (removed or replaced flows) are skipped.
    order: VecDeque<(FlowKey, u64)>,
    serial: u64,
    capacity: usize,
    /// Flows removed to make room.
    pub evicted: u64,
}

impl<V> FlowTable<V> {
    /// A table holding at most `capacity` flows (at least 1).
    pub fn new(capacity: usize) -> FlowTable<V> {
        let capacity = capacity.max(1);
        FlowTable {
            map: HashMap::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            serial: 0,
            capacity,
            evicted: 0,
        }
    }

    /// The flow of a packet from `src` to `dst`, and the packet's direction.
    pub fn lookup(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        proto: Proto,
        now_ns: u64,
    ) -> Option<(FlowKey, Side, &mut V)> {
        let (fwd, rev) = FlowKey::both_ways(src, dst, proto);
        let (key, side) = if self.map.contains_key(&fwd) {
            (fwd, Side::ToServer)
        } else if self.map.contains_key(&rev) {
            (rev, Side::ToClient)
        } else {
            return None;
        };
        let slot = self.map.get_mut(&key)?;
        slot.last_ns = now_ns;
        Some((key, side, &mut slot.value))
    }

    /// The flow under `key`.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Inserts a new flow; returns the flows evicted to make room (at most one here).
    pub fn insert(&mut self, key: FlowKey, value: V, now_ns: u64) -> Option<(FlowKey, V)> {
        let mut evicted = None;
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            while let Some((k, serial)) = self.order.pop_front() {
                if self.map.get(&k).is_some_and(|s| s.serial == serial) {
                    if let Some(s) = self.map.remove(&k) {
                        self.evicted += 1;
                        evicted = Some((k, s.value));
                    }
                    break;
                }
            }
        }
        self.serial += 1;
        self.order.push_back((key, self.serial));
        self.map.insert(
            key,
            Slot {
                value,
                serial: self.serial,
                last_ns: now_ns,
            },
        );
        // Keep the order queue from growing without bound under churn of removed flows.
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|slot| slot.serial == *s));
        }
        evicted
    }

    /// Calls `f` on every flow (no order).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&FlowKey, &mut V)) {
        for (k, s) in &mut self.map {
            f(k, &mut s.value);
        }
    }

    /// Removes a flow.
    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        self.map.remove(key).map(|s| s.value)
    }

    /// Removes and returns every flow idle for at least `idle_ns`.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64) -> Vec<(FlowKey, V)> {
        let old: Vec<FlowKey> = self
            .map
            .iter()
            .filter(|(_, s)| now_ns.saturating_sub(s.last_ns) >= idle_ns)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter()
            .filter_map(|k| self.map.remove(&k).map(|s| (k, s.value)))
            .collect()
    }

    /// Removes every flow, oldest first.
    pub fn drain(&mut self) -> Vec<(FlowKey, V)> {
        let mut out = Vec::with_capacity(self.map.len());
        while let Some((k, serial)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|s| s.serial == serial) {
                if let Some(s) = self.map.remove(&k) {
                    out.push((k, s.value));
                }
            }
        }
        out.extend(self.map.drain().map(|(k, s)| (k, s.value)));
        out
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey {
            client: SocketAddr::from(([10, 0, 0, 1], n)),
            server: SocketAddr::from(([10, 0, 1, 1], 443)),
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn both_directions_find_the_flow() {
        let mut t = FlowTable::new(4);
        t.insert(key(1), 7u32, 0);
        let k = key(1);
        let (_, side, v) = t.lookup(k.client, k.server, Proto::Tcp, 1).unwrap();
        assert_eq!((side, *v), (Side::ToServer, 7));
        let (_, side, _) = t.lookup(k.server, k.client, Proto::Tcp, 1).unwrap();
        assert_eq!(side, Side::ToClient);
        assert!(t.lookup(k.server, k.client, Proto::Udp, 1).is_none());
    }

    #[test]
    fn full_table_evicts_the_oldest_and_counts() {
        let mut t = FlowTable::new(3);
        for n in 1..=3 {
            t.insert(key(n), n, 0);
        }
        t.remove(&key(1));
        t.insert(key(4), 4, 0); // room after the removal: nothing evicted
        assert_eq!(t.evicted, 0);
        let gone = t.insert(key(5), 5, 0).unwrap();
        assert_eq!(gone.0, key(2));
        assert_eq!((t.len(), t.evicted), (3, 1));
        for n in 6..1000 {
            t.insert(key(n), n, 0);
        }
        assert_eq!(t.len(), 3);
        assert!(t.order.len() <= 2 * 3 + 16, "order queue bounded");
    }

    #[test]
    fn idle_flows_expire() {
        let mut t = FlowTable::new(8);
        t.insert(key(1), 1, 0);
        t.insert(key(2), 2, 50);
        let gone = t.expire(100, 60);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, key(1));
        assert_eq!(t.drain().len(), 1);
    }
}
