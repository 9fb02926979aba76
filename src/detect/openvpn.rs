//! OpenVPN detector, over UDP and TCP (2-byte length framing), with three rules.
//!
//! - `handshake`, from the OpenVPN wire format (openvpn `ssl_pkt.h`, `reliable.c`): the first
//!   byte is `opcode << 3 | key_id`; the client opens with `P_CONTROL_HARD_RESET_CLIENT_V2/V3`
//!   (opcode 7/10, key id 0) carrying its 8-byte session id, keeps that session id on every
//!   control packet, and the server's first packet is `P_CONTROL_HARD_RESET_SERVER_V2`
//!   (opcode 8, key id 0) acknowledging the client's session id. Decides on the server reset.
//! - `xue-opcodes`, after the opcode-based fingerprint of Xue et al., "OpenVPN is Open to VPN
//!   Fingerprinting", USENIX Security 2022 (section 4.1): a censor records the first byte of
//!   the first `window` packets; OpenVPN flows start with a client reset and a server reset
//!   that never recur, and use only a handful of distinct opcodes. The rule treats first bytes
//!   as opaque symbols, so a fixed XOR mask ("XOR patch" obfuscation) does not hide it, as the
//!   paper shows.
//! - `static-key`: pre-shared-key mode (`--secret`) has no handshake and no opcode: each
//!   packet is `HMAC | IV | CBC ciphertext`. blocklab's own rule, from that layout: in the
//!   first `window` packets every length fits one (HMAC, block) size pair (SHA-1/Blowfish,
//!   SHA-1/AES, SHA-256/AES) and every packet looks fully encrypted by the Ex1–Ex4 tests of
//!   Wu et al. 2023. Uncertain: not a published censor rule.

use super::fully_encrypted::{self, Params as WuParams};
use super::{length_frames, Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

/// `P_CONTROL_HARD_RESET_CLIENT_V1`.
pub const HARD_RESET_CLIENT_V1: u8 = 1;
/// `P_CONTROL_HARD_RESET_SERVER_V1`.
pub const HARD_RESET_SERVER_V1: u8 = 2;
/// `P_CONTROL_SOFT_RESET_V1`.
pub const SOFT_RESET_V1: u8 = 3;
/// `P_CONTROL_V1`.
pub const CONTROL_V1: u8 = 4;
/// `P_ACK_V1`.
pub const ACK_V1: u8 = 5;
/// `P_DATA_V1`.
pub const DATA_V1: u8 = 6;
/// `P_CONTROL_HARD_RESET_CLIENT_V2`.
pub const HARD_RESET_CLIENT_V2: u8 = 7;
/// `P_CONTROL_HARD_RESET_SERVER_V2`.
pub const HARD_RESET_SERVER_V2: u8 = 8;
/// `P_DATA_V2`.
pub const DATA_V2: u8 = 9;
/// `P_CONTROL_HARD_RESET_CLIENT_V3`.
pub const HARD_RESET_CLIENT_V3: u8 = 10;
/// `P_CONTROL_WKC_V1`.
pub const CONTROL_WKC_V1: u8 = 11;

/// Largest OpenVPN packet over TCP accepted by the framing check.
pub const MAX_FRAME: usize = 1700;

/// (HMAC length, cipher block length) pairs of static-key mode.
const STATIC_KEY_LAYOUTS: [(usize, usize); 3] = [(20, 8), (20, 16), (32, 16)];

/// Thresholds of the OpenVPN rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenVpn {
    /// Packets whose first bytes the `xue-opcodes` rule looks at.
    pub xue_window: usize,
    /// Most distinct first bytes allowed in that window (OpenVPN has 11 opcodes).
    pub xue_max_distinct: usize,
    /// Fewest distinct first bytes (two resets, ack, control).
    pub xue_min_distinct: usize,
    /// Packets the `static-key` rule looks at.
    pub static_window: usize,
    /// Entropy thresholds for `static-key` (Wu et al.'s Ex1–Ex4).
    pub wu: WuParams,
    /// Packets of the opening side the `xor-session` rule looks at.
    pub xor_window: usize,
}

impl Default for OpenVpn {
    fn default() -> OpenVpn {
        OpenVpn {
            xue_window: 16,
            xue_max_distinct: 10,
            xue_min_distinct: 3,
            static_window: 8,
            wu: WuParams::default(),
            xor_window: 12,
        }
    }
}

/// One OpenVPN packet of a flow, with the packets needed to see all of it.
#[derive(Debug)]
struct Frame<'a> {
    dir: Dir,
    bytes: std::borrow::Cow<'a, [u8]>,
    after: usize,
}

/// The flow's OpenVPN packets in order (UDP datagrams, or length-framed TCP), at most `max`
/// per direction; `None` if TCP framing is broken; the flag says whether `max` was reached in
/// either direction.
fn frames<'a>(flow: &Flow<'a>, max: usize) -> Option<(Vec<Frame<'a>>, bool)> {
    match flow.transport {
        Transport::Udp => {
            let v: Vec<Frame<'a>> = flow
                .packets
                .iter()
                .enumerate()
                .take(max)
                .map(|(i, p)| Frame {
                    dir: p.dir,
                    bytes: std::borrow::Cow::Borrowed(p.payload),
                    after: i + 1,
                })
                .collect();
            let full = v.len() >= max;
            Some((v, full))
        }
        Transport::Tcp => {
            let (c, cf) = length_frames(flow, Dir::ToServer, max, 1, MAX_FRAME).ok()?;
            let (s, sf) = length_frames(flow, Dir::ToClient, max, 1, MAX_FRAME).ok()?;
            let mut v: Vec<Frame<'a>> = c
                .into_iter()
                .map(|(b, a)| (Dir::ToServer, b, a))
                .chain(s.into_iter().map(|(b, a)| (Dir::ToClient, b, a)))
                .map(|(dir, b, after)| Frame {
                    dir,
                    bytes: std::borrow::Cow::Owned(b),
                    after,
                })
                .collect();
            v.sort_by_key(|f| f.after);
            v.truncate(max);
            Some((v, cf || sf))
        }
    }
}

impl Detector for OpenVpn {
    fn name(&self) -> &'static str {
        "openvpn"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        let want = self
            .xue_window
            .max(self.static_window)
            .max(self.xor_window)
            .max(2);
        let Some((frames, _)) = frames(flow, want) else {
            return Ok(None);
        };
        let rules = [
            handshake(&frames),
            reset_session(&frames),
            self.xue(&frames),
            self.xor_session(&frames),
            self.static_key(&frames),
        ];
        super::unless_plaintext(flow, super::earliest(&rules))
    }
}

fn opcode(b: &[u8]) -> Option<(u8, u8)> {
    b.first().map(|b| (b >> 3, b & 7))
}

fn session_id(b: &[u8]) -> Option<&[u8]> {
    b.get(1..9)
}

/// An opening hard reset: the packet, its opcode and its session id.
type Reset<'f, 'a> = (&'f Frame<'a>, u8, &'f [u8]);

/// The flow's first packet when it is a hard reset (client or server) with key id 0; `Err`
/// before any packet.
fn opening_reset<'f, 'a>(frames: &'f [Frame<'a>]) -> Result<Option<Reset<'f, 'a>>, Incomplete> {
    let Some(first) = frames.first() else {
        return Err(Incomplete);
    };
    let (Some((op, 0)), Some(sid)) = (opcode(&first.bytes), session_id(&first.bytes)) else {
        return Ok(None);
    };
    let reset = matches!(
        op,
        HARD_RESET_CLIENT_V1
            | HARD_RESET_CLIENT_V2
            | HARD_RESET_CLIENT_V3
            | HARD_RESET_SERVER_V1
            | HARD_RESET_SERVER_V2
    );
    Ok(reset.then_some((first, op, sid)))
}

/// Client reset, constant client session id, server reset acknowledging it.
fn handshake(frames: &[Frame<'_>]) -> Outcome {
    let Some((first, op, sid)) = opening_reset(frames)? else {
        return Ok(None);
    };
    let client_reset = matches!(
        op,
        HARD_RESET_CLIENT_V2 | HARD_RESET_CLIENT_V3 | HARD_RESET_CLIENT_V1
    );
    if first.dir != Dir::ToServer || !client_reset {
        return Ok(None);
    }
    for f in &frames[1..] {
        let Some((op, key)) = opcode(&f.bytes) else {
            return Ok(None);
        };
        match f.dir {
            Dir::ToServer => match op {
                DATA_V1 | DATA_V2 => {}
                HARD_RESET_CLIENT_V1 | SOFT_RESET_V1 | CONTROL_V1 | ACK_V1
                | HARD_RESET_CLIENT_V2 | HARD_RESET_CLIENT_V3 | CONTROL_WKC_V1 => {
                    if session_id(&f.bytes) != Some(sid) {
                        return Ok(None);
                    }
                }
                _ => return Ok(None),
            },
            Dir::ToClient => {
                let server_reset =
                    matches!(op, HARD_RESET_SERVER_V2 | HARD_RESET_SERVER_V1) && key == 0;
                let acks = f
                    .bytes
                    .get(9..)
                    .is_some_and(|rest| rest.windows(8).any(|w| w == sid));
                return Ok((server_reset && acks).then_some(Verdict {
                    protocol: "openvpn",
                    rule: "handshake",
                    after: f.after,
                }));
            }
        }
    }
    Err(Incomplete)
}

/// One direction alone (asymmetric routing, NAT'd captures): a hard reset (client or server,
/// key id 0) and then a control or ack packet from the same side carrying the same session
/// id. tls-crypt and tls-crypt-v2 (`P_CONTROL_HARD_RESET_CLIENT_V3`, `P_CONTROL_WKC_V1`)
/// leave the opcode and session id in the clear, so this holds for them too.
fn reset_session(frames: &[Frame<'_>]) -> Outcome {
    let Some((first, op, sid)) = opening_reset(frames)? else {
        return Ok(None);
    };
    if first.bytes.len() < 14 {
        return Ok(None);
    }
    for f in frames[1..].iter().filter(|f| f.dir == first.dir) {
        let Some((o, k)) = opcode(&f.bytes) else {
            return Ok(None);
        };
        if session_id(&f.bytes) != Some(sid) || k != 0 {
            return Ok(None);
        }
        match o {
            _ if o == op => {} // a retransmitted reset
            SOFT_RESET_V1 | CONTROL_V1 | ACK_V1 | CONTROL_WKC_V1 => {
                return Ok(Some(Verdict {
                    protocol: "openvpn",
                    rule: "reset-session",
                    after: f.after,
                }))
            }
            _ => return Ok(None),
        }
    }
    Err(Incomplete)
}

impl OpenVpn {
    /// Obfuscated first bytes (the "XOR patch" masks every byte with a fixed key, by
    /// position): in the opening side's first `xor_window` packets the first byte is an
    /// opaque symbol, the opening symbol (the reset) only recurs before any other, at most
    /// four symbols occur (reset, control, ack, data), and at least three later packets
    /// carry the same (masked) 8-byte session id as the first.
    fn xor_session(&self, frames: &[Frame<'_>]) -> Outcome {
        let Some(first) = frames.first() else {
            return Err(Incomplete);
        };
        let (Some(&a), Some(sid)) = (first.bytes.first(), session_id(&first.bytes)) else {
            return Ok(None);
        };
        let mut distinct_sid = [false; 256];
        let spread = sid
            .iter()
            .filter(|&&b| !std::mem::replace(&mut distinct_sid[usize::from(b)], true))
            .count();
        if first.bytes.len() < 14 || spread < 4 {
            return Ok(None);
        }
        let mut symbols = [a, 0, 0, 0];
        let mut n_symbols = 1;
        let mut moved_on = false;
        let mut matched = 0;
        for (n, f) in frames[1..]
            .iter()
            .filter(|f| f.dir == first.dir)
            .enumerate()
        {
            if n + 1 >= self.xor_window {
                return Ok(None);
            }
            let Some(&b) = f.bytes.first() else {
                return Ok(None);
            };
            if b == a {
                if moved_on || session_id(&f.bytes) != Some(sid) {
                    return Ok(None);
                }
                continue;
            }
            moved_on = true;
            if !symbols[..n_symbols].contains(&b) {
                if n_symbols == symbols.len() {
                    return Ok(None);
                }
                symbols[n_symbols] = b;
                n_symbols += 1;
            }
            if session_id(&f.bytes) == Some(sid) {
                matched += 1;
                if matched >= 3 {
                    return Ok(Some(Verdict {
                        protocol: "openvpn",
                        rule: "xor-session",
                        after: f.after,
                    }));
                }
            }
        }
        Err(Incomplete)
    }

    /// First bytes as opaque symbols: client reset and server reset, each repeated only at
    /// the start of its direction, and few distinct symbols in the window.
    fn xue(&self, frames: &[Frame<'_>]) -> Outcome {
        let mut firsts: [Option<u8>; 2] = [None, None];
        let mut moved_on = [false; 2];
        let mut seen = [false; 256];
        let mut distinct = 0usize;
        for (n, f) in frames.iter().enumerate() {
            if n >= self.xue_window {
                break;
            }
            let Some(&b) = f.bytes.first() else {
                return Ok(None);
            };
            if n == 0 && f.dir != Dir::ToServer {
                return Ok(None);
            }
            let d = usize::from(f.dir == Dir::ToClient);
            match firsts[d] {
                None => {
                    if firsts[1 - d] == Some(b) {
                        return Ok(None); // both sides open with the same symbol: not two resets
                    }
                    firsts[d] = Some(b);
                }
                Some(r) if r == b => {
                    if moved_on[d] {
                        return Ok(None); // a reset symbol recurring mid-flow
                    }
                }
                Some(_) => moved_on[d] = true,
            }
            if firsts[1 - d] == Some(b) && firsts[d] != Some(b) {
                return Ok(None); // the other side's reset symbol used here
            }
            if !seen[usize::from(b)] {
                seen[usize::from(b)] = true;
                distinct += 1;
                if distinct > self.xue_max_distinct {
                    return Ok(None);
                }
            }
        }
        if frames.len() < self.xue_window {
            return Err(Incomplete);
        }
        let ok = distinct >= self.xue_min_distinct && firsts[1].is_some() && moved_on[0];
        Ok(ok.then(|| Verdict {
            protocol: "openvpn",
            rule: "xue-opcodes",
            after: frames[self.xue_window - 1].after,
        }))
    }

    /// Pre-shared-key mode: lengths fit one HMAC/IV/CBC layout, contents look random.
    fn static_key(&self, frames: &[Frame<'_>]) -> Outcome {
        let mut fits = [true; STATIC_KEY_LAYOUTS.len()];
        let mut server = false;
        for (n, f) in frames.iter().enumerate() {
            let len = f.bytes.len();
            for (ok, (h, b)) in fits.iter_mut().zip(STATIC_KEY_LAYOUTS) {
                *ok &= len >= h + 2 * b && (len - h) % b == 0;
            }
            if !fits.iter().any(|&x| x) || known_header(&f.bytes) {
                return Ok(None);
            }
            server |= f.dir == Dir::ToClient;
            // The entropy tests scan every byte: run them once, when the window is complete
            // (the detector is re-asked after every packet).
            if n + 1 >= self.static_window && server {
                let random = frames[..=n]
                    .iter()
                    .all(|f| fully_encrypted::exemption(&f.bytes, &self.wu).is_none());
                return Ok(random.then_some(Verdict {
                    protocol: "openvpn",
                    rule: "static-key",
                    after: f.after,
                }));
            }
        }
        Err(Incomplete)
    }
}

/// Random-looking protocols with a recognisable plaintext header that static-key OpenVPN
/// (random from the first byte) cannot have: QUIC long headers with a known version
/// (RFC 9000 section 17.2, RFC 9369, drafts `ff0000xx`, Google `Q0xx`) and DTLS records
/// (RFC 6347 section 4.1).
fn known_header(p: &[u8]) -> bool {
    let quic = p.len() >= 5 && p[0] & 0xc0 == 0xc0 && {
        let v = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
        matches!(v, 0 | 1 | 0x6b33_43cf) || v >> 8 == 0xff_0000 || v >> 16 == 0x5130
    };
    let dtls = p.len() >= 13 && (20..=25).contains(&p[0]) && p[1] == 0xfe && p[2] >= 0xfc;
    quic || dtls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{
        alternating, flow, flow_of, hex, packets, rule_after, to_c, to_s,
    };
    use crate::detect::Packet;

    /// The rule the default detector decides `raw` (a flow to `port`) by, after `after`
    /// packets.
    fn rule(t: Transport, port: u16, raw: &[(Dir, Vec<u8>)], after: usize) -> &'static str {
        rule_after(&OpenVpn::default(), t, port, &packets(raw), after)
    }

    /// Packets from `tests/data/<name>.txt`, embedded at compile time (detect does no I/O).
    pub(crate) fn load(name: &str) -> Vec<(Dir, Vec<u8>)> {
        let text = match name {
            "openvpn-udp-tls" => include_str!("../../tests/data/openvpn-udp-tls.txt"),
            "openvpn-udp-static" => include_str!("../../tests/data/openvpn-udp-static.txt"),
            "openvpn-tcp-tls" => include_str!("../../tests/data/openvpn-tcp-tls.txt"),
            "openvpn-tcp-static" => include_str!("../../tests/data/openvpn-tcp-static.txt"),
            other => panic!("no embedded packet file {other}"),
        };
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (d, h) = l.split_once(' ').unwrap();
                (
                    if d == "c" {
                        Dir::ToServer
                    } else {
                        Dir::ToClient
                    },
                    hex(h),
                )
            })
            .collect()
    }

    #[test]
    fn real_udp_tls_auth_handshake_decides_on_the_server_reset() {
        let raw = load("openvpn-udp-tls");
        assert_eq!(rule(Transport::Udp, 1194, &raw, 2), "handshake");
    }

    #[test]
    fn real_tcp_tls_auth_handshake_decides_on_the_server_reset() {
        let raw = load("openvpn-tcp-tls");
        assert_eq!(rule(Transport::Tcp, 1194, &raw, 2), "handshake");
    }

    #[test]
    fn real_static_key_flows_are_caught_by_the_layout_rule() {
        let raw = load("openvpn-udp-static");
        assert_eq!(rule(Transport::Udp, 1194, &raw, 8), "static-key");
        let raw = load("openvpn-tcp-static");
        let pk = packets(&raw);
        let d = OpenVpn::default();
        let v = d.detect(&flow(Transport::Tcp, 1194, &pk)).unwrap().unwrap();
        assert_eq!((v.protocol, v.rule), ("openvpn", "static-key"));
    }

    #[test]
    fn xor_obfuscated_handshake_is_caught_by_the_opcode_fingerprint() {
        let raw = load("openvpn-udp-tls");
        let xored: Vec<(Dir, Vec<u8>)> = raw
            .iter()
            .map(|(d, p)| (*d, p.iter().map(|b| b ^ 0x5c).collect()))
            .collect();
        let pk = packets(&xored);
        let d = OpenVpn::default();
        assert_eq!(
            handshake_of(&d, &pk[..2]),
            Ok(None),
            "the plain handshake rule is blind to XOR"
        );
        // The masked session id gives it away first: the client's reset (packet 1) and three
        // more of its packets with the same session id, in tests/data/captures/udp-tls-auth.pcap
        // (OpenVPN 2.6) its P_CONTROL_V1 with the ClientHello (3), a P_ACK_V1 (6) and the
        // next P_CONTROL_V1 (7). The data-channel packets (13-16, P_DATA_V2) complete the
        // 16-packet window of the opcode fingerprint.
        assert_eq!(
            rule_after(&d, Transport::Udp, 1194, &pk, 7),
            "xor-session",
            "the masked session id gives it away first"
        );
        let xue_only = OpenVpn {
            xor_window: 0,
            ..OpenVpn::default()
        };
        assert_eq!(
            rule_after(&xue_only, Transport::Udp, 1194, &pk, 16),
            "xue-opcodes"
        );
    }

    fn handshake_of(d: &OpenVpn, pk: &[Packet<'_>]) -> Outcome {
        let (fr, _) = frames(&flow(Transport::Udp, 1194, pk), d.xue_window).unwrap();
        handshake(&fr)
    }

    #[test]
    fn a_server_reset_not_acknowledging_the_client_is_rejected() {
        let raw = load("openvpn-udp-tls");
        let mut server = raw[1].1.clone();
        let n = server.len();
        server[n - 12..n - 4].copy_from_slice(&[0; 8]); // the acked remote session id
        let pk = [to_s(&raw[0].1), to_c(&server)];
        assert_eq!(handshake_of(&OpenVpn::default(), &pk), Ok(None));
    }

    #[test]
    fn every_byte_prefix_of_a_real_client_reset_is_safe() {
        let raw = load("openvpn-tcp-tls");
        let d = OpenVpn::default();
        for n in 0..raw[0].1.len() {
            let pk = [to_s(&raw[0].1[..n])];
            let got = d.detect(&flow(Transport::Tcp, 1194, &pk));
            assert!(
                got == Err(Incomplete) || got == Ok(None),
                "{n} bytes: {got:?}"
            );
        }
    }

    #[test]
    fn padded_quic_initials_are_not_static_key_openvpn() {
        // 1252-byte QUIC v1 Initials fit the HMAC/IV/CBC layout and look random; the long
        // header's version gives them away (a false positive seen in non-vpn.pcap).
        let body = crate::detect::fully_encrypted::tests::random_bytes(1252, 11);
        let raw = flow_of(
            20,
            |i| i % 4 == 3,
            |i| {
                let mut p = body.clone();
                p[..5].copy_from_slice(&[0xc0 | (i as u8 & 0x0f), 0, 0, 0, 1]);
                p
            },
        );
        let pk = packets(&raw);
        assert_eq!(
            OpenVpn::default().detect(&flow(Transport::Udp, 4001, &pk)),
            Ok(None)
        );
    }

    #[test]
    fn mid_flow_data_and_tls_are_not_openvpn() {
        // A P_DATA_V2 stream caught mid-flow (as in non-vpn.pcap): no reset, no decision.
        let raw = flow_of(
            20,
            |i| i % 3 != 0,
            |i| {
                let i = i as u8;
                let mut p = vec![0x48, 0, 0, 0x0d, 0, 0, 0xe0, i];
                p.extend(std::iter::repeat_n(i.wrapping_mul(37), 60 + usize::from(i)));
                p
            },
        );
        let pk = packets(&raw);
        assert_eq!(
            OpenVpn::default().detect(&flow(Transport::Udp, 1194, &pk)),
            Ok(None)
        );
        let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01];
        let pk = [to_s(&hello)];
        assert_eq!(
            OpenVpn::default().detect(&flow(Transport::Tcp, 443, &pk)),
            Ok(None),
            "TLS record framing"
        );
    }

    fn only(raw: &[(Dir, Vec<u8>)], keep: Dir) -> Vec<(Dir, Vec<u8>)> {
        raw.iter()
            .filter(|(d, _)| *d == keep)
            .map(|(_, p)| (Dir::ToServer, p.clone()))
            .collect()
    }

    #[test]
    fn one_direction_decides_on_the_reset_and_the_first_control_packet() {
        // Asymmetric routing: only the client's packets are seen (UDP and TCP).
        for (name, t) in [
            ("openvpn-udp-tls", Transport::Udp),
            ("openvpn-tcp-tls", Transport::Tcp),
        ] {
            let raw = only(&load(name), Dir::ToServer);
            assert_eq!(rule(t, 1194, &raw, 2), "reset-session", "{name}");
        }
        // A NAT'd capture where the server's direction is its own flow (its sender opens it).
        let raw = only(&load("openvpn-udp-tls"), Dir::ToClient);
        assert_eq!(rule(Transport::Udp, 40000, &raw, 2), "reset-session");
    }

    /// A tls-crypt(-v2) packet: opcode, session id, packet id, time, 32-byte tag, then the
    /// encrypted rest (acks included), here pseudo-random.
    fn tls_crypt(op: u8, sid: [u8; 8], pid: u32, extra: usize, seed: u64) -> Vec<u8> {
        let mut p = vec![op << 3];
        p.extend_from_slice(&sid);
        p.extend_from_slice(&pid.to_be_bytes());
        p.extend_from_slice(&0x6600_43a7u32.to_be_bytes());
        p.extend(crate::detect::fully_encrypted::tests::random_bytes(
            32 + extra,
            seed,
        ));
        p
    }

    fn tls_crypt_flow(v3: bool) -> Vec<(Dir, Vec<u8>)> {
        let (c, s) = (
            [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            [9, 8, 7, 6, 5, 4, 3, 2],
        );
        let first = if v3 {
            HARD_RESET_CLIENT_V3
        } else {
            HARD_RESET_CLIENT_V2
        };
        // tls-crypt-v2 appends the wrapped client key (WKc, ~290 bytes) to the reset.
        let wkc = if v3 { 290 } else { 0 };
        let ctl = if v3 { CONTROL_WKC_V1 } else { CONTROL_V1 };
        vec![
            (Dir::ToServer, tls_crypt(first, c, 0, 5 + wkc, 1)),
            (Dir::ToClient, tls_crypt(HARD_RESET_SERVER_V2, s, 0, 17, 2)),
            (Dir::ToServer, tls_crypt(ctl, c, 1, 300 + wkc, 3)),
            (Dir::ToClient, tls_crypt(CONTROL_V1, s, 1, 1100, 4)),
            (Dir::ToServer, tls_crypt(ACK_V1, c, 2, 20, 5)),
        ]
    }

    #[test]
    fn tls_crypt_and_tls_crypt_v2_over_udp_and_tcp_on_443() {
        for v3 in [false, true] {
            let raw = tls_crypt_flow(v3);
            assert_eq!(
                rule(Transport::Udp, 443, &raw, 3),
                "reset-session",
                "v3={v3}: acks are encrypted"
            );
            // Over TCP: 2-byte length framing, the client's packets split across segments.
            let mut tcp = Vec::new();
            for (d, p) in &raw {
                let mut framed = (p.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(p);
                let (a, b) = framed.split_at(framed.len() / 2);
                tcp.push((*d, a.to_vec()));
                tcp.push((*d, b.to_vec()));
            }
            assert_eq!(rule(Transport::Tcp, 443, &tcp, 6), "reset-session");
        }
    }

    #[test]
    fn position_xor_masked_one_direction_is_caught_by_the_session_rule() {
        let key = b"obfuscation-key!";
        let raw: Vec<(Dir, Vec<u8>)> = only(&load("openvpn-udp-tls"), Dir::ToServer)
            .into_iter()
            .map(|(d, p)| {
                let x = p
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % key.len()])
                    .collect();
                (d, x)
            })
            .collect();
        let pk = packets(&raw);
        let d = OpenVpn::default();
        assert_eq!(rule_after(&d, Transport::Udp, 1194, &pk, 4), "xor-session");
    }

    #[test]
    fn quic_dtls_stun_rtp_and_dns_flows_are_never_openvpn() {
        use crate::detect::known::build;
        let d = OpenVpn::default();
        let mut flows: Vec<Vec<(Dir, Vec<u8>)>> = Vec::new();
        // Google QUIC Q043: few distinct public flags, a constant connection id at 1..9.
        flows.push(flow_of(
            20,
            |i| i % 3 == 1,
            |i| {
                let mut p = build::gquic_q043(1350 - i * 7);
                if i > 0 {
                    p[0] = if i % 2 == 0 { 0x08 } else { 0x18 };
                }
                p
            },
        ));
        // IETF QUIC v1, v2 and a draft: Initial then short headers with a constant DCID.
        for v in [1u32, 0x6b33_43cf, 0xff00_001d] {
            flows.push(flow_of(
                20,
                |i| i % 3 == 1,
                |i| {
                    let mut p = build::quic_initial(v, 1200);
                    if i > 0 {
                        p[0] = 0x40 | (i as u8 & 3);
                    }
                    p
                },
            ));
        }
        flows.push(alternating(20, |i| {
            let ct = if i < 4 { 22 } else { 23 };
            build::dtls_record(ct, u16::from(i >= 4), i as u64, 100 + i)
        }));
        flows.push(alternating(20, |i| build::rtp(100 + (i / 2) as u16, 172)));
        flows.push(vec![
            (Dir::ToServer, build::stun_binding(1)),
            (Dir::ToClient, build::stun_binding(1)),
        ]);
        flows.push(vec![(
            Dir::ToServer,
            build::dns_query(0x3800, "example.org"),
        )]);
        for (i, f) in flows.iter().enumerate() {
            let pk = packets(f);
            for port in [443, 1194, 4001] {
                let got = d.detect(&flow(Transport::Udp, port, &pk));
                assert!(!matches!(got, Ok(Some(_))), "flow {i} port {port}: {got:?}");
            }
        }
    }
}
