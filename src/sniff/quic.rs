//! QUIC v1 Initial packets: recognising them, removing their protection with the RFC 9001
//! initial keys (derived from the client's Destination Connection ID, so any on-path observer
//! can), and reading the ClientHello SNI from their CRYPTO frames. Pure functions, no I/O.
//!
//! [`InitialInfo::parse`] answers for one datagram; a ClientHello larger than one packet (for
//! example with post-quantum key shares) spans several Initials: [`CryptoStream`] collects
//! their CRYPTO data by offset until [`CryptoStream::sni`] can answer. [`seal_initial`] builds
//! a client Initial, for tests and probes.

use ring::aead::{self, quic as hp, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::client_hello::{self, Carrier, ClientHello, Incomplete, Sni};

/// QUIC version 1.
pub const VERSION_1: u32 = 1;

/// The Russian rule: QUIC v1 datagrams of at least this many bytes (UDP payload) are dropped.
pub const RU_MIN_INITIAL: usize = 1001;

/// RFC 9001 section 5.2: the salt of the v1 initial secret.
const INITIAL_SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];

/// The most CRYPTO bytes collected for one ClientHello.
const MAX_CRYPTO: u64 = 64 * 1024;

/// Why an Initial could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuicError {
    /// Not a long-header QUIC v1 Initial packet.
    #[error("not a QUIC v1 Initial packet")]
    NotInitial,
    /// The packet is cut short or a length field is inconsistent.
    #[error("malformed QUIC Initial packet")]
    Malformed,
    /// The payload did not authenticate with the initial keys.
    #[error("QUIC Initial did not decrypt")]
    Decrypt,
}

/// The version of a long-header packet at the start of `datagram`, if it is one.
pub fn long_header_version(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < 5 || datagram[0] & 0x80 == 0 {
        return None;
    }
    Some(u32::from_be_bytes([
        datagram[1],
        datagram[2],
        datagram[3],
        datagram[4],
    ]))
}

/// Whether `datagram` is what the Russian censor drops: a QUIC v1 long-header Initial of at
/// least [`RU_MIN_INITIAL`] bytes.
pub fn is_big_v1_initial(datagram: &[u8]) -> bool {
    datagram.len() >= RU_MIN_INITIAL
        && long_header_version(datagram) == Some(VERSION_1)
        && (datagram[0] >> 4) & 0x03 == 0
}

/// The CRYPTO frames of one client Initial packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialInfo {
    /// The Destination Connection ID (it keys the initial secrets).
    pub dcid: Vec<u8>,
    /// The packet number.
    pub packet_number: u64,
    /// CRYPTO frames: (offset, data).
    pub crypto: Vec<(u64, Vec<u8>)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], QuicError> {
        let end = self.pos.checked_add(n).ok_or(QuicError::Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(QuicError::Malformed)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, QuicError> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u64, QuicError> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }
}

/// Client-side initial keys (RFC 9001 section 5.2).
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    hp: hp::HeaderProtectionKey,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context.
fn expand_label(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Result<(), QuicError> {
    let len = (out.len() as u16).to_be_bytes();
    let full_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &full_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| QuicError::Decrypt)
}

impl Keys {
    fn client(dcid: &[u8]) -> Result<Keys, QuicError> {
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, &INITIAL_SALT_V1).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret)?;
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &secret);
        let (mut key, mut iv, mut hpk) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        expand_label(&prk, b"quic key", &mut key)?;
        expand_label(&prk, b"quic iv", &mut iv)?;
        expand_label(&prk, b"quic hp", &mut hpk)?;
        let key = UnboundKey::new(&aead::AES_128_GCM, &key).map_err(|_| QuicError::Decrypt)?;
        let hp =
            hp::HeaderProtectionKey::new(&hp::AES_128, &hpk).map_err(|_| QuicError::Decrypt)?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            hp,
        })
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (i, b) in pn.to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        Nonce::assume_unique_for_key(n)
    }
}

/// Where the fields of a long-header Initial are: (dcid range, packet-number offset, end).
fn layout(d: &[u8]) -> Result<(std::ops::Range<usize>, usize, usize), QuicError> {
    if long_header_version(d) != Some(VERSION_1) || d[0] & 0x40 == 0 || (d[0] >> 4) & 0x03 != 0 {
        return Err(QuicError::NotInitial);
    }
    let mut r = Reader { buf: d, pos: 5 };
    let dcid_len = usize::from(r.u8()?);
    if dcid_len > 20 {
        return Err(QuicError::Malformed);
    }
    let dcid_at = r.pos;
    r.take(dcid_len)?;
    let scid_len = usize::from(r.u8()?);
    r.take(scid_len)?;
    let token_len = r.varint()?;
    r.take(usize::try_from(token_len).map_err(|_| QuicError::Malformed)?)?;
    let length = usize::try_from(r.varint()?).map_err(|_| QuicError::Malformed)?;
    let pn_at = r.pos;
    let end = pn_at.checked_add(length).ok_or(QuicError::Malformed)?;
    if end > d.len() || length < 20 {
        return Err(QuicError::Malformed);
    }
    Ok((dcid_at..dcid_at + dcid_len, pn_at, end))
}

impl InitialInfo {
    /// Opens the first (Initial) packet of a client datagram and lists its CRYPTO frames.
    pub fn parse(datagram: &[u8]) -> Result<InitialInfo, QuicError> {
        let (dcid, pn_at, end) = layout(datagram)?;
        let dcid = datagram[dcid].to_vec();
        let keys = Keys::client(&dcid)?;
        let mut pkt = datagram[..end].to_vec();
        let sample = pkt.get(pn_at + 4..pn_at + 20).ok_or(QuicError::Malformed)?;
        let mask = keys.hp.new_mask(sample).map_err(|_| QuicError::Decrypt)?;
        pkt[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(pkt[0] & 0x03) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            pkt[pn_at + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(pkt[pn_at + i]);
        }
        let (header, payload) = pkt.split_at_mut(pn_at + pn_len);
        let plain = keys
            .key
            .open_in_place(keys.nonce(pn), Aad::from(&header[..]), payload)
            .map_err(|_| QuicError::Decrypt)?;
        Ok(InitialInfo {
            dcid,
            packet_number: pn,
            crypto: crypto_frames(plain)?,
        })
    }
}

/// The CRYPTO frames of a decrypted Initial payload (PADDING, PING and ACK are skipped).
fn crypto_frames(plain: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, QuicError> {
    let mut r = Reader { buf: plain, pos: 0 };
    let mut out = Vec::new();
    while r.pos < plain.len() {
        match r.varint()? {
            0x00 | 0x01 => {}
            t @ (0x02 | 0x03) => {
                r.varint()?; // largest acknowledged
                r.varint()?; // delay
                let ranges = r.varint()?;
                r.varint()?; // first range
                for _ in 0..ranges {
                    r.varint()?;
                    r.varint()?;
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        r.varint()?;
                    }
                }
            }
            0x06 => {
                let offset = r.varint()?;
                let len = usize::try_from(r.varint()?).map_err(|_| QuicError::Malformed)?;
                out.push((offset, r.take(len)?.to_vec()));
            }
            // CONNECTION_CLOSE or anything else: stop reading.
            _ => break,
        }
    }
    Ok(out)
}

/// CRYPTO data of one connection's client Initials, reassembled by offset.
#[derive(Debug, Clone, Default)]
pub struct CryptoStream {
    chunks: Vec<(u64, Vec<u8>)>,
}

impl CryptoStream {
    /// Adds the CRYPTO frames of one Initial.
    pub fn add(&mut self, frames: Vec<(u64, Vec<u8>)>) {
        for (off, data) in frames {
            if off.saturating_add(data.len() as u64) <= MAX_CRYPTO {
                self.chunks.push((off, data));
            }
        }
    }

    /// The contiguous bytes from offset 0.
    fn contiguous(&self) -> Vec<u8> {
        let mut chunks: Vec<&(u64, Vec<u8>)> = self.chunks.iter().collect();
        chunks.sort_by_key(|c| c.0);
        let mut out: Vec<u8> = Vec::new();
        for (off, data) in chunks {
            let off = *off as usize;
            if off > out.len() {
                break;
            }
            let skip = out.len() - off;
            if skip < data.len() {
                out.extend_from_slice(&data[skip..]);
            }
        }
        out
    }

    /// The SNI of the ClientHello, once enough of it has arrived.
    pub fn sni(&self) -> Result<Option<Sni>, Incomplete> {
        Ok(self.client_hello()?.and_then(|h| h.server_name()))
    }

    /// The ClientHello (ALPN, ECH, JA4 with `q`), once enough of it has arrived.
    pub fn client_hello(&self) -> Result<Option<ClientHello<'static>>, Incomplete> {
        let hs = self.contiguous();
        let hello = client_hello::parse_handshake(&hs, Carrier::Quic)?;
        Ok(hello.map(ClientHello::into_owned))
    }
}

/// Builds a client Initial datagram carrying `crypto` (CRYPTO frames at `offset`), padded to
/// `size` bytes, protected with the initial keys of `dcid` — what a QUIC client sends first.
pub fn seal_initial(
    dcid: &[u8],
    pn: u32,
    offset: u64,
    crypto: &[u8],
    size: usize,
) -> Result<Vec<u8>, QuicError> {
    fn varint(out: &mut Vec<u8>, v: u64) {
        if v < 64 {
            out.push(v as u8);
        } else if v < 16384 {
            out.extend(((v as u16) | 0x4000).to_be_bytes());
        } else {
            out.extend(((v as u32) | 0x8000_0000).to_be_bytes());
        }
    }
    let keys = Keys::client(dcid)?;
    let mut frames = vec![0x06];
    varint(&mut frames, offset);
    varint(&mut frames, crypto.len() as u64);
    frames.extend_from_slice(crypto);
    let mut header = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
    header.extend_from_slice(dcid);
    header.extend([0, 0]); // no SCID, no token
    let fixed = header.len() + 2 + 4 + 16; // length (2-byte varint), pn, tag
    let pad = size.saturating_sub(fixed + frames.len());
    frames.resize(frames.len() + pad, 0);
    let length = 4 + frames.len() + 16;
    header.extend(((length as u16) | 0x4000).to_be_bytes());
    let pn_at = header.len();
    header.extend(pn.to_be_bytes());
    let mut payload = frames;
    keys.key
        .seal_in_place_append_tag(
            keys.nonce(u64::from(pn)),
            Aad::from(&header[..]),
            &mut payload,
        )
        .map_err(|_| QuicError::Decrypt)?;
    let mut pkt = header;
    pkt.extend(payload);
    let mask = keys
        .hp
        .new_mask(&pkt[pn_at + 4..pn_at + 20])
        .map_err(|_| QuicError::Decrypt)?;
    pkt[0] ^= mask[0] & 0x0f;
    for i in 0..4 {
        pkt[pn_at + i] ^= mask[1 + i];
    }
    Ok(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_packet() -> Vec<u8> {
        let hex: String = include_str!("../../tests/data/rfc9001-a2-client-initial.hex")
            .split_whitespace()
            .collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc9001_appendix_a2_client_initial() {
        let pkt = rfc_packet();
        assert_eq!(pkt.len(), 1200);
        assert!(is_big_v1_initial(&pkt));
        let info = InitialInfo::parse(&pkt).unwrap();
        assert_eq!(info.dcid, [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
        assert_eq!(info.packet_number, 2);
        assert_eq!(info.crypto.len(), 1);
        assert_eq!(info.crypto[0].0, 0);
        assert_eq!(info.crypto[0].1.len(), 0xf1);
        let mut s = CryptoStream::default();
        s.add(info.crypto);
        assert_eq!(s.sni(), Ok(Some(Sni("example.com".into()))));
    }

    #[test]
    fn tampering_fails_authentication() {
        let mut pkt = rfc_packet();
        pkt[100] ^= 1;
        assert_eq!(InitialInfo::parse(&pkt), Err(QuicError::Decrypt));
        assert_eq!(InitialInfo::parse(&pkt[..40]), Err(QuicError::Malformed));
        let mut v2 = rfc_packet();
        v2[4] = 2;
        assert_eq!(InitialInfo::parse(&v2), Err(QuicError::NotInitial));
        assert!(!is_big_v1_initial(&v2));
        assert!(!is_big_v1_initial(&rfc_packet()[..1000]));
    }

    #[test]
    fn sealed_hello_split_over_two_initials() {
        let hs = crate::sniff::client_hello::tests::hello(&[
            (
                0,
                crate::sniff::client_hello::tests::sni_ext("facebook.com"),
            ),
            (0x0015, vec![0; 1500]),
        ]);
        let dcid = [1, 2, 3, 4, 5, 6, 7, 8];
        let (a, b) = hs.split_at(1000);
        let p1 = seal_initial(&dcid, 0, 0, a, 1200).unwrap();
        let p2 = seal_initial(&dcid, 1, 1000, b, 1200).unwrap();
        assert_eq!(p1.len(), 1200);
        let mut s = CryptoStream::default();
        // the second packet first, as Chrome may send them
        s.add(InitialInfo::parse(&p2).unwrap().crypto);
        assert_eq!(s.sni(), Err(Incomplete));
        s.add(InitialInfo::parse(&p1).unwrap().crypto);
        assert_eq!(s.sni(), Ok(Some(Sni("facebook.com".into()))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1300)) {
            let _ = InitialInfo::parse(&bytes);
            let mut v1 = vec![0xc0, 0, 0, 0, 1];
            v1.extend(&bytes);
            let _ = InitialInfo::parse(&v1);
            let _ = crypto_frames(&bytes);
        }
    }
}
