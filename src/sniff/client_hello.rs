//! The TLS ClientHello parser: reads the server name (SNI) a client asks for, without decrypting.
//!
//! [`parse`] is a pure function over the first bytes a client sent: `Ok(Some(sni))` when a
//! complete ClientHello names a host, `Ok(None)` when the bytes are not a (readable)
//! ClientHello or it names no host, `Err(Incomplete)` when more bytes are needed to decide.
//! The handshake message may be split across several TLS records and TCP segments; it is
//! reassembled from consecutive handshake records. GREASE values, padding and unknown
//! extensions are skipped; for an Encrypted Client Hello the *outer* SNI (the public name) is
//! returned, which is all an on-path censor sees. Once `Some`/`None` is returned for a prefix,
//! every longer input gives the same answer.

/// The most handshake bytes the parser is willing to reassemble (a ClientHello is far smaller).
pub const MAX_HELLO: usize = 64 * 1024;

/// TLS record header length.
const RECORD_HEADER: usize = 5;

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

/// Whether `buf` starts like a TLS handshake record (`16 03 xx`), decidable from 1-2 bytes.
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&0x16) && buf.get(1).is_none_or(|&v| v == 3)
}

/// The SNI of the ClientHello at the start of `buf` (see the module docs).
pub fn parse(buf: &[u8]) -> Result<Option<Sni>, Incomplete> {
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
    Ok(parse_body(&hs[4..n]))
}

/// The SNI of a bare ClientHello handshake message (no TLS record framing), as carried in
/// QUIC CRYPTO frames.
pub fn parse_handshake(hs: &[u8]) -> Result<Option<Sni>, Incomplete> {
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
    Ok(parse_body(&hs[4..n]))
}

/// A cursor over a byte slice; every read fails with `None` past the end.
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
const EXT_SERVER_NAME: u16 = 0;

fn parse_body(body: &[u8]) -> Option<Sni> {
    let mut r = Reader(body);
    let version = r.take(2)?;
    if version[0] != 3 {
        return None;
    }
    r.take(32)?; // random
    let sid = r.vec8()?;
    if sid.len() > 32 {
        return None;
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if r.vec8()?.is_empty() {
        return None; // compression methods
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty == EXT_SERVER_NAME {
            return server_name(data);
        }
    }
    None
}

fn server_name(data: &[u8]) -> Option<Sni> {
    let mut r = Reader(data);
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

fn host_name(raw: &[u8]) -> Option<Sni> {
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
    let s = std::str::from_utf8(raw).ok()?.to_ascii_lowercase();
    Some(Sni(s))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello handshake message (without record framing) with the given extensions.
    pub(crate) fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([9u8; 32]);
        body.extend([0, 6, 0x0a, 0x0a, 0x13, 0x01, 0x13, 0x02]); // GREASE suite first
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
            assert_eq!(parse(&bytes[..i]), Err(Incomplete), "prefix of {i} bytes");
        }
        let got = parse(bytes).unwrap();
        assert_eq!(got.as_ref().map(Sni::as_str), want);
        let mut longer = bytes.to_vec();
        longer.extend([0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(
            parse(&longer).unwrap().as_ref().map(Sni::as_str),
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
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(None));
        assert_eq!(parse(&[0x16, 2]), Ok(None));
        assert_eq!(parse(&[0x16, 3, 1, 0, 0]), Ok(None));
        // a server hello is not a client hello
        let mut sh = typical("a.b");
        sh[0] = 2;
        assert_eq!(parse(&records(&sh, 16384)), Ok(None));
        // an interleaved non-handshake record ends reassembly
        let hs = typical("a.b");
        let mut bytes = records(&hs[..10], 16384);
        bytes.extend([0x17, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&bytes), Ok(None));
        assert!(!looks_like_tls(b"GET"));
        assert!(looks_like_tls(&[0x16]));
    }

    #[test]
    fn bare_handshake_every_prefix() {
        let hs = typical("quic.example");
        for i in 0..hs.len() {
            assert_eq!(parse_handshake(&hs[..i]), Err(Incomplete), "prefix {i}");
        }
        assert_eq!(parse_handshake(&hs), Ok(Some(Sni("quic.example".into()))));
        assert_eq!(parse_handshake(&[2, 0, 0, 0]), Ok(None));
    }

    #[test]
    fn bad_names_are_not_returned() {
        let hs = hello(&[(0, sni_ext("bad name"))]);
        assert_eq!(parse(&records(&hs, 16384)), Ok(None));
    }

    #[test]
    fn a_real_rustls_client_hello() {
        let bytes = crate::sniff::testdata::rustls_client_hello("facebook.com");
        every_prefix(&bytes, Some("facebook.com"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
            let mut framed = vec![0x16, 3, 1];
            framed.extend((bytes.len() as u16).to_be_bytes());
            framed.extend(&bytes);
            let _ = parse(&framed);
        }

        #[test]
        fn any_record_split_reads_the_same(chunk in 1usize..400, name in "[a-z]{1,20}\\.[a-z]{2,5}") {
            let bytes = records(&typical(&name), chunk);
            proptest::prop_assert_eq!(parse(&bytes), Ok(Some(Sni(name.clone()))));
            for i in 0..bytes.len() {
                proptest::prop_assert_eq!(parse(&bytes[..i]), Err(Incomplete));
            }
        }

        #[test]
        fn mutated_hellos_never_panic(pos in 0usize..400, val in proptest::num::u8::ANY) {
            let mut bytes = records(&typical("example.org"), 64);
            let p = pos % bytes.len();
            bytes[p] = val;
            let _ = parse(&bytes);
        }
    }
}
