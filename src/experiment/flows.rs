//! Bidirectional flows from decoded packets, classified as they grow.
//!
//! A flow is a 5-tuple seen from both sides. The client is the sender of a TCP SYN (without
//! ACK), or else the first sender seen. UDP flows end after `udp_timeout` of silence, TCP
//! flows after `tcp_timeout` of silence, [`FlowTable::tcp_linger_ns`] after a RST or a FIN
//! from each side (so the last ACK still counts), or on a new SYN after a FIN/RST; all in
//! capture time. A new packet past its flow's end starts a new flow; [`FlowTable::expire`]
//! (called by the reader every epoch of frames, not per packet) ends the flows whose time has
//! passed, so finished flows leave the table ([`FlowTable::take_finished`]) while the capture
//! is still being read and the table holds only the live flows. TCP payload is delivered to the
//! detectors in sequence order: retransmitted bytes are cut, out-of-order segments wait (up to
//! 16 per direction) until the gap is filled. Only the first [`MAX_PACKETS`] payload packets
//! are kept, and none once every detector has decided.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;

use super::pcap::Decoded;
use crate::detect::{ja4, Classifier, Detector, Dir, Transport, Verdict, MAX_PACKETS};

/// A finished flow and what each detector said about it.
#[derive(Debug, Clone)]
pub struct FlowRecord {
    /// UDP or TCP.
    pub transport: Transport,
    /// The opening side.
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// All packets of the flow (with or without payload).
    pub packets: u64,
    /// First packet time (ns since the epoch).
    pub first_ns: u64,
    /// Each detector's verdict, in detector order (`None`: not its protocol).
    pub outcomes: Vec<(&'static str, Option<Verdict>)>,
    /// JA4 fingerprint of the flow's TLS or DTLS ClientHello.
    pub ja4: Option<String>,
}

impl FlowRecord {
    /// The first detector (in order) that found its protocol.
    pub fn verdict(&self) -> Option<(&'static str, Verdict)> {
        self.outcomes.iter().find_map(|(n, v)| v.map(|v| (*n, v)))
    }
}

/// FxHash (as in rustc): a multiply-rotate hasher, several times faster than SipHash on
/// these small keys. Not DoS-resistant, which is acceptable for offline captures.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    transport: Transport,
    a: SocketAddr,
    b: SocketAddr,
}

impl Key {
    fn new(transport: Transport, x: SocketAddr, y: SocketAddr) -> Key {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Key { transport, a, b }
    }
}

#[derive(Debug, Default)]
struct TcpDir {
    next: Option<u32>,
    waiting: Vec<(u32, Vec<u8>)>,
    /// A FIN was sent this way.
    fin: bool,
}

/// `a` before `b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Debug)]
struct Active<'d> {
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    packets: u64,
    first_ns: u64,
    last_ns: u64,
    payloads: Vec<(Dir, Vec<u8>)>,
    classifier: Classifier<&'d [Box<dyn Detector>]>,
    pending: bool,
    tcp: [TcpDir; 2],
    /// A FIN or RST was seen.
    closing: bool,
    /// When the flow closed (a RST, or a FIN each way).
    closed_ns: Option<u64>,
    sampled: bool,
    /// JA4 so far; `ja4_open` while the ClientHello may still complete.
    ja4: Option<String>,
    ja4_open: bool,
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable<'d> {
    detectors: &'d [Box<dyn Detector>],
    active: HashMap<Key, Active<'d>, FxBuild>,
    done: Vec<FlowRecord>,
    /// UDP idle timeout (ns).
    pub udp_timeout_ns: u64,
    /// TCP idle timeout (ns).
    pub tcp_timeout_ns: u64,
    /// How long a closed TCP flow (RST, or FIN both ways) still takes its stragglers, such as
    /// retransmitted FINs (ns; 60 s, the TIME_WAIT of Linux).
    pub tcp_linger_ns: u64,
    /// Nanoseconds spent in each detector, in detector order.
    pub cost_ns: Vec<u64>,
    /// Detector calls timed (one flow in eight is timed), in detector order.
    pub calls: Vec<u64>,
    opened: u64,
}

impl<'d> FlowTable<'d> {
    /// An empty table classifying with `detectors`.
    pub fn new(detectors: &'d [Box<dyn Detector>]) -> FlowTable<'d> {
        FlowTable {
            detectors,
            active: HashMap::default(),
            done: Vec::new(),
            udp_timeout_ns: 120_000_000_000,
            tcp_timeout_ns: 600_000_000_000,
            tcp_linger_ns: 60_000_000_000,
            cost_ns: vec![0; detectors.len()],
            calls: vec![0; detectors.len()],
            opened: 0,
        }
    }

    /// Number of flows opened so far.
    pub fn flows(&self) -> u64 {
        self.opened
    }

    /// Flows open now.
    pub fn open(&self) -> usize {
        self.active.len()
    }

    /// The flows finished since the last call, in no particular order.
    pub fn take_finished(&mut self) -> &mut Vec<FlowRecord> {
        &mut self.done
    }

    /// Finishes every flow whose time is up at `now_ns`: idle longer than its timeout, or
    /// closed longer than the linger ago. A later packet would have split these flows all
    /// the same; this only makes them leave the table sooner.
    pub fn expire(&mut self, now_ns: u64) {
        let (udp, tcp, linger) = (self.udp_timeout_ns, self.tcp_timeout_ns, self.tcp_linger_ns);
        let done = &mut self.done;
        self.active.retain(|_, a| {
            if ended(a, now_ns, udp, tcp, linger) {
                a.payloads = Vec::new();
                done.push(finish_ref(a));
                false
            } else {
                true
            }
        });
    }

    /// Adds one decoded packet captured at `ts_ns`.
    pub fn push(&mut self, ts_ns: u64, p: &Decoded<'_>) {
        let key = Key::new(p.transport, p.src, p.dst);
        let (udp, tcp, linger) = (self.udp_timeout_ns, self.tcp_timeout_ns, self.tcp_linger_ns);
        let fresh_syn = p.tcp.is_some_and(|t| t.syn && !t.ack);
        let detectors = self.detectors;
        let opened = &mut self.opened;
        let mut open = || {
            // The client opened the flow: the SYN sender, the SYN-ACK receiver, or else the
            // first sender seen.
            let (client, server) = match p.tcp {
                Some(t) if t.syn && t.ack => (p.dst, p.src),
                _ => (p.src, p.dst),
            };
            *opened += 1;
            Active {
                transport: p.transport,
                client,
                server,
                packets: 0,
                first_ns: ts_ns,
                last_ns: ts_ns,
                payloads: Vec::new(),
                classifier: Classifier::new(detectors),
                pending: true,
                tcp: [TcpDir::default(), TcpDir::default()],
                closing: false,
                closed_ns: None,
                sampled: *opened % 8 == 1,
                ja4: None,
                ja4_open: true,
            }
        };
        // One hash lookup per packet.
        let a = match self.active.entry(key) {
            Entry::Occupied(o) => {
                let a = o.into_mut();
                if ended(a, ts_ns, udp, tcp, linger) || (fresh_syn && a.closing) {
                    let old = std::mem::replace(a, open());
                    self.done.push(finish(old));
                }
                a
            }
            Entry::Vacant(v) => v.insert(open()),
        };
        a.packets += 1;
        a.last_ns = ts_ns;
        let dir = if p.src == a.client {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        if let Some(t) = p.tcp {
            a.closing |= t.fin_or_rst;
            a.tcp[usize::from(dir == Dir::ToClient)].fin |= t.fin_or_rst && !t.rst;
            if a.closed_ns.is_none() && (t.rst || (a.tcp[0].fin && a.tcp[1].fin)) {
                a.closed_ns = Some(ts_ns);
            }
        }
        if !(a.pending || a.ja4_open) || a.payloads.len() >= MAX_PACKETS {
            return;
        }
        let before_len = a.payloads.len();
        match p.tcp {
            None => {
                if !p.payload.is_empty() {
                    a.payloads.push((dir, p.payload.to_vec()));
                }
            }
            Some(t) => {
                let d = &mut a.tcp[usize::from(dir == Dir::ToClient)];
                let seq = if t.syn {
                    d.next = Some(t.seq.wrapping_add(1));
                    t.seq.wrapping_add(1)
                } else {
                    t.seq
                };
                if !p.payload.is_empty() {
                    tcp_segment(d, seq, p.payload, dir, &mut a.payloads);
                }
            }
        }
        if a.payloads.len() > before_len {
            let (classifier, cost_ns, calls) =
                (&mut a.classifier, &mut self.cost_ns, &mut self.calls);
            // Detector cost is sampled on one flow in eight: reading the clock around every
            // call would cost more than most detectors.
            let (sampled, pending, ja4_open) = (a.sampled, a.pending, a.ja4_open);
            let (pending, ja4) =
                crate::detect::with_flow(a.transport, a.client, a.server, &a.payloads, |flow| {
                    let ja4 = ja4_open.then(|| ja4::flow_ja4(flow)).flatten();
                    let pending = if !pending {
                        false
                    } else if sampled {
                        classifier.update_each(flow, |i, d, f| timed(i, d, f, cost_ns, calls))
                    } else {
                        classifier.update(flow)
                    };
                    (pending, ja4)
                });
            a.pending = pending;
            if let Some(j) = ja4 {
                a.ja4 = j;
                a.ja4_open = false;
            }
            if !a.pending && !a.ja4_open {
                a.payloads = Vec::new();
            }
        }
    }

    /// Ends every open flow and returns the flows not yet taken, in order of their first
    /// packet.
    pub fn finish_all(&mut self) -> Vec<FlowRecord> {
        let mut out = std::mem::take(&mut self.done);
        out.extend(self.active.drain().map(|(_, a)| finish(a)));
        out.sort_by_key(|f| f.first_ns);
        out
    }
}

/// Whether flow `a` has ended by `now_ns`: idle past its transport's timeout, or closed
/// longer than `linger` ago.
fn ended(a: &Active<'_>, now_ns: u64, udp: u64, tcp: u64, linger: u64) -> bool {
    let timeout = match a.transport {
        Transport::Udp => udp,
        Transport::Tcp => tcp,
    };
    now_ns.saturating_sub(a.last_ns) > timeout
        || a.closed_ns
            .is_some_and(|c| now_ns.saturating_sub(c) > linger)
}

/// Asks detector `d` (index `i`) about `flow`, adding its time (ns) and one call to
/// `cost_ns[i]`/`calls[i]`.
fn timed(
    i: usize,
    d: &dyn Detector,
    flow: &crate::detect::Flow<'_>,
    cost_ns: &mut [u64],
    calls: &mut [u64],
) -> crate::detect::Outcome {
    let t = std::time::Instant::now();
    let r = d.detect(flow);
    if let (Some(c), Some(n)) = (cost_ns.get_mut(i), calls.get_mut(i)) {
        *c += t.elapsed().as_nanos() as u64;
        *n += 1;
    }
    r
}

/// Delivers a TCP segment's new bytes in order, buffering what arrives early.
fn tcp_segment(d: &mut TcpDir, seq: u32, payload: &[u8], dir: Dir, out: &mut Vec<(Dir, Vec<u8>)>) {
    let next = *d.next.get_or_insert(seq);
    if before(next, seq) {
        if d.waiting.len() < 16 && !d.waiting.iter().any(|(s, _)| *s == seq) {
            d.waiting.push((seq, payload.to_vec()));
        }
        return;
    }
    let skip = next.wrapping_sub(seq) as usize;
    if skip >= payload.len() {
        return; // retransmission of bytes already delivered
    }
    out.push((dir, payload[skip..].to_vec()));
    let mut next = next.wrapping_add((payload.len() - skip) as u32);
    // Deliver buffered segments that are now in order.
    while let Some(i) = d
        .waiting
        .iter()
        .position(|(s, p)| !before(next, *s) && before(next, s.wrapping_add(p.len() as u32)))
    {
        let (s, p) = d.waiting.swap_remove(i);
        let skip = next.wrapping_sub(s) as usize;
        out.push((dir, p[skip..].to_vec()));
        next = next.wrapping_add((p.len() - skip) as u32);
    }
    d.waiting
        .retain(|(s, p)| before(next, s.wrapping_add(p.len() as u32)));
    d.next = Some(next);
}

fn finish(mut a: Active<'_>) -> FlowRecord {
    finish_ref(&mut a)
}

fn finish_ref(a: &mut Active<'_>) -> FlowRecord {
    a.classifier.finish();
    FlowRecord {
        transport: a.transport,
        client: a.client,
        server: a.server,
        packets: a.packets,
        first_ns: a.first_ns,
        outcomes: a
            .classifier
            .outcomes()
            .map(|(n, o)| (n, o.ok().flatten()))
            .collect(),
        ja4: a.ja4.take(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect;
    use crate::experiment::pcap::{decode, write};

    fn tcp(src: u16, dst: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (s, d) = if src == 1723 {
            ([10, 0, 0, 2], [10, 0, 0, 1])
        } else {
            ([10, 0, 0, 1], [10, 0, 0, 2])
        };
        write::ipv4(6, s, d, &write::tcp(src, dst, seq, flags, payload))
    }

    #[test]
    fn tcp_payload_is_reassembled_in_order_despite_reordering_and_retransmission() {
        let ds = detect::standard(detect::endpoints::Endpoints::default());
        let mut t = FlowTable::new(&ds);
        let m = detect::pptp::sccrq();
        let frames = [
            tcp(40000, 1723, 100, 0x02, b""),
            tcp(1723, 40000, 900, 0x12, b""),
            tcp(40000, 1723, 101 + 6, 0x18, &m[6..]), // arrives early
            tcp(40000, 1723, 101, 0x18, &m[..4]),
            tcp(40000, 1723, 101, 0x18, &m[..6]), // overlapping retransmission
        ];
        for (i, f) in frames.iter().enumerate() {
            t.push(i as u64, &decode(101, f).unwrap());
        }
        let flows = t.finish_all();
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(
            (f.client.port(), f.server.port(), f.packets),
            (40000, 1723, 5)
        );
        assert_eq!(f.verdict().map(|(n, v)| (n, v.after)), Some(("pptp", 3)));
    }

    #[test]
    fn udp_flows_split_on_the_idle_timeout() {
        let ds = detect::standard(detect::endpoints::Endpoints::default());
        let mut t = FlowTable::new(&ds);
        let p = write::ipv4(
            17,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &write::udp(5000, 53, b"q"),
        );
        let r = write::ipv4(
            17,
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            &write::udp(53, 5000, b"a"),
        );
        t.push(0, &decode(101, &p).unwrap());
        t.push(1, &decode(101, &r).unwrap());
        t.push(200_000_000_000, &decode(101, &r).unwrap());
        let flows = t.finish_all();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].client.port(), 5000);
        assert_eq!(
            flows[1].client.port(),
            53,
            "a new flow opened by the other side"
        );
    }
}
