//! Checked, zero-copy views of IPv4/IPv6, TCP and UDP packets, and crafting of the packets the
//! engine injects (TCP RSTs, blockpage segments) with correct checksums.
//!
//! In the style of smoltcp's `src/wire/`: [`IpPacket::parse`] checks every length before it
//! hands out a slice, so no view can index past its buffer; malformed input is an error,
//! never a panic. Checksums are not verified on input (a censor middlebox does not either:
//! offloaded packets carry partial checksums), but every crafted packet carries correct ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// TCP flag FIN.
pub const FIN: u8 = 0x01;
/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag RST.
pub const RST: u8 = 0x04;
/// TCP flag PSH.
pub const PSH: u8 = 0x08;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// Why bytes are not a packet the engine can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its headers claim.
    #[error("truncated packet")]
    Truncated,
    /// Not IPv4 or IPv6.
    #[error("not an IP packet (version {0})")]
    Version(u8),
    /// A header field is impossible (e.g. IHL < 5, TCP data offset < 5).
    #[error("malformed header")]
    Malformed,
    /// Source and destination of a crafted packet are of different families.
    #[error("address families differ")]
    Family,
}

/// Fragment fields of an IP packet that is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Identification (IPv4: 16 bits; IPv6: 32 bits).
    pub id: u32,
    /// Offset of this fragment's data, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// A checked view of an IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct IpPacket<'a> {
    buf: &'a [u8],
    /// Offset of the transport header (after IPv6 extension headers).
    l4: usize,
    /// End of the packet (the length field, bounded by the buffer).
    end: usize,
    /// Transport protocol (after extension headers).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Set when this packet is a fragment (not "offset 0 and no more fragments").
    pub fragment: Option<Fragment>,
}

fn be16(b: &[u8], at: usize) -> Result<u16, PacketError> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(PacketError::Truncated),
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, PacketError> {
    match b.get(at..at + 4) {
        Some(&[a, b2, c, d]) => Ok(u32::from_be_bytes([a, b2, c, d])),
        _ => Err(PacketError::Truncated),
    }
}

impl<'a> IpPacket<'a> {
    /// Parses an IP packet starting at `buf[0]` (no link header).
    pub fn parse(buf: &'a [u8]) -> Result<IpPacket<'a>, PacketError> {
        let first = *buf.first().ok_or(PacketError::Truncated)?;
        match first >> 4 {
            4 => Self::v4(buf),
            6 => Self::v6(buf),
            v => Err(PacketError::Version(v)),
        }
    }

    fn v4(buf: &'a [u8]) -> Result<IpPacket<'a>, PacketError> {
        if buf.len() < 20 {
            return Err(PacketError::Truncated);
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if ihl < 20 {
            return Err(PacketError::Malformed);
        }
        let total = usize::from(be16(buf, 2)?);
        if total < ihl || buf.len() < total {
            return Err(PacketError::Truncated);
        }
        let id = u32::from(be16(buf, 4)?);
        let ff = be16(buf, 6)?;
        let offset = u32::from(ff & 0x1fff) * 8;
        let more = ff & 0x2000 != 0;
        let fragment = (offset != 0 || more).then_some(Fragment { id, offset, more });
        Ok(IpPacket {
            buf,
            l4: ihl,
            end: total,
            proto: buf[9],
            src: IpAddr::V4(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15])),
            dst: IpAddr::V4(Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19])),
            ttl: buf[8],
            fragment,
        })
    }

    fn v6(buf: &'a [u8]) -> Result<IpPacket<'a>, PacketError> {
        if buf.len() < 40 {
            return Err(PacketError::Truncated);
        }
        let end = 40 + usize::from(be16(buf, 4)?);
        if buf.len() < end {
            return Err(PacketError::Truncated);
        }
        let mut src = [0u8; 16];
        src.copy_from_slice(&buf[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&buf[24..40]);
        let mut next = buf[6];
        let mut at = 40;
        let mut fragment = None;
        // Extension headers, at most 8 (anything longer is not worth a middlebox's time).
        for _ in 0..8 {
            let len = match next {
                0 | 43 | 60 => {
                    (usize::from(*buf.get(at + 1).ok_or(PacketError::Truncated)?) + 1) * 8
                }
                51 => (usize::from(*buf.get(at + 1).ok_or(PacketError::Truncated)?) + 2) * 4,
                44 => {
                    let ff = be16(buf, at + 2)?;
                    let f = Fragment {
                        id: be32(buf, at + 4)?,
                        offset: u32::from(ff >> 3) * 8,
                        more: ff & 1 != 0,
                    };
                    fragment = (f.offset != 0 || f.more).then_some(f);
                    8
                }
                _ => break,
            };
            next = *buf.get(at).ok_or(PacketError::Truncated)?;
            at += len;
            if at > end {
                return Err(PacketError::Truncated);
            }
        }
        Ok(IpPacket {
            buf,
            l4: at,
            end,
            proto: next,
            src: IpAddr::V6(Ipv6Addr::from(src)),
            dst: IpAddr::V6(Ipv6Addr::from(dst)),
            ttl: buf[7],
            fragment,
        })
    }

    /// The transport bytes (for a fragment: this fragment's data).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.l4..self.end]
    }

    /// The IP header bytes (with IPv6 extension headers).
    pub fn header(&self) -> &'a [u8] {
        &self.buf[..self.l4]
    }

    /// The whole packet as its length field gives it (trailing link padding cut).
    pub fn bytes(&self) -> &'a [u8] {
        &self.buf[..self.end]
    }

    /// Whether this is IPv4.
    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }
}

/// A checked view of a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (FIN, SYN, RST, PSH, ACK, ...).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// The segment's data.
    pub payload: &'a [u8],
}

impl<'a> TcpSegment<'a> {
    /// Parses the transport bytes of a TCP packet.
    pub fn parse(l4: &'a [u8]) -> Result<TcpSegment<'a>, PacketError> {
        if l4.len() < 20 {
            return Err(PacketError::Truncated);
        }
        let off = usize::from(l4[12] >> 4) * 4;
        if off < 20 {
            return Err(PacketError::Malformed);
        }
        let payload = l4.get(off..).ok_or(PacketError::Truncated)?;
        Ok(TcpSegment {
            sport: be16(l4, 0)?,
            dport: be16(l4, 2)?,
            seq: be32(l4, 4)?,
            ack: be32(l4, 8)?,
            flags: l4[13],
            window: be16(l4, 14)?,
            payload,
        })
    }

    /// Whether every flag in `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }

    /// Sequence space this segment occupies (data, plus one each for SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        self.payload.len() as u32 + u32::from(self.has(SYN)) + u32::from(self.has(FIN))
    }
}

/// A checked view of a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpDatagram<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The datagram's data.
    pub payload: &'a [u8],
}

impl<'a> UdpDatagram<'a> {
    /// Parses the transport bytes of a UDP packet.
    pub fn parse(l4: &'a [u8]) -> Result<UdpDatagram<'a>, PacketError> {
        if l4.len() < 8 {
            return Err(PacketError::Truncated);
        }
        let len = usize::from(be16(l4, 4)?);
        // A length of 0 is a jumbogram or a lazy stack: take the buffer.
        let end = if len == 0 { l4.len() } else { len };
        if end < 8 || end > l4.len() {
            return Err(PacketError::Malformed);
        }
        Ok(UdpDatagram {
            sport: be16(l4, 0)?,
            dport: be16(l4, 2)?,
            payload: &l4[8..end],
        })
    }
}

/// The ones' complement sum of `data` added to `acc` (not yet folded).
fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut acc = acc;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// The pseudo-header sum for a transport checksum.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = acc.wrapping_add(u32::from(proto)).wrapping_add(len as u32);
        }
        _ => {
            let s = ip6(src);
            let d = ip6(dst);
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = acc
                .wrapping_add((len as u32) >> 16)
                .wrapping_add(len as u32 & 0xffff);
            acc = acc.wrapping_add(u32::from(proto));
        }
    }
    acc
}

fn ip6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Whether the transport checksum of `pkt` (TCP or UDP) is correct.
pub fn transport_checksum_ok(pkt: &IpPacket<'_>) -> bool {
    let l4 = pkt.payload();
    fold(sum(pseudo(pkt.src, pkt.dst, pkt.proto, l4.len()), l4)) == 0
}

/// The fields of a TCP segment to craft.
#[derive(Debug, Clone, Copy)]
pub struct TcpSpec<'p> {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (sent with the ACK flag).
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Data.
    pub payload: &'p [u8],
}

/// Appends an IP header for `proto` carrying `l4_len` bytes; returns where it starts.
fn ip_header(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    l4_len: usize,
) -> Result<(), PacketError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + l4_len).map_err(|_| PacketError::Malformed)?;
            let start = out.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]); // DF
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = checksum(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
            Ok(())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(l4_len).map_err(|_| PacketError::Malformed)?;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&plen.to_be_bytes());
            out.extend_from_slice(&[proto, ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            Ok(())
        }
        _ => Err(PacketError::Family),
    }
}

/// Appends a complete IP+TCP packet to `out` (checksums filled in).
pub fn craft_tcp(out: &mut Vec<u8>, t: &TcpSpec<'_>) -> Result<(), PacketError> {
    let l4_len = 20 + t.payload.len();
    ip_header(out, t.src.ip(), t.dst.ip(), PROTO_TCP, t.ttl, l4_len)?;
    let start = out.len();
    out.extend_from_slice(&t.src.port().to_be_bytes());
    out.extend_from_slice(&t.dst.port().to_be_bytes());
    out.extend_from_slice(&t.seq.to_be_bytes());
    out.extend_from_slice(&t.ack.to_be_bytes());
    out.extend_from_slice(&[0x50, t.flags]);
    out.extend_from_slice(&t.window.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(t.payload);
    let c = fold(sum(
        pseudo(t.src.ip(), t.dst.ip(), PROTO_TCP, l4_len),
        &out[start..],
    ));
    out[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Appends a complete IP+UDP packet to `out` (checksums filled in).
pub fn craft_udp(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    payload: &[u8],
) -> Result<(), PacketError> {
    let l4_len = 8 + payload.len();
    let len16 = u16::try_from(l4_len).map_err(|_| PacketError::Malformed)?;
    ip_header(out, src.ip(), dst.ip(), PROTO_UDP, ttl, l4_len)?;
    let start = out.len();
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&len16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut c = fold(sum(
        pseudo(src.ip(), dst.ip(), PROTO_UDP, l4_len),
        &out[start..],
    ));
    if c == 0 {
        c = 0xffff;
    }
    out[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Splits an IPv4 packet into fragments carrying at most `max_data` bytes of data each
/// (rounded down to a multiple of 8). For tests and captures; the engine never fragments.
pub fn fragment_v4(pkt: &[u8], max_data: usize, id: u16) -> Result<Vec<Vec<u8>>, PacketError> {
    let p = IpPacket::parse(pkt)?;
    if !p.is_v4() || p.fragment.is_some() {
        return Err(PacketError::Malformed);
    }
    let hdr = p.header();
    let data = p.payload();
    let step = (max_data / 8).max(1) * 8;
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let end = (off + step).min(data.len());
        let mut f = hdr.to_vec();
        let total = (hdr.len() + end - off) as u16;
        f[2..4].copy_from_slice(&total.to_be_bytes());
        f[4..6].copy_from_slice(&id.to_be_bytes());
        let mf = if end < data.len() { 0x2000 } else { 0 };
        f[6..8].copy_from_slice(&(mf | (off / 8) as u16).to_be_bytes());
        f[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&f[..hdr.len()]);
        f[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&data[off..end]);
        out.push(f);
        off = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn spec<'p>(src: &str, dst: &str, payload: &'p [u8]) -> TcpSpec<'p> {
        TcpSpec {
            src: a(src),
            dst: a(dst),
            seq: 1000,
            ack: 2000,
            flags: ACK | PSH,
            window: 512,
            ttl: 64,
            payload,
        }
    }

    #[test]
    fn crafted_tcp_v4_round_trips_with_valid_checksums() {
        let mut out = Vec::new();
        craft_tcp(&mut out, &spec("10.0.0.1:40000", "10.0.1.2:443", b"hello")).unwrap();
        let ip = IpPacket::parse(&out).unwrap();
        assert_eq!(checksum(ip.header()), 0, "IPv4 header checksum");
        assert!(transport_checksum_ok(&ip));
        assert_eq!(ip.proto, PROTO_TCP);
        assert_eq!(ip.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        let t = TcpSegment::parse(ip.payload()).unwrap();
        assert_eq!((t.sport, t.dport, t.seq, t.ack), (40000, 443, 1000, 2000));
        assert_eq!(t.payload, b"hello");
        assert!(t.has(ACK | PSH) && !t.has(SYN));
        assert_eq!(t.seq_len(), 5);
    }

    #[test]
    fn crafted_tcp_and_udp_v6() {
        let mut out = Vec::new();
        craft_tcp(&mut out, &spec("[fd00::1]:1", "[fd00::2]:80", b"x")).unwrap();
        let ip = IpPacket::parse(&out).unwrap();
        assert!(!ip.is_v4() && transport_checksum_ok(&ip));
        let mut u = Vec::new();
        craft_udp(&mut u, a("[fd00::1]:5000"), a("[fd00::2]:443"), 3, b"quic").unwrap();
        let ip = IpPacket::parse(&u).unwrap();
        assert_eq!(ip.ttl, 3);
        assert!(transport_checksum_ok(&ip));
        assert_eq!(UdpDatagram::parse(ip.payload()).unwrap().payload, b"quic");
        assert_eq!(
            craft_tcp(&mut out, &spec("10.0.0.1:1", "[fd00::2]:80", b"")),
            Err(PacketError::Family)
        );
    }

    #[test]
    fn known_checksum() {
        // RFC 1071's example bytes.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn fragments_are_marked() {
        let mut out = Vec::new();
        craft_udp(&mut out, a("10.0.0.1:1"), a("10.0.0.2:2"), 64, &[7u8; 100]).unwrap();
        let frags = fragment_v4(&out, 40, 77).unwrap();
        assert_eq!(frags.len(), 3);
        let f1 = IpPacket::parse(&frags[1]).unwrap();
        assert_eq!(
            f1.fragment,
            Some(Fragment {
                id: 77,
                offset: 40,
                more: true
            })
        );
        assert_eq!(checksum(f1.header()), 0);
        let last = IpPacket::parse(&frags[2]).unwrap().fragment.unwrap();
        assert!(!last.more);
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(IpPacket::parse(&[]).unwrap_err(), PacketError::Truncated);
        assert_eq!(
            IpPacket::parse(&[0x20; 40]).unwrap_err(),
            PacketError::Version(2)
        );
        let mut v4 = vec![0x44u8; 20];
        v4[0] = 0x44; // IHL 4
        assert_eq!(IpPacket::parse(&v4).unwrap_err(), PacketError::Malformed);
        let mut out = Vec::new();
        craft_tcp(&mut out, &spec("10.0.0.1:1", "10.0.0.2:2", b"abc")).unwrap();
        out.truncate(out.len() - 1);
        assert_eq!(IpPacket::parse(&out).unwrap_err(), PacketError::Truncated);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ip) = IpPacket::parse(&bytes) {
                let _ = TcpSegment::parse(ip.payload());
                let _ = UdpDatagram::parse(ip.payload());
                prop_assert!(ip.payload().len() <= bytes.len());
            }
        }

        #[test]
        fn mutated_packets_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            v6 in any::<bool>(),
        ) {
            let (s, d) = if v6 { ("[fd00::1]:1", "[fd00::2]:2") } else { ("10.0.0.1:1", "10.0.0.2:2") };
            let mut out = Vec::new();
            craft_tcp(&mut out, &spec(s, d, &payload)).unwrap();
            for (i, b) in flips {
                let n = out.len();
                out[i % n] ^= b;
            }
            if let Ok(ip) = IpPacket::parse(&out) {
                let _ = TcpSegment::parse(ip.payload());
                let _ = UdpDatagram::parse(ip.payload());
            }
        }
    }
}
