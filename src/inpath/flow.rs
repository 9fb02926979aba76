//! The bounded flow table: flows keyed by (client, server, transport), oldest evicted.
//!
//! A flow is found from either direction of a packet. The table holds at most `capacity`
//! flows; inserting into a full table removes the oldest one and counts every eviction.
//! Lookups allocate nothing; an insertion may grow the table up to its capacity (reserved up
//! front, so it does not reallocate on the packet path). The table keys flows by a compact
//! form of [`FlowKey`] (both addresses as 16 bytes, 38 bytes in all instead of 68), which
//! is most of a million-flow table's memory.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// The table's own key: a [`FlowKey`] with both addresses as 16 bytes (IPv4 mapped, and
/// marked, so an IPv4-mapped IPv6 address stays IPv6). IPv6 flow labels and scopes are not
/// kept: they do not name a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    client: [u8; 16],
    server: [u8; 16],
    cport: u16,
    sport: u16,
    proto: Proto,
    v4: bool,
}

impl Key {
    fn of(k: &FlowKey) -> Key {
        let wide = |ip: IpAddr| match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        Key {
            client: wide(k.client.ip()),
            server: wide(k.server.ip()),
            cport: k.client.port(),
            sport: k.server.port(),
            proto: k.proto,
            v4: k.client.is_ipv4(),
        }
    }

    fn flow_key(&self) -> FlowKey {
        let ip = |b: [u8; 16]| -> IpAddr {
            if self.v4 {
                IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
            } else {
                IpAddr::V6(Ipv6Addr::from(b))
            }
        };
        FlowKey {
            client: SocketAddr::new(ip(self.client), self.cport),
            server: SocketAddr::new(ip(self.server), self.sport),
            proto: self.proto,
        }
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
    map: HashMap<Key, Slot<V>>,
    /// Insertion order: (key, serial); stale entries (removed or replaced flows) are skipped.
    order: VecDeque<(Key, u64)>,
    serial: u64,
    capacity: usize,
    /// Flows removed to make room.
    pub evicted: u64,
}

impl<V> FlowTable<V> {
    /// A table holding at most `capacity` flows (at least 1), room for up to 2^20 of them
    /// reserved up front.
    pub fn new(capacity: usize) -> FlowTable<V> {
        FlowTable::with_reserve(capacity, 1 << 20)
    }

    /// A table holding at most `capacity` flows (at least 1), room for `reserve` of them (at
    /// most `capacity`) reserved up front; past that it grows as flows arrive.
    pub fn with_reserve(capacity: usize, reserve: usize) -> FlowTable<V> {
        let capacity = capacity.max(1);
        let reserve = reserve.min(capacity);
        FlowTable {
            map: HashMap::with_capacity(reserve),
            order: VecDeque::with_capacity(reserve),
            serial: 0,
            capacity,
            evicted: 0,
        }
    }

    /// Forgets every flow and the eviction count, keeping the memory for the next use.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.serial = 0;
        self.evicted = 0;
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
        let kf = Key::of(&fwd);
        let (key, side, k) = if self.map.contains_key(&kf) {
            (fwd, Side::ToServer, kf)
        } else {
            (rev, Side::ToClient, Key::of(&rev))
        };
        let slot = self.map.get_mut(&k)?;
        slot.last_ns = now_ns;
        Some((key, side, &mut slot.value))
    }

    /// The flow under `key`.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        self.map.get_mut(&Key::of(key)).map(|s| &mut s.value)
    }

    /// Inserts a new flow; returns the flows evicted to make room (at most one here).
    pub fn insert(&mut self, key: FlowKey, value: V, now_ns: u64) -> Option<(FlowKey, V)> {
        let key = Key::of(&key);
        let mut evicted = None;
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            while let Some((k, serial)) = self.order.pop_front() {
                if self.map.get(&k).is_some_and(|s| s.serial == serial) {
                    if let Some(s) = self.map.remove(&k) {
                        self.evicted += 1;
                        evicted = Some((k.flow_key(), s.value));
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
            f(&k.flow_key(), &mut s.value);
        }
    }

    /// Removes a flow.
    pub fn remove(&mut self, key: &FlowKey) -> Option<V> {
        self.map.remove(&Key::of(key)).map(|s| s.value)
    }

    /// Removes and returns every flow idle for at least `idle_ns`.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64) -> Vec<(FlowKey, V)> {
        let old: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, s)| now_ns.saturating_sub(s.last_ns) >= idle_ns)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter()
            .filter_map(|k| self.map.remove(&k).map(|s| (k.flow_key(), s.value)))
            .collect()
    }

    /// Removes every flow, oldest first.
    pub fn drain(&mut self) -> Vec<(FlowKey, V)> {
        let mut out = Vec::with_capacity(self.map.len());
        while let Some((k, serial)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|s| s.serial == serial) {
                if let Some(s) = self.map.remove(&k) {
                    out.push((k.flow_key(), s.value));
                }
            }
        }
        out.extend(self.map.drain().map(|(k, s)| (k.flow_key(), s.value)));
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
    fn keys_round_trip_both_families() {
        for (c, s) in [
            ("10.0.0.1:4000", "192.0.2.1:443"),
            ("[2001:db8::1]:4000", "[2001:db8::2]:443"),
            ("[::ffff:10.0.0.1]:4000", "[::ffff:192.0.2.1]:443"),
        ] {
            let k = FlowKey {
                client: c.parse().unwrap(),
                server: s.parse().unwrap(),
                proto: Proto::Udp,
            };
            assert_eq!(Key::of(&k).flow_key(), k, "{c} {s}");
        }
        assert_eq!(std::mem::size_of::<Key>(), 38);
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
