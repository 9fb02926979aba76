//! pcap and pcapng readers and the link/network/transport decoder.
//!
//! The format is recognised by its magic number, never by the file name: pcap (`a1b2c3d4`
//! microseconds, `a1b23c4d` nanoseconds, either byte order; libpcap's file format,
//! draft-ietf-opsawg-pcap) and pcapng (section header `0a0d0d0a` with byte-order magic
//! `1a2b3c4d`; draft-ietf-opsawg-pcapng: interface description, enhanced, simple and
//! obsolete packet blocks, `if_tsresol`). Link types: Ethernet (1, with 802.1Q/802.1ad VLAN
//! tags), raw IP (101, 12, 14, 228, 229), Linux cooked capture SLL (113) and SLL2 (276), BSD
//! loopback (0, 108). Network: IPv4 (non-first fragments skipped) and IPv6 (extension headers
//! followed). Transport: UDP and TCP. Nothing here panics on malformed input: a truncated or
//! corrupt record ends the file with an error naming its offset.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::detect::Transport;

/// Why a capture could not be read (entirely or from some offset on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// The first bytes are neither pcap nor pcapng.
    #[error("not a pcap or pcapng file (magic {0:02x?})")]
    UnknownFormat(Vec<u8>),
    /// The file ends inside a record.
    #[error("truncated record at byte {0}")]
    Truncated(usize),
    /// A pcapng block is malformed.
    #[error("malformed pcapng block at byte {0}")]
    BadBlock(usize),
}

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The link type (LINKTYPE_* value) of the frame's interface.
    pub link: u16,
    /// The captured bytes.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    link: u16,
    /// Timestamp units per second.
    units: u64,
}

/// Which container the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap.
    Pcap,
    /// pcapng.
    Pcapng,
}

/// Recognises the container by its magic number.
pub fn format(bytes: &[u8]) -> Result<Format, PcapError> {
    match bytes.get(..4) {
        Some(
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1],
        ) => Ok(Format::Pcap),
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => Ok(Format::Pcapng),
        _ => Err(PcapError::UnknownFormat(
            bytes.iter().take(4).copied().collect(),
        )),
    }
}

/// Iterator over the frames of a capture held in memory.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    format: Format,
    big: bool,
    /// pcap: the single interface; pcapng: the section's interfaces.
    ifaces: Vec<Iface>,
    done: bool,
}

impl<'a> Reader<'a> {
    /// Starts reading `bytes`, recognising the format by magic number.
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>, PcapError> {
        let format = format(bytes)?;
        let mut r = Reader {
            bytes,
            pos: 0,
            format,
            big: false,
            ifaces: Vec::new(),
            done: false,
        };
        if format == Format::Pcap {
            let hdr = bytes.get(..24).ok_or(PcapError::Truncated(0))?;
            r.big = hdr[0] == 0xa1;
            let nanos = matches!(hdr[2..4], [0x3c, 0x4d] | [0xb2, 0xa1])
                && hdr[..4] != [0xd4, 0xc3, 0xb2, 0xa1];
            let link = r.u32(20).ok_or(PcapError::Truncated(20))?;
            r.ifaces.push(Iface {
                link: (link & 0xffff) as u16,
                units: if nanos { 1_000_000_000 } else { 1_000_000 },
            });
            r.pos = 24;
        }
        Ok(r)
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn next_pcap(&mut self) -> Option<Result<Frame<'a>, PcapError>> {
        let at = self.pos;
        if at >= self.bytes.len() {
            return None;
        }
        let (Some(sec), Some(frac), Some(incl)) =
            (self.u32(at), self.u32(at + 4), self.u32(at + 8))
        else {
            return Some(Err(PcapError::Truncated(at)));
        };
        let start = at + 16;
        let Some(data) = start
            .checked_add(incl as usize)
            .and_then(|end| self.bytes.get(start..end))
        else {
            return Some(Err(PcapError::Truncated(at)));
        };
        self.pos = start + data.len();
        let iface = self.ifaces[0];
        let frac_ns = u64::from(frac) * (1_000_000_000 / iface.units);
        Some(Ok(Frame {
            ts_ns: u64::from(sec) * 1_000_000_000 + frac_ns,
            link: iface.link,
            data,
        }))
    }

    fn next_pcapng(&mut self) -> Option<Result<Frame<'a>, PcapError>> {
        loop {
            let at = self.pos;
            if at >= self.bytes.len() {
                return None;
            }
            let Some(head) = self.bytes.get(at..at + 12) else {
                return Some(Err(PcapError::Truncated(at)));
            };
            if head[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                // Section header: byte order from the magic, interfaces reset.
                self.big = match head[8..12] {
                    [0x1a, 0x2b, 0x3c, 0x4d] => true,
                    [0x4d, 0x3c, 0x2b, 0x1a] => false,
                    _ => return Some(Err(PcapError::BadBlock(at))),
                };
                self.ifaces.clear();
            }
            let (Some(kind), Some(len)) = (self.u32(at), self.u32(at + 4)) else {
                return Some(Err(PcapError::Truncated(at)));
            };
            let len = len as usize;
            if len < 12 || len % 4 != 0 {
                return Some(Err(PcapError::BadBlock(at)));
            }
            let Some(block) = at.checked_add(len).and_then(|end| self.bytes.get(at..end)) else {
                return Some(Err(PcapError::Truncated(at)));
            };
            self.pos = at + len;
            let body = &block[8..len - 4];
            match kind {
                1 => {
                    let Some(link) = self.u16(at + 8) else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let units = self.tsresol(at + 16, body.len().saturating_sub(8));
                    self.ifaces.push(Iface { link, units });
                }
                6 | 2 => {
                    // Enhanced (6) / obsolete (2) packet block.
                    let (id, th, tl, cap) = if kind == 6 {
                        (
                            self.u32(at + 8),
                            self.u32(at + 12),
                            self.u32(at + 16),
                            self.u32(at + 20),
                        )
                    } else {
                        (
                            self.u16(at + 8).map(u32::from),
                            self.u32(at + 12),
                            self.u32(at + 16),
                            self.u32(at + 20),
                        )
                    };
                    let (Some(id), Some(th), Some(tl), Some(cap)) = (id, th, tl, cap) else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let Some(&iface) = self.ifaces.get(id as usize) else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let Some(data) = body.get(20..20 + cap as usize) else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let ts = (u64::from(th) << 32) | u64::from(tl);
                    return Some(Ok(Frame {
                        ts_ns: to_ns(ts, iface.units),
                        link: iface.link,
                        data,
                    }));
                }
                3 => {
                    // Simple packet block: interface 0, no timestamp.
                    let Some(&iface) = self.ifaces.first() else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let Some(orig) = self.u32(at + 8) else {
                        return Some(Err(PcapError::BadBlock(at)));
                    };
                    let data = &body[4.min(body.len())..];
                    let data = &data[..data.len().min(orig as usize)];
                    return Some(Ok(Frame {
                        ts_ns: 0,
                        link: iface.link,
                        data,
                    }));
                }
                _ => {}
            }
        }
    }

    /// Reads `if_tsresol` (option 9) from an interface description block's options.
    fn tsresol(&self, mut at: usize, mut left: usize) -> u64 {
        while left >= 4 {
            let (Some(code), Some(len)) = (self.u16(at), self.u16(at + 2)) else {
                break;
            };
            if code == 0 {
                break;
            }
            if code == 9 && len >= 1 {
                if let Some(&v) = self.bytes.get(at + 4) {
                    let exp = u32::from(v & 0x7f);
                    let base: u64 = if v & 0x80 == 0 { 10 } else { 2 };
                    return base.checked_pow(exp).unwrap_or(1_000_000).max(1);
                }
            }
            let step = 4 + usize::from(len).div_ceil(4) * 4;
            at += step;
            left = left.saturating_sub(step);
        }
        1_000_000
    }
}

fn to_ns(ts: u64, units: u64) -> u64 {
    if units >= 1_000_000_000 {
        ts / (units / 1_000_000_000)
    } else {
        ts.saturating_mul(1_000_000_000 / units)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Frame<'a>, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.format {
            Format::Pcap => self.next_pcap(),
            Format::Pcapng => self.next_pcapng(),
        };
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// A streaming reader over any [`std::io::Read`]: the same formats as [`Reader`], holding
/// only a window of the file (about [`Stream::CHUNK`] bytes plus the largest record), so
/// memory does not grow with the capture's size.
#[derive(Debug)]
pub struct Stream<R> {
    src: R,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// File offset of `buf[0]`.
    base: usize,
    eof: bool,
    done: bool,
    format: Format,
    big: bool,
    ifaces: Vec<Iface>,
}

impl<R: std::io::Read> Stream<R> {
    /// Bytes read from the source at a time.
    pub const CHUNK: usize = 1 << 20;

    /// Starts reading, recognising the format by magic number.
    pub fn new(src: R) -> Result<Stream<R>, StreamError> {
        let mut s = Stream {
            src,
            buf: Vec::with_capacity(1 << 16),
            pos: 0,
            base: 0,
            eof: false,
            done: false,
            format: Format::Pcap,
            big: false,
            ifaces: Vec::new(),
        };
        while s.buf.len() < 24 && !s.eof {
            s.fill()?;
        }
        let r = Reader::new(&s.buf)?;
        (s.format, s.big, s.ifaces, s.pos) = (r.format, r.big, r.ifaces, r.pos);
        Ok(s)
    }

    /// Reads one more chunk, first dropping consumed bytes.
    fn fill(&mut self) -> Result<(), StreamError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos;
            self.pos = 0;
        }
        // read_to_end appends without zeroing the buffer first (a 1 MiB memset per fill
        // was 8% of the run on small captures) and retries on EINTR.
        use std::io::Read as _;
        let old = self.buf.len();
        let got = (&mut self.src)
            .take(Self::CHUNK as u64)
            .read_to_end(&mut self.buf);
        match got {
            Ok(n) if n < Self::CHUNK => self.eof = true,
            Ok(_) => {}
            Err(e) => {
                self.buf.truncate(old);
                return Err(StreamError::Io(e.to_string()));
            }
        }
        Ok(())
    }

    /// The next frame, `None` at the end; after an error, always `None`.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, StreamError>> {
        if self.done {
            return None;
        }
        let found = loop {
            let mut r = Reader {
                bytes: &self.buf,
                pos: self.pos,
                format: self.format,
                big: self.big,
                ifaces: std::mem::take(&mut self.ifaces),
                done: false,
            };
            let res = match self.format {
                Format::Pcap => r.next_pcap(),
                Format::Pcapng => r.next_pcapng(),
            };
            let got = match res {
                Some(Ok(f)) => Some(Ok((
                    f.ts_ns,
                    f.link,
                    f.data.as_ptr() as usize - self.buf.as_ptr() as usize,
                    f.data.len(),
                ))),
                Some(Err(PcapError::Truncated(_))) | None if !self.eof => None,
                Some(Err(e)) => Some(Err(e)),
                None => {
                    self.done = true;
                    return None;
                }
            };
            (self.pos, self.big, self.ifaces) = (r.pos, r.big, r.ifaces);
            match got {
                Some(x) => break x,
                None => {
                    if let Err(e) = self.fill() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        };
        match found {
            Ok((ts_ns, link, off, len)) => Some(Ok(Frame {
                ts_ns,
                link,
                data: &self.buf[off..off + len],
            })),
            Err(e) => {
                self.done = true;
                let base = self.base;
                Some(Err(StreamError::Pcap(match e {
                    PcapError::Truncated(at) => PcapError::Truncated(base + at),
                    PcapError::BadBlock(at) => PcapError::BadBlock(base + at),
                    other => other,
                })))
            }
        }
    }
}

/// Why a streamed capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A format error (offsets are file offsets).
    #[error("{0}")]
    Pcap(#[from] PcapError),
    /// The source failed.
    #[error("read error: {0}")]
    Io(String),
}

/// TCP header fields the flow table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// Sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN or RST flag.
    pub fin_or_rst: bool,
    /// RST flag.
    pub rst: bool,
}

/// A decoded UDP or TCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// UDP or TCP.
    pub transport: Transport,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// TCP fields (TCP only).
    pub tcp: Option<Tcp>,
    /// Transport payload (as captured; may be cut by the snap length).
    pub payload: &'a [u8],
}

/// Decodes a frame of link type `link` down to UDP/TCP; `None` for anything else.
pub fn decode(link: u16, data: &[u8]) -> Option<Decoded<'_>> {
    match link {
        1 => ethernet(data),
        101 | 12 | 14 => ip(data),
        228 => ipv4(data),
        229 => ipv6(data),
        113 => ethertype(
            u16::from_be_bytes(data.get(14..16)?.try_into().ok()?),
            data.get(16..)?,
        ),
        276 => ethertype(
            u16::from_be_bytes(data.get(0..2)?.try_into().ok()?),
            data.get(20..)?,
        ),
        0 | 108 => {
            let fam = data.get(..4)?;
            let le = u32::from_le_bytes(fam.try_into().ok()?);
            let be = u32::from_be_bytes(fam.try_into().ok()?);
            match (le.min(be), data.get(4..)?) {
                (2, rest) => ipv4(rest),
                (24 | 28 | 30, rest) => ipv6(rest),
                _ => None,
            }
        }
        _ => None,
    }
}

fn ethernet(data: &[u8]) -> Option<Decoded<'_>> {
    let mut at = 12;
    loop {
        let et = u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?);
        if matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            at += 4;
            continue;
        }
        return ethertype(et, data.get(at + 2..)?);
    }
}

fn ethertype(et: u16, rest: &[u8]) -> Option<Decoded<'_>> {
    match et {
        0x0800 => ipv4(rest),
        0x86dd => ipv6(rest),
        _ => None,
    }
}

fn ip(data: &[u8]) -> Option<Decoded<'_>> {
    match data.first()? >> 4 {
        4 => ipv4(data),
        6 => ipv6(data),
        _ => None,
    }
}

fn ipv4(d: &[u8]) -> Option<Decoded<'_>> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    if d[0] >> 4 != 4 || ihl < 20 || d.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes(d[2..4].try_into().ok()?));
    let frag_off = u16::from_be_bytes(d[6..8].try_into().ok()?) & 0x1fff;
    if frag_off != 0 {
        return None; // a non-first fragment carries no transport header
    }
    let end = if total >= ihl {
        total.min(d.len())
    } else {
        d.len()
    };
    let src = IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19]));
    transport(d[9], src, dst, d.get(ihl..end)?)
}

fn ipv6(d: &[u8]) -> Option<Decoded<'_>> {
    if d.len() < 40 || d[0] >> 4 != 6 {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes(d[4..6].try_into().ok()?));
    let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&d[8..24]).ok()?));
    let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&d[24..40]).ok()?));
    let mut next = d[6];
    let mut rest = &d[40..(40 + plen).min(d.len())];
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = (usize::from(*rest.get(1)?) + 1) * 8;
                next = *rest.first()?;
                rest = rest.get(len..)?;
            }
            44 => {
                let off = u16::from_be_bytes(rest.get(2..4)?.try_into().ok()?) >> 3;
                if off != 0 {
                    return None;
                }
                next = *rest.first()?;
                rest = rest.get(8..)?;
            }
            51 => {
                let len = (usize::from(*rest.get(1)?) + 2) * 4;
                next = *rest.first()?;
                rest = rest.get(len..)?;
            }
            _ => return transport(next, src, dst, rest),
        }
    }
    None
}

fn transport(proto: u8, src: IpAddr, dst: IpAddr, l4: &[u8]) -> Option<Decoded<'_>> {
    let sp = u16::from_be_bytes(l4.get(0..2)?.try_into().ok()?);
    let dp = u16::from_be_bytes(l4.get(2..4)?.try_into().ok()?);
    let (src, dst) = (SocketAddr::new(src, sp), SocketAddr::new(dst, dp));
    match proto {
        17 => {
            let len = usize::from(u16::from_be_bytes(l4.get(4..6)?.try_into().ok()?));
            let end = if len >= 8 {
                len.min(l4.len())
            } else {
                l4.len()
            };
            Some(Decoded {
                transport: Transport::Udp,
                src,
                dst,
                tcp: None,
                payload: l4.get(8..end)?,
            })
        }
        6 => {
            let off = usize::from(l4.get(12)? >> 4) * 4;
            let flags = *l4.get(13)?;
            if off < 20 {
                return None;
            }
            Some(Decoded {
                transport: Transport::Tcp,
                src,
                dst,
                tcp: Some(Tcp {
                    seq: u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?),
                    syn: flags & 0x02 != 0,
                    ack: flags & 0x10 != 0,
                    fin_or_rst: flags & 0x05 != 0,
                    rst: flags & 0x04 != 0,
                }),
                payload: l4.get(off..)?,
            })
        }
        _ => None,
    }
}

/// Writers of tiny captures (tests and benchmarks).
pub mod write {
    /// A little-endian microsecond pcap with link type `link` holding `frames` (ts in µs).
    pub fn pcap(link: u32, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        for (ts, f) in frames {
            out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// A big-endian pcapng with one interface of link type `link`, nanosecond resolution.
    pub fn pcapng(link: u16, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let block = |out: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let len = 12 + body.len().div_ceil(4) * 4;
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(body);
            out.resize(out.len() + (len - 12 - body.len()), 0);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        };
        let mut shb = vec![0x1a, 0x2b, 0x3c, 0x4d, 0, 1, 0, 0];
        shb.extend_from_slice(&u64::MAX.to_be_bytes());
        block(&mut out, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&link.to_be_bytes());
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65535u32.to_be_bytes());
        idb.extend_from_slice(&[0, 9, 0, 1, 9, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol = 10^-9, end
        block(&mut out, 1, &idb);
        for (ts, f) in frames {
            let ns = ts * 1000;
            let mut epb = Vec::new();
            epb.extend_from_slice(&0u32.to_be_bytes());
            epb.extend_from_slice(&((ns >> 32) as u32).to_be_bytes());
            epb.extend_from_slice(&(ns as u32).to_be_bytes());
            epb.extend_from_slice(&(f.len() as u32).to_be_bytes());
            epb.extend_from_slice(&(f.len() as u32).to_be_bytes());
            epb.extend_from_slice(f);
            block(&mut out, 6, &epb);
        }
        out
    }

    /// An IPv4 packet (no options) carrying `l4` with protocol `proto`.
    pub fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    /// An IPv6 packet carrying `l4` with next header `proto`.
    pub fn ipv6(proto: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    /// A UDP datagram.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// A TCP segment with the given sequence number and flags (`0x02` SYN, `0x10` ACK, ...).
    pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// An Ethernet frame (optionally 802.1Q-tagged) with `ethertype`.
    pub fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if let Some(v) = vlan {
            p.extend_from_slice(&0x8100u16.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(&ethertype.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A Linux cooked (SLL, link type 113) frame.
    pub fn sll(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        p.extend_from_slice(&ethertype.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        write::ipv4(
            17,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &write::udp(5000, 1194, payload),
        )
    }

    #[test]
    fn format_is_recognised_by_magic_not_name() {
        let f = vec![(1_000_000, write::ethernet(0x0800, None, &udp4(b"hi")))];
        assert_eq!(format(&write::pcap(1, &f)), Ok(Format::Pcap));
        assert_eq!(format(&write::pcapng(1, &f)), Ok(Format::Pcapng));
        assert!(matches!(
            format(b"GIF89a"),
            Err(PcapError::UnknownFormat(_))
        ));
    }

    #[test]
    fn every_link_type_decodes_to_the_same_udp_packet() {
        let ip = udp4(b"payload");
        let v6 = write::ipv6(
            17,
            [0xfe; 16],
            [0xfd; 16],
            &write::udp(5000, 1194, b"payload"),
        );
        let cases: Vec<(u16, Vec<u8>)> = vec![
            (1, write::ethernet(0x0800, None, &ip)),
            (1, write::ethernet(0x0800, Some(42), &ip)),
            (1, write::ethernet(0x86dd, Some(7), &v6)),
            (101, ip.clone()),
            (228, ip.clone()),
            (229, v6.clone()),
            (113, write::sll(0x0800, &ip)),
            (
                0,
                [2u8, 0, 0, 0]
                    .iter()
                    .copied()
                    .chain(ip.iter().copied())
                    .collect(),
            ),
        ];
        for (link, frame) in cases {
            let d = decode(link, &frame).unwrap_or_else(|| panic!("link {link}"));
            assert_eq!(
                (d.transport, d.payload, d.dst.port()),
                (Transport::Udp, &b"payload"[..], 1194),
                "link {link}"
            );
        }
    }

    #[test]
    fn pcap_and_pcapng_yield_the_same_frames_with_timestamps() {
        let frames: Vec<(u64, Vec<u8>)> = (0..3)
            .map(|i| (1_700_000_000_000_000 + i * 1500, udp4(&[i as u8; 5])))
            .collect();
        for bytes in [write::pcap(101, &frames), write::pcapng(101, &frames)] {
            let got: Vec<Frame<'_>> = Reader::new(&bytes).unwrap().map(Result::unwrap).collect();
            assert_eq!(got.len(), 3);
            assert_eq!(got[1].ts_ns, (1_700_000_000_000_000 + 1500) * 1000);
            assert_eq!(got[2].data, &frames[2].1[..]);
        }
    }

    #[test]
    fn truncated_capture_reports_the_offset() {
        let frames = vec![(0, udp4(b"abc")), (1, udp4(b"def"))];
        let bytes = write::pcap(101, &frames);
        let cut = &bytes[..bytes.len() - 2];
        let got: Vec<_> = Reader::new(cut).unwrap().collect();
        assert!(got[0].is_ok());
        assert!(matches!(got[1], Err(PcapError::Truncated(_))), "{got:?}");
    }

    #[test]
    fn real_captures_are_read_to_the_end() {
        // Recorded by tests/data/make-captures.sh (tcpdump, Ethernet link type).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures");
        for name in ["udp-tls.pcap", "tcp-tls-auth.pcap", "non-vpn.pcap"] {
            let bytes = std::fs::read(dir.join(name)).expect(name);
            let frames: Vec<_> = Reader::new(&bytes)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            // Every record header's length adds up to the file: read to the very end.
            let total: usize = 24 + frames.iter().map(|f| 16 + f.data.len()).sum::<usize>();
            assert_eq!(total, bytes.len(), "{name}");
            assert!(frames.len() > 10, "{name}: {}", frames.len());
            assert!(
                frames.iter().all(|f| decode(f.link, f.data).is_some()),
                "{name}: every frame is IPv4 TCP or UDP"
            );
        }
    }

    proptest! {
        #[test]
        fn reader_and_decoder_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), link in prop::sample::select(vec![0u16, 1, 12, 101, 113, 228, 229, 276])) {
            for magic in [[0xd4u8, 0xc3, 0xb2, 0xa1], [0x0a, 0x0d, 0x0d, 0x0a]] {
                let mut b = magic.to_vec();
                b.extend_from_slice(&bytes);
                if let Ok(r) = Reader::new(&b) {
                    for f in r.take(100).flatten() {
                        let _ = decode(f.link, f.data);
                    }
                }
            }
            let _ = decode(link, &bytes);
        }
    }

    #[test]
    fn stream_matches_the_in_memory_reader_across_chunk_boundaries() {
        let frames: Vec<(u64, Vec<u8>)> = (0..3000u64)
            .map(|i| {
                let payload = vec![i as u8; (i as usize * 37) % 1400];
                (
                    i * 1000,
                    write::ipv4(
                        17,
                        [10, 0, 0, 1],
                        [10, 0, 0, 2],
                        &write::udp(1, 2, &payload),
                    ),
                )
            })
            .collect();
        for bytes in [write::pcap(101, &frames), write::pcapng(101, &frames)] {
            assert!(bytes.len() > Stream::<&[u8]>::CHUNK, "spans several chunks");
            let want: Vec<Frame<'_>> = Reader::new(&bytes).unwrap().map(Result::unwrap).collect();
            let mut s = Stream::new(&bytes[..]).unwrap();
            let mut n = 0;
            while let Some(f) = s.next_frame() {
                assert_eq!(f.unwrap(), want[n]);
                n += 1;
            }
            assert_eq!(n, want.len());
            // Cut in the middle of a record: every earlier frame, then the error's offset.
            let cut = &bytes[..bytes.len() - 10];
            let mut s = Stream::new(cut).unwrap();
            let mut n = 0;
            let err = loop {
                match s.next_frame() {
                    Some(Ok(_)) => n += 1,
                    Some(Err(e)) => break e,
                    None => panic!("truncation not reported"),
                }
            };
            assert_eq!(n, want.len() - 1);
            assert!(
                matches!(err, StreamError::Pcap(PcapError::Truncated(at)) if at > Stream::<&[u8]>::CHUNK)
            );
            assert!(s.next_frame().is_none());
        }
    }
}
