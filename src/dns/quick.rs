//! The hot path's query decoder and response writer: plain queries without `hickory-proto`.
//!
//! [`decode`] reads only the common shape of a query: a standard QUERY with one question of
//! class IN whose name is uncompressed and made of letters, digits, `-` (not leading a label)
//! and `_`, no answer or
//! authority records, and at most one additional record, an EDNS version 0 OPT record; the
//! packet must end where that shape ends. It lower-cases the name into a fixed buffer (no
//! allocation) and returns `None` for everything else, which the caller hands to the full
//! parser ([`super::wire::parse`]), which also answers malformed packets with FORMERR. So the
//! decoder never rejects anything itself: for every packet it accepts, the full parser gives
//! the same ID, flags, question and EDNS payload size (a proptest checks this on random and
//! mutated packets). [`write_reply`] writes an answer with records pointing at the question
//! (the blockpage addresses) or none (an error rcode), echoing the client's question bytes.

use std::net::IpAddr;

use super::wire::MAX_UDP_PAYLOAD;

/// Longest question name on the wire (RFC 1035), and so its dotted text.
const MAX_NAME: usize = 255;

/// A plain one-question query, decoded without allocating.
#[derive(Clone)]
pub struct Quick {
    /// The query ID.
    pub id: u16,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// The question type.
    pub qtype: u16,
    /// The client's advertised UDP payload size, when it sent an OPT record.
    pub edns: Option<u16>,
    /// Where the question section ends (it starts at 12).
    pub question_end: usize,
    name: [u8; MAX_NAME],
    name_len: u8,
}

impl std::fmt::Debug for Quick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quick")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("qtype", &self.qtype)
            .field("edns", &self.edns)
            .finish()
    }
}

impl Quick {
    /// The question name, lower-case, dotted, with the trailing dot (`www.example.org.`).
    pub fn name(&self) -> &str {
        // Only ASCII letters, digits, '-', '_' and '.' are ever written.
        std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or(".")
    }

    /// The largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(p) => usize::from(p.clamp(512, MAX_UDP_PAYLOAD)),
            None => 512,
        }
    }
}

/// Reads a plain query; `None` for anything else (the full parser's business).
pub fn decode(buf: &[u8]) -> Option<Quick> {
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?])) };
    if buf.len() < 12 {
        return None;
    }
    // QR = 0, opcode QUERY; counts 1 question, no answers or authority, 0 or 1 additional.
    if buf[2] & 0xf8 != 0 || u16_at(4)? != 1 || u16_at(6)? != 0 || u16_at(8)? != 0 {
        return None;
    }
    let additional = u16_at(10)?;
    if additional > 1 {
        return None;
    }
    let mut q = Quick {
        id: u16_at(0)?,
        rd: buf[2] & 0x01 != 0,
        cd: buf[3] & 0x10 != 0,
        qtype: 0,
        edns: None,
        question_end: 0,
        name: [0; MAX_NAME],
        name_len: 0,
    };
    let mut pos = 12;
    let mut out = 0usize;
    loop {
        let len = usize::from(*buf.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        // Compression pointers and extended label types: not plain.
        if len > 63 {
            return None;
        }
        let label = buf.get(pos + 1..pos + 1 + len)?;
        // The wire name (labels plus the root byte) is at most 255 bytes: out + len + 1
        // (its text with the dot) + 1 (the root) must stay within it.
        if out + len + 2 > MAX_NAME {
            return None;
        }
        // A leading '-' is escaped in the full parser's text of the name (`\-`): not plain.
        if label[0] == b'-' {
            return None;
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            q.name[out] = b.to_ascii_lowercase();
            out += 1;
        }
        q.name[out] = b'.';
        out += 1;
        pos += 1 + len;
    }
    // The root name alone: rare, and the full parser spells it.
    if out == 0 {
        return None;
    }
    q.name_len = u8::try_from(out).ok()?;
    q.qtype = u16_at(pos)?;
    // Class IN; not OPT, AXFR, IXFR as the question type (answered with errors).
    if u16_at(pos + 2)? != 1 || matches!(q.qtype, 41 | 251 | 252) {
        return None;
    }
    pos += 4;
    q.question_end = pos;
    if additional == 1 {
        // The OPT record: root name, type 41, class = payload size, TTL = extended rcode,
        // version and flags, then RDLENGTH and options (ignored, as the full parser does).
        if *buf.get(pos)? != 0 || u16_at(pos + 1)? != 41 {
            return None;
        }
        let payload = u16_at(pos + 3)?;
        if *buf.get(pos + 6)? != 0 {
            return None; // EDNS version other than 0: BADVERS, the full parser's
        }
        let rdlen = usize::from(u16_at(pos + 9)?);
        pos += 11;
        let options = buf.get(pos..pos + rdlen)?;
        // Each option: code, length, data; they must tile RDATA exactly.
        let mut o = 0;
        while o < options.len() {
            let olen = usize::from(u16::from_be_bytes([
                *options.get(o + 2)?,
                *options.get(o + 3)?,
            ]));
            o += 4 + olen;
        }
        if o != options.len() {
            return None;
        }
        pos += rdlen;
        q.edns = Some(payload.max(512));
    }
    (pos == buf.len()).then_some(q)
}

/// The RCODE values the hot path writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// NOERROR (0).
    NoError = 0,
    /// SERVFAIL (2).
    ServFail = 2,
    /// NXDOMAIN (3).
    NxDomain = 3,
    /// REFUSED (5).
    Refused = 5,
}

/// Writes the response to `q` (whose packet is `query`) into `out`: `rcode`, and one record
/// per address of the question's type (A: IPv4, AAAA: IPv6; others: none) with `ttl`, named
/// by a pointer to the question; an OPT record if the query had one. Returns the length, or
/// `None` if it does not fit in `out` or in `limit` (truncation is the general path's).
pub fn write_reply(
    q: &Quick,
    query: &[u8],
    rcode: Rcode,
    addrs: &[IpAddr],
    ttl: u32,
    limit: usize,
    out: &mut [u8],
) -> Option<usize> {
    let question = query.get(12..q.question_end)?;
    let mut w = Writer { out, pos: 0 };
    w.put(&q.id.to_be_bytes())?;
    w.put(&[
        0x80 | u8::from(q.rd),
        0x80 | if q.cd { 0x10 } else { 0 } | rcode as u8,
    ])?;
    w.put(&[0, 1, 0, 0, 0, 0, 0, u8::from(q.edns.is_some())])?;
    w.put(question)?;
    let mut count = 0u16;
    for ip in addrs {
        match (ip, q.qtype) {
            (IpAddr::V4(v4), 1) => {
                w.record(1, ttl, &v4.octets())?;
            }
            (IpAddr::V6(v6), 28) => {
                w.record(28, ttl, &v6.octets())?;
            }
            _ => continue,
        }
        count += 1;
    }
    w.out.get_mut(6..8)?.copy_from_slice(&count.to_be_bytes());
    if q.edns.is_some() {
        w.put(&[0, 0, 41])?;
        w.put(&MAX_UDP_PAYLOAD.to_be_bytes())?;
        w.put(&[0, 0, 0, 0, 0, 0])?;
    }
    (w.pos <= limit).then_some(w.pos)
}

struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.pos..self.pos + bytes.len())?
            .copy_from_slice(bytes);
        self.pos += bytes.len();
        Some(())
    }

    /// A record named by a pointer to the question name (offset 12), class IN.
    fn record(&mut self, rtype: u16, ttl: u32, data: &[u8]) -> Option<()> {
        self.put(&[0xc0, 12])?;
        self.put(&rtype.to_be_bytes())?;
        self.put(&[0, 1])?;
        self.put(&ttl.to_be_bytes())?;
        self.put(&u16::try_from(data.len()).ok()?.to_be_bytes())?;
        self.put(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::tests::query;
    use crate::dns::wire::{self, Reject};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    use proptest::prelude::*;

    /// Whenever the quick decoder accepts, the full parser accepts with the same reading.
    fn agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
        let Some(q) = decode(bytes) else {
            return Ok(());
        };
        let full = wire::parse(bytes);
        let Ok(r) = full else {
            return Err(TestCaseError::fail(format!(
                "quick accepted what the full parser rejects: {full:?} for {bytes:?}"
            )));
        };
        prop_assert_eq!(
            (r.head.id, r.head.rd, r.head.cd, r.head.edns),
            (q.id, q.rd, q.cd, q.edns)
        );
        prop_assert_eq!(u16::from(r.qtype), q.qtype);
        prop_assert_eq!(r.name.to_ascii().to_ascii_lowercase(), q.name());
        prop_assert_eq!(r.head.udp_limit(), q.udp_limit());
        Ok(())
    }

    #[test]
    fn reads_plain_queries_like_the_full_parser() {
        for (name, qtype, edns) in [
            ("Example.ORG.", RecordType::A, None),
            ("www.example.org.", RecordType::AAAA, Some(1232)),
            ("_dmarc.x-y.example.", RecordType::TXT, Some(100)),
            ("a.b.c.d.e.f.g.", RecordType::HTTPS, Some(65000)),
        ] {
            let bytes = query(name, qtype, edns);
            let q = decode(&bytes).expect("a plain query");
            assert_eq!(q.name(), name.to_ascii_lowercase());
            agrees(&bytes).unwrap();
        }
    }

    #[test]
    fn leaves_everything_unusual_to_the_full_parser() {
        let plain = query("a.test.", RecordType::A, Some(1232));
        assert!(decode(&plain).is_some());
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = plain.clone();
            f(&mut b);
            decode(&b)
        };
        assert!(decode(&plain[..11]).is_none(), "short");
        assert!(with(&|b| b[2] |= 0x80).is_none(), "a response");
        assert!(with(&|b| b[2] |= 4 << 3).is_none(), "opcode NOTIFY");
        assert!(with(&|b| b[5] = 2).is_none(), "two questions");
        assert!(with(&|b| b[7] = 1).is_none(), "an answer record");
        assert!(with(&|b| b.push(0)).is_none(), "trailing bytes");
        assert!(with(&|b| b.truncate(b.len() - 1)).is_none(), "cut short");
        assert!(
            with(&|b| b[13] = b'*').is_none(),
            "a label byte outside the plain set"
        );
        // Class CH; EDNS version 1; qtype AXFR.
        let class_at = 12 + 8 + 2;
        assert!(with(&|b| b[class_at + 1] = 3).is_none());
        assert!(with(&|b| b[class_at + 2 + 6] = 1).is_none());
        assert!(decode(&query("a.test.", RecordType::AXFR, None)).is_none());
        // A compression pointer to itself as the name (the full parser: FORMERR).
        let pkt = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(decode(&pkt).is_none());
        assert!(matches!(
            wire::parse(&pkt),
            Err(Reject::Reply {
                rcode: ResponseCode::FormErr,
                ..
            })
        ));
        // The root name.
        assert!(decode(&query(".", RecordType::NS, None)).is_none());
    }

    #[test]
    fn writes_what_the_general_encoder_writes() {
        let addrs: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        for (qtype, edns) in [
            (RecordType::A, None),
            (RecordType::A, Some(1232)),
            (RecordType::AAAA, Some(1232)),
            (RecordType::MX, None),
        ] {
            let bytes = query("WwW.Blocked.TEST.", qtype, edns);
            let q = decode(&bytes).unwrap();
            let req = wire::parse(&bytes).unwrap();
            let mut out = [0u8; 512];
            let n = write_reply(&q, &bytes, Rcode::NoError, &addrs, 300, 512, &mut out).unwrap();
            let records: Vec<Record> = addrs
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => {
                        Some(RData::AAAA(hickory_proto::rr::rdata::AAAA(*v6)))
                    }
                    _ => None,
                })
                .map(|d| Record::from_rdata(req.name.clone(), 300, d))
                .collect();
            let general = wire::encode(&req.head, ResponseCode::NoError, &records, &[], 512);
            assert_eq!(&out[..n], &general[..], "{qtype} {edns:?}");
            for (rcode, general) in [
                (Rcode::NxDomain, ResponseCode::NXDomain),
                (Rcode::Refused, ResponseCode::Refused),
                (Rcode::ServFail, ResponseCode::ServFail),
            ] {
                let n = write_reply(&q, &bytes, rcode, &[], 300, 512, &mut out).unwrap();
                assert_eq!(
                    &out[..n],
                    &wire::encode(&req.head, general, &[], &[], 512)[..]
                );
            }
        }
        let bytes = query("a.test.", RecordType::A, None);
        let q = decode(&bytes).unwrap();
        let mut small = [0u8; 20];
        assert_eq!(
            write_reply(&q, &bytes, Rcode::NoError, &addrs, 300, 512, &mut small),
            None
        );
        let mut out = [0u8; 512];
        assert_eq!(
            write_reply(&q, &bytes, Rcode::NoError, &addrs, 300, 20, &mut out),
            None
        );
    }

    /// A query written by hand (hickory's `Name::from_ascii` refuses labels such as `-a-`,
    /// which are valid on the wire).
    fn raw_query(labels: &[String], qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut b = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        for l in labels {
            b.push(u8::try_from(l.len()).unwrap());
            b.extend_from_slice(l.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        if let Some(p) = edns {
            b.extend_from_slice(&[0, 0, 41]);
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        b
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,11}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Random bytes: never a panic, and never an accepted packet the full parser reads
        /// differently.
        #[test]
        fn random_bytes_agree(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            agrees(&bytes)?;
        }

        /// Valid queries of random names and types are accepted and read alike; mutations of
        /// them (flipped bytes, cut ends) are either read alike or declined.
        #[test]
        fn generated_and_mutated_queries_agree(
            labels in proptest::collection::vec(label(), 1..6),
            qtype in prop_oneof![Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::TXT), Just(RecordType::MX)],
            edns in proptest::option::of(any::<u16>()),
            flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
            cut in 0usize..6,
        ) {
            let mut bytes = raw_query(&labels, u16::from(qtype), edns);
            prop_assert!(decode(&bytes).is_some(), "a plain query declined: {:?}", labels);
            agrees(&bytes)?;
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] = b;
            }
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            agrees(&bytes)?;
        }
    }
}
