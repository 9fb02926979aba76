//! TLS records of a TCP flow, and a flow's ClientHello and its JA4 client fingerprint
//! (FoxIO, `technical_details/JA4.md` in github.com/FoxIO-LLC/ja4), read with the one
//! ClientHello parser and JA4 implementation, [`crate::sniff::client_hello`].
//!
//! Pure and allocation-light: the record framer keeps only (type, length, packet) triples;
//! the client's bytes are gathered into one buffer until the parser answers (at most the
//! parser's largest ClientHello plus record headers). DTLS ClientHellos (RFC 6347 section
//! 4.2.2) are fingerprinted with the `d` prefix.

use super::{Dir, Flow};
use crate::sniff::client_hello::{self, ClientHello};

/// One TLS record of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Content type (20 CCS, 21 alert, 22 handshake, 23 application data).
    pub kind: u8,
    /// Record length (the 2-byte length field).
    pub len: usize,
    /// Payload packets of the flow needed to complete it.
    pub after: usize,
}

/// The records of `dir`, at most `max`, and whether the stream stayed TLS records (records
/// before a bad header are kept, so a longer flow never loses one).
pub fn records(flow: &Flow<'_>, dir: Dir, max: usize) -> (Vec<Record>, bool) {
    let mut out = Vec::new();
    let mut hdr = [0u8; 5];
    let mut have = 0usize;
    let mut left = 0usize;
    for (i, p) in flow.packets.iter().enumerate() {
        if p.dir != dir {
            continue;
        }
        let mut rest = p.payload;
        while !rest.is_empty() && out.len() < max {
            if left > 0 {
                let take = left.min(rest.len());
                left -= take;
                rest = &rest[take..];
                if left == 0 {
                    out.push(Record {
                        kind: hdr[0],
                        len: usize::from(u16::from_be_bytes([hdr[3], hdr[4]])),
                        after: i + 1,
                    });
                }
                continue;
            }
            let take = (5 - have).min(rest.len());
            hdr[have..have + take].copy_from_slice(&rest[..take]);
            have += take;
            rest = &rest[take..];
            if have == 5 {
                have = 0;
                if !(20..=24).contains(&hdr[0]) || hdr[1] != 3 {
                    return (out, false);
                }
                left = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
                if left == 0 || left > 18432 {
                    return (out, false);
                }
            }
        }
    }
    (out, true)
}

/// A parsed ClientHello: the sniff parser's, owned.
pub type Hello = ClientHello<'static>;

/// The most client bytes gathered while looking for a ClientHello (its largest size plus
/// record headers).
const MAX_STREAM: usize = client_hello::MAX_HELLO + 4096;

/// The ClientHello the client sent on a TLS-over-TCP flow (reassembled from its handshake
/// records) with the payload packets it took, `Err(super::Incomplete)` while incomplete,
/// `Ok(None)` if the flow does not start with one.
pub fn tls_client_hello(flow: &Flow<'_>) -> Result<Option<(Hello, usize)>, super::Incomplete> {
    let mut stream: Vec<u8> = Vec::new();
    for (i, p) in flow
        .packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.dir == Dir::ToServer)
    {
        stream.extend_from_slice(p.payload);
        match client_hello::parse(&stream) {
            Ok(h) => return Ok(h.map(|h| (h.into_owned(), i + 1))),
            Err(client_hello::Incomplete) if stream.len() > MAX_STREAM => return Ok(None),
            Err(client_hello::Incomplete) => {}
        }
    }
    Err(super::Incomplete)
}

/// The ClientHello in a datagram if it is a DTLS handshake record carrying a complete
/// ClientHello.
pub fn dtls_client_hello(p: &[u8]) -> Option<Hello> {
    client_hello::parse_dtls(p)
        .ok()
        .flatten()
        .map(ClientHello::into_owned)
}

/// Datagrams of a UDP flow searched for its DTLS ClientHello.
pub const DTLS_SEARCH: usize = 16;

/// The DTLS ClientHello of a UDP flow: the first datagram that is a DTLS record is read, in
/// either direction (in WebRTC the DTLS client is the SDP answerer, which need not be the
/// side that sent first: Snowflake's proxies send the ClientHello toward the censored user);
/// datagrams before it that WebRTC sends first ([`super::known::before_dtls`]: STUN checks,
/// TURN channel data, RTP) are skipped. `None`
/// while it may still come (no datagram but these yet, fewer than [`DTLS_SEARCH`]),
/// `Some(None)` if the flow has none.
pub fn udp_client_hello(flow: &Flow<'_>) -> Option<Option<Hello>> {
    for (i, p) in flow.packets.iter().enumerate() {
        match p.payload.first() {
            Some(20..=63) => return Some(dtls_client_hello(p.payload)),
            _ if i + 1 < DTLS_SEARCH && super::known::before_dtls(p.payload) => {}
            _ => return Some(None),
        }
    }
    None
}

/// The flow's JA4 once its ClientHello is complete: from the TLS ClientHello of a TCP flow
/// or the DTLS ClientHello of a UDP flow (see [`udp_client_hello`]); `None` while it may
/// still come, `Some(None)` when the flow has none.
pub fn flow_ja4(flow: &Flow<'_>) -> Option<Option<String>> {
    match flow.transport {
        super::Transport::Tcp => tls_client_hello(flow)
            .ok()
            .map(|h| h.map(|(h, _)| h.ja4().to_string())),
        super::Transport::Udp => udp_client_hello(flow).map(|h| h.map(|h| h.ja4().to_string())),
    }
}

/// Builders of ClientHellos (tests and benchmarks).
pub mod build {
    /// A TLS ClientHello record with these fields (extension bodies filled for SNI, ALPN,
    /// signature algorithms and supported versions; others empty).
    pub fn client_hello(
        ciphers: &[u16],
        extensions: &[u16],
        sni: Option<&str>,
        alpn: &[&str],
        sig_algs: &[u16],
        versions: &[u16],
    ) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend_from_slice(&c.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        for &e in extensions {
            let data: Vec<u8> = match e {
                0 => match sni {
                    Some(n) => {
                        let mut d = ((n.len() + 3) as u16).to_be_bytes().to_vec();
                        d.push(0);
                        d.extend_from_slice(&(n.len() as u16).to_be_bytes());
                        d.extend_from_slice(n.as_bytes());
                        d
                    }
                    None => continue,
                },
                16 => {
                    let mut l = Vec::new();
                    for a in alpn {
                        l.push(a.len() as u8);
                        l.extend_from_slice(a.as_bytes());
                    }
                    let mut d = (l.len() as u16).to_be_bytes().to_vec();
                    d.extend(l);
                    d
                }
                13 => {
                    let mut d = ((sig_algs.len() * 2) as u16).to_be_bytes().to_vec();
                    for s in sig_algs {
                        d.extend_from_slice(&s.to_be_bytes());
                    }
                    d
                }
                43 => {
                    let mut d = vec![(versions.len() * 2) as u8];
                    for v in versions {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                    d
                }
                _ => Vec::new(),
            };
            exts.extend_from_slice(&e.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend(body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::flow;
    use crate::detect::{Packet, Transport};

    /// A STUN binding request and pion's default DTLS ClientHello, the first two client
    /// datagrams of `tests/data/webrtc/pion-datachannel.pcap`, one a line as hex.
    fn webrtc_datagrams() -> Vec<Vec<u8>> {
        include_str!("../../tests/data/webrtc/stun-then-dtls-hello.hex")
            .lines()
            .map(crate::detect::testutil::hex)
            .collect()
    }

    #[test]
    fn a_dtls_hello_after_stun_checks_is_fingerprinted_in_either_direction() {
        let d = webrtc_datagrams();
        let (stun, hello) = (&d[0][..], &d[1][..]);
        let ja4 = |packets: &[(Dir, &[u8])]| {
            let raw: Vec<(Dir, Vec<u8>)> = packets.iter().map(|(d, p)| (*d, p.to_vec())).collect();
            let packets = Packet::all(&raw);
            udp_client_hello(&flow(Transport::Udp, 50000, &packets))
                .map(|h| h.map(|h| h.ja4().to_string()))
        };
        let pion = Some(Some("dd2i060600_b94582744588_4bbccbffe950".to_string()));
        let (c, s) = (Dir::ToServer, Dir::ToClient);
        assert_eq!(ja4(&[(c, stun), (s, stun), (c, hello)]), pion);
        // The answerer (DTLS client) need not be the side that sent first.
        assert_eq!(ja4(&[(c, stun), (s, stun), (s, hello)]), pion);
        // Only STUN so far: the hello may still come; after too many, it is given up.
        assert_eq!(ja4(&[(c, stun), (s, stun)]), None);
        let many = vec![(c, stun); DTLS_SEARCH];
        assert_eq!(ja4(&many), Some(None));
        // A flow whose first datagram is neither STUN nor DTLS has none.
        assert_eq!(ja4(&[(c, &[0xe0, 1, 2, 3][..]), (c, hello)]), Some(None));
    }

    /// Chrome's ClientHello as listed (original order, `ja4_ro`) by browserleaks.com, with its
    /// published JA4 `t13d1516h2_8daaf6152771_d8a2da3f94cd`.
    fn chrome() -> Vec<u8> {
        let ciphers = [
            0x0a0a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let exts = [
            0x1a1a, 0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b,
            0xff01, 0x0023, 0x0012, 0x0005, 0x000d, 0x001b, 0x2a2a,
        ];
        let sigs = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        build::client_hello(
            &ciphers,
            &exts,
            Some("tls.browserleaks.com"),
            &["h2", "http/1.1"],
            &sigs,
            &[0x3a3a, 0x0304, 0x0303],
        )
    }

    #[test]
    fn ja4_of_a_published_chrome_hello() {
        let rec = chrome();
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &rec,
        }];
        let (h, after) = tls_client_hello(&flow(Transport::Tcp, 443, &pk))
            .unwrap()
            .unwrap();
        assert_eq!(after, 1);
        assert_eq!(h.sni(), Some("tls.browserleaks.com"));
        assert_eq!(h.ja4().as_str(), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
    }

    #[test]
    fn hello_split_over_segments_is_reassembled_and_prefixes_are_incomplete() {
        let rec = chrome();
        let (a, b) = rec.split_at(100);
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: a,
            },
            Packet {
                dir: Dir::ToServer,
                payload: b,
            },
        ];
        assert_eq!(
            tls_client_hello(&flow(Transport::Tcp, 443, &pk[..1])),
            Err(crate::detect::Incomplete)
        );
        let f = flow(Transport::Tcp, 443, &pk);
        assert_eq!(
            flow_ja4(&f).flatten().as_deref(),
            Some("t13d1516h2_8daaf6152771_d8a2da3f94cd")
        );
        for n in 0..rec.len() {
            let pk = [Packet {
                dir: Dir::ToServer,
                payload: &rec[..n],
            }];
            assert!(tls_client_hello(&flow(Transport::Tcp, 443, &pk)).is_err());
        }
    }

    #[test]
    fn no_sni_no_alpn_and_non_tls_streams() {
        let rec = build::client_hello(&[0x1301], &[0x000d], None, &[], &[0x0403], &[]);
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &rec,
        }];
        let j = flow_ja4(&flow(Transport::Tcp, 443, &pk)).flatten().unwrap();
        assert!(j.starts_with("t12i010100_"), "{j}");
        let http = [Packet {
            dir: Dir::ToServer,
            payload: b"GET / HTTP/1.1\r\n\r\n",
        }];
        assert_eq!(tls_client_hello(&flow(Transport::Tcp, 80, &http)), Ok(None));
    }

    #[test]
    fn records_are_framed_across_segments() {
        let a = [22u8, 3, 1, 0, 2, 1];
        let b = [2u8, 23, 3, 3, 0, 1, 9];
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &a,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &b,
            },
        ];
        let (r, ok) = records(&flow(Transport::Tcp, 443, &pk), Dir::ToServer, 8);
        assert!(ok);
        assert_eq!(
            r,
            vec![
                Record {
                    kind: 22,
                    len: 2,
                    after: 2
                },
                Record {
                    kind: 23,
                    len: 1,
                    after: 2
                }
            ]
        );
    }
}
