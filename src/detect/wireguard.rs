//! WireGuard detector, from the message formats of the WireGuard whitepaper (J. A. Donenfeld,
//! "WireGuard: Next Generation Kernel Network Tunnel", NDSS 2017, section 5.4).
//!
//! Every message starts with a type byte (1 = handshake initiation, 2 = handshake response,
//! 3 = cookie reply, 4 = transport data) and three zero reserved bytes. Initiations are exactly
//! 148 bytes, responses 92, cookie replies 64, transport messages at least 32 bytes. The
//! whitepaper pads transport plaintext to 16 bytes (`len % 16 == 0`), as the Linux kernel
//! does, but padding is not mandatory and boringtun (tested here) sends unpadded messages, so
//! the alignment check is opt-in ([`WireGuard::require_padding`]). Indices tie the directions together: the
//! response's receiver index is the initiator's sender index, and every transport message
//! carries the peer's index. The rule `handshake` fires on an initiation from the client
//! answered by a response acknowledging its sender index (2 packets); the rule `transport`
//! fires on a flow caught mid-session whose first two packets in each direction are all
//! transport messages with a constant receiver index per direction. Real deployments vary,
//! so three more rules hold without the fixed headers: `initiation-transport` (one
//! direction: an initiation, then the client's transport with counter 0), `counters`
//! (transport-shaped packets with any 4-byte header whose little-endian counters rise, for
//! one-direction and mid-session flows) and `handshake-variant` (AmneziaWG's junk packets,
//! S1/S2 junk prefixes and H1–H4 headers, vendor builds with extra bytes or a client id in
//! the reserved bytes: the response names the initiation's sender index at the offsets its
//! length implies, confirmed by the first transport to one of the two indices). Any port.

use super::{Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

/// Message type 1, handshake initiation.
pub const INITIATION: u8 = 1;
/// Message type 2, handshake response.
pub const RESPONSE: u8 = 2;
/// Message type 3, cookie reply.
pub const COOKIE_REPLY: u8 = 3;
/// Message type 4, transport data.
pub const TRANSPORT: u8 = 4;

/// A parsed WireGuard message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Type 1 with the sender index.
    Initiation {
        /// Sender index.
        sender: u32,
    },
    /// Type 2 with sender and receiver indices.
    Response {
        /// Sender index.
        sender: u32,
        /// Receiver index (the initiator's sender).
        receiver: u32,
    },
    /// Type 3 with the receiver index.
    CookieReply {
        /// Receiver index.
        receiver: u32,
    },
    /// Type 4 with the receiver index and counter.
    Transport {
        /// Receiver index.
        receiver: u32,
        /// Nonce counter.
        counter: u64,
        /// The body is padded to 16 bytes (`len % 16 == 0`).
        padded: bool,
    },
}

fn u32_at(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

/// Parses one datagram as a WireGuard message, checking type, reserved bytes and size.
pub fn parse(p: &[u8]) -> Option<Message> {
    if p.len() < 4 || p[1..4] != [0, 0, 0] {
        return None;
    }
    match (p[0], p.len()) {
        (INITIATION, 148) => Some(Message::Initiation {
            sender: u32_at(p, 4)?,
        }),
        (RESPONSE, 92) => Some(Message::Response {
            sender: u32_at(p, 4)?,
            receiver: u32_at(p, 8)?,
        }),
        (COOKIE_REPLY, 64) => Some(Message::CookieReply {
            receiver: u32_at(p, 4)?,
        }),
        (TRANSPORT, n) if n >= 32 => Some(Message::Transport {
            receiver: u32_at(p, 4)?,
            counter: u64::from_le_bytes(p.get(8..16)?.try_into().ok()?),
            padded: n % 16 == 0,
        }),
        _ => None,
    }
}

/// The WireGuard detector.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireGuard {
    /// Reject transport messages whose length is not a multiple of 16 (kernel WireGuard pads;
    /// boringtun does not).
    pub require_padding: bool,
}

impl Detector for WireGuard {
    fn name(&self) -> &'static str {
        "wireguard"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Udp {
            return Ok(None);
        }
        if flow.packets.is_empty() {
            return Err(Incomplete);
        }
        let rules = [
            handshake(flow),
            transport(flow, self.require_padding),
            counters(flow, self.require_padding),
            variant(flow),
        ];
        super::unless_plaintext(flow, super::earliest(&rules))
    }
}

/// Initiation(s) from the client, optionally a cookie reply, then a response naming one of
/// the initiations' sender indices (`handshake`), or, seen from the client's side only, the
/// client's first transport message (counter 0) after its initiation (`initiation-transport`).
fn handshake(flow: &Flow<'_>) -> Outcome {
    let mut senders = [0u32; 8];
    let mut n = 0;
    for (i, p) in flow.packets.iter().enumerate() {
        match (p.dir, parse(p.payload)) {
            (Dir::ToServer, Some(Message::Initiation { sender })) => {
                if n == senders.len() {
                    return Ok(None);
                }
                senders[n] = sender;
                n += 1;
            }
            (Dir::ToClient, Some(Message::CookieReply { receiver }))
                if senders[..n].contains(&receiver) => {}
            (Dir::ToClient, Some(Message::Response { receiver, .. }))
                if senders[..n].contains(&receiver) =>
            {
                return Ok(Some(Verdict {
                    protocol: "wireguard",
                    rule: "handshake",
                    after: i + 1,
                }));
            }
            (Dir::ToServer, Some(Message::Transport { counter: 0, .. })) if n > 0 => {
                return Ok(Some(Verdict {
                    protocol: "wireguard",
                    rule: "initiation-transport",
                    after: i + 1,
                }));
            }
            _ => return Ok(None),
        }
    }
    Err(Incomplete)
}

/// Mid-session: transport messages only, two per direction, constant receiver per direction.
fn transport(flow: &Flow<'_>, require_padding: bool) -> Outcome {
    let mut recv: [Option<u32>; 2] = [None, None];
    let mut count = [0usize; 2];
    for (i, p) in flow.packets.iter().enumerate() {
        let Some(Message::Transport {
            receiver, padded, ..
        }) = parse(p.payload)
        else {
            return Ok(None);
        };
        if require_padding && !padded {
            return Ok(None);
        }
        let d = usize::from(p.dir == Dir::ToClient);
        match recv[d] {
            Some(r) if r != receiver => return Ok(None),
            _ => recv[d] = Some(receiver),
        }
        count[d] += 1;
        if count[0] >= 2 && count[1] >= 2 {
            return Ok(Some(Verdict {
                protocol: "wireguard",
                rule: "transport",
                after: i + 1,
            }));
        }
    }
    Err(Incomplete)
}

/// Packets of one direction the variant rules look at.
const VARIANT_WINDOW: usize = 16;

/// The 8-byte prefix (type header, receiver index) and counter of a transport-shaped packet.
fn transport_shape(p: &[u8], require_padding: bool) -> Option<([u8; 8], u64)> {
    if p.len() < 32 || (require_padding && p.len() % 16 != 0) {
        return None;
    }
    let prefix: [u8; 8] = p[..8].try_into().ok()?;
    if prefix[4..] == [0, 0, 0, 0] {
        return None;
    }
    Some((prefix, u64::from_le_bytes(p[8..16].try_into().ok()?)))
}

/// Transport messages with any type header (AmneziaWG's H4, vendor builds that use the
/// reserved bytes, such as a client id): per direction, packets sharing the 8-byte
/// header + receiver index whose little-endian counters rise by 1..=16. Three such packets in
/// one direction (one-direction captures, flows caught mid-session) or two in each direction
/// with the same type header decide (`counters`).
fn counters(flow: &Flow<'_>, require_padding: bool) -> Outcome {
    // Per packet: its chain length within its direction.
    let mut chain = [0u8; crate::detect::MAX_PACKETS];
    let mut best: [Option<([u8; 8], u8)>; 2] = [None, None];
    let mut seen = [0usize; 2];
    for (i, p) in flow.packets.iter().enumerate().take(chain.len()) {
        let d = usize::from(p.dir == Dir::ToClient);
        seen[d] += 1;
        if seen[d] > VARIANT_WINDOW {
            return Ok(None);
        }
        let Some((prefix, ctr)) = transport_shape(p.payload, require_padding) else {
            continue;
        };
        let mut len = 1u8;
        for (j, q) in flow.packets[..i].iter().enumerate() {
            if q.dir != p.dir {
                continue;
            }
            if let Some((qp, qc)) = transport_shape(q.payload, require_padding) {
                let step = ctr.wrapping_sub(qc);
                if qp == prefix && (1..=16).contains(&step) {
                    len = len.max(chain[j] + 1);
                }
            }
        }
        chain[i] = len;
        if best[d].is_none_or(|(_, l)| len > l) {
            best[d] = Some((prefix, len));
        }
        let both = match (best[0], best[1]) {
            (Some((a, la)), Some((b, lb))) => la >= 2 && lb >= 2 && a[..4] == b[..4],
            _ => false,
        };
        if len >= 3 || both {
            return Ok(Some(Verdict {
                protocol: "wireguard",
                rule: "counters",
                after: i + 1,
            }));
        }
    }
    Err(Incomplete)
}

/// Whether a 4-byte index looks like a random session index (at least two non-zero bytes).
fn index_like(b: &[u8]) -> bool {
    b.len() == 4 && b.iter().filter(|&&x| x != 0).count() >= 2
}

/// A handshake with changed type headers and junk (AmneziaWG: junk packets first, S1/S2
/// bytes before the initiation/response, H1–H4 headers; vendor builds: extra bytes after
/// the messages): a client packet of 148 + k bytes and a server packet of 92 + m bytes whose
/// receiver index (at m + 8 or 8) is the client's sender index (at k + 4 or 4), then the first
/// transport-shaped packet addressed to one of the two sender indices (`handshake-variant`).
fn variant(flow: &Flow<'_>) -> Outcome {
    let mut senders: Option<([u8; 4], [u8; 4])> = None;
    let mut seen = [0usize; 2];
    for (i, r) in flow.packets.iter().enumerate() {
        let d = usize::from(r.dir == Dir::ToClient);
        seen[d] += 1;
        if let Some((cs, ss)) = senders {
            let to = if r.dir == Dir::ToServer { ss } else { cs };
            if r.payload.len() >= 32 && r.payload[4..8] == to {
                return Ok(Some(Verdict {
                    protocol: "wireguard",
                    rule: "handshake-variant",
                    after: i + 1,
                }));
            }
            continue;
        }
        if seen[d] > VARIANT_WINDOW {
            return Ok(None);
        }
        let rb = r.payload;
        if r.dir != Dir::ToClient || rb.len() < 92 {
            continue;
        }
        'init: for q in flow.packets[..i].iter().filter(|q| q.dir == Dir::ToServer) {
            let qb = q.payload;
            if qb.len() < 148 {
                continue;
            }
            for (oq, or) in [(qb.len() - 148, rb.len() - 92), (0, 0)] {
                let (sender, header_q) = (&qb[oq + 4..oq + 8], &qb[oq..oq + 4]);
                let (receiver, header_r) = (&rb[or + 8..or + 12], &rb[or..or + 4]);
                if sender == receiver && index_like(sender) && header_q != header_r {
                    let mut cs = [0u8; 4];
                    let mut ss = [0u8; 4];
                    cs.copy_from_slice(sender);
                    ss.copy_from_slice(&rb[or + 4..or + 8]);
                    senders = Some((cs, ss));
                    break 'init;
                }
            }
        }
    }
    Err(Incomplete)
}

/// Builders of well-formed WireGuard messages (for tests and benchmarks; the cryptographic
/// fields are filled with `fill`, as they are indistinguishable from random on the wire).
pub mod build {
    /// A 148-byte handshake initiation with sender index `sender`.
    pub fn initiation(sender: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; 148];
        p[..4].copy_from_slice(&[1, 0, 0, 0]);
        p[4..8].copy_from_slice(&sender.to_le_bytes());
        p
    }

    /// A 92-byte handshake response.
    pub fn response(sender: u32, receiver: u32, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; 92];
        p[..4].copy_from_slice(&[2, 0, 0, 0]);
        p[4..8].copy_from_slice(&sender.to_le_bytes());
        p[8..12].copy_from_slice(&receiver.to_le_bytes());
        p
    }

    /// A transport message carrying `body` bytes of (padded) plaintext.
    pub fn transport(receiver: u32, counter: u64, body: usize, fill: u8) -> Vec<u8> {
        let padded = body.div_ceil(16) * 16;
        let mut p = vec![fill; 16 + padded + 16];
        p[..4].copy_from_slice(&[4, 0, 0, 0]);
        p[4..8].copy_from_slice(&receiver.to_le_bytes());
        p[8..16].copy_from_slice(&counter.to_le_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{alternating, flow, flow_of, packets, rule_after, to_c, to_s};
    use crate::detect::Packet;

    /// The rule the default detector decides a UDP flow to `port` by, after `after` packets.
    fn rule(port: u16, pkts: &[Packet<'_>], after: usize) -> &'static str {
        rule_after(&WireGuard::default(), Transport::Udp, port, pkts, after)
    }

    /// Whether `d` names the UDP flow to `port` WireGuard.
    fn found(d: &WireGuard, transport: Transport, port: u16, pkts: &[Packet<'_>]) -> bool {
        matches!(d.detect(&flow(transport, port, pkts)), Ok(Some(_)))
    }

    #[test]
    fn handshake_is_incomplete_until_the_response_then_stable() {
        let (i, r) = (
            build::initiation(0x1234_5678, 0xa5),
            build::response(0x9abc, 0x1234_5678, 0x5a),
        );
        let (t1, t2) = (
            build::transport(0x9abc, 0, 0, 0x33),
            build::transport(0x1234_5678, 0, 64, 0x44),
        );
        let pkts = [to_s(&i), to_c(&r), to_s(&t1), to_c(&t2)];
        assert_eq!(rule(51820, &pkts, 2), "handshake");
    }

    /// A real handshake and first transport messages from boringtun (Cloudflare's userspace
    /// WireGuard implementation).
    fn boringtun_flow() -> Vec<(Dir, Vec<u8>)> {
        use boringtun::noise::{Tunn, TunnResult};
        use boringtun::x25519::{PublicKey, StaticSecret};
        let (ck, sk) = (StaticSecret::from([3u8; 32]), StaticSecret::from([4u8; 32]));
        let mut c = Tunn::new(ck.clone(), PublicKey::from(&sk), None, None, 0x0101, None);
        let mut s = Tunn::new(sk, PublicKey::from(&ck), None, None, 0x0202, None);
        let (mut o1, mut o2) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut out = Vec::new();
        let TunnResult::WriteToNetwork(init) = c.format_handshake_initiation(&mut o1, false) else {
            panic!("initiation")
        };
        out.push((Dir::ToServer, init.to_vec()));
        let TunnResult::WriteToNetwork(resp) = s.decapsulate(None, &out[0].1, &mut o2) else {
            panic!("response")
        };
        out.push((Dir::ToClient, resp.to_vec()));
        if let TunnResult::WriteToNetwork(keepalive) = c.decapsulate(None, &out[1].1, &mut o1) {
            out.push((Dir::ToServer, keepalive.to_vec()));
        }
        let ip = [
            0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        if let TunnResult::WriteToNetwork(data) = c.encapsulate(&ip, &mut o1) {
            out.push((Dir::ToServer, data.to_vec()));
        }
        out
    }

    #[test]
    fn real_boringtun_handshake_every_prefix() {
        let raw = boringtun_flow();
        assert!(raw.len() >= 3, "handshake plus transport");
        assert_eq!((raw[0].1.len(), raw[1].1.len()), (148, 92));
        let pkts = packets(&raw);
        assert_eq!(rule(51820, &pkts, 2), "handshake");
        for (_, p) in &raw {
            assert!(
                parse(p).is_some(),
                "every real message parses: {:02x?}",
                &p[..4]
            );
        }
    }

    #[test]
    fn retried_initiations_and_cookie_replies_are_followed() {
        let (i1, i2) = (build::initiation(1, 0x11), build::initiation(2, 0x12));
        let mut cookie = vec![0x77u8; 64];
        cookie[..8].copy_from_slice(&[3, 0, 0, 0, 1, 0, 0, 0]);
        let r = build::response(9, 2, 0x13);
        let pkts = [to_s(&i1), to_c(&cookie), to_s(&i2), to_c(&r)];
        rule(51820, &pkts, 4);
    }

    #[test]
    fn index_mismatch_and_bad_sizes_are_not_wireguard() {
        let (i, r) = (build::initiation(1, 0), build::response(5, 2, 0));
        let pkts = [to_s(&i), to_c(&r)];
        assert!(
            !found(&WireGuard::default(), Transport::Udp, 1, &pkts),
            "response to another index"
        );
        let mut short = build::initiation(1, 0);
        short.pop();
        assert!(!found(
            &WireGuard::default(),
            Transport::Udp,
            1,
            &[to_s(&short)]
        ));
        let mut reserved = build::initiation(1, 0);
        reserved[2] = 1;
        assert!(!found(
            &WireGuard::default(),
            Transport::Udp,
            1,
            &[to_s(&reserved)]
        ));
        assert_eq!(
            WireGuard::default().detect(&flow(Transport::Tcp, 1, &[to_s(&i)])),
            Ok(None),
            "never over TCP"
        );
        let odd = vec![
            4u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            parse(&odd),
            Some(Message::Transport { padded: false, .. })
        ));
        let b = build::transport(10, 5, 3, 0);
        let unpadded = b[..b.len() - 13].to_vec();
        let pk = [
            to_s(&unpadded),
            to_s(&unpadded),
            to_c(&unpadded),
            to_c(&unpadded),
        ];
        let strict = WireGuard {
            require_padding: true,
        };
        assert!(
            !found(&strict, Transport::Udp, 1, &pk),
            "unpadded transport rejected when padding is required"
        );
    }

    #[test]
    fn every_byte_prefix_of_a_handshake_message_is_rejected_not_misparsed() {
        let i = build::initiation(7, 0xee);
        for n in 0..i.len() {
            assert_eq!(parse(&i[..n]), None, "{n} bytes");
        }
        assert_eq!(parse(&i), Some(Message::Initiation { sender: 7 }));
    }

    #[test]
    fn mid_session_transport_needs_two_packets_each_way() {
        let a = build::transport(10, 5, 100, 0x21);
        let b = build::transport(20, 9, 30, 0x22);
        let pkts = [to_s(&a), to_s(&a), to_c(&b), to_c(&b), to_s(&a)];
        assert_eq!(rule(51820, &pkts, 4), "transport");
        let c = build::transport(21, 9, 30, 0x22);
        let pkts = [to_s(&a), to_c(&b), to_c(&c)];
        assert!(
            !found(&WireGuard::default(), Transport::Udp, 1, &pkts),
            "receiver index changed"
        );
    }

    fn rnd(n: usize, seed: u64) -> Vec<u8> {
        crate::detect::fully_encrypted::tests::random_bytes(n, seed)
    }

    /// An AmneziaWG exchange: `jc` junk packets, an initiation behind `s1` junk bytes with
    /// header H1, a response behind `s2` bytes with H2, then transport messages with H4.
    fn amnezia(jc: usize, s1: usize, s2: usize) -> Vec<(Dir, Vec<u8>)> {
        let (h1, h2, h4) = (0x5f3a_11c2u32, 0x0b9e_4410u32, 0x7d21_9a05u32);
        let (ci, si) = (0xdead_beefu32, 0x1357_9bdfu32);
        let mut out = Vec::new();
        for j in 0..jc {
            out.push((Dir::ToServer, rnd(50 + 97 * j, j as u64)));
        }
        let mut init = rnd(s1, 100);
        let mut m = build::initiation(ci, 0x42);
        m[..4].copy_from_slice(&h1.to_le_bytes());
        init.extend(m);
        out.push((Dir::ToServer, init));
        let mut resp = rnd(s2, 101);
        let mut m = build::response(si, ci, 0x43);
        m[..4].copy_from_slice(&h2.to_le_bytes());
        resp.extend(m);
        out.push((Dir::ToClient, resp));
        for (n, (dir, to)) in [
            (Dir::ToServer, si),
            (Dir::ToClient, ci),
            (Dir::ToServer, si),
            (Dir::ToServer, si),
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = build::transport(to, n as u64 / 2, 80, 0x50 + n as u8);
            t[..4].copy_from_slice(&h4.to_le_bytes());
            out.push((dir, t));
        }
        out
    }

    #[test]
    fn amneziawg_junk_and_changed_headers_are_found_at_the_first_transport() {
        for (jc, s1, s2) in [(4, 40, 30), (0, 0, 0), (10, 100, 64)] {
            let raw = amnezia(jc, s1, s2);
            assert_eq!(
                rule(443, &packets(&raw), jc + 3),
                "handshake-variant",
                "jc={jc} s1={s1} s2={s2}"
            );
        }
    }

    #[test]
    fn amneziawg_seen_from_the_client_only_is_found_by_its_counters() {
        let mut raw: Vec<(Dir, Vec<u8>)> = amnezia(4, 40, 30)
            .into_iter()
            .filter(|(d, _)| *d == Dir::ToServer)
            .collect();
        let mut t = raw.last().unwrap().1.clone();
        t[8..16].copy_from_slice(&2u64.to_le_bytes());
        raw.push((Dir::ToServer, t));
        // 4 junk, the initiation, transports with counters 0, 1, 1, 2: the third rise decides.
        assert_eq!(rule(51820, &packets(&raw), 9), "counters");
    }

    #[test]
    fn vendor_builds_with_non_zero_reserved_bytes_and_extra_bytes() {
        // A client id in the reserved bytes (as Cloudflare WARP does) and 4 extra bytes.
        let id = [0x12, 0x34, 0x56];
        let mut i = build::initiation(0xaabb_ccdd, 1);
        i[1..4].copy_from_slice(&id);
        i.extend_from_slice(&[9, 9, 9, 9]);
        let mut r = build::response(0x1122_3344, 0xaabb_ccdd, 2);
        r[1..4].copy_from_slice(&id);
        let mut t = build::transport(0x1122_3344, 0, 40, 3);
        t[1..4].copy_from_slice(&id);
        let raw = vec![(Dir::ToServer, i), (Dir::ToClient, r), (Dir::ToServer, t)];
        assert_eq!(rule(2408, &packets(&raw), 3), "handshake-variant");
    }

    #[test]
    fn one_direction_initiation_then_transport_and_mid_session_counters() {
        let i = build::initiation(0x0102_0304, 7);
        let t0 = build::transport(0x0a0b_0c0d, 0, 100, 8);
        let raw = vec![
            (Dir::ToServer, i.clone()),
            (Dir::ToServer, i),
            (Dir::ToServer, t0),
        ];
        assert_eq!(rule(51820, &packets(&raw), 3), "initiation-transport");
        let mid: Vec<(Dir, Vec<u8>)> = (0..3)
            .map(|n| {
                (
                    Dir::ToServer,
                    build::transport(0x0a0b_0c0d, 90_000 + n, 200, 9),
                )
            })
            .collect();
        assert_eq!(
            rule(3478, &packets(&mid), 3),
            "counters",
            "a session caught mid-way, one direction"
        );
    }

    #[test]
    fn quic_dtls_stun_rtp_dns_and_random_udp_are_never_wireguard() {
        use crate::detect::known::build as k;
        let mut flows: Vec<Vec<(Dir, Vec<u8>)>> = vec![
            alternating(20, |_| k::quic_initial(1, 1200)),
            alternating(20, |_| k::gquic_q043(1350)),
            alternating(20, |n| k::dtls_record(23, 1, n as u64, 148)),
            alternating(20, |n| k::rtp(n as u16 / 2, 172)),
            alternating(4, |n| k::stun_binding(n as u8)),
            vec![(Dir::ToServer, k::dns_query(4, "wireguard.com"))],
        ];
        flows.push(flow_of(32, |n| n % 3 == 0, |n| rnd(60 + n * 13, n as u64)));
        for (i, f) in flows.iter().enumerate() {
            let got = WireGuard::default().detect(&flow(Transport::Udp, 51820, &packets(f)));
            assert!(!matches!(got, Ok(Some(_))), "flow {i}: {got:?}");
        }
    }
}
