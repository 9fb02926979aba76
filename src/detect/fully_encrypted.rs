//! Fully encrypted traffic detector: Algorithm 1 of Wu et al., "How the Great Firewall of
//! China Detects and Blocks Fully Encrypted Traffic", USENIX Security 2023.
//!
//! The GFW inspects the first data packet a client sends on a TCP connection and exempts it if
//! any of these holds: Ex1, the average number of set bits per byte is `<= 3.4` or `>= 4.6`;
//! Ex2, the first six bytes are printable ASCII (0x20–0x7e); Ex3, more than 50% of the bytes
//! are printable; Ex4, more than 20 contiguous bytes are printable; Ex5, it starts like TLS
//! (`[\x16-\x17]\x03[\x00-\x09]`) or HTTP (`GET `, `PUT `, `POST `, `HEAD `, ...). A packet no
//! rule exempts is "fully encrypted" (the GFW then blocked about 26% of such connections; this
//! detector reports every one). The thresholds are [`Params`]. The paper's rules apply to TCP;
//! [`FullyEncrypted::udp`] also applies them to the first UDP datagram. Known false-positive
//! profile (the paper's 0.6% of non-circumvention connections): any protocol whose first
//! client payload is compressed or encrypted without a plaintext header.

use super::{printable, Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

/// The thresholds of Algorithm 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Ex1: exempt if bits set per byte `<=` this.
    pub popcount_low: f64,
    /// Ex1: exempt if bits set per byte `>=` this.
    pub popcount_high: f64,
    /// Ex2: exempt if this many leading bytes are printable.
    pub printable_prefix: usize,
    /// Ex3: exempt if more than this fraction of bytes are printable.
    pub printable_fraction: f64,
    /// Ex4: exempt if a printable run is longer than this.
    pub printable_run: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            popcount_low: 3.4,
            popcount_high: 4.6,
            printable_prefix: 6,
            printable_fraction: 0.5,
            printable_run: 20,
        }
    }
}

/// Why a payload is not fully encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// Empty payload (nothing to judge).
    Empty,
    /// Ex1: popcount per byte outside the random range.
    Popcount,
    /// Ex2: printable first bytes.
    PrintablePrefix,
    /// Ex3: mostly printable.
    MostlyPrintable,
    /// Ex4: a long printable run.
    PrintableRun,
    /// Ex5: a TLS or HTTP prefix.
    Protocol,
}

const HTTP_PREFIXES: [&[u8]; 9] = [
    b"GET ",
    b"PUT ",
    b"POST ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"PATCH ",
    b"TRACE ",
];

/// Deterministic pseudo-random bytes (xorshift64 from `seed`): what a fully encrypted payload
/// looks like to [`exemption`]. The one fixture of the detector tests, the negative controls
/// and the detector benchmarks.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Algorithm 1: the first exemption that applies to `p`, or `None` if `p` is fully encrypted.
pub fn exemption(p: &[u8], params: &Params) -> Option<Exemption> {
    if p.is_empty() {
        return Some(Exemption::Empty);
    }
    // Ex1: set bits, a word at a time.
    let mut words = p.chunks_exact(8);
    let mut bits: u64 = words
        .by_ref()
        .map(|w| {
            u64::from(
                u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]).count_ones(),
            )
        })
        .sum();
    bits += words
        .remainder()
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum::<u64>();
    let per_byte = bits as f64 / p.len() as f64;
    if per_byte <= params.popcount_low || per_byte >= params.popcount_high {
        return Some(Exemption::Popcount);
    }
    if p.len() >= params.printable_prefix
        && p[..params.printable_prefix].iter().all(|&b| printable(b))
    {
        return Some(Exemption::PrintablePrefix);
    }
    // Ex3 and Ex4 in one pass.
    let (mut n_printable, mut run, mut longest) = (0usize, 0usize, 0usize);
    for &b in p {
        let pr = printable(b);
        n_printable += usize::from(pr);
        run = if pr { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    if n_printable as f64 > params.printable_fraction * p.len() as f64 {
        return Some(Exemption::MostlyPrintable);
    }
    if longest > params.printable_run {
        return Some(Exemption::PrintableRun);
    }
    let tls = p.len() >= 3 && (0x16..=0x17).contains(&p[0]) && p[1] == 0x03 && p[2] <= 0x09;
    if tls || HTTP_PREFIXES.iter().any(|h| p.starts_with(h)) {
        return Some(Exemption::Protocol);
    }
    None
}

/// The fully-encrypted detector.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FullyEncrypted {
    /// Thresholds.
    pub params: Params,
    /// Also judge the first client datagram of UDP flows (not in the paper).
    pub udp: bool,
}

impl Detector for FullyEncrypted {
    fn name(&self) -> &'static str {
        "fully-encrypted"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport == Transport::Udp && !self.udp {
            return Ok(None);
        }
        let Some(first) = flow.packets.first() else {
            return Err(Incomplete);
        };
        if first.dir != Dir::ToServer {
            return Ok(None); // server speaks first: the client's payload is not the first
        }
        Ok(exemption(first.payload, &self.params)
            .is_none()
            .then_some(Verdict {
                protocol: "fully-encrypted",
                rule: "wu2023",
                after: 1,
            }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detect::testutil::{every_prefix, flow};
    use crate::detect::Packet;
    use proptest::prelude::*;

    pub(crate) use super::pseudo_random as random_bytes;

    #[test]
    fn random_first_packet_is_flagged_after_one_packet() {
        let r = random_bytes(300, 42);
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &r,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &r,
            },
        ];
        every_prefix(
            &FullyEncrypted::default(),
            Transport::Tcp,
            8388,
            &pk,
            1,
            Some("fully-encrypted"),
        );
    }

    #[test]
    fn each_exemption_fires_on_its_own_example() {
        let p = Params::default();
        let mut r = random_bytes(200, 7);
        assert_eq!(exemption(&r, &p), None);
        assert_eq!(exemption(&[0u8; 64], &p), Some(Exemption::Popcount));
        r[..6].copy_from_slice(b"SSH-2.");
        assert_eq!(exemption(&r, &p), Some(Exemption::PrintablePrefix));
        let mut r = random_bytes(200, 7);
        r[10..32].copy_from_slice(b"abcdefghijklmnopqrstuv");
        assert_eq!(exemption(&r, &p), Some(Exemption::PrintableRun));
        let mut r = random_bytes(300, 9);
        r[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        assert_eq!(exemption(&r, &p), Some(Exemption::Protocol));
        let http = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n";
        assert!(exemption(http, &p).is_some());
    }

    #[test]
    fn thresholds_are_parameters() {
        let r = random_bytes(400, 3);
        let strict = Params {
            popcount_low: 4.5,
            ..Params::default()
        };
        assert_eq!(exemption(&r, &strict), Some(Exemption::Popcount));
    }

    #[test]
    fn udp_and_server_first_flows_are_not_judged_by_default() {
        let r = random_bytes(100, 5);
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &r,
        }];
        assert_eq!(
            FullyEncrypted::default().detect(&flow(Transport::Udp, 1, &pk)),
            Ok(None)
        );
        let udp = FullyEncrypted {
            udp: true,
            ..FullyEncrypted::default()
        };
        assert!(udp.detect(&flow(Transport::Udp, 1, &pk)).unwrap().is_some());
        let pk = [Packet {
            dir: Dir::ToClient,
            payload: &r,
        }];
        assert_eq!(
            FullyEncrypted::default().detect(&flow(Transport::Tcp, 1, &pk)),
            Ok(None)
        );
    }

    proptest! {
        #[test]
        fn exemption_never_panics(p in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = exemption(&p, &Params::default());
        }
    }
}
