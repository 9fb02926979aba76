//! VPN and protocol detectors: pure functions over a flow's first packets (docs/ARCHITECTURE.md, "VPN
//! detection experiments").
//!
//! Each detector implements a published rule (cited in its module): WireGuard from the
//! WireGuard whitepaper's message formats ([`wireguard`]), OpenVPN from its wire format and the
//! opcode fingerprint of Xue et al., USENIX Security 2022 ([`openvpn`]), IKE/IPsec from
//! RFC 7296 and RFC 3948 ([`ike`]), PPTP from RFC 2637 ([`pptp`]), fully encrypted traffic from
//! Algorithm 1 of Wu et al., USENIX Security 2023 ([`fully_encrypted`]), and known VPN server
//! networks from a CIDR list ([`endpoints`]). A detector sees only the payload-carrying packets
//! of one flow, in order, with their direction, and answers in the
//! `Result<Option<Verdict>, Incomplete>` form (found / not this protocol / need more packets):
//! given more packets of the same flow, an `Incomplete` may become anything, but a decision
//! never changes. No detector allocates more than a few small buffers, and none panics on any
//! input (every parser is fuzzed with proptest).

use std::net::SocketAddr;

pub mod bypass;
pub mod endpoints;
pub mod fully_encrypted;
pub mod ike;
pub mod ja4;
pub mod known;
pub mod openvpn;
pub mod pptp;
pub mod wireguard;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP: every packet is one datagram.
    Udp,
    /// TCP: packets are in-order pieces of each direction's byte stream.
    Tcp,
}

impl Transport {
    /// `udp` or `tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Direction of a packet within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the client (the side that opened the flow) to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// One payload-carrying packet of a flow (for TCP: one in-order segment's payload).
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Who sent it.
    pub dir: Dir,
    /// The transport payload.
    pub payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// The packets of `(direction, payload)` pairs, borrowed.
    pub fn all(raw: &'a [(Dir, Vec<u8>)]) -> Vec<Packet<'a>> {
        raw.iter()
            .map(|(dir, p)| Packet {
                dir: *dir,
                payload: p,
            })
            .collect()
    }
}

/// What a detector sees: a flow's endpoints and its first payload packets.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// The side that opened the flow.
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// Payload packets seen so far, in order.
    pub packets: &'a [Packet<'a>],
}

/// A positive decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The protocol found, one of [`crate::rules::VPN_PROTOCOLS`].
    pub protocol: &'static str,
    /// Which of the detector's rules fired (e.g. `handshake`, `xue-opcodes`).
    pub rule: &'static str,
    /// Payload packets the detector needed to decide (packets-to-decision).
    pub after: usize,
}

/// The detector needs more packets of this flow to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete;

/// A detector's answer: found / not this protocol / need more packets.
pub type Outcome = Result<Option<Verdict>, Incomplete>;

/// Flows are classified on at most this many payload packets; a detector still `Incomplete`
/// then is treated as "not this protocol".
pub const MAX_PACKETS: usize = 32;

/// A VPN detector: a pure function over a flow's first packets.
pub trait Detector: Send + Sync + std::fmt::Debug {
    /// The protocol it detects (a name from [`crate::rules::VPN_PROTOCOLS`]).
    fn name(&self) -> &'static str;
    /// Found / not this protocol / need more packets.
    fn detect(&self, flow: &Flow<'_>) -> Outcome;
}

/// The detectors in their default configuration, in the order a classifier asks them
/// (specific handshakes first, the generic fully-encrypted rule last).
pub fn standard(endpoints: endpoints::Endpoints) -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(wireguard::WireGuard::default()),
        Box::new(openvpn::OpenVpn::default()),
        Box::new(ike::Ike::default()),
        Box::new(pptp::Pptp),
        Box::new(bypass::SoftEther),
        Box::new(bypass::Ssh),
        Box::new(bypass::Tor::default()),
        Box::new(bypass::TlsInTls::default()),
        Box::new(endpoints),
        Box::new(fully_encrypted::FullyEncrypted::default()),
    ]
}

/// An unknown detector name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown detector `{0}` (known: wireguard, openvpn, ike, pptp, softether, ssh, tor, tls-in-tls, fully-encrypted, endpoints)"
)]
pub struct UnknownDetector(pub String);

/// The standard detectors restricted to `names` (in the standard order).
pub fn select(
    names: &[String],
    endpoints: endpoints::Endpoints,
) -> Result<Vec<Box<dyn Detector>>, UnknownDetector> {
    if let Some(bad) = names
        .iter()
        .find(|n| !crate::rules::VPN_PROTOCOLS.contains(&n.as_str()))
    {
        return Err(UnknownDetector(bad.clone()));
    }
    Ok(standard(endpoints)
        .into_iter()
        .filter(|d| names.iter().any(|n| n == d.name()))
        .collect())
}

/// Runs detectors incrementally over a growing flow, remembering each one's decision. The
/// one detector loop: offline experiments, the live relays and observed tunnels all use it.
/// `D` is any handle on the detector list (`&[..]`, `Arc<[..]>`, `Vec<..>`).
#[derive(Debug)]
pub struct Classifier<D> {
    detectors: D,
    state: Vec<Result<Option<Verdict>, Incomplete>>,
}

impl<D: AsRef<[Box<dyn Detector>]>> Classifier<D> {
    /// A classifier for one flow.
    pub fn new(detectors: D) -> Classifier<D> {
        let n = detectors.as_ref().len();
        Classifier {
            detectors,
            state: vec![Err(Incomplete); n],
        }
    }

    /// A classifier for a flow whose detectors outside `pending` (bit i: detector i) have
    /// answered "not this protocol": what [`Classifier::pending`] saved, so a caller keeps a
    /// flow's detector state in eight bytes between packets (the in-path engine). Detectors
    /// past the 64th are always asked again.
    pub fn resume(detectors: D, pending: u64) -> Classifier<D> {
        let n = detectors.as_ref().len();
        let state = (0..n)
            .map(|i| {
                if i < 64 && pending & (1 << i) == 0 {
                    Ok(None)
                } else {
                    Err(Incomplete)
                }
            })
            .collect();
        Classifier { detectors, state }
    }

    /// The undecided detectors as a bit set (bit i: detector i, up to 64), for
    /// [`Classifier::resume`].
    pub fn pending(&self) -> u64 {
        self.state
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, s)| s.is_err())
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// Asks every undecided detector about the flow (call after each new packet).
    /// Returns true while some detector is still undecided.
    pub fn update(&mut self, flow: &Flow<'_>) -> bool {
        self.update_each(flow, |_, d, f| d.detect(f))
    }

    /// [`Classifier::update`] with `ask(index, detector, flow)` standing in for each
    /// `detector.detect(flow)` call, e.g. to time it.
    pub fn update_each(
        &mut self,
        flow: &Flow<'_>,
        mut ask: impl FnMut(usize, &dyn Detector, &Flow<'_>) -> Outcome,
    ) -> bool {
        let mut pending = false;
        let detectors = self.detectors.as_ref();
        for (i, (d, s)) in detectors.iter().zip(self.state.iter_mut()).enumerate() {
            if s.is_err() {
                *s = ask(i, d.as_ref(), flow);
                if flow.packets.len() >= MAX_PACKETS && s.is_err() {
                    *s = Ok(None);
                }
                pending |= s.is_err();
            }
        }
        pending
    }

    /// Ends the flow: detectors still undecided answer "not this protocol".
    pub fn finish(&mut self) {
        for s in &mut self.state {
            if s.is_err() {
                *s = Ok(None);
            }
        }
    }

    /// Every detector's current answer, in detector order.
    pub fn outcomes(&self) -> impl Iterator<Item = (&'static str, Outcome)> + '_ {
        self.detectors
            .as_ref()
            .iter()
            .map(|d| d.name())
            .zip(self.state.iter().copied())
    }

    /// The first detector (in order) that found its protocol.
    pub fn verdict(&self) -> Option<Verdict> {
        self.found().map(|(_, v)| v)
    }

    /// The first detector (in order) that found its protocol, with the detector's name.
    pub fn found(&self) -> Option<(&'static str, Verdict)> {
        self.outcomes()
            .find_map(|(n, o)| o.ok().flatten().map(|v| (n, v)))
    }
}

/// Calls `f` with the [`Flow`] made of owned `payloads` (what a classifier keeps of a flow
/// until the detectors decide) between `client` and `server`.
pub fn with_flow<R>(
    transport: Transport,
    client: SocketAddr,
    server: SocketAddr,
    payloads: &[(Dir, Vec<u8>)],
    f: impl FnOnce(&Flow<'_>) -> R,
) -> R {
    let packets: Vec<Packet<'_>> = payloads
        .iter()
        .map(|(dir, p)| Packet {
            dir: *dir,
            payload: p,
        })
        .collect();
    f(&Flow {
        transport,
        client,
        server,
        packets: &packets,
    })
}

/// The answer of a detector made of stable rules, each firing on the packet that completes
/// it: the earliest verdict so far (final, as a pending rule can only fire on a later packet),
/// else `Incomplete` while any rule is pending, else `None`.
pub(crate) fn earliest(rules: &[Outcome]) -> Outcome {
    if let Some(v) = rules
        .iter()
        .filter_map(|r| r.ok().flatten())
        .min_by_key(|v| v.after)
    {
        Ok(Some(v))
    } else if rules.iter().any(|r| r.is_err()) {
        Err(Incomplete)
    } else {
        Ok(None)
    }
}

/// A VPN detector's answer, unless the flow opens with a known plaintext protocol
/// ([`known::flow_is_plaintext`]), which is never a VPN. A positive verdict is checked on the
/// packets it was decided on only, so a decision never changes with later packets.
pub(crate) fn unless_plaintext(flow: &Flow<'_>, out: Outcome) -> Outcome {
    let upto = match out {
        Ok(None) => return Ok(None),
        Ok(Some(v)) => v.after.min(flow.packets.len()),
        Err(Incomplete) => flow.packets.len(),
    };
    let prefix = Flow {
        packets: &flow.packets[..upto],
        ..*flow
    };
    if known::flow_is_plaintext(&prefix) {
        Ok(None)
    } else {
        out
    }
}

/// Whether `b` is printable ASCII (0x20..=0x7e), as Wu et al. define it.
pub(crate) const fn printable(b: u8) -> bool {
    b >= 0x20 && b <= 0x7e
}

/// Frames of one direction, each with the number of packets needed to complete it.
pub(crate) type FrameList = Vec<(Vec<u8>, usize)>;

/// The frames of one direction of a TCP flow carrying 2-byte big-endian length prefixes
/// (OpenVPN over TCP, RFC 1035-style framing), each with the number of packets needed to
/// complete it. Stops at `max` frames; `Err` if a length is outside `min..=max_len`.
pub(crate) fn length_frames<'a>(
    flow: &Flow<'a>,
    dir: Dir,
    max: usize,
    min_len: usize,
    max_len: usize,
) -> Result<(FrameList, bool), ()> {
    let mut frames = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut need: Option<usize> = None;
    let mut hdr: Vec<u8> = Vec::with_capacity(2);
    for (i, p) in flow.packets.iter().enumerate() {
        if p.dir != dir {
            continue;
        }
        let mut rest = p.payload;
        while !rest.is_empty() {
            if frames.len() >= max {
                return Ok((frames, true));
            }
            match need {
                None => {
                    let take = (2 - hdr.len()).min(rest.len());
                    hdr.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if hdr.len() == 2 {
                        let len = usize::from(u16::from_be_bytes([hdr[0], hdr[1]]));
                        if len < min_len || len > max_len {
                            return Err(());
                        }
                        hdr.clear();
                        need = Some(len);
                    }
                }
                Some(n) => {
                    let take = (n - cur.len()).min(rest.len());
                    cur.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if cur.len() == n {
                        frames.push((std::mem::take(&mut cur), i + 1));
                        need = None;
                    }
                }
            }
        }
    }
    let full = frames.len() >= max;
    Ok((frames, full))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers for detector tests: flows from packet lists, and the every-prefix check.
    use super::*;

    /// A flow between fixed loopback endpoints.
    pub(crate) fn flow<'a>(
        transport: Transport,
        server_port: u16,
        packets: &'a [Packet<'a>],
    ) -> Flow<'a> {
        Flow {
            transport,
            client: "127.0.0.1:40000".parse().unwrap(),
            server: SocketAddr::from(([127, 0, 0, 2], server_port)),
            packets,
        }
    }

    /// A packet from the client to the server.
    pub(crate) fn to_s(payload: &[u8]) -> Packet<'_> {
        Packet {
            dir: Dir::ToServer,
            payload,
        }
    }

    /// A packet from the server to the client.
    pub(crate) fn to_c(payload: &[u8]) -> Packet<'_> {
        Packet {
            dir: Dir::ToClient,
            payload,
        }
    }

    /// Packets borrowed from `(direction, payload)` pairs ([`Packet::all`]).
    pub(crate) fn packets(v: &[(Dir, Vec<u8>)]) -> Vec<Packet<'_>> {
        Packet::all(v)
    }

    /// Feeds every packet prefix of `packets` to `d`: `Incomplete` until `after` packets, then
    /// the same verdict (`expect`) for every longer prefix. Returns the final verdict.
    pub(crate) fn every_prefix(
        d: &dyn Detector,
        transport: Transport,
        port: u16,
        packets: &[Packet<'_>],
        after: usize,
        expect: Option<&str>,
    ) -> Option<Verdict> {
        let mut last = None;
        for n in 0..=packets.len() {
            let f = flow(transport, port, &packets[..n]);
            let got = d.detect(&f);
            if n < after {
                assert_eq!(
                    got,
                    Err(Incomplete),
                    "prefix of {n} packets should be Incomplete"
                );
            } else {
                let v = got.unwrap_or_else(|_| panic!("prefix of {n} packets still Incomplete"));
                assert_eq!(v.map(|v| v.protocol), expect, "prefix of {n} packets");
                if let Some(v) = v {
                    assert_eq!(v.after, after, "packets-to-decision");
                }
                if n > after {
                    assert_eq!(v, last, "verdict changed at {n} packets");
                }
                last = v;
            }
        }
        last
    }

    /// The rule `d` decides `packets` by: after exactly `after` packets, for its own protocol,
    /// and the same for every longer prefix (see [`every_prefix`]).
    pub(crate) fn rule_after(
        d: &dyn Detector,
        transport: Transport,
        port: u16,
        packets: &[Packet<'_>],
        after: usize,
    ) -> &'static str {
        every_prefix(d, transport, port, packets, after, Some(d.name()))
            .expect("a verdict for the detector's protocol")
            .rule
    }

    /// `n` packets made by `payload(i)`, to the client where `to_client(i)`, else to the
    /// server.
    pub(crate) fn flow_of(
        n: usize,
        to_client: impl Fn(usize) -> bool,
        payload: impl Fn(usize) -> Vec<u8>,
    ) -> Vec<(Dir, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let dir = if to_client(i) {
                    Dir::ToClient
                } else {
                    Dir::ToServer
                };
                (dir, payload(i))
            })
            .collect()
    }

    /// `n` packets made by `payload(i)`: even ones to the server, odd ones to the client.
    pub(crate) fn alternating(n: usize, payload: impl Fn(usize) -> Vec<u8>) -> Vec<(Dir, Vec<u8>)> {
        flow_of(n, |i| i % 2 == 1, payload)
    }

    /// Decodes hex (whitespace ignored).
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_packets() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
        prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)),
            0..12,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// No detector panics on random flows, and a decision never reverts to Incomplete.
        #[test]
        fn detectors_never_panic(pkts in arb_packets(), tcp in any::<bool>(), port in prop::sample::select(vec![500u16, 4500, 1194, 1723, 51820, 443])) {
            let ends = endpoints::Endpoints::parse("t", "127.0.0.0/30\n").unwrap();
            let ds = standard(ends);
            let packets: Vec<Packet<'_>> = pkts.iter().map(|(c, p)| Packet { dir: if *c { Dir::ToServer } else { Dir::ToClient }, payload: p }).collect();
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            for d in &ds {
                let mut decided: Option<Option<Verdict>> = None;
                for n in 0..=packets.len() {
                    let f = testutil::flow(transport, port, &packets[..n]);
                    match d.detect(&f) {
                        Ok(v) => {
                            if let Some(prev) = decided { prop_assert_eq!(prev, v, "{} changed its mind", d.name()); }
                            decided = Some(v);
                        }
                        Err(Incomplete) => prop_assert!(decided.is_none(), "{} went back to Incomplete", d.name()),
                    }
                }
            }
        }

        /// The TCP length-prefix framer never panics and never returns more than asked.
        #[test]
        fn framer_never_panics(pkts in arb_packets(), max in 0usize..6) {
            let packets: Vec<Packet<'_>> = pkts.iter().map(|(c, p)| Packet { dir: if *c { Dir::ToServer } else { Dir::ToClient }, payload: p }).collect();
            let f = testutil::flow(Transport::Tcp, 1194, &packets);
            if let Ok((frames, _)) = length_frames(&f, Dir::ToServer, max, 1, 2048) {
                prop_assert!(frames.len() <= max);
            }
        }
    }

    #[test]
    fn select_rejects_unknown_names_and_keeps_order() {
        let e = endpoints::Endpoints::default();
        let err = select(&["openvpn".into(), "v2ray".into()], e.clone()).unwrap_err();
        assert_eq!(err.0, "v2ray");
        let ds = select(&["fully-encrypted".into(), "wireguard".into()], e).unwrap();
        let names: Vec<_> = ds.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["wireguard", "fully-encrypted"]);
    }

    #[test]
    fn standard_detectors_cover_the_rule_protocols() {
        let ds = standard(endpoints::Endpoints::default());
        let mut names: Vec<_> = ds.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        let mut want = crate::rules::VPN_PROTOCOLS.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);
    }

    #[test]
    fn framer_splits_frames_across_segments() {
        let a = [0u8, 3, 1, 2];
        let b = [3u8, 0, 1, 9];
        let packets = [
            Packet {
                dir: Dir::ToServer,
                payload: &a,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &[0, 5],
            },
            Packet {
                dir: Dir::ToServer,
                payload: &b,
            },
        ];
        let f = testutil::flow(Transport::Tcp, 1194, &packets);
        let (frames, full) = length_frames(&f, Dir::ToServer, 8, 1, 100).unwrap();
        assert_eq!(frames, vec![(vec![1, 2, 3], 3), (vec![9], 3)]);
        assert!(!full);
        assert!(
            length_frames(&f, Dir::ToServer, 8, 2, 100).is_err(),
            "a 1-byte frame is below the minimum"
        );
    }
}
