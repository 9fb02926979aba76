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
//! transport messages with a constant receiver index per direction.

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
        let Some(first) = flow.packets.first() else {
            return Err(Incomplete);
        };
        match (first.dir, parse(first.payload)) {
            (Dir::ToServer, Some(Message::Initiation { .. })) => handshake(flow),
            (_, Some(Message::Transport { .. })) => transport(flow, self.require_padding),
            _ => Ok(None),
        }
    }
}

/// Initiation(s) from the client, optionally a cookie reply, then a response naming one of
/// the initiations' sender indices.
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
    use crate::detect::testutil::{every_prefix, flow};
    use crate::detect::Packet;

    fn to_s(p: &[u8]) -> Packet<'_> {
        Packet {
            dir: Dir::ToServer,
            payload: p,
        }
    }
    fn to_c(p: &[u8]) -> Packet<'_> {
        Packet {
            dir: Dir::ToClient,
            payload: p,
        }
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
        let v = every_prefix(
            &WireGuard::default(),
            Transport::Udp,
            51820,
            &pkts,
            2,
            Some("wireguard"),
        )
        .unwrap();
        assert_eq!(v.rule, "handshake");
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
        let pkts: Vec<Packet<'_>> = raw
            .iter()
            .map(|(d, p)| Packet {
                dir: *d,
                payload: p,
            })
            .collect();
        let v = every_prefix(
            &WireGuard::default(),
            Transport::Udp,
            51820,
            &pkts,
            2,
            Some("wireguard"),
        )
        .unwrap();
        assert_eq!(v.rule, "handshake");
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
        every_prefix(
            &WireGuard::default(),
            Transport::Udp,
            51820,
            &pkts,
            4,
            Some("wireguard"),
        );
    }

    #[test]
    fn index_mismatch_and_bad_sizes_are_not_wireguard() {
        let (i, r) = (build::initiation(1, 0), build::response(5, 2, 0));
        let pkts = [to_s(&i), to_c(&r)];
        assert_eq!(
            WireGuard::default().detect(&flow(Transport::Udp, 1, &pkts)),
            Ok(None),
            "response to another index"
        );
        let mut short = build::initiation(1, 0);
        short.pop();
        assert_eq!(
            WireGuard::default().detect(&flow(Transport::Udp, 1, &[to_s(&short)])),
            Ok(None)
        );
        let mut reserved = build::initiation(1, 0);
        reserved[2] = 1;
        assert_eq!(
            WireGuard::default().detect(&flow(Transport::Udp, 1, &[to_s(&reserved)])),
            Ok(None)
        );
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
        assert_eq!(
            strict.detect(&flow(Transport::Udp, 1, &pk)),
            Ok(None),
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
        let v = every_prefix(
            &WireGuard::default(),
            Transport::Udp,
            51820,
            &pkts,
            4,
            Some("wireguard"),
        )
        .unwrap();
        assert_eq!(v.rule, "transport");
        let c = build::transport(21, 9, 30, 0x22);
        let pkts = [to_s(&a), to_c(&b), to_c(&c)];
        assert_eq!(
            WireGuard::default().detect(&flow(Transport::Udp, 1, &pkts)),
            Ok(None),
            "receiver index changed"
        );
    }
}
