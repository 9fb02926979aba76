//! Longest-prefix matching over IPv4 and IPv6 CIDRs, as sorted disjoint intervals.
//!
//! CIDRs either nest or are disjoint, so the address space they cover splits into disjoint
//! intervals, each covered by a chain of prefixes (innermost first). The builder computes those
//! intervals once with a stack sweep, merges neighbours with the same chain, and interns each
//! chain as one `u32` value. A lookup is a binary search over interval starts, narrowed by a
//! 65,536-entry index on the top 16 address bits: a few probes, no allocation. An interval costs
//! 12 bytes (IPv4) or 36 bytes (IPv6).

use std::net::IpAddr;

use ipnet::IpNet;

/// An address as an integer key (`u32` for IPv4, `u128` for IPv6).
pub(crate) trait Key: Copy + Ord + std::fmt::Debug {
    /// The top 16 bits.
    fn top16(self) -> usize;
    /// `self + 1`, or `None` at the top.
    fn succ(self) -> Option<Self>;
    /// `self - 1` (never called on zero).
    fn pred(self) -> Self;
    /// The last address of the prefix of length `len` starting at `self`.
    fn last(self, len: u8) -> Self;
}

impl Key for u32 {
    fn top16(self) -> usize {
        (self >> 16) as usize
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Self {
        self - 1
    }
    fn last(self, len: u8) -> Self {
        self | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
}

impl Key for u128 {
    fn top16(self) -> usize {
        (self >> 112) as usize
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    fn pred(self) -> Self {
        self - 1
    }
    fn last(self, len: u8) -> Self {
        self | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
}

/// Disjoint intervals `[start, end]` of keys, each with a value.
#[derive(Debug, Default)]
pub(crate) struct IntervalTable<K> {
    starts: Vec<K>,
    ends: Vec<K>,
    vals: Vec<u32>,
    /// `index[t]` = the first interval whose start has top-16 bits >= t (65,537 entries), or
    /// empty for small tables.
    index: Vec<u32>,
}

/// One prefix handed to the builder: its first address, its length, and a payload (12 bytes
/// for IPv4).
pub(crate) struct Span<K> {
    pub(crate) start: K,
    pub(crate) len: u8,
    pub(crate) payload: u32,
}

impl<K: Key> IntervalTable<K> {
    /// Builds the table; `intern` turns a chain of `(prefix len, payload)` (outermost first)
    /// into the interval's value.
    pub(crate) fn build(mut spans: Vec<Span<K>>, intern: impl FnMut(&[(u8, u32)]) -> u32) -> Self {
        spans.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(a.len.cmp(&b.len)));
        let mut sw = Sweep {
            table: IntervalTable {
                starts: Vec::with_capacity(spans.len()),
                ends: Vec::with_capacity(spans.len()),
                vals: Vec::with_capacity(spans.len()),
                index: Vec::new(),
            },
            stack: Vec::new(),
            chain: Vec::new(),
            cursor: None,
            intern,
        };
        for s in spans {
            sw.close_before(Some(s.start));
            if !sw.stack.is_empty() {
                if let Some(c) = sw.cursor {
                    if c < s.start {
                        sw.emit(c, s.start.pred());
                    }
                }
            }
            sw.stack.push((s.start.last(s.len), s.len, s.payload));
            sw.cursor = Some(s.start);
        }
        sw.close_before(None);
        let mut t = sw.table;
        if t.starts.len() > 1024 {
            let mut index = Vec::with_capacity(65_537);
            let mut i = 0usize;
            for top in 0..=65_536usize {
                while i < t.starts.len() && t.starts[i].top16() < top {
                    i += 1;
                }
                index.push(i as u32);
            }
            t.index = index;
        }
        t.starts.shrink_to_fit();
        t.ends.shrink_to_fit();
        t.vals.shrink_to_fit();
        t
    }

    /// The value of the interval holding `k`.
    #[inline]
    pub(crate) fn get(&self, k: K) -> Option<u32> {
        let (lo, hi) = if self.index.is_empty() {
            (0, self.starts.len())
        } else {
            let top = k.top16();
            // The holder starts at or before k: in this bucket, or it is the last one before.
            let lo = (self.index[top] as usize).saturating_sub(1);
            (lo, self.index[top + 1] as usize)
        };
        let n = self.starts[lo..hi].partition_point(|s| *s <= k);
        if n == 0 {
            return None;
        }
        let i = lo + n - 1;
        (self.ends[i] >= k).then(|| self.vals[i])
    }

    /// The number of intervals.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.starts.capacity() + self.ends.capacity()) * std::mem::size_of::<K>()
            + (self.vals.capacity() + self.index.capacity()) * 4
    }
}

/// The builder's sweep over sorted prefixes: a stack of open prefixes (outermost first).
struct Sweep<K, F> {
    table: IntervalTable<K>,
    /// Open prefixes: `(end, prefix len, payload)`.
    stack: Vec<(K, u8, u32)>,
    chain: Vec<(u8, u32)>,
    /// Start of the part of the stack's region not yet emitted.
    cursor: Option<K>,
    intern: F,
}

impl<K: Key, F: FnMut(&[(u8, u32)]) -> u32> Sweep<K, F> {
    /// Emits `[from, to]` covered by the current stack, merging with an equal neighbour.
    fn emit(&mut self, from: K, to: K) {
        self.chain.clear();
        self.chain.extend(self.stack.iter().map(|s| (s.1, s.2)));
        let v = (self.intern)(&self.chain);
        let t = &mut self.table;
        let n = t.starts.len();
        if n > 0 && t.vals[n - 1] == v && t.ends[n - 1].succ() == Some(from) {
            t.ends[n - 1] = to;
        } else {
            t.starts.push(from);
            t.ends.push(to);
            t.vals.push(v);
        }
    }

    /// Closes every open prefix ending before `limit` (all of them for `None`).
    fn close_before(&mut self, limit: Option<K>) {
        while let Some(&(end, _, _)) = self.stack.last() {
            if limit.is_some_and(|l| end >= l) {
                break;
            }
            if let Some(c) = self.cursor {
                if c <= end {
                    self.emit(c, end);
                }
            }
            self.cursor = end.succ();
            // Pop every entry ending here (equal prefixes from several rules).
            while self.stack.last().is_some_and(|s| s.0 == end) {
                self.stack.pop();
            }
        }
    }
}

/// Prefixes collected for [`CidrTable::build`].
#[derive(Default)]
pub(crate) struct Spans {
    v4: Vec<Span<u32>>,
    v6: Vec<Span<u128>>,
}

impl Spans {
    /// Reserves room for `n` more prefixes (IPv4 assumed).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.v4.reserve(n);
    }

    /// Adds `net` with `payload`.
    pub(crate) fn push(&mut self, net: IpNet, payload: u32) {
        match net.trunc() {
            IpNet::V4(n) => self.v4.push(Span {
                start: u32::from(n.network()),
                len: n.prefix_len(),
                payload,
            }),
            IpNet::V6(n) => self.v6.push(Span {
                start: u128::from(n.network()),
                len: n.prefix_len(),
                payload,
            }),
        }
    }
}

impl FromIterator<(IpNet, u32)> for Spans {
    fn from_iter<I: IntoIterator<Item = (IpNet, u32)>>(iter: I) -> Self {
        let mut s = Spans::default();
        for (net, p) in iter {
            s.push(net, p);
        }
        s
    }
}

/// IPv4 and IPv6 tables side by side.
#[derive(Debug, Default)]
pub(crate) struct CidrTable {
    v4: IntervalTable<u32>,
    v6: IntervalTable<u128>,
}

impl CidrTable {
    /// Builds both tables from prefixes collected in a [`Spans`].
    pub(crate) fn build(spans: Spans, mut intern: impl FnMut(&[(u8, u32)]) -> u32) -> Self {
        CidrTable {
            v4: IntervalTable::build(spans.v4, &mut intern),
            v6: IntervalTable::build(spans.v6, &mut intern),
        }
    }

    /// The value for the chain of prefixes holding `ip`. IPv4-mapped IPv6 addresses are
    /// looked up as IPv4.
    #[inline]
    pub(crate) fn get(&self, ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => self.v6.get(u128::from(a)),
            },
        }
    }

    /// The number of intervals (IPv4 + IPv6).
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes() + self.v6.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(nets: &[(&str, u32)]) -> (CidrTable, Vec<Vec<(u8, u32)>>) {
        let mut chains: Vec<Vec<(u8, u32)>> = Vec::new();
        let t = CidrTable::build(
            nets.iter()
                .map(|(n, p)| (n.parse::<IpNet>().unwrap(), *p))
                .collect(),
            |c| {
                let v = c.to_vec();
                match chains.iter().position(|x| *x == v) {
                    Some(i) => i as u32,
                    None => {
                        chains.push(v);
                        (chains.len() - 1) as u32
                    }
                }
            },
        );
        (t, chains)
    }

    fn chain_at(t: &(CidrTable, Vec<Vec<(u8, u32)>>), ip: &str) -> Option<Vec<u32>> {
        t.0.get(ip.parse().unwrap())
            .map(|v| t.1[v as usize].iter().map(|x| x.1).collect())
    }

    #[test]
    fn nested_prefixes_give_chains() {
        let t = table(&[
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("10.1.2.0/24", 3),
            ("192.0.2.7/32", 4),
            ("10.1.0.0/16", 5),
        ]);
        assert_eq!(chain_at(&t, "10.0.0.1"), Some(vec![1]));
        assert_eq!(chain_at(&t, "10.1.0.1"), Some(vec![1, 2, 5]));
        assert_eq!(chain_at(&t, "10.1.2.9"), Some(vec![1, 2, 5, 3]));
        assert_eq!(chain_at(&t, "10.1.3.0"), Some(vec![1, 2, 5]));
        assert_eq!(chain_at(&t, "10.2.0.0"), Some(vec![1]));
        assert_eq!(chain_at(&t, "10.255.255.255"), Some(vec![1]));
        assert_eq!(chain_at(&t, "11.0.0.0"), None);
        assert_eq!(chain_at(&t, "192.0.2.7"), Some(vec![4]));
        assert_eq!(chain_at(&t, "192.0.2.8"), None);
        assert_eq!(chain_at(&t, "::ffff:192.0.2.7"), Some(vec![4]));
    }

    #[test]
    fn full_ranges_and_ipv6() {
        let t = table(&[
            ("0.0.0.0/0", 1),
            ("255.255.255.255/32", 2),
            ("2001:db8::/32", 3),
            ("::/0", 4),
        ]);
        assert_eq!(chain_at(&t, "0.0.0.0"), Some(vec![1]));
        assert_eq!(chain_at(&t, "255.255.255.255"), Some(vec![1, 2]));
        assert_eq!(chain_at(&t, "2001:db8::1"), Some(vec![4, 3]));
        assert_eq!(chain_at(&t, "2001:db9::1"), Some(vec![4]));
    }

    #[test]
    fn large_table_uses_index_and_agrees_with_scan() {
        let mut nets = Vec::new();
        for i in 0..5000u32 {
            let a = i.wrapping_mul(2_654_435_761);
            let len = [32u8, 24, 20, 16][(i % 4) as usize];
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), len)
                .unwrap()
                .trunc();
            nets.push((IpNet::V4(net), i));
        }
        let mut chains: Vec<Vec<(u8, u32)>> = Vec::new();
        let t = CidrTable::build(nets.iter().copied().collect(), |c| {
            chains.push(c.to_vec());
            (chains.len() - 1) as u32
        });
        assert!(!t.v4.index.is_empty());
        for j in 0..20_000u32 {
            let probe = j.wrapping_mul(2_246_822_519) ^ (j << 7);
            let ip = std::net::Ipv4Addr::from(probe);
            let mut want: Vec<(u8, u32)> = nets
                .iter()
                .filter(|(n, _)| n.contains(&IpAddr::V4(ip)))
                .map(|(n, p)| (n.prefix_len(), *p))
                .collect();
            want.sort();
            let mut got = t
                .get(IpAddr::V4(ip))
                .map(|v| chains[v as usize].clone())
                .unwrap_or_default();
            got.sort();
            assert_eq!(got, want, "{ip}");
        }
    }
}
