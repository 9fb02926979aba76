//! The TLS and DTLS ClientHello parser: what a client asks for, read without decrypting.
//!
//! [`parse`] is a pure function over the first bytes a client sent on TCP: `Ok(Some(hello))`
//! for a complete, well-formed ClientHello, `Ok(None)` when the bytes are not a (readable)
//! ClientHello, `Err(Incomplete)` when more bytes are needed to decide. The handshake message
//! may be split across several TLS records and TCP segments; it is reassembled from
//! consecutive handshake records (and borrowed, not copied, when one record holds it all).
//! [`parse_dtls`] does the same for a DTLS ClientHello in UDP datagrams (RFC 6347/9147
//! framing) and [`parse_handshake`] for a bare handshake message, as QUIC CRYPTO frames carry
//! it. Once `Some`/`None` is returned for a prefix, every longer input gives the same answer.
//!
//! A [`ClientHello`] answers, without allocating: [`ClientHello::sni`] (for an Encrypted
//! Client Hello the *outer* SNI, the public name, which is all an on-path censor sees),
//! [`ClientHello::alpn`], [`ClientHello::ech`] (an `encrypted_client_hello` extension,
//! 0xfe0d, is present) and [`ClientHello::ja4`], the JA4 fingerprint of FoxIO's
//! specification (`technical_details/JA4.md` in github.com/FoxIO-LLC/ja4): GREASE values are
//! ignored everywhere; `q`/`d`/`t` for QUIC/DTLS/TLS; the version is the highest in
//! `supported_versions` (DTLS 1.3 counts above DTLS 1.2), else the hello's own version.
//! [`sni`] keeps the older one-call form: the lower-cased server name, if any.

use std::borrow::Cow;

/// The most handshake bytes the parser is willing to reassemble (a ClientHello is far smaller).
pub const MAX_HELLO: usize = 64 * 1024;

/// TLS record header length.
const RECORD_HEADER: usize = 5;

/// DTLS record header length (type, version, epoch, sequence number, length).
const DTLS_RECORD_HEADER: usize = 13;

/// DTLS handshake header length (type, length, message_seq, fragment offset and length).
const DTLS_HANDSHAKE_HEADER: usize = 12;

/// A server name from the `server_name` extension: lower-case ASCII, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sni(pub String);

impl Sni {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// More bytes are needed before the parser can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("incomplete ClientHello: more bytes needed")]
pub struct Incomplete;

/// Which protocol carried the ClientHello (JA4's first character).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// TLS over TCP (`t`).
    Tls,
    /// DTLS over UDP (`d`).
    Dtls,
    /// QUIC CRYPTO frames (`q`).
    Quic,
}

/// A complete, well-formed ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    carrier: Carrier,
    /// The ClientHello body (after the handshake header).
    body: Cow<'a, [u8]>,
    /// The legacy `client_version`.
    version: u16,
    /// Cipher suites (2 bytes each) within `body`.
    ciphers: std::ops::Range<usize>,
    /// The extensions block within `body` (empty when the hello has none).
    exts: std::ops::Range<usize>,
}

/// Whether `buf` starts like a TLS handshake record (`16 03 xx`), decidable from 1-2 bytes.
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&0x16) && buf.get(1).is_none_or(|&v| v == 3)
}

/// Whether `buf` starts like a DTLS handshake record (`16 fe xx`).
pub fn looks_like_dtls(buf: &[u8]) -> bool {
    buf.first() == Some(&0x16) && buf.get(1).is_none_or(|&v| v == 0xfe)
}

/// The lower-cased SNI of the ClientHello at the start of `buf`: `Ok(None)` when the bytes
/// are no ClientHello or it names no (valid) host.
pub fn sni(buf: &[u8]) -> Result<Option<Sni>, Incomplete> {
    Ok(parse(buf)?.and_then(|h| h.server_name()))
}

/// The ClientHello at the start of `buf`, a TLS byte stream (see the module docs).
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello<'_>>, Incomplete> {
    // The common case: one record holds the whole handshake message, borrowed as it is.
    if buf.len() >= RECORD_HEADER + 4 && buf[0] == 0x16 && buf[1] == 3 {
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        let hs = &buf[RECORD_HEADER..];
        if hs[0] == 1 && (1..=16384 + 2048).contains(&len) {
            let n = 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if n <= len && n <= hs.len() {
                return Ok(ClientHello::new(Carrier::Tls, Cow::Borrowed(&hs[4..n])));
            }
        }
    }
    // Reassemble the handshake message from consecutive handshake records.
    let mut hs: Vec<u8> = Vec::new();
    let mut rest = buf;
    let mut needed: Option<usize> = None;
    loop {
        if let Some(n) = needed {
            if hs.len() >= n {
                break;
            }
        }
        if rest.is_empty() {
            return Err(Incomplete);
        }
        if rest[0] != 0x16 {
            return Ok(None);
        }
        if rest.len() >= 2 && rest[1] != 3 {
            return Ok(None);
        }
        if rest.len() < RECORD_HEADER {
            return Err(Incomplete);
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Ok(None);
        }
        let body = &rest[RECORD_HEADER..];
        let take = body.len().min(len);
        hs.extend_from_slice(&body[..take]);
        if needed.is_none() && hs.len() >= 4 {
            if hs[0] != 1 {
                return Ok(None);
            }
            let n = 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if n > MAX_HELLO {
                return Ok(None);
            }
            needed = Some(n);
        }
        if take < len {
            // The record itself is cut short: wait for it, unless the hello is already whole.
            match needed {
                Some(n) if hs.len() >= n => break,
                _ => return Err(Incomplete),
            }
        }
        rest = &body[len..];
    }
    let n = needed.unwrap_or(0);
    hs.truncate(n);
    hs.drain(..4);
    Ok(ClientHello::new(Carrier::Tls, Cow::Owned(hs)))
}

/// The ClientHello of a bare handshake message (no record framing), as carried in QUIC
/// CRYPTO frames; `carrier` says which protocol carried it.
pub fn parse_handshake(hs: &[u8], carrier: Carrier) -> Result<Option<ClientHello<'_>>, Incomplete> {
    if hs.is_empty() {
        return Err(Incomplete);
    }
    if hs[0] != 1 {
        return Ok(None);
    }
    if hs.len() < 4 {
        return Err(Incomplete);
    }
    let n = 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
    if n > MAX_HELLO {
        return Ok(None);
    }
    if hs.len() < n {
        return Err(Incomplete);
    }
    Ok(ClientHello::new(carrier, Cow::Borrowed(&hs[4..n])))
}

/// The DTLS ClientHello in `buf`: one datagram, or the datagrams of one flight concatenated.
/// A hello fragmented over several handshake fragments is reassembled when the fragments
/// come in order.
pub fn parse_dtls(buf: &[u8]) -> Result<Option<ClientHello<'_>>, Incomplete> {
    let mut rest = buf;
    let mut whole: Option<usize> = None;
    let mut body: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        if rest.is_empty() {
            return Err(Incomplete);
        }
        if !looks_like_dtls(rest) {
            return Ok(None);
        }
        if rest.len() < DTLS_RECORD_HEADER {
            return Err(Incomplete);
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let Some(record) = rest.get(DTLS_RECORD_HEADER..DTLS_RECORD_HEADER + len) else {
            return Err(Incomplete);
        };
        rest = &rest[DTLS_RECORD_HEADER + len..];
        if record.len() < DTLS_HANDSHAKE_HEADER || record[0] != 1 {
            return Ok(None);
        }
        let u24 = |b: &[u8]| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
        let total = u24(&record[1..4]);
        let offset = u24(&record[6..9]);
        let frag_len = u24(&record[9..12]);
        let Some(frag) = record.get(DTLS_HANDSHAKE_HEADER..DTLS_HANDSHAKE_HEADER + frag_len) else {
            return Ok(None);
        };
        if total > MAX_HELLO || whole.is_some_and(|t| t != total) || offset != body.len() {
            return Ok(None);
        }
        whole = Some(total);
        body = if body.is_empty() {
            Cow::Borrowed(frag)
        } else {
            let mut b = body.into_owned();
            b.extend_from_slice(frag);
            Cow::Owned(b)
        };
        if body.len() >= total {
            return Ok(ClientHello::new(
                Carrier::Dtls,
                match body {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[..total]),
                    Cow::Owned(mut b) => {
                        b.truncate(total);
                        Cow::Owned(b)
                    }
                },
            ));
        }
    }
}

/// A cursor over a byte slice; every read fails with `None` past the end.
#[derive(Clone)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
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
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Extension type of `server_name` (RFC 6066).
const EXT_SERVER_NAME: u16 = 0x0000;
/// Extension type of `signature_algorithms` (RFC 8446).
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
/// Extension type of `application_layer_protocol_negotiation` (RFC 7301).
const EXT_ALPN: u16 = 0x0010;
/// Extension type of `supported_versions` (RFC 8446).
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
/// Extension type of `encrypted_client_hello` (draft-ietf-tls-esni).
const EXT_ECH: u16 = 0xfe0d;

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with equal bytes.
pub const fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// The u16 values of a list of 2-byte items.
fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

impl<'a> ClientHello<'a> {
    /// Validates a ClientHello body; `None` when it is malformed.
    fn new(carrier: Carrier, body: Cow<'a, [u8]>) -> Option<ClientHello<'a>> {
        let b: &[u8] = &body;
        let mut r = Reader(b);
        let version = r.u16()?;
        if version >> 8 != 3 && version >> 8 != 0xfe {
            return None;
        }
        r.take(32)?; // random
        let sid = r.vec8()?;
        if sid.len() > 32 {
            return None;
        }
        if carrier == Carrier::Dtls {
            r.vec8()?; // cookie
        }
        let suites = r.vec16()?;
        if suites.is_empty() || suites.len() % 2 != 0 {
            return None;
        }
        let ciphers_end = b.len() - r.0.len();
        let ciphers = ciphers_end - suites.len()..ciphers_end;
        if r.vec8()?.is_empty() {
            return None; // compression methods
        }
        let exts = if r.0.is_empty() {
            b.len()..b.len()
        } else {
            let block = r.vec16()?;
            let end = b.len() - r.0.len();
            let mut e = Reader(block);
            while !e.0.is_empty() {
                e.u16()?;
                e.vec16()?;
            }
            end - block.len()..end
        };
        Some(ClientHello {
            carrier,
            body,
            version,
            ciphers,
            exts,
        })
    }

    /// The same hello, owning its bytes.
    pub fn into_owned(self) -> ClientHello<'static> {
        ClientHello {
            carrier: self.carrier,
            body: Cow::Owned(self.body.into_owned()),
            version: self.version,
            ciphers: self.ciphers,
            exts: self.exts,
        }
    }

    /// Which protocol carried the hello.
    pub fn carrier(&self) -> Carrier {
        self.carrier
    }

    /// The hello's own (legacy) version field, e.g. `0x0303`.
    pub fn legacy_version(&self) -> u16 {
        self.version
    }

    /// The offered cipher suites, in order (GREASE included).
    pub fn cipher_suites(&self) -> impl Iterator<Item = u16> + '_ {
        u16s(&self.body[self.ciphers.clone()])
    }

    /// The extensions, in order: (type, data) (GREASE included).
    pub fn extensions(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        let mut r = Reader(&self.body[self.exts.clone()]);
        std::iter::from_fn(move || Some((r.u16()?, r.vec16()?)))
    }

    /// The data of the first extension of type `ty`.
    fn extension(&self, ty: u16) -> Option<&[u8]> {
        self.extensions().find(|(t, _)| *t == ty).map(|(_, d)| d)
    }

    /// The host name of the `server_name` extension, as sent but without a trailing dot;
    /// `None` without one or when it is not a valid host name.
    pub fn sni(&self) -> Option<&str> {
        let mut r = Reader(self.extension(EXT_SERVER_NAME)?);
        let mut list = Reader(r.vec16()?);
        while !list.0.is_empty() {
            let kind = list.u8()?;
            let name = list.vec16()?;
            if kind == 0 {
                return host_name(name);
            }
        }
        None
    }

    /// [`ClientHello::sni`], lower-cased (allocates).
    pub fn server_name(&self) -> Option<Sni> {
        self.sni().map(|s| Sni(s.to_ascii_lowercase()))
    }

    /// The ALPN protocol names offered, in order (none without the extension).
    pub fn alpn(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut list = self
            .extension(EXT_ALPN)
            .and_then(|d| Reader(d).vec16())
            .map_or(Reader(&[]), Reader);
        std::iter::from_fn(move || list.vec8())
    }

    /// Whether the hello carries an Encrypted Client Hello extension (0xfe0d).
    pub fn ech(&self) -> bool {
        self.extension(EXT_ECH).is_some()
    }

    /// The signature algorithms offered, in order, without GREASE.
    fn signature_algorithms(&self) -> impl Iterator<Item = u16> + '_ {
        let list = self
            .extension(EXT_SIGNATURE_ALGORITHMS)
            .and_then(|d| Reader(d).vec16())
            .unwrap_or(&[]);
        u16s(list).filter(|v| !is_grease(*v))
    }

    /// JA4's two version characters.
    fn ja4_version(&self) -> [u8; 2] {
        // Protocol order: DTLS versions count down on the wire.
        let rank = |v: u16| match v {
            0xfeff => 0x0302,
            0xfefd => 0x0303,
            0xfefc => 0x0304,
            v => v,
        };
        let v = match self.extension(EXT_SUPPORTED_VERSIONS) {
            Some(d) => Reader(d)
                .vec8()
                .and_then(|l| u16s(l).filter(|v| !is_grease(*v)).max_by_key(|v| rank(*v)))
                .unwrap_or(0),
            None => self.version,
        };
        *match v {
            0x0304 => b"13",
            0x0303 => b"12",
            0x0302 => b"11",
            0x0301 => b"10",
            0x0300 => b"s3",
            0x0002 => b"s2",
            0xfeff => b"d1",
            0xfefd => b"d2",
            0xfefc => b"d3",
            _ => b"00",
        }
    }

    /// JA4's ALPN characters: the first and last of the first ALPN value, or of its hex form
    /// when either is not alphanumeric; `00` without one.
    fn ja4_alpn(&self) -> [u8; 2] {
        let Some(first) = self.alpn().next().filter(|a| !a.is_empty()) else {
            return *b"00";
        };
        let (a, z) = (first[0], first[first.len() - 1]);
        if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
            return [a, z];
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        [HEX[usize::from(a >> 4)], HEX[usize::from(z & 0x0f)]]
    }

    /// The JA4 fingerprint, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1` (no allocation for
    /// hellos of up to 128 cipher suites and 128 extensions).
    pub fn ja4(&self) -> Ja4 {
        let mut out = [0u8; 36];
        let ciphers = || self.cipher_suites().filter(|v| !is_grease(*v));
        let exts = || self.extensions().map(|(t, _)| t).filter(|v| !is_grease(*v));
        let (nc, ne) = (ciphers().count(), exts().count());
        out[0] = match self.carrier {
            Carrier::Tls => b't',
            Carrier::Dtls => b'd',
            Carrier::Quic => b'q',
        };
        out[1..3].copy_from_slice(&self.ja4_version());
        out[3] = if self.extension(EXT_SERVER_NAME).is_some() {
            b'd'
        } else {
            b'i'
        };
        out[4..6].copy_from_slice(&two_digits(nc));
        out[6..8].copy_from_slice(&two_digits(ne));
        out[8..10].copy_from_slice(&self.ja4_alpn());
        out[10] = b'_';
        out[23] = b'_';
        let (mut stack, mut spill) = ([0u16; 128], Vec::new());
        let c = sorted(ciphers(), &mut stack, &mut spill);
        out[11..23].copy_from_slice(&hash12(c, &[]));
        let mut spill = Vec::new();
        let mut stack = [0u16; 128];
        let e = sorted(
            exts().filter(|t| *t != EXT_SERVER_NAME && *t != EXT_ALPN),
            &mut stack,
            &mut spill,
        );
        let sigs = self.signature_algorithms();
        out[24..36].copy_from_slice(&if e.is_empty() {
            *b"000000000000"
        } else {
            hash12_with(e, sigs)
        });
        Ja4(out)
    }

    /// JA4's raw form (`ja4_r`, sorted lists; `ja4_ro` with `original` order, SNI and ALPN
    /// kept), for logs and for writing rules.
    pub fn ja4_raw(&self, original: bool) -> String {
        let fp = self.ja4();
        let mut s = fp.as_str()[..10].to_string();
        let hex = |v: u16| format!("{v:04x}");
        let mut ciphers: Vec<u16> = self.cipher_suites().filter(|v| !is_grease(*v)).collect();
        let mut exts: Vec<u16> = self
            .extensions()
            .map(|(t, _)| t)
            .filter(|v| !is_grease(*v))
            .collect();
        if !original {
            ciphers.sort_unstable();
            exts.retain(|t| *t != EXT_SERVER_NAME && *t != EXT_ALPN);
            exts.sort_unstable();
        }
        let join = |l: &mut dyn Iterator<Item = u16>| l.map(hex).collect::<Vec<_>>().join(",");
        s.push('_');
        s.push_str(&join(&mut ciphers.into_iter()));
        s.push('_');
        s.push_str(&join(&mut exts.into_iter()));
        let sigs = join(&mut self.signature_algorithms());
        if !sigs.is_empty() {
            s.push('_');
            s.push_str(&sigs);
        }
        s
    }
}

/// A JA4 fingerprint: 36 ASCII characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4([u8; 36]);

impl Ja4 {
    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Display for Ja4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ja4({})", self.as_str())
    }
}

/// `n` (at most 99) as two decimal digits.
fn two_digits(n: usize) -> [u8; 2] {
    let n = n.min(99) as u8;
    [b'0' + n / 10, b'0' + n % 10]
}

/// The values of `it`, sorted, in `stack` (or `spill` when they do not fit).
fn sorted<'b>(
    it: impl Iterator<Item = u16>,
    stack: &'b mut [u16; 128],
    spill: &'b mut Vec<u16>,
) -> &'b [u16] {
    let mut n = 0;
    for v in it {
        if n < stack.len() {
            stack[n] = v;
        } else {
            if spill.is_empty() {
                spill.extend_from_slice(&stack[..]);
            }
            spill.push(v);
        }
        n += 1;
    }
    let out: &mut [u16] = if spill.is_empty() {
        &mut stack[..n]
    } else {
        &mut spill[..]
    };
    out.sort_unstable();
    out
}

/// The first 12 hex digits of the SHA-256 of `list` as comma-separated 4-digit hex, then
/// `_` and `tail` the same way when `tail` is not empty; `000000000000` for an empty list.
fn hash12(list: &[u16], tail: &[u16]) -> [u8; 12] {
    if list.is_empty() {
        return *b"000000000000";
    }
    hash12_with(list, tail.iter().copied())
}

fn hash12_with(list: &[u16], tail: impl Iterator<Item = u16>) -> [u8; 12] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let word = |v: u16| {
        [
            HEX[usize::from(v >> 12)],
            HEX[usize::from(v >> 8 & 0xf)],
            HEX[usize::from(v >> 4 & 0xf)],
            HEX[usize::from(v & 0xf)],
        ]
    };
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            ctx.update(b",");
        }
        ctx.update(&word(*v));
    }
    for (i, v) in tail.enumerate() {
        ctx.update(if i == 0 { b"_" } else { b"," });
        ctx.update(&word(v));
    }
    let d = ctx.finish();
    let mut out = [0u8; 12];
    for (i, b) in d.as_ref()[..6].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

fn host_name(raw: &[u8]) -> Option<&str> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > 253 {
        return None;
    }
    if !raw
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
    {
        return None;
    }
    std::str::from_utf8(raw).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello handshake message (without record framing) with the given extensions.
    pub(crate) fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        hello_with(&[0x0a0a, 0x1301, 0x1302], exts, false) // GREASE suite first
    }

    /// A `server_name` extension payload naming `name`.
    pub(crate) fn sni_ext(name: &str) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut v = (entry.len() as u16).to_be_bytes().to_vec();
        v.extend(entry);
        v
    }

    /// Frames a handshake message into TLS records of at most `chunk` bytes each.
    pub(crate) fn records(hs: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in hs.chunks(chunk.max(1)) {
            out.extend([0x16, 3, 1]);
            out.extend((c.len() as u16).to_be_bytes());
            out.extend(c);
        }
        out
    }

    fn typical(name: &str) -> Vec<u8> {
        hello(&[
            (0x1a1a, vec![]),            // GREASE
            (0x000a, vec![0, 2, 0, 29]), // supported_groups
            (0, sni_ext(name)),
            (0x0015, vec![0; 200]), // padding
            (0x2a2a, vec![0]),      // GREASE
        ])
    }

    /// Every prefix shorter than the whole input is `Incomplete`; the whole gives `want`.
    fn every_prefix(bytes: &[u8], want: Option<&str>) {
        for i in 0..bytes.len() {
            assert_eq!(sni(&bytes[..i]), Err(Incomplete), "prefix of {i} bytes");
        }
        let got = sni(bytes).unwrap();
        assert_eq!(got.as_ref().map(Sni::as_str), want);
        let mut longer = bytes.to_vec();
        longer.extend([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(
            sni(&longer).unwrap().as_ref().map(Sni::as_str),
            want,
            "stable"
        );
    }

    #[test]
    fn one_record_every_prefix() {
        every_prefix(
            &records(&typical("facebook.com"), 16384),
            Some("facebook.com"),
        );
    }

    #[test]
    fn split_across_records_every_prefix() {
        let hs = typical("www.Facebook.COM.");
        for chunk in [1, 2, 5, 31, 100] {
            every_prefix(&records(&hs, chunk), Some("www.facebook.com"));
        }
    }

    #[test]
    fn ech_outer_hello_gives_the_public_name() {
        let hs = hello(&[
            (0, sni_ext("cloudflare-ech.com")),
            (0xfe0d, vec![0; 120]),
            (0x0a0a, vec![]),
        ]);
        every_prefix(&records(&hs, 16384), Some("cloudflare-ech.com"));
    }

    #[test]
    fn no_sni_and_not_tls() {
        every_prefix(
            &records(&hello(&[(0x000a, vec![0, 2, 0, 29])]), 16384),
            None,
        );
        assert_eq!(sni(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(sni(&[0x16, 2]), Ok(None));
        assert_eq!(sni(&[0x16, 3, 1, 0, 0]), Ok(None));
        // a server hello is not a client hello
        let mut sh = typical("a.b");
        sh[0] = 2;
        assert_eq!(sni(&records(&sh, 16384)), Ok(None));
        // an interleaved non-handshake record ends reassembly
        let hs = typical("a.b");
        let mut bytes = records(&hs[..10], 16384);
        bytes.extend([0x17, 3, 3, 0, 1, 0]);
        assert_eq!(sni(&bytes), Ok(None));
        assert!(!looks_like_tls(b"GET"));
        assert!(looks_like_tls(&[0x16]));
    }

    #[test]
    fn bare_handshake_every_prefix() {
        let hs = typical("quic.example");
        for i in 0..hs.len() {
            assert_eq!(
                parse_handshake(&hs[..i], Carrier::Quic),
                Err(Incomplete),
                "prefix {i}"
            );
        }
        assert_eq!(
            parse_handshake(&hs, Carrier::Quic)
                .unwrap()
                .unwrap()
                .server_name(),
            Some(Sni("quic.example".into()))
        );
        assert_eq!(parse_handshake(&[2, 0, 0, 0], Carrier::Quic), Ok(None));
    }

    #[test]
    fn bad_names_are_not_returned() {
        let hs = hello(&[(0, sni_ext("bad name"))]);
        assert_eq!(sni(&records(&hs, 16384)), Ok(None));
    }

    #[test]
    fn a_real_rustls_client_hello() {
        let bytes = crate::sniff::testdata::rustls_client_hello("facebook.com");
        every_prefix(&bytes, Some("facebook.com"));
    }

    /// A ClientHello handshake message offering `ciphers`, with the given extensions; `dtls`
    /// adds the (empty) cookie and uses the DTLS 1.2 version field.
    fn hello_with(ciphers: &[u16], exts: &[(u16, Vec<u8>)], dtls: bool) -> Vec<u8> {
        let mut body = if dtls { vec![0xfe, 0xfd] } else { vec![3, 3] };
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([9u8; 32]);
        if dtls {
            body.push(0);
        }
        body.extend(((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            body.extend(c.to_be_bytes());
        }
        body.extend([1, 0]);
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend(ty.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        body.extend((e.len() as u16).to_be_bytes());
        body.extend(e);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        hs
    }

    /// `list` as a vector of u16 with a `len`-byte length prefix.
    fn list16(list: &[u16], len: usize) -> Vec<u8> {
        let n = (list.len() * 2) as u16;
        let mut v = if len == 1 {
            vec![n as u8]
        } else {
            n.to_be_bytes().to_vec()
        };
        for x in list {
            v.extend(x.to_be_bytes());
        }
        v
    }

    /// An ALPN extension payload offering `protos`.
    fn alpn_ext(protos: &[&[u8]]) -> Vec<u8> {
        let mut l = Vec::new();
        for p in protos {
            l.push(p.len() as u8);
            l.extend(*p);
        }
        let mut v = (l.len() as u16).to_be_bytes().to_vec();
        v.extend(l);
        v
    }

    /// Frames a handshake message as DTLS records of at most `chunk` body bytes each
    /// (handshake fragments with their offsets).
    fn dtls_records(hs: &[u8], chunk: usize) -> Vec<u8> {
        let body = &hs[4..];
        let mut out = Vec::new();
        for (i, c) in body.chunks(chunk.max(1)).enumerate() {
            let off = i * chunk.max(1);
            let mut frag = vec![1];
            frag.extend(&(body.len() as u32).to_be_bytes()[1..]);
            frag.extend([0, 0]); // message_seq
            frag.extend(&(off as u32).to_be_bytes()[1..]);
            frag.extend(&(c.len() as u32).to_be_bytes()[1..]);
            frag.extend(c);
            out.extend([0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, i as u8]);
            out.extend((frag.len() as u16).to_be_bytes());
            out.extend(frag);
        }
        out
    }

    /// The cipher suites, extension order and signature algorithms of the example in FoxIO's
    /// JA4 specification (`technical_details/JA4.md`, "Raw Output", `JA4_ro`).
    const SPEC_CIPHERS: [u16; 15] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    const SPEC_EXTS: [u16; 16] = [
        0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
        0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
    ];
    const SPEC_SIGS: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];

    /// A hello with `ciphers` and extensions of types `order` (with plausible contents for
    /// SNI, ALPN `h2`, supported versions `versions` and the spec's signature algorithms),
    /// GREASE values sprinkled in.
    fn example(ciphers: &[u16], order: &[u16], versions: &[u16], dtls: bool) -> Vec<u8> {
        let mut cs = vec![0x2a2a];
        cs.extend(ciphers);
        let mut exts = vec![(0x5a5a, vec![])];
        for &t in order {
            let data = match t {
                0x0000 => sni_ext("example.com"),
                0x0010 => alpn_ext(&[b"h2", b"http/1.1"]),
                0x002b => list16(versions, 1),
                0x000d => list16(&[&[0x1a1a][..], &SPEC_SIGS].concat(), 2),
                0xfe0d => vec![0; 90],
                _ => vec![],
            };
            exts.push((t, data));
        }
        exts.push((0xdada, vec![0]));
        hello_with(&cs, &exts, dtls)
    }

    #[test]
    fn ja4_of_the_spec_example() {
        let bytes = records(
            &example(&SPEC_CIPHERS, &SPEC_EXTS, &[0x3a3a, 0x0304, 0x0303], false),
            16384,
        );
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.ja4().as_str(), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(
            h.ja4_raw(false),
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
        );
        assert_eq!(
            h.ja4_raw(true),
            "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_0403,0804,0401,0503,0805,0501,0806,0601"
        );
        assert_eq!(h.sni(), Some("example.com"));
        let alpn: Vec<&[u8]> = h.alpn().collect();
        assert_eq!(alpn, [&b"h2"[..], b"http/1.1"]);
        assert!(!h.ech());
        // The same hello split over many records is reassembled to the same fingerprint.
        let split = records(
            &example(&SPEC_CIPHERS, &SPEC_EXTS, &[0x0304, 0x0303], false),
            37,
        );
        assert_eq!(parse(&split).unwrap().unwrap().ja4(), h.ja4());
    }

    #[test]
    fn ja4_of_a_published_chrome_143_hello_with_ech() {
        // browserleaks.com's report of Chrome 143 (ja4, ja4_ro), as published in
        // github.com/service0427/v2_cp_app tls.md.
        let order = [
            0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01,
            0x0023, 0x0012, 0x0005, 0x000d, 0x001b,
        ];
        let bytes = records(
            &example(&SPEC_CIPHERS, &order, &[0x0304, 0x0303], false),
            16384,
        );
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.ja4().as_str(), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
        assert!(h.ech());
        assert_eq!(h.sni(), Some("example.com"));
    }

    #[test]
    fn ja4_of_dtls_and_quic_hellos() {
        // The spec's lists in a DTLS 1.3 hello: `d`, version `d3` (the spec's table), the
        // same hashes as over TCP.
        let hs = example(&SPEC_CIPHERS, &SPEC_EXTS, &[0xfefc, 0xfefd], true);
        for chunk in [4096, 50, 1] {
            let bytes = dtls_records(&hs, chunk);
            for i in 0..bytes.len() {
                assert_eq!(parse_dtls(&bytes[..i]), Err(Incomplete), "prefix {i}");
            }
            let h = parse_dtls(&bytes).unwrap().unwrap();
            assert_eq!(h.carrier(), Carrier::Dtls);
            assert_eq!(h.ja4().as_str(), "dd3d1516h2_8daaf6152771_e5627efa2ab1");
        }
        // Without supported_versions the hello's own version counts: DTLS 1.2.
        let no_sv: Vec<u16> = SPEC_EXTS.iter().copied().filter(|t| *t != 0x002b).collect();
        let h = example(&SPEC_CIPHERS, &no_sv, &[], true);
        let bytes = dtls_records(&h, 4096);
        assert!(parse_dtls(&bytes)
            .unwrap()
            .unwrap()
            .ja4()
            .as_str()
            .starts_with("dd2d1515h2_"));
        assert_eq!(parse_dtls(b"\x16\x03\x01"), Ok(None), "TLS is not DTLS");
        let hs = example(&SPEC_CIPHERS, &SPEC_EXTS, &[0x0304], false);
        let q = parse_handshake(&hs, Carrier::Quic).unwrap().unwrap();
        assert_eq!(q.ja4().as_str(), "q13d1516h2_8daaf6152771_e5627efa2ab1");
    }

    #[test]
    fn ja4_alpn_characters_follow_the_spec_examples() {
        // JA4.md, "ALPN Extension Value".
        for (alpn, want) in [
            (&[0xab][..], "ab"),
            (&[0xab, 0xcd], "ad"),
            (&[0x30, 0xab], "3b"),
            (&[0x30, 0x31, 0xab, 0xcd], "3d"),
            (&[0x30, 0xab, 0xcd, 0x31], "01"),
            (b"http/1.1", "h1"),
            (b"x", "xx"),
        ] {
            let hs = hello(&[(0x0010, alpn_ext(&[alpn]))]);
            let bytes = records(&hs, 16384);
            let h = parse(&bytes).unwrap().unwrap();
            assert_eq!(&h.ja4().as_str()[8..10], want, "{alpn:?}");
        }
        // No SNI, no ALPN, no signature algorithms: `i`, `00`, and the hash without `_`.
        let bytes = records(&hello(&[(0x000a, vec![0, 2, 0, 29])]), 16384);
        let h = parse(&bytes).unwrap().unwrap();
        let fp = h.ja4();
        assert!(fp.as_str().starts_with("t12i020100_"), "{fp}");
        assert_eq!(h.sni(), None);
    }

    #[test]
    fn a_real_rustls_hello_has_a_ja4() {
        let bytes = crate::sniff::testdata::rustls_client_hello("facebook.com");
        let h = parse(&bytes).unwrap().unwrap();
        let fp = h.ja4();
        assert!(fp.as_str().starts_with("t13d"), "{fp}");
        assert_eq!(fp.as_str().len(), 36);
        assert_eq!(h.alpn().count(), 0);
        assert!(!h.ech());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = sni(&bytes);
            let mut framed = vec![0x16, 3, 1];
            framed.extend((bytes.len() as u16).to_be_bytes());
            framed.extend(&bytes);
            let _ = sni(&framed);
        }

        #[test]
        fn any_record_split_reads_the_same(chunk in 1usize..400, name in "[a-z]{1,20}\\.[a-z]{2,5}") {
            let bytes = records(&typical(&name), chunk);
            proptest::prop_assert_eq!(sni(&bytes), Ok(Some(Sni(name.clone()))));
            for i in 0..bytes.len() {
                proptest::prop_assert_eq!(sni(&bytes[..i]), Err(Incomplete));
            }
        }

        #[test]
        fn mutated_hellos_never_panic(pos in 0usize..400, val in proptest::num::u8::ANY) {
            let mut bytes = records(&typical("example.org"), 64);
            let p = pos % bytes.len();
            bytes[p] = val;
            let _ = sni(&bytes);
            if let Ok(Some(h)) = parse(&bytes) {
                let _ = (h.ja4(), h.ja4_raw(true), h.ech(), h.alpn().count());
            }
            let hs = example(&SPEC_CIPHERS, &SPEC_EXTS, &[0xfefc], true);
            let mut d = dtls_records(&hs, 100);
            let p = pos % d.len();
            d[p] = val;
            if let Ok(Some(h)) = parse_dtls(&d) {
                let _ = (h.ja4(), h.sni());
            }
        }
    }
}
