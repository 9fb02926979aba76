//! TLS records of a TCP flow, the ClientHello fields fingerprints need, and the JA4 client
//! fingerprint (FoxIO, `technical_details/JA4.md` in github.com/FoxIO-LLC/ja4: protocol,
//! version, SNI, cipher and extension counts, ALPN, then truncated SHA-256 of the sorted
//! ciphers and of the sorted extensions plus signature algorithms; GREASE ignored).
//!
//! Pure and allocation-light: the record framer keeps only (type, length, packet) triples;
//! the ClientHello is reassembled into one buffer of at most 16 KiB. DTLS ClientHellos
//! (RFC 6347 section 4.2.2: a cookie after the session id, 12-byte handshake headers) are
//! fingerprinted with the `d` prefix.

use super::{Dir, Flow};

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

/// The fields of a ClientHello that fingerprints use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// DTLS rather than TLS.
    pub dtls: bool,
    /// `legacy_version`.
    pub version: u16,
    /// Cipher suites, in order (GREASE included).
    pub ciphers: Vec<u16>,
    /// Extension types, in order (GREASE included).
    pub extensions: Vec<u16>,
    /// The server name, if any.
    pub sni: Option<String>,
    /// ALPN protocol names, in order.
    pub alpn: Vec<Vec<u8>>,
    /// Signature algorithms, in order.
    pub sig_algs: Vec<u16>,
    /// `supported_versions`, in order.
    pub versions: Vec<u16>,
}

/// GREASE values (RFC 8701): `0x?a?a` with equal bytes.
pub const fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Parses a ClientHello body (after the handshake header).
pub fn parse_hello(body: &[u8], dtls: bool) -> Option<Hello> {
    let mut c = Cur(body);
    let mut h = Hello {
        dtls,
        version: c.u16()?,
        ..Hello::default()
    };
    c.take(32)?;
    c.vec8()?;
    if dtls {
        c.vec8()?; // cookie
    }
    h.ciphers = u16s(c.vec16()?);
    c.vec8()?;
    if c.0.is_empty() {
        return Some(h);
    }
    let mut exts = Cur(c.vec16()?);
    while !exts.0.is_empty() {
        let t = exts.u16()?;
        let data = exts.vec16()?;
        h.extensions.push(t);
        let mut d = Cur(data);
        match t {
            0 => {
                let mut list = Cur(d.vec16()?);
                if list.u8()? == 0 {
                    let name = list.vec16()?;
                    h.sni = Some(String::from_utf8_lossy(name).into_owned());
                }
            }
            16 => {
                let mut list = Cur(d.vec16()?);
                while !list.0.is_empty() {
                    h.alpn.push(list.vec8()?.to_vec());
                }
            }
            13 => h.sig_algs = u16s(d.vec16()?),
            43 => h.versions = u16s(d.vec8()?),
            _ => {}
        }
    }
    Some(h)
}

/// Largest ClientHello reassembled.
const MAX_HELLO: usize = 16 * 1024;

/// The ClientHello the client sent on a TLS-over-TCP flow (reassembled from its handshake
/// records) with the payload packets it took, `Err(super::Incomplete)` while incomplete, `Ok(None)` if the
/// flow does not start with one.
pub fn tls_client_hello(flow: &Flow<'_>) -> Result<Option<(Hello, usize)>, super::Incomplete> {
    let mut stream: Vec<u8> = Vec::new();
    let mut hs: Vec<u8> = Vec::new();
    for (i, p) in flow
        .packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.dir == Dir::ToServer)
    {
        stream.extend_from_slice(p.payload);
        // Peel complete handshake records off the front.
        loop {
            if stream.len() >= 3 && (stream[0] != 22 || stream[1] != 3) {
                return Ok(None);
            }
            if stream.len() < 5 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([stream[3], stream[4]]));
            if stream.len() < 5 + len {
                break;
            }
            hs.extend_from_slice(&stream[5..5 + len]);
            stream.drain(..5 + len);
        }
        if let Some(&t) = hs.first() {
            if t != 1 {
                return Ok(None);
            }
        }
        if hs.len() >= 4 {
            let n = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            if n > MAX_HELLO {
                return Ok(None);
            }
            if hs.len() >= 4 + n {
                return Ok(parse_hello(&hs[4..4 + n], false).map(|h| (h, i + 1)));
            }
        }
        if stream.len() + hs.len() > MAX_HELLO + 64 {
            return Ok(None);
        }
    }
    Err(super::Incomplete)
}

/// The ClientHello in a UDP flow's first client datagram if it is a DTLS handshake record
/// carrying an unfragmented ClientHello.
pub fn dtls_client_hello(p: &[u8]) -> Option<Hello> {
    if p.len() < 25 || p[0] != 22 || p[1] != 0xfe || p[13] != 1 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([p[11], p[12]]));
    let rec = p.get(13..13 + len)?;
    let n = (usize::from(rec[1]) << 16) | (usize::from(rec[2]) << 8) | usize::from(rec[3]);
    let frag_off = (usize::from(rec[6]) << 16) | (usize::from(rec[7]) << 8) | usize::from(rec[8]);
    if frag_off != 0 {
        return None;
    }
    parse_hello(rec.get(12..12 + n)?, true)
}

fn hex_list(v: &[u16]) -> String {
    let mut s = String::with_capacity(v.len() * 5);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{x:04x}"));
    }
    s
}

fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Hello {
    /// The JA4 fingerprint (`t13d1516h2_8daaf6152771_b186095e22b6` form).
    pub fn ja4(&self) -> String {
        let proto = if self.dtls { 'd' } else { 't' };
        let v = self
            .versions
            .iter()
            .copied()
            .filter(|v| !grease(*v))
            .max()
            .unwrap_or(self.version);
        let version = match v {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            0x0300 => "s3",
            0x0002 => "s2",
            0xfeff => "d1",
            0xfefd => "d2",
            0xfefc => "d3",
            _ => "00",
        };
        let sni = if self.sni.is_some() { 'd' } else { 'i' };
        let ciphers: Vec<u16> = self
            .ciphers
            .iter()
            .copied()
            .filter(|c| !grease(*c))
            .collect();
        let exts: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| !grease(*e))
            .collect();
        let alpn = match self.alpn.first() {
            Some(a) if !a.is_empty() => {
                let (f, l) = (a[0], a[a.len() - 1]);
                if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                    format!("{}{}", f as char, l as char)
                } else {
                    let fh = format!("{f:02x}");
                    let lh = format!("{l:02x}");
                    format!("{}{}", &fh[..1], &lh[1..])
                }
            }
            _ => "00".into(),
        };
        let mut sc = ciphers.clone();
        sc.sort_unstable();
        let mut se: Vec<u16> = exts
            .iter()
            .copied()
            .filter(|e| *e != 0 && *e != 16)
            .collect();
        se.sort_unstable();
        let sigs: Vec<u16> = self
            .sig_algs
            .iter()
            .copied()
            .filter(|s| !grease(*s))
            .collect();
        let mut ext_str = hex_list(&se);
        if !sigs.is_empty() && !ext_str.is_empty() {
            ext_str.push('_');
            ext_str.push_str(&hex_list(&sigs));
        }
        format!(
            "{proto}{version}{sni}{:02}{:02}{alpn}_{}_{}",
            ciphers.len().min(99),
            exts.len().min(99),
            hash12(&hex_list(&sc)),
            hash12(&ext_str)
        )
    }
}

/// The flow's JA4: from the TLS ClientHello of a TCP flow or the DTLS ClientHello of a UDP
/// flow's first client datagram.
pub fn flow_ja4(flow: &Flow<'_>) -> Option<String> {
    match flow.transport {
        super::Transport::Tcp => tls_client_hello(flow).ok().flatten().map(|(h, _)| h.ja4()),
        super::Transport::Udp => flow
            .packets
            .iter()
            .find(|p| p.dir == Dir::ToServer)
            .and_then(|p| dtls_client_hello(p.payload))
            .map(|h| h.ja4()),
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
        assert_eq!(h.sni.as_deref(), Some("tls.browserleaks.com"));
        assert_eq!(h.ja4(), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
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
            flow_ja4(&f).as_deref(),
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
        let j = flow_ja4(&flow(Transport::Tcp, 443, &pk)).unwrap();
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
