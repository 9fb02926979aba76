//! IKE/IPsec detector, from RFC 7296 (IKEv2, section 3.1 header), RFC 2408 (IKEv1 ISAKMP
//! header) and RFC 3948 (UDP encapsulation of ESP and the non-ESP marker on port 4500).
//!
//! An IKE message starts with a 28-byte header: initiator SPI (8, non-zero), responder SPI (8,
//! zero in the first message of an exchange), next payload, version (`0x10` IKEv1, `0x20`
//! IKEv2), exchange type (IKEv1: 1–5, 32, 33; IKEv2: 34–37, 43), flags, message id and a total
//! length that must equal the datagram's. On UDP 4500 IKE is preceded by a 4-byte zero
//! non-ESP marker, a single `0xff` byte is a NAT keepalive, and anything else is ESP (SPI,
//! sequence number). The rules (see [`Ike`]'s detector) hold on one direction alone and on
//! IKE that moves to 4500 mid-exchange: `initiator` (a message whose payload chain walks to
//! its end, from the opening side), `exchange` (both sides, same initiator SPI), `esp` (ESP
//! after IKE, or three consecutive ESP sequence numbers on 4500). Off ports 500/4500 both
//! framings are tried and one message is never enough.

use super::{Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;

/// The fields of an IKE header that the detector checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Initiator SPI.
    pub ispi: u64,
    /// Responder SPI.
    pub rspi: u64,
    /// Major version (1 or 2).
    pub major: u8,
    /// Exchange type.
    pub exchange: u8,
    /// The payload chain after the header was walked to the message's end (RFC 7296
    /// section 3.2 generic payload headers; an encrypted payload, `SK`/`SKF` in IKEv2, must
    /// span the rest). `false` for IKEv1 messages with the encryption flag (opaque body).
    pub chain: bool,
}

/// Parses an IKE message (header checks and length consistency) at the start of `p`.
pub fn parse_ike(p: &[u8]) -> Option<Header> {
    let h = p.get(..HEADER_LEN)?;
    let ispi = u64::from_be_bytes(h[0..8].try_into().ok()?);
    let rspi = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let (version, exchange) = (h[17], h[18]);
    let len = u32::from_be_bytes(h[24..28].try_into().ok()?);
    let major = version >> 4;
    let exchange_ok = match (major, version & 0x0f) {
        (1, 0) => matches!(exchange, 1..=5 | 32 | 33),
        (2, _) => matches!(exchange, 34..=37 | 43),
        _ => false,
    };
    let flags = h[19];
    let chain = !(major == 1 && flags & 1 != 0) && chain_ok(h[16], major, p);
    (ispi != 0 && exchange_ok && usize::try_from(len).ok() == Some(p.len())).then_some(Header {
        ispi,
        rspi,
        major,
        exchange,
        chain,
    })
}

/// Walks the generic payload headers from `first` to the end of `msg`.
fn chain_ok(first: u8, major: u8, msg: &[u8]) -> bool {
    let (mut np, mut at) = (first, HEADER_LEN);
    for _ in 0..64 {
        if np == 0 {
            return at == msg.len();
        }
        let Some(hdr) = msg.get(at..at + 4) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        if len < 4 || at + len > msg.len() {
            return false;
        }
        // IKEv2 SK (46) / SKF (53): the encrypted payload runs to the end of the message.
        if major == 2 && matches!(np, 46 | 53) {
            return at + len == msg.len();
        }
        np = hdr[0];
        at += len;
    }
    false
}

/// What one datagram on an IKE port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// An IKE message.
    Ike(Header),
    /// ESP in UDP (port 4500 only).
    Esp,
    /// A NAT keepalive (port 4500 only).
    Keepalive,
}

/// Classifies a datagram on `port` (500: IKE only; 4500: non-ESP marker + IKE, ESP, keepalive).
pub fn parse(port: u16, p: &[u8]) -> Option<Datagram> {
    match port {
        500 => parse_ike(p).map(Datagram::Ike),
        4500 => match p {
            [0xff] => Some(Datagram::Keepalive),
            [0, 0, 0, 0, rest @ ..] => parse_ike(rest).map(Datagram::Ike),
            _ if p.len() >= 8 => Some(Datagram::Esp),
            _ => None,
        },
        _ => None,
    }
}

/// The IKE detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ike {
    /// Server ports IKE is recognised on (500 and 4500; RFC 3948 NAT traversal uses 4500).
    pub ports: [u16; 2],
}

impl Default for Ike {
    fn default() -> Ike {
        Ike { ports: [500, 4500] }
    }
}

impl Detector for Ike {
    fn name(&self) -> &'static str {
        "ike"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Udp {
            return Ok(None);
        }
        let port = flow.server.port();
        let out = if port == self.ports[0] {
            exchange(flow, 500, true)
        } else if port == self.ports[1] {
            exchange(flow, 4500, true)
        } else {
            // Any other port (IKE moved): both framings, stronger evidence.
            match (exchange(flow, 500, false), exchange(flow, 4500, false)) {
                (Ok(Some(a)), Ok(Some(b))) => Ok(Some(if a.after <= b.after { a } else { b })),
                (Ok(Some(v)), Ok(None)) | (Ok(None), Ok(Some(v))) => Ok(Some(v)),
                (Ok(None), Ok(None)) => Ok(None),
                // A pending framing may still decide earlier than the other's verdict? No: a
                // verdict is on a packet already seen, so wait only while nothing fired.
                (Ok(Some(v)), Err(Incomplete)) | (Err(Incomplete), Ok(Some(v))) => Ok(Some(v)),
                _ => Err(Incomplete),
            }
        };
        super::unless_plaintext(flow, out)
    }
}

/// The IKE rules over one framing (`port` 500: bare IKE; 4500: non-ESP marker, ESP,
/// keepalives), in order of the packets that complete them:
/// - `exchange`: a message from the opening side, then one from the other side with the
///   same initiator SPI (either may be mid-exchange: on 4500 the first is often IKE_AUTH with
///   a non-zero responder SPI);
/// - `initiator` (one direction is enough): on a standard port, a message from the opening
///   side whose payload chain checks out; elsewhere, two messages with the same initiator
///   SPI, the second with a responder SPI (IKE_SA_INIT then IKE_AUTH), both chains valid;
/// - `esp` (4500 only): IKE then ESP from the opening side, or, for a flow caught
///   mid-session, three ESP packets in one direction with one SPI and consecutive sequence
///   numbers (RFC 4303 section 2).
fn exchange(flow: &Flow<'_>, port: u16, standard: bool) -> Outcome {
    let found = |rule, i: usize| {
        Ok(Some(Verdict {
            protocol: "ike",
            rule,
            after: i + 1,
        }))
    };
    let mut first: Option<Header> = None;
    let mut esp: [Option<(u32, u32, u8)>; 2] = [None, None];
    for (i, p) in flow.packets.iter().enumerate() {
        let d = usize::from(p.dir == Dir::ToClient);
        match (p.dir, parse(port, p.payload), first) {
            (Dir::ToServer, Some(Datagram::Ike(h)), None) => {
                if standard && h.chain {
                    return found("initiator", i);
                }
                if esp[0].is_some() || esp[1].is_some() {
                    return Ok(None);
                }
                first = Some(h);
            }
            (Dir::ToServer, Some(Datagram::Ike(h)), Some(f)) if h.ispi == f.ispi => {
                if f.rspi == 0 && h.rspi != 0 && f.chain && h.chain {
                    return found("initiator", i);
                }
            }
            (Dir::ToClient, Some(Datagram::Ike(h)), Some(f)) if h.ispi == f.ispi => {
                if standard || (f.chain && h.chain) {
                    return found("exchange", i);
                }
                return Ok(None);
            }
            (_, Some(Datagram::Keepalive), _) => {}
            (_, Some(Datagram::Esp), Some(_)) if standard => {
                if p.dir == Dir::ToServer {
                    return found("esp", i);
                }
            }
            (_, Some(Datagram::Esp), None) if standard => {
                let b = p.payload;
                let spi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                let seq = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                if spi < 256 {
                    return Ok(None);
                }
                match esp[d] {
                    None => esp[d] = Some((spi, seq, 1)),
                    Some((s, q, n)) => {
                        let step = seq.wrapping_sub(q);
                        if s != spi || step == 0 || step > 4 {
                            return Ok(None);
                        }
                        if n + 1 >= 3 {
                            return found("esp", i);
                        }
                        esp[d] = Some((s, seq, n + 1));
                    }
                }
            }
            _ => return Ok(None),
        }
    }
    Err(Incomplete)
}

/// Builders of well-formed IKE messages (tests and benchmarks).
pub mod build {
    /// An IKEv2 `IKE_SA_INIT` message of `len` bytes (>= 28) with the given SPIs.
    pub fn ike_sa_init(ispi: u64, rspi: u64, response: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len.max(super::HEADER_LEN)];
        p[0..8].copy_from_slice(&ispi.to_be_bytes());
        p[8..16].copy_from_slice(&rspi.to_be_bytes());
        p[16] = 33; // next payload: SA
        p[17] = 0x20; // IKEv2
        p[18] = 34; // IKE_SA_INIT
        p[19] = if response { 0x20 } else { 0x08 }; // Response / Initiator flags
        let n = p.len() as u32;
        p[24..28].copy_from_slice(&n.to_be_bytes());
        if p.len() >= 32 {
            // One SA payload spanning the rest, last in the chain.
            let sa = (p.len() - 28) as u16;
            p[30..32].copy_from_slice(&sa.to_be_bytes());
        }
        p
    }

    /// An IKEv2 `IKE_AUTH` request (message id 1, responder SPI set) whose body is one
    /// encrypted `SK` payload, as sent to UDP 4500 after NAT detection.
    pub fn ike_auth(ispi: u64, rspi: u64, response: bool, len: usize) -> Vec<u8> {
        let mut p = ike_sa_init(ispi, rspi, response, len.max(32));
        p[16] = 46; // SK
        p[18] = 35; // IKE_AUTH
        p[20..24].copy_from_slice(&1u32.to_be_bytes());
        p[28] = 35; // first inner payload: IDi
        p
    }

    /// An IKEv1 main-mode (ID_PROT) message; `encrypted` sets the E flag (messages 5 and 6).
    pub fn ikev1_main(icookie: u64, rcookie: u64, encrypted: bool, len: usize) -> Vec<u8> {
        let mut p = ike_sa_init(icookie, rcookie, false, len.max(32));
        p[16] = 1; // SA
        p[17] = 0x10; // IKEv1
        p[18] = 2; // Identity Protection (main mode)
        p[19] = u8::from(encrypted);
        p
    }

    /// An ESP packet (RFC 4303) with `spi` and sequence number `seq`.
    pub fn esp(spi: u32, seq: u32, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len.max(24))
            .map(|i| (i as u8).wrapping_mul(113).wrapping_add(seq as u8))
            .collect();
        p[..4].copy_from_slice(&spi.to_be_bytes());
        p[4..8].copy_from_slice(&seq.to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{flow, rule_after, to_c, to_s};
    use crate::detect::Packet;

    /// The rule the default detector decides a UDP flow to `port` by, after `after` packets.
    fn rule(port: u16, pkts: &[Packet<'_>], after: usize) -> &'static str {
        rule_after(&Ike::default(), Transport::Udp, port, pkts, after)
    }

    /// The default detector's answer for a UDP flow to `port`.
    fn answer(port: u16, pkts: &[Packet<'_>]) -> Outcome {
        Ike::default().detect(&flow(Transport::Udp, port, pkts))
    }

    #[test]
    fn ikev2_sa_init_exchange_on_500() {
        let req = build::ike_sa_init(0x0102_0304_0506_0708, 0, false, 300);
        let resp = build::ike_sa_init(0x0102_0304_0506_0708, 0x1111, true, 280);
        let pk = [to_s(&req), to_c(&resp)];
        assert_eq!(
            rule(500, &pk, 1),
            "initiator",
            "the request's payload chain is enough"
        );
        assert_eq!(rule(10500, &pk, 2), "exchange");
        for n in 0..req.len() {
            assert_eq!(
                parse_ike(&req[..n]),
                None,
                "{n}-byte prefix: length field disagrees"
            );
        }
    }

    #[test]
    fn nat_t_on_4500_needs_the_non_esp_marker_and_allows_esp_after() {
        let req = marked(build::ike_sa_init(9, 0, false, 200));
        let resp = marked(build::ike_sa_init(9, 3, true, 200));
        let esp = [0xc0u8, 1, 2, 3, 0, 0, 0, 1, 9, 9, 9, 9];
        let pk = [to_s(&req), to_c(&resp), to_s(&esp)];
        rule(4500, &pk, 1);
        let no_marker = build::ike_sa_init(9, 0, false, 200);
        let pk = [to_s(&no_marker)];
        assert_eq!(
            answer(4500, &pk),
            Ok(None),
            "ESP first is not an IKE exchange"
        );
    }

    #[test]
    fn wrong_port_version_or_spi_is_not_ike() {
        let req = build::ike_sa_init(1, 0, false, 100);
        let pk = [to_s(&req)];
        assert_eq!(
            answer(53, &pk),
            Err(Incomplete),
            "off the IKE ports one message is not enough"
        );
        let mut bad = req.clone();
        bad[17] = 0x30;
        assert_eq!(parse_ike(&bad), None);
        let resp = build::ike_sa_init(2, 5, true, 100);
        let pk = [to_s(&req), to_c(&resp)];
        assert_eq!(answer(10500, &pk), Ok(None), "answer to another SPI");
    }

    fn marked(p: Vec<u8>) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 0];
        m.extend(p);
        m
    }

    #[test]
    fn one_direction_initiator_messages_decide() {
        // Only the initiator's side is captured: its IKE_SA_INIT (IKEv2) or first main-mode
        // message (IKEv1), whose payload chain checks out, is enough on 500.
        let v2 = build::ike_sa_init(0xabcd, 0, false, 320);
        let v1 = build::ikev1_main(0x1234, 0, false, 180);
        for m in [&v2, &v1] {
            assert_eq!(rule(500, &[to_s(m), to_s(m)], 1), "initiator");
        }
        let mut broken = v2.clone();
        broken[31] ^= 1; // SA payload length no longer reaches the end
        assert!(!parse_ike(&broken).unwrap().chain);
    }

    #[test]
    fn ike_moved_to_4500_starts_with_ike_auth_then_esp() {
        let auth = marked(build::ike_auth(77, 88, false, 400));
        let reply = marked(build::ike_auth(77, 88, true, 300));
        let (e1, e2) = (
            build::esp(0xc001_0203, 1, 120),
            build::esp(0xc001_0203, 2, 120),
        );
        let pk = [to_s(&auth), to_c(&reply), to_s(&e1), to_s(&e2)];
        assert_eq!(rule(4500, &pk, 1), "initiator");
        // IKEv1 NAT-T: encrypted main-mode messages 5/6 (opaque body) answered, then ESP.
        let m5 = marked(build::ikev1_main(5, 6, true, 100));
        let m6 = marked(build::ikev1_main(5, 6, true, 100));
        assert_eq!(rule(4500, &[to_s(&m5), to_c(&m6)], 2), "exchange");
        assert_eq!(
            rule(4500, &[to_s(&m5), to_s(&e1)], 2),
            "esp",
            "one direction: IKE then ESP"
        );
    }

    #[test]
    fn esp_in_udp_caught_mid_session() {
        let pk: Vec<Vec<u8>> = (0..4)
            .map(|i| build::esp(0x0a0b_0c0d, 1000 + i, 140))
            .collect();
        let back = build::esp(0x0e0f_1011, 500, 90);
        let pkts = [
            to_s(&pk[0]),
            to_c(&back),
            to_s(&pk[1]),
            to_s(&pk[2]),
            to_s(&pk[3]),
        ];
        assert_eq!(rule(4500, &pkts, 4), "esp");
        let jump = build::esp(0x0a0b_0c0d, 5000, 140);
        assert_eq!(
            answer(4500, &[to_s(&pk[0]), to_s(&jump)]),
            Ok(None),
            "sequence numbers must be consecutive"
        );
        assert_eq!(answer(500, &[to_s(&pk[0])]), Ok(None), "no ESP on 500");
    }

    #[test]
    fn ike_on_a_moved_port_needs_both_messages() {
        let req = build::ike_sa_init(42, 0, false, 300);
        let resp = build::ike_sa_init(42, 43, true, 250);
        assert_eq!(rule(10500, &[to_s(&req), to_c(&resp)], 2), "exchange");
        let auth = build::ike_auth(42, 43, false, 200);
        assert_eq!(rule(10500, &[to_s(&req), to_s(&auth)], 2), "initiator");
        let (mreq, mresp) = (marked(req.clone()), marked(resp.clone()));
        rule(14500, &[to_s(&mreq), to_c(&mresp)], 2);
    }

    #[test]
    fn quic_dns_and_random_datagrams_on_ike_ports_are_not_ike() {
        use crate::detect::known::build as k;
        let q: Vec<Vec<u8>> = (0..6).map(|_| k::quic_initial(1, 1200)).collect();
        let dns = k::dns_query(1, "vpn.example.org");
        let rnd = crate::detect::fully_encrypted::tests::random_bytes(300, 5);
        for port in [500, 4500, 10500] {
            let pk: Vec<Packet<'_>> = q.iter().map(|p| to_s(p)).collect();
            assert!(!matches!(answer(port, &pk), Ok(Some(_))));
            for p in [&dns, &rnd] {
                let pk = [to_s(p), to_c(p), to_s(p), to_s(p)];
                assert!(!matches!(answer(port, &pk), Ok(Some(_))), "port {port}");
            }
        }
    }
}
