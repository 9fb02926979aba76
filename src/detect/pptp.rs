//! PPTP detector, from RFC 2637 (Point-to-Point Tunneling Protocol), section 2.1–2.2.
//!
//! PPTP's control connection is TCP (port 1723). Every control message starts with a length
//! (2 bytes), a PPTP message type (1 = control message), the magic cookie `0x1A2B3C4D` and a
//! control message type; a client opens with Start-Control-Connection-Request (type 1, 156
//! bytes). The rule `sccrq` fires once the client's first 12 bytes match that header, on any
//! port (the magic cookie is specific enough).

use super::{Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

/// The PPTP magic cookie.
pub const MAGIC_COOKIE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];
/// Length of a Start-Control-Connection-Request.
pub const SCCRQ_LEN: u16 = 156;

/// The PPTP detector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pptp;

impl Detector for Pptp {
    fn name(&self) -> &'static str {
        "pptp"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Tcp {
            return Ok(None);
        }
        let mut head = [0u8; 12];
        let mut have = 0;
        for (i, p) in flow.packets.iter().enumerate() {
            if p.dir != Dir::ToServer {
                if have == 0 {
                    return Ok(None); // the server spoke first
                }
                continue;
            }
            let take = (12 - have).min(p.payload.len());
            head[have..have + take].copy_from_slice(&p.payload[..take]);
            have += take;
            // Reject as soon as a received byte disagrees.
            let want = sccrq_header();
            if head[..have] != want[..have] {
                return Ok(None);
            }
            if have == 12 {
                return Ok(Some(Verdict {
                    protocol: "pptp",
                    rule: "sccrq",
                    after: i + 1,
                }));
            }
        }
        Err(Incomplete)
    }
}

/// The first 12 bytes of a Start-Control-Connection-Request.
pub fn sccrq_header() -> [u8; 12] {
    let l = SCCRQ_LEN.to_be_bytes();
    let c = MAGIC_COOKIE;
    [l[0], l[1], 0, 1, c[0], c[1], c[2], c[3], 0, 1, 0, 0]
}

/// A full 156-byte SCCRQ (protocol version 1.0, framing and bearer capabilities set).
pub fn sccrq() -> Vec<u8> {
    let mut p = vec![0u8; usize::from(SCCRQ_LEN)];
    p[..12].copy_from_slice(&sccrq_header());
    p[12..14].copy_from_slice(&[1, 0]); // protocol version 1.0
    p[16..20].copy_from_slice(&3u32.to_be_bytes()); // framing capabilities
    p[20..24].copy_from_slice(&3u32.to_be_bytes()); // bearer capabilities
    p[28..36].copy_from_slice(b"blocklab");
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{every_prefix, flow};
    use crate::detect::Packet;

    #[test]
    fn sccrq_split_over_segments_decides_at_the_twelfth_byte() {
        let m = sccrq();
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &m[..5],
            },
            Packet {
                dir: Dir::ToServer,
                payload: &m[5..11],
            },
            Packet {
                dir: Dir::ToServer,
                payload: &m[11..],
            },
            Packet {
                dir: Dir::ToClient,
                payload: &m,
            },
        ];
        every_prefix(&Pptp, Transport::Tcp, 1723, &pk, 3, Some("pptp"));
    }

    #[test]
    fn every_byte_prefix_is_incomplete_until_the_cookie_then_found() {
        let m = sccrq();
        for n in 1..m.len() {
            let pk = [Packet {
                dir: Dir::ToServer,
                payload: &m[..n],
            }];
            let got = Pptp.detect(&flow(Transport::Tcp, 1723, &pk));
            if n < 12 {
                assert_eq!(got, Err(Incomplete), "{n} bytes");
            } else {
                assert_eq!(got.unwrap().map(|v| v.protocol), Some("pptp"), "{n} bytes");
            }
        }
    }

    #[test]
    fn wrong_cookie_or_udp_is_not_pptp() {
        let mut m = sccrq();
        m[7] = 0x4e;
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &m,
        }];
        assert_eq!(Pptp.detect(&flow(Transport::Tcp, 1723, &pk)), Ok(None));
        let m = sccrq();
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &m,
        }];
        assert_eq!(Pptp.detect(&flow(Transport::Udp, 1723, &pk)), Ok(None));
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: b"GET / HTTP/1.1\r\n",
        }];
        assert_eq!(Pptp.detect(&flow(Transport::Tcp, 1723, &pk)), Ok(None));
    }
}
