//! IKE/IPsec detector, from RFC 7296 (IKEv2, section 3.1 header), RFC 2408 (IKEv1 ISAKMP
//! header) and RFC 3948 (UDP encapsulation of ESP and the non-ESP marker on port 4500).
//!
//! An IKE message starts with a 28-byte header: initiator SPI (8, non-zero), responder SPI (8,
//! zero in the first message of an exchange), next payload, version (`0x10` IKEv1, `0x20`
//! IKEv2), exchange type (IKEv1: 1–5, 32, 33; IKEv2: 34–37, 43), flags, message id and a total
//! length that must equal the datagram's. On UDP 4500 IKE is preceded by a 4-byte zero
//! non-ESP marker, a single `0xff` byte is a NAT keepalive, and anything else is ESP (SPI,
//! sequence number). The rule `exchange` fires when the client's first message opens an
//! exchange and the server's first message answers with the same initiator SPI; ESP and
//! keepalives may follow on 4500 once IKE has been seen.

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
    (ispi != 0 && exchange_ok && usize::try_from(len).ok() == Some(p.len())).then_some(Header {
        ispi,
        rspi,
        major,
        exchange,
    })
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
        let port = flow.server.port();
        if flow.transport != Transport::Udp || !self.ports.contains(&port) {
            return Ok(None);
        }
        let port = if port == self.ports[1] { 4500 } else { 500 };
        let mut ispi = None;
        for (i, p) in flow.packets.iter().enumerate() {
            match (p.dir, parse(port, p.payload), ispi) {
                (Dir::ToServer, Some(Datagram::Ike(h)), None) if h.rspi == 0 => ispi = Some(h.ispi),
                (Dir::ToServer, Some(Datagram::Ike(h)), Some(s)) if h.ispi == s => {}
                (Dir::ToServer, Some(Datagram::Keepalive), Some(_)) => {}
                (Dir::ToClient, Some(Datagram::Ike(h)), Some(s)) if h.ispi == s => {
                    return Ok(Some(Verdict {
                        protocol: "ike",
                        rule: "exchange",
                        after: i + 1,
                    }))
                }
                _ => return Ok(None),
            }
        }
        Err(Incomplete)
    }
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
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{every_prefix, flow};
    use crate::detect::Packet;

    #[test]
    fn ikev2_sa_init_exchange_on_500() {
        let req = build::ike_sa_init(0x0102_0304_0506_0708, 0, false, 300);
        let resp = build::ike_sa_init(0x0102_0304_0506_0708, 0x1111, true, 280);
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &req,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &resp,
            },
        ];
        every_prefix(&Ike::default(), Transport::Udp, 500, &pk, 2, Some("ike"));
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
        let mut req = vec![0, 0, 0, 0];
        req.extend(build::ike_sa_init(9, 0, false, 200));
        let mut resp = vec![0, 0, 0, 0];
        resp.extend(build::ike_sa_init(9, 3, true, 200));
        let esp = [0xc0u8, 1, 2, 3, 0, 0, 0, 1, 9, 9, 9, 9];
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &req,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &resp,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &esp,
            },
        ];
        every_prefix(&Ike::default(), Transport::Udp, 4500, &pk, 2, Some("ike"));
        let no_marker = build::ike_sa_init(9, 0, false, 200);
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &no_marker,
        }];
        assert_eq!(
            Ike::default().detect(&flow(Transport::Udp, 4500, &pk)),
            Ok(None),
            "ESP first is not an IKE exchange"
        );
    }

    #[test]
    fn wrong_port_version_or_spi_is_not_ike() {
        let req = build::ike_sa_init(1, 0, false, 100);
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &req,
        }];
        assert_eq!(
            Ike::default().detect(&flow(Transport::Udp, 53, &pk)),
            Ok(None)
        );
        let mut bad = req.clone();
        bad[17] = 0x30;
        assert_eq!(parse_ike(&bad), None);
        let resp = build::ike_sa_init(2, 5, true, 100);
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &req,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &resp,
            },
        ];
        assert_eq!(
            Ike::default().detect(&flow(Transport::Udp, 500, &pk)),
            Ok(None),
            "answer to another SPI"
        );
    }
}
