//! Detectors for the bypass protocols Russians use (docs/ARCHITECTURE.md, "VPN detection experiments";
//! research notes section C), named as in `flows.jsonl` and `[[vpn]]` rules:
//!
//! - `ssh` ([`Ssh`]): the identification string of RFC 4253 section 4.2 (`SSH-2.0-...`) and
//!   the binary packet that follows it, `SSH_MSG_KEXINIT` (section 7.1: packet length,
//!   padding of at least 4, message 20, 16-byte cookie, a name-list of printable algorithm
//!   names). Either direction alone is enough; any port. Tunnels (`ssh -D`) look the same
//!   at the start, and are the bypass.
//! - `tor` ([`Tor`]): the link-protocol TLS fingerprint of Tor clients (tor's
//!   `tortls_openssl.c` sends a random `www.<base32>.com` server name and no ALPN) and
//!   fixed-size cells (tor-spec section 3: 514-byte cells in link protocol 4+, so TLS
//!   records whose plaintext is a multiple of 514 bytes).
//! - `tls-in-tls` ([`TlsInTls`]): after Xue et al., "Fingerprinting Obfuscated Proxy Traffic
//!   with Encapsulated TLS Handshakes", USENIX Security 2024: the sizes and directions of the
//!   first application-data records of a TLS connection reveal a TLS handshake inside it (a
//!   ClientHello-sized client burst, a certificate-sized server burst, then a
//!   Finished-sized client burst). The paper's classifier is learned; these thresholds are
//!   blocklab's own (uncertain), set from the corpus in `benches/corpus/`.
//! - `softether` ([`SoftEther`]): SoftEther's UDP control messages as nDPI's dissector
//!   reads them (`IP=<ip>,PORT=<port>` NAT-traversal replies and the binary `PACK`
//!   serialisation of element name, type and values).

use super::ja4::{self, Record};
use super::{printable, Detector, Dir, Flow, Incomplete, Outcome, Transport, Verdict};

fn found(protocol: &'static str, rule: &'static str, after: usize) -> Outcome {
    Ok(Some(Verdict {
        protocol,
        rule,
        after,
    }))
}

/// The SSH detector.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ssh;

/// The bytes of one direction of a TCP flow, up to `max`, with the packet count per byte
/// boundary; `None` if not enough.
fn stream(flow: &Flow<'_>, dir: Dir, max: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut bytes = Vec::new();
    let mut marks = Vec::new();
    for (i, p) in flow.packets.iter().enumerate() {
        if p.dir == dir && bytes.len() < max {
            let take = p.payload.len().min(max - bytes.len());
            bytes.extend_from_slice(&p.payload[..take]);
            marks.push((bytes.len(), i + 1));
        }
    }
    (bytes, marks)
}

/// Packets needed for the first `n` bytes of a direction.
fn packets_for(marks: &[(usize, usize)], n: usize) -> usize {
    marks
        .iter()
        .find(|(end, _)| *end >= n)
        .map_or(usize::MAX, |m| m.1)
}

/// One direction of SSH: `Ok(Some(packets))` when banner and KEXINIT are complete.
fn ssh_side(flow: &Flow<'_>, dir: Dir) -> Result<Option<usize>, Incomplete> {
    let (b, marks) = stream(flow, dir, 2048);
    let magic = b"SSH-";
    let n = b.len().min(4);
    if b[..n] != magic[..n] {
        return Ok(None);
    }
    let Some(eol) = b.iter().take(255).position(|&c| c == b'\n') else {
        return if b.len() >= 255 {
            Ok(None)
        } else {
            Err(Incomplete)
        };
    };
    let line = &b[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-"))
        || !line.iter().all(|&c| printable(c))
    {
        return Ok(None);
    }
    let pkt = &b[eol + 1..];
    if pkt.len() < 26 {
        return Err(Incomplete);
    }
    let len = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]) as usize;
    let pad = usize::from(pkt[4]);
    if !(16..=35000).contains(&len) || pad < 4 || pad >= len || pkt[5] != 20 {
        return Ok(None);
    }
    // The first name-list (kex algorithms): length then printable names.
    let nl = u32::from_be_bytes([pkt[22], pkt[23], pkt[24], pkt[25]]) as usize;
    if nl == 0 || nl > len {
        return Ok(None);
    }
    let names = &pkt[26..];
    let check = names.len().min(nl);
    if !names[..check]
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"-@.,_=+".contains(&c))
    {
        return Ok(None);
    }
    if check < nl.min(32) {
        return Err(Incomplete);
    }
    Ok(Some(packets_for(&marks, eol + 1 + 26 + nl.min(32))))
}

impl Detector for Ssh {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Tcp {
            return Ok(None);
        }
        if flow.packets.is_empty() {
            return Err(Incomplete);
        }
        let mut pending = false;
        let mut best: Option<usize> = None;
        for dir in [Dir::ToServer, Dir::ToClient] {
            if !flow.packets.iter().any(|p| p.dir == dir) {
                pending = true;
                continue;
            }
            match ssh_side(flow, dir) {
                Ok(Some(n)) => best = Some(best.map_or(n, |b: usize| b.min(n))),
                Ok(None) => return Ok(None),
                Err(Incomplete) => pending = true,
            }
        }
        match best {
            Some(n) => found("ssh", "banner-kex", n),
            None if pending => Err(Incomplete),
            None => Ok(None),
        }
    }
}

/// Whether `name` looks like tor's random client server name `www.<base32>.com`.
pub fn tor_hostname(name: &str) -> bool {
    let Some(mid) = name
        .strip_prefix("www.")
        .and_then(|s| s.strip_suffix(".com"))
    else {
        return false;
    };
    (4..=48).contains(&mid.len())
        && mid
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
}

/// The Tor detector.
#[derive(Debug, Clone, Copy)]
pub struct Tor {
    /// Application-data records (after the first few) the cell rule looks at.
    pub window: usize,
    /// How many of them must carry whole 514-byte cells.
    pub min_cells: usize,
}

impl Default for Tor {
    fn default() -> Tor {
        Tor {
            window: 8,
            min_cells: 4,
        }
    }
}

/// AEAD record overheads: TLS 1.3 (type byte + 16-byte tag), TLS 1.2 GCM (8-byte explicit
/// nonce + tag), TLS 1.2 ChaCha20-Poly1305 (tag).
const OVERHEADS: [usize; 3] = [17, 24, 16];

fn cells(r: &Record) -> bool {
    OVERHEADS
        .iter()
        .any(|o| r.len > *o && (r.len - o) % 514 == 0)
}

impl Detector for Tor {
    fn name(&self) -> &'static str {
        "tor"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Tcp {
            return Ok(None);
        }
        let (hello, after) = match ja4::tls_client_hello(flow) {
            Err(Incomplete) => return Err(Incomplete),
            Ok(None) => return Ok(None),
            Ok(Some(h)) => h,
        };
        if hello.sni().is_some_and(tor_hostname) && hello.alpn().next().is_none() {
            return found("tor", "link-tls", after);
        }
        // Cells: application data records of either direction whose plaintext is n x 514.
        let (c, c_ok) = ja4::records(flow, Dir::ToServer, 64);
        let (s, s_ok) = ja4::records(flow, Dir::ToClient, 64);
        let mut data: Vec<Record> = c.into_iter().chain(s).filter(|r| r.kind == 23).collect();
        data.sort_by_key(|r| r.after);
        let mut hits = 0;
        for (n, r) in data.iter().enumerate() {
            if n >= self.window {
                return Ok(None);
            }
            if cells(r) {
                hits += 1;
                if hits >= self.min_cells {
                    return found("tor", "cells", r.after);
                }
            }
        }
        if c_ok && s_ok {
            Err(Incomplete)
        } else {
            Ok(None)
        }
    }
}

/// The TLS-in-TLS detector's thresholds (plaintext bytes of one burst).
#[derive(Debug, Clone, Copy)]
pub struct TlsInTls {
    /// The client burst carrying the inner ClientHello (plus a proxy header).
    pub hello: (usize, usize),
    /// Smallest server burst carrying the inner ServerHello..Finished (certificates).
    pub server_min: usize,
    /// The client burst carrying the inner Finished (TLS 1.3) or key exchange (TLS 1.2).
    pub finished: (usize, usize),
}

impl Default for TlsInTls {
    fn default() -> TlsInTls {
        TlsInTls {
            hello: (180, 2400),
            server_min: 600,
            finished: (40, 220),
        }
    }
}

/// A run of application-data records in one direction.
#[derive(Debug, Clone, Copy)]
struct Burst {
    dir: Dir,
    bytes: usize,
    /// Packets needed for its first record.
    start: usize,
}

impl Detector for TlsInTls {
    fn name(&self) -> &'static str {
        "tls-in-tls"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Tcp {
            return Ok(None);
        }
        let (c, c_ok) = ja4::records(flow, Dir::ToServer, 48);
        let (s, s_ok) = ja4::records(flow, Dir::ToClient, 48);
        let pending = if c_ok && s_ok {
            Err(Incomplete)
        } else {
            Ok(None)
        };
        match c.first() {
            None => return pending,
            Some(r) if r.kind != 22 => return Ok(None),
            Some(_) => {}
        }
        let first_s = s.iter().find(|r| r.kind == 23);
        let Some(fc) = c.iter().find(|r| r.kind == 23) else {
            return pending;
        };
        // TLS 1.3: the server's handshake is encrypted (application-data records before the
        // client's first), and the client's first such record is its Finished.
        let tls13 = first_s.is_some_and(|r| r.after <= fc.after);
        let Some(start) = c
            .iter()
            .filter(|r| r.kind == 23)
            .nth(usize::from(tls13))
            .map(|r| r.after)
        else {
            return pending;
        };
        let mut recs: Vec<(Dir, &Record)> = c
            .iter()
            .filter(|r| r.kind == 23 && r.after >= start)
            .map(|r| (Dir::ToServer, r))
            .chain(
                s.iter()
                    .filter(|r| r.kind == 23 && r.after >= start)
                    .map(|r| (Dir::ToClient, r)),
            )
            .collect();
        recs.sort_by_key(|(d, r)| (r.after, *d == Dir::ToClient));
        let mut bursts: Vec<Burst> = Vec::new();
        for (d, r) in recs {
            let plain = r.len.saturating_sub(20);
            match bursts.last_mut() {
                Some(b) if b.dir == d => b.bytes += plain,
                _ => bursts.push(Burst {
                    dir: d,
                    bytes: plain,
                    start: r.after,
                }),
            }
        }
        // Server records before the client's first data (session tickets) do not count; a
        // burst is complete once the other side speaks after it.
        let b: Vec<&Burst> = bursts
            .iter()
            .skip_while(|b| b.dir == Dir::ToClient)
            .take(4)
            .collect();
        let done = |i: usize| b.len() > i + 1;
        if done(0) && !(self.hello.0..=self.hello.1).contains(&b[0].bytes) {
            return Ok(None);
        }
        if done(1) && b[1].bytes < self.server_min {
            return Ok(None);
        }
        if done(2) {
            return if (self.finished.0..=self.finished.1).contains(&b[2].bytes) {
                found("tls-in-tls", "burst-sizes", b[3].start)
            } else {
                Ok(None)
            };
        }
        pending
    }
}

/// The SoftEther detector.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftEther;

/// `IP=a.b.c.d,PORT=n` (SoftEther's NAT-traversal reply).
fn ip_port(p: &[u8]) -> bool {
    let Some(rest) = p.strip_prefix(b"IP=") else {
        return false;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return false;
    };
    let s = s.trim_end_matches(['\0', '\r', '\n']);
    let Some((ip, port)) = s.split_once(",PORT=") else {
        return false;
    };
    ip.parse::<std::net::IpAddr>().is_ok() && port.parse::<u16>().is_ok()
}

/// SoftEther's `PACK`: element count, then per element a name (length + 1, bytes), a type
/// (0 int, 1 data, 2 str, 3 unistr, 4 int64), a value count and the values, to the end.
fn pack(p: &[u8]) -> bool {
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Option<usize> {
        let b = p.get(*at..*at + 4)?;
        *at += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(n) = u32_at(&mut at) else {
        return false;
    };
    if n == 0 || n > 64 {
        return false;
    }
    for _ in 0..n {
        let Some(name_len) = u32_at(&mut at) else {
            return false;
        };
        let Some(name) = name_len
            .checked_sub(1)
            .and_then(|l| p.get(at..at.checked_add(l)?))
        else {
            return false;
        };
        if name.is_empty() || name.len() > 63 || !name.iter().all(|&c| printable(c)) {
            return false;
        }
        at += name.len();
        let (Some(kind), Some(count)) = (u32_at(&mut at), u32_at(&mut at)) else {
            return false;
        };
        if kind > 4 || count == 0 || count > 4096 {
            return false;
        }
        for _ in 0..count {
            let size = match kind {
                0 => 4,
                4 => 8,
                _ => match u32_at(&mut at) {
                    Some(s) if s <= 65536 => s,
                    _ => return false,
                },
            };
            at = match at.checked_add(size) {
                Some(a) if a <= p.len() => a,
                _ => return false,
            };
        }
    }
    at == p.len()
}

impl Detector for SoftEther {
    fn name(&self) -> &'static str {
        "softether"
    }

    fn detect(&self, flow: &Flow<'_>) -> Outcome {
        if flow.transport != Transport::Udp {
            return Ok(None);
        }
        let Some(p) = flow.packets.first() else {
            return Err(Incomplete);
        };
        if ip_port(p.payload) {
            return found("softether", "nat-t", 1);
        }
        if p.payload.len() >= 40 && pack(p.payload) {
            return found("softether", "pack", 1);
        }
        Ok(None)
    }
}

/// Builders (tests and the corpus checks).
pub mod build {
    /// A SoftEther `PACK` with string elements.
    pub fn pack(elements: &[(&str, &str)]) -> Vec<u8> {
        let mut p = (elements.len() as u32).to_be_bytes().to_vec();
        for (name, value) in elements {
            p.extend_from_slice(&(name.len() as u32 + 1).to_be_bytes());
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(&2u32.to_be_bytes());
            p.extend_from_slice(&1u32.to_be_bytes());
            p.extend_from_slice(&(value.len() as u32).to_be_bytes());
            p.extend_from_slice(value.as_bytes());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{every_prefix, flow, packets};
    use crate::detect::Packet;

    fn kexinit() -> Vec<u8> {
        let names = b"curve25519-sha256,ecdh-sha2-nistp256,diffie-hellman-group14-sha256";
        let mut body = vec![20u8];
        body.extend_from_slice(&[0x5a; 16]);
        body.extend_from_slice(&(names.len() as u32).to_be_bytes());
        body.extend_from_slice(names);
        body.extend_from_slice(&[0; 40]);
        let pad = 8 - (body.len() + 5) % 8 + 8;
        let mut p = ((body.len() + pad + 1) as u32).to_be_bytes().to_vec();
        p.push(pad as u8);
        p.extend(body);
        p.extend(std::iter::repeat_n(0u8, pad));
        p
    }

    #[test]
    fn ssh_banner_and_kexinit_one_direction_or_both_any_port() {
        let banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n".to_vec();
        let k = kexinit();
        let server = [banner.clone(), k.clone()].concat();
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &banner,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &server,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &k,
            },
        ];
        let v = every_prefix(&Ssh, Transport::Tcp, 2222, &pk, 2, Some("ssh")).unwrap();
        assert_eq!(v.rule, "banner-kex");
        let one = [pk[0], pk[2]];
        every_prefix(&Ssh, Transport::Tcp, 443, &one, 2, Some("ssh"));
        let http = [Packet {
            dir: Dir::ToServer,
            payload: b"GET / HTTP/1.1\r\nHost: SSH-2.0-x\r\n\r\n",
        }];
        assert_eq!(Ssh.detect(&flow(Transport::Tcp, 22, &http)), Ok(None));
        let ftp = [Packet {
            dir: Dir::ToClient,
            payload: b"SSH-2.0-fake\r\nnot a binary packet at all.......",
        }];
        assert_eq!(Ssh.detect(&flow(Transport::Tcp, 22, &ftp)), Ok(None));
    }

    fn app(len: usize) -> Vec<u8> {
        let mut r = vec![23, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0x77u8, len));
        r
    }

    fn hs(len: usize, kind: u8) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0x11u8, len));
        r
    }

    #[test]
    fn tor_link_tls_fingerprint_and_cells() {
        assert!(tor_hostname("www.mhbx6vluhzjc3gqn2u.com"));
        assert!(!tor_hostname("www.example.org"));
        let hello = ja4::build::client_hello(
            &[0x1301, 0xc02b],
            &[0, 10, 13, 43],
            Some("www.p3ldwqzmxqyjv7ezkzsf.com"),
            &[],
            &[0x0403],
            &[0x0304],
        );
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &hello,
        }];
        let v = every_prefix(&Tor::default(), Transport::Tcp, 9001, &pk, 1, Some("tor")).unwrap();
        assert_eq!(v.rule, "link-tls");
        // Same site name with ALPN (a browser): not the link fingerprint; then cells decide.
        let browser = ja4::build::client_hello(
            &[0x1301],
            &[0, 16, 43],
            Some("www.p3ldwqzmxqyjv7ezkzsf.com"),
            &["h2"],
            &[],
            &[0x0304],
        );
        let sh = [hs(90, 22), hs(1, 20), app(2000)].concat();
        let cell = app(514 + 17);
        let two = app(2 * 514 + 17);
        let pk = [
            Packet {
                dir: Dir::ToServer,
                payload: &browser,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &sh,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &cell,
            },
            Packet {
                dir: Dir::ToClient,
                payload: &two,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &cell,
            },
            Packet {
                dir: Dir::ToServer,
                payload: &cell,
            },
        ];
        let v = every_prefix(&Tor::default(), Transport::Tcp, 443, &pk, 6, Some("tor")).unwrap();
        assert_eq!(v.rule, "cells");
    }

    /// Outer TLS 1.3 handshake, then the inner handshake's bursts (sizes as seen with
    /// stunnel carrying curl's TLS 1.3: ClientHello ~ 517, server flight ~ 1.5 KB, Finished
    /// 64 + 6), or an ordinary HTTPS request/response.
    fn outer(c1: usize, s1: usize, c2: usize) -> Vec<(Dir, Vec<u8>)> {
        let hello = ja4::build::client_hello(
            &[0x1301],
            &[0, 43],
            Some("example.org"),
            &[],
            &[],
            &[0x0304],
        );
        vec![
            (Dir::ToServer, hello),
            (Dir::ToClient, [hs(122, 22), hs(1, 20), app(2400)].concat()),
            (Dir::ToServer, [hs(1, 20), app(53)].concat()),
            (Dir::ToClient, [app(250), app(250)].concat()),
            (Dir::ToServer, app(c1 + 20)),
            (Dir::ToClient, app(s1 + 20)),
            (Dir::ToServer, app(c2 + 20)),
            (Dir::ToClient, app(300)),
        ]
    }

    #[test]
    fn tls_in_tls_bursts_and_plain_https() {
        let inner = outer(517, 1500, 70);
        let v = every_prefix(
            &TlsInTls::default(),
            Transport::Tcp,
            443,
            &packets(&inner),
            8,
            Some("tls-in-tls"),
        )
        .unwrap();
        assert_eq!(v.rule, "burst-sizes");
        // curl over HTTPS: an 80-byte GET, a response, no Finished-sized burst.
        let https = outer(80, 5000, 0);
        let got = TlsInTls::default().detect(&flow(Transport::Tcp, 443, &packets(&https)));
        assert!(!matches!(got, Ok(Some(_))), "{got:?}");
        let h2 = outer(110, 60, 9);
        let got = TlsInTls::default().detect(&flow(Transport::Tcp, 443, &packets(&h2)));
        assert!(!matches!(got, Ok(Some(_))), "{got:?}");
    }

    #[test]
    fn softether_udp_control_messages() {
        let p = b"IP=192.0.2.10,PORT=5555".to_vec();
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &p,
        }];
        every_prefix(&SoftEther, Transport::Udp, 5004, &pk, 1, Some("softether"));
        let pack = build::pack(&[("host_name", "vpn1"), ("ddns_fqdn", "vpn1.softether.net")]);
        let pk = [Packet {
            dir: Dir::ToClient,
            payload: &pack,
        }];
        every_prefix(&SoftEther, Transport::Udp, 5004, &pk, 1, Some("softether"));
        for n in 0..pack.len() {
            assert!(!super::pack(&pack[..n]), "{n}-byte prefix");
        }
        let dns = crate::detect::known::build::dns_query(1, "softether.net");
        let pk = [Packet {
            dir: Dir::ToServer,
            payload: &dns,
        }];
        assert_eq!(SoftEther.detect(&flow(Transport::Udp, 53, &pk)), Ok(None));
    }
}
