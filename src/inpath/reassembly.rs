//! Per-direction TCP stream reassembly and IP fragment reassembly, both bounded, both
//! following the jurisdiction's `reassemble` switch.
//!
//! [`Stream`] with `reassemble = true` rebuilds a direction's byte stream in sequence order
//! from its first byte, holding out-of-order segments until the gap fills; where segments
//! overlap the first copy seen wins (as in most middleboxes). It keeps at most `limit` bytes:
//! a sniffer needs only the stream's head. With `reassemble = false` only the first data
//! segment of the direction counts, whatever its sequence number, which is what a
//! first-packet censor sees (and why splitting a ClientHello, or a fake packet first, fools
//! it). [`Defrag`] does the same for IP fragments: datagrams are rebuilt (bounded in count,
//! size and age) when on; when off, fragments pass uninspected except the first.

use std::collections::HashMap;
use std::net::IpAddr;

use super::packet::{checksum, IpPacket};

/// Out-of-order segments held at most per direction.
const MAX_OOO: usize = 16;

/// One direction of a TCP flow, as the sniffers see it.
#[derive(Debug, Default)]
pub struct Stream {
    /// The next sequence number expected (after the SYN, or the first data seen).
    next: Option<u32>,
    data: Vec<u8>,
    ooo: Vec<(u32, Vec<u8>)>,
    first_only: bool,
    /// The first data segment has been taken (first-only mode).
    took_first: bool,
    /// More was offered than `limit` (or than the out-of-order bound).
    pub overflow: bool,
    limit: usize,
}

impl Stream {
    /// A stream keeping `limit` bytes, reassembling (`true`) or first-segment-only.
    pub fn new(reassemble: bool, limit: usize) -> Stream {
        Stream {
            first_only: !reassemble,
            limit,
            ..Stream::default()
        }
    }

    /// A SYN with initial sequence number `isn` was seen: data starts at `isn + 1`.
    pub fn syn(&mut self, isn: u32) {
        if self.next.is_none() && self.data.is_empty() {
            self.next = Some(isn.wrapping_add(1));
        }
    }

    /// Offers a data segment; returns true when the in-order data grew.
    pub fn push(&mut self, seq: u32, payload: &[u8]) -> bool {
        if payload.is_empty() {
            return false;
        }
        if self.first_only {
            if self.took_first {
                return false;
            }
            self.took_first = true;
            let n = payload.len().min(self.limit);
            self.overflow |= n < payload.len();
            self.data.extend_from_slice(&payload[..n]);
            return n > 0;
        }
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next) as i32;
        if ahead > 0 {
            // A gap: hold the segment until it fills.
            let held: usize = self.ooo.iter().map(|(_, d)| d.len()).sum();
            if self.ooo.len() >= MAX_OOO || held + payload.len() + self.data.len() > self.limit {
                self.overflow = true;
                return false;
            }
            if !self.ooo.iter().any(|(s, _)| *s == seq) {
                self.ooo.push((seq, payload.to_vec()));
            }
            return false;
        }
        let grew = self.append(next, seq, payload);
        // Drain held segments that now fit.
        while let Some(next) = self.next {
            let Some(i) = self
                .ooo
                .iter()
                .position(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
            else {
                break;
            };
            let (s, d) = self.ooo.swap_remove(i);
            self.append(next, s, &d);
        }
        grew
    }

    /// Appends the part of a segment at `seq` that lies at or after `next` (first copy wins).
    fn append(&mut self, next: u32, seq: u32, payload: &[u8]) -> bool {
        let behind = next.wrapping_sub(seq) as usize;
        if behind >= payload.len() {
            return false; // a retransmission of what we have
        }
        let fresh = &payload[behind..];
        let room = self.limit.saturating_sub(self.data.len());
        let n = fresh.len().min(room);
        self.overflow |= n < fresh.len();
        self.data.extend_from_slice(&fresh[..n]);
        self.next = Some(next.wrapping_add(fresh.len() as u32));
        n > 0
    }

    /// The in-order bytes so far (at most `limit`).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether no more data can arrive for the sniffers (first-only mode after the first
    /// segment, or full).
    pub fn closed(&self) -> bool {
        (self.first_only && self.took_first) || self.data.len() >= self.limit || self.overflow
    }

    /// Frees the buffers once the flow is decided.
    pub fn release(&mut self) {
        self.data = Vec::new();
        self.ooo = Vec::new();
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.data.capacity() + self.ooo.iter().map(|(_, d)| d.capacity()).sum::<usize>()
    }
}

/// Limits of the fragment reassembler.
#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    /// Datagrams being reassembled at once; more are dropped (counted).
    pub max_pending: usize,
    /// Largest reassembled datagram.
    pub max_bytes: usize,
    /// A datagram not complete after this long is dropped.
    pub timeout_ns: u64,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_pending: 256,
            max_bytes: 65_535,
            timeout_ns: 30_000_000_000,
        }
    }
}

type FragKey = (IpAddr, IpAddr, u32, u8);

#[derive(Debug)]
struct Pending {
    /// The first fragment's IP header (for the rebuilt datagram).
    header: Vec<u8>,
    pieces: Vec<(u32, Vec<u8>)>,
    total: Option<u32>,
    bytes: usize,
    started_ns: u64,
    /// The original fragments, forwarded as they are if the datagram passes.
    held: Vec<Vec<u8>>,
}

/// What the reassembler did with a fragment.
#[derive(Debug)]
pub enum Defragged {
    /// Held until the rest arrives.
    Held,
    /// The datagram is complete: the rebuilt packet and the original fragments.
    Complete {
        /// The reassembled packet (IP header without fragmentation, whole payload).
        packet: Vec<u8>,
        /// The fragments as received, in arrival order.
        fragments: Vec<Vec<u8>>,
    },
    /// Dropped: over a limit, inconsistent, or timed out.
    Dropped,
}

/// IP fragment reassembly.
#[derive(Debug, Default)]
pub struct Defrag {
    pending: HashMap<FragKey, Pending>,
    limits: DefragLimits,
    /// Fragments dropped over a limit.
    pub overflow: u64,
}

impl Defrag {
    /// A reassembler with these limits.
    pub fn new(limits: DefragLimits) -> Defrag {
        Defrag {
            pending: HashMap::new(),
            limits,
            overflow: 0,
        }
    }

    /// Offers one fragment (`ip.fragment` must be set).
    pub fn push(&mut self, ip: &IpPacket<'_>, now_ns: u64) -> Defragged {
        let Some(f) = ip.fragment else {
            return Defragged::Dropped;
        };
        let timeout = self.limits.timeout_ns;
        self.pending
            .retain(|_, p| now_ns.saturating_sub(p.started_ns) < timeout);
        let key = (ip.src, ip.dst, f.id, ip.proto);
        if !self.pending.contains_key(&key) && self.pending.len() >= self.limits.max_pending {
            self.overflow += 1;
            return Defragged::Dropped;
        }
        let p = self.pending.entry(key).or_insert_with(|| Pending {
            header: Vec::new(),
            pieces: Vec::new(),
            total: None,
            bytes: 0,
            started_ns: now_ns,
            held: Vec::new(),
        });
        let data = ip.payload();
        let end = f.offset as usize + data.len();
        if end > self.limits.max_bytes || p.held.len() >= 64 {
            self.overflow += 1;
            self.pending.remove(&key);
            return Defragged::Dropped;
        }
        if f.offset == 0 {
            p.header = ip.header().to_vec();
        }
        if !f.more {
            p.total = Some(end as u32);
        }
        p.bytes += data.len();
        p.pieces.push((f.offset, data.to_vec()));
        p.held.push(ip.bytes().to_vec());
        let Some(total) = p.total else {
            return Defragged::Held;
        };
        if p.header.is_empty() {
            return Defragged::Held;
        }
        // Complete when the pieces cover 0..total without a gap.
        p.pieces.sort_by_key(|(o, _)| *o);
        let mut covered = 0usize;
        for (o, d) in &p.pieces {
            if *o as usize > covered {
                return Defragged::Held;
            }
            covered = covered.max(*o as usize + d.len());
        }
        if covered < total as usize {
            return Defragged::Held;
        }
        let Some(p) = self.pending.remove(&key) else {
            return Defragged::Dropped;
        };
        let mut payload = vec![0u8; total as usize];
        // First copy wins: write in reverse arrival order... pieces are sorted by offset;
        // write later offsets first so earlier pieces overwrite overlaps consistently.
        for (o, d) in p.pieces.iter().rev() {
            let o = *o as usize;
            let n = d.len().min(payload.len().saturating_sub(o));
            payload[o..o + n].copy_from_slice(&d[..n]);
        }
        match rebuild(&p.header, ip.proto, &payload) {
            Some(packet) => Defragged::Complete {
                packet,
                fragments: p.held,
            },
            None => Defragged::Dropped,
        }
    }

    /// Datagrams being reassembled.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// An unfragmented packet from the first fragment's header and the whole payload.
fn rebuild(header: &[u8], proto: u8, payload: &[u8]) -> Option<Vec<u8>> {
    match header.first()? >> 4 {
        4 => {
            let mut out = header.to_vec();
            let total = u16::try_from(header.len() + payload.len()).ok()?;
            out.get_mut(2..4)?.copy_from_slice(&total.to_be_bytes());
            out.get_mut(6..8)?.copy_from_slice(&[0, 0]);
            out.get_mut(10..12)?.copy_from_slice(&[0, 0]);
            let c = checksum(out.get(..20)?);
            let ihl = usize::from(out[0] & 0x0f) * 4;
            let c = if ihl == 20 {
                c
            } else {
                checksum(out.get(..ihl)?)
            };
            out[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(payload);
            Some(out)
        }
        6 => {
            // The fixed header only (extension headers before the fragment header dropped).
            let mut out = header.get(..40)?.to_vec();
            let plen = u16::try_from(payload.len()).ok()?;
            out[4..6].copy_from_slice(&plen.to_be_bytes());
            out[6] = proto;
            out.extend_from_slice(payload);
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inpath::packet::{craft_udp, fragment_v4, UdpDatagram};
    use proptest::prelude::*;

    #[test]
    fn in_order_and_out_of_order_segments_rebuild_the_stream() {
        let mut s = Stream::new(true, 1024);
        s.syn(99);
        assert!(s.push(100, b"hello "));
        assert!(!s.push(112, b"!")); // gap: held
        assert_eq!(s.data(), b"hello ");
        assert!(s.push(106, b"world"));
        assert_eq!(s.data(), b"hello world"); // 111 missing: "!" still held
        assert!(s.push(111, b"X"));
        assert_eq!(s.data(), b"hello worldX!");
        // retransmission and overlap: first copy wins
        assert!(!s.push(100, b"HELLO"));
        assert!(s.push(110, b"ZZZZ?"));
        assert_eq!(s.data(), b"hello worldX!Z?");
    }

    #[test]
    fn first_only_takes_the_first_data_segment_whatever_follows() {
        let mut s = Stream::new(false, 1024);
        s.syn(0);
        assert!(s.push(1, b"part one"));
        assert!(s.closed());
        assert!(!s.push(9, b"part two"));
        assert_eq!(s.data(), b"part one");
    }

    #[test]
    fn limits_hold() {
        let mut s = Stream::new(true, 8);
        s.syn(0);
        s.push(1, b"0123456789");
        assert_eq!(s.data(), b"01234567");
        assert!(s.overflow && s.closed());
        let mut s = Stream::new(true, 1 << 20);
        s.syn(0);
        for i in 0..100u32 {
            s.push(1000 + i * 10, b"x");
        }
        assert!(s.overflow, "out-of-order bound");
        assert!(s.held() < 4096);
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let mut pkt = Vec::new();
        let payload: Vec<u8> = (0..200u8).collect();
        craft_udp(
            &mut pkt,
            "10.0.0.1:5".parse().unwrap(),
            "10.0.0.2:6".parse().unwrap(),
            64,
            &payload,
        )
        .unwrap();
        let frags = fragment_v4(&pkt, 64, 9).unwrap();
        assert_eq!(frags.len(), 4);
        let mut d = Defrag::default();
        for f in [&frags[2], &frags[0], &frags[3]] {
            let ip = IpPacket::parse(f).unwrap();
            assert!(matches!(d.push(&ip, 0), Defragged::Held));
        }
        let ip = IpPacket::parse(&frags[1]).unwrap();
        let Defragged::Complete { packet, fragments } = d.push(&ip, 0) else {
            panic!("not complete")
        };
        assert_eq!(fragments.len(), 4);
        assert_eq!(packet.len(), pkt.len());
        assert_eq!(&packet[20..], &pkt[20..]);
        let ip = IpPacket::parse(&packet).unwrap();
        assert!(ip.fragment.is_none());
        assert_eq!(checksum(ip.header()), 0);
        assert_eq!(
            UdpDatagram::parse(ip.payload()).unwrap().payload,
            &payload[..]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn fragment_limits() {
        let mut d = Defrag::new(DefragLimits {
            max_pending: 2,
            max_bytes: 1000,
            timeout_ns: 10,
        });
        let mut pkt = Vec::new();
        craft_udp(
            &mut pkt,
            "10.0.0.1:5".parse().unwrap(),
            "10.0.0.2:6".parse().unwrap(),
            64,
            &[1u8; 100],
        )
        .unwrap();
        for id in 0..3u16 {
            let frags = fragment_v4(&pkt, 64, id).unwrap();
            let r = d.push(&IpPacket::parse(&frags[0]).unwrap(), 0);
            assert_eq!(matches!(r, Defragged::Dropped), id == 2);
        }
        // timed out: room again
        let frags = fragment_v4(&pkt, 64, 7).unwrap();
        assert!(matches!(
            d.push(&IpPacket::parse(&frags[0]).unwrap(), 100),
            Defragged::Held
        ));
        assert_eq!(d.pending(), 1);
    }

    proptest! {
        #[test]
        fn random_segments_stay_bounded(segs in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..64), reassemble in any::<bool>()) {
            let mut s = Stream::new(reassemble, 4096);
            for (seq, d) in &segs {
                s.push(*seq, d);
            }
            prop_assert!(s.data().len() <= 4096);
            prop_assert!(s.ooo.len() <= MAX_OOO);
        }
    }
}
