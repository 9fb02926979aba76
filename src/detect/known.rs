//! Recognisers for common non-VPN protocols whose packets can look like a VPN's: IETF QUIC
//! long headers (RFC 9000 section 17.2; v2 RFC 9369; drafts `ff0000xx`), Google QUIC (public
//! header with version `Q0xx` up to Q043, long header `Q046`/`Q050`, `T0xx`), DTLS records
//! (RFC 6347 section 4.1, RFC 9147), STUN (RFC 8489 section 5: magic cookie), RTP version 2
//! (RFC 3550 section 5.1, only with a plausible payload type), DNS queries and responses
//! (RFC 1035 section 4.1) and TLS records (RFC 8446 section 5.1).
//!
//! The VPN detectors ask [`plaintext`] about the first packet of each direction and never name
//! a flow that opens with one of these: a known plaintext header means "not a VPN" (a VPN
//! disguised as one of them is the bypass detectors' business).

/// A protocol recognised from its plaintext header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// IETF QUIC long header with a known version.
    Quic,
    /// Google QUIC (`Q0xx`, `T0xx`).
    GoogleQuic,
    /// A DTLS record.
    Dtls,
    /// A STUN message.
    Stun,
    /// An RTP packet.
    Rtp,
    /// A DNS message.
    Dns,
    /// A TLS record.
    Tls,
}

fn be32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

/// Google QUIC version tags `Q0xx` / `T0xx` (ASCII).
fn google_version(v: u32) -> bool {
    let b = v.to_be_bytes();
    matches!(b[0], b'Q' | b'T') && b[1..].iter().all(u8::is_ascii_digit)
}

/// IETF QUIC versions: v1, v2 (RFC 9369), drafts `ff0000xx`, version negotiation (0).
fn ietf_version(v: u32) -> bool {
    matches!(v, 0 | 1 | 0x6b33_43cf) || v >> 8 == 0x00ff_0000
}

/// A QUIC long header (IETF or Google), or a Google QUIC public header with a version.
pub fn quic(p: &[u8]) -> Option<Known> {
    let first = *p.first()?;
    if first & 0x80 != 0 {
        let v = be32(p, 1)?;
        if ietf_version(v) && p.len() >= 7 {
            return Some(Known::Quic);
        }
        if google_version(v) {
            return Some(Known::GoogleQuic);
        }
    }
    // gQUIC <= Q043 public header: flags (0x01 version present, 0x08 8-byte connection id),
    // connection id, version tag.
    if first & 0x89 == 0x09 && p.len() >= 13 {
        if let Some(v) = be32(p, 9) {
            if google_version(v) {
                return Some(Known::GoogleQuic);
            }
        }
    }
    None
}

/// A DTLS 1.0/1.2 record header (content type 20–25, version `fe ff`/`fe fd`/`fe fc`) whose
/// length matches, or a DTLS 1.3 unified header is not claimed (it is encrypted).
pub fn dtls(p: &[u8]) -> bool {
    p.len() >= 13
        && (20..=25).contains(&p[0])
        && p[1] == 0xfe
        && matches!(p[2], 0xff | 0xfd | 0xfc)
        && usize::from(u16::from_be_bytes([p[11], p[12]])) + 13 <= p.len()
}

/// A STUN message: top bits 00, length a multiple of 4 matching, magic cookie `2112a442`.
pub fn stun(p: &[u8]) -> bool {
    p.len() >= 20
        && p[0] & 0xc0 == 0
        && be32(p, 4) == Some(0x2112_a442)
        && usize::from(u16::from_be_bytes([p[2], p[3]])) + 20 == p.len()
}

/// RTP version 2 with a static or common dynamic payload type and no CSRC overflow.
pub fn rtp(p: &[u8]) -> bool {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return false;
    }
    let pt = p[1] & 0x7f;
    let csrc = usize::from(p[0] & 0x0f);
    // RTCP (payload types 72..=76 with the marker bit: 200..=204) also qualifies.
    let rtcp = (200..=206).contains(&p[1]);
    (rtcp || pt <= 34 || (96..=127).contains(&pt)) && 12 + 4 * csrc <= p.len()
}

/// A datagram WebRTC may send before its DTLS handshake on the same ports (RFC 7983's
/// demultiplexing): STUN connectivity checks, TURN channel data (first byte 64–79), RTP/RTCP.
pub fn before_dtls(p: &[u8]) -> bool {
    stun(p) || rtp(p) || matches!(p.first(), Some(64..=79))
}

/// A DNS message: at most a few questions and records, and a well-formed first question name.
pub fn dns(p: &[u8]) -> bool {
    if p.len() < 17 {
        return false;
    }
    let count = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let opcode = (p[2] >> 3) & 0x0f;
    if qd != 1 || an > 64 || ns > 64 || ar > 64 || opcode > 5 || p[3] & 0x40 != 0 {
        return false;
    }
    // QNAME: labels of 1..=63 bytes ending in a zero byte, then QTYPE and QCLASS.
    let mut at = 12;
    loop {
        let Some(&len) = p.get(at) else { return false };
        if len == 0 {
            break;
        }
        if len > 63 || at > 12 + 255 {
            return false;
        }
        at += 1 + usize::from(len);
    }
    let Some(qclass) = p.get(at + 3..at + 5) else {
        return false;
    };
    matches!(u16::from_be_bytes([qclass[0], qclass[1]]), 1 | 3 | 4 | 255)
}

/// A TLS record header: content type 20–24, version `03 00`–`03 04`, length <= 2^14 + 2048.
pub fn tls(p: &[u8]) -> bool {
    p.len() >= 5
        && (20..=24).contains(&p[0])
        && p[1] == 3
        && p[2] <= 4
        && u16::from_be_bytes([p[3], p[4]]) <= 18432
}

/// The plaintext protocol `p` (a UDP datagram, or the start of a TCP stream) opens with.
pub fn plaintext(p: &[u8], udp: bool) -> Option<Known> {
    if tls(p) {
        return Some(Known::Tls);
    }
    if !udp {
        return None;
    }
    if let Some(k) = quic(p) {
        return Some(k);
    }
    if dtls(p) {
        Some(Known::Dtls)
    } else if stun(p) {
        Some(Known::Stun)
    } else if dns(p) {
        Some(Known::Dns)
    } else {
        None
    }
}

/// Two RTP packets of one stream: same payload type and SSRC, sequence number + 1 (one RTP
/// header alone is too weak: a quarter of random first bytes have version 2).
pub fn rtp_pair(a: &[u8], b: &[u8]) -> bool {
    rtp(a)
        && rtp(b)
        && a[1] == b[1]
        && a[8..12] == b[8..12]
        && u16::from_be_bytes([b[2], b[3]]) == u16::from_be_bytes([a[2], a[3]]).wrapping_add(1)
}

/// Whether the first packet of either direction of `flow` is a known plaintext protocol, or
/// (UDP) its first two packets in one direction are one RTP stream.
pub fn flow_is_plaintext(flow: &super::Flow<'_>) -> bool {
    let udp = flow.transport == super::Transport::Udp;
    let mut first: [Option<&[u8]>; 2] = [None, None];
    let mut second = [false; 2];
    for p in flow.packets {
        let d = usize::from(p.dir == super::Dir::ToClient);
        match first[d] {
            None => {
                first[d] = Some(p.payload);
                if plaintext(p.payload, udp).is_some() {
                    return true;
                }
            }
            Some(a) if !second[d] => {
                second[d] = true;
                if udp && rtp_pair(a, p.payload) {
                    return true;
                }
            }
            Some(_) => {}
        }
        if second[0] && second[1] {
            break;
        }
    }
    false
}

/// Builders of negative-control packets (tests and benchmarks).
pub mod build {
    /// A QUIC long-header Initial of `len` bytes with `version` (random-looking body).
    pub fn quic_initial(version: u32, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len.max(1200))
            .map(|i| (i as u8).wrapping_mul(151).wrapping_add(7))
            .collect();
        p[0] = 0xc3;
        p[1..5].copy_from_slice(&version.to_be_bytes());
        p[5] = 8;
        p
    }

    /// A gQUIC Q043 public-header packet (flags 0x0d, 8-byte connection id, version tag).
    pub fn gquic_q043(len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len.max(64))
            .map(|i| (i as u8).wrapping_mul(97).wrapping_add(3))
            .collect();
        p[0] = 0x0d;
        p[9..13].copy_from_slice(b"Q043");
        p
    }

    /// A DTLS 1.2 handshake record carrying `body` bytes.
    pub fn dtls_record(content: u8, epoch: u16, seq: u64, body: usize) -> Vec<u8> {
        let mut p = vec![content, 0xfe, 0xfd];
        p.extend_from_slice(&epoch.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes()[2..]);
        p.extend_from_slice(&(body as u16).to_be_bytes());
        p.extend((0..body).map(|i| (i as u8).wrapping_mul(31)));
        p
    }

    /// A STUN binding request with transaction id byte `t`.
    pub fn stun_binding(t: u8) -> Vec<u8> {
        let mut p = vec![0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        p.extend_from_slice(&[t; 12]);
        p.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
        p
    }

    /// An RTP packet (payload type 111, Opus) with sequence `seq`.
    pub fn rtp(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 111];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend((0..len.saturating_sub(12)).map(|i| (i as u8).wrapping_mul(77) ^ 0x5a));
        p
    }

    /// A DNS query for `name` (dotted), type A, with id `id`.
    pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_negative_and_not_random_bytes() {
        assert_eq!(quic(&build::quic_initial(1, 1200)), Some(Known::Quic));
        assert_eq!(
            quic(&build::quic_initial(0x6b33_43cf, 1200)),
            Some(Known::Quic)
        );
        assert_eq!(
            quic(&build::quic_initial(0xff00_001d, 1200)),
            Some(Known::Quic)
        );
        assert_eq!(
            quic(&build::quic_initial(u32::from_be_bytes(*b"Q050"), 1200)),
            Some(Known::GoogleQuic)
        );
        assert_eq!(quic(&build::gquic_q043(1350)), Some(Known::GoogleQuic));
        assert!(dtls(&build::dtls_record(22, 0, 0, 100)));
        assert!(stun(&build::stun_binding(9)));
        assert!(rtp_pair(&build::rtp(1, 160), &build::rtp(2, 160)));
        assert!(!rtp_pair(&build::rtp(1, 160), &build::rtp(5, 160)));
        assert!(dns(&build::dns_query(7, "example.org")));
        let random: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(plaintext(&random, false), None);
        for n in 0..40 {
            // Prefixes never panic.
            let _ = plaintext(&build::dns_query(7, "example.org")[..n.min(29)], true);
        }
    }
}
