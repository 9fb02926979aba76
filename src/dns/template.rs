//! Pre-encoded responses for cached answers: the cache-hit fast path.
//!
//! When an upstream answer enters the cache, [`Template::build`] encodes it once as a complete
//! response to the lower-case question (no EDNS) and notes where each record's TTL lies. A
//! later query for the same name and type is answered by [`Template::render`]: copy the bytes,
//! write the query's ID, RD and CD bits, copy the client's own question over ours (same length,
//! equal but for case, so compression pointers stay valid), lower each TTL by the time spent
//! in the cache, and append an OPT record if the query had one. Anything unusual (a question
//! that does not line up, a response too large for the transport) returns `None` and the
//! caller takes the general path, which also does truncation.

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};

use super::wire::{self, Head, Request, MAX_TCP_MESSAGE, MAX_UDP_PAYLOAD};
use crate::resolve::Answer;

/// A cached answer as response bytes, with the offsets of its TTL fields.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    /// Length of the question section (name, type, class), from offset 12.
    question_len: usize,
    ttl_offsets: Vec<usize>,
}

impl Template {
    /// Encodes `answer` as the response to `name` (lower-case) / `qtype`.
    pub fn build(name: &Name, qtype: RecordType, answer: &Answer) -> Option<Template> {
        let head = Head {
            id: 0,
            op_code: hickory_proto::op::OpCode::Query,
            rd: false,
            cd: false,
            question: Some(Query::query(name.to_lowercase(), qtype)),
            edns: None,
        };
        let bytes = wire::encode(
            &head,
            answer.rcode,
            &answer.records,
            &answer.authority,
            MAX_TCP_MESSAGE,
        );
        let (question_len, ttl_offsets) = layout(&bytes)?;
        let records = answer.records.len() + answer.authority.len();
        (ttl_offsets.len() == records && bytes[2] & 0x02 == 0).then_some(Template {
            bytes,
            question_len,
            ttl_offsets,
        })
    }

    /// The response to `req` (whose packet is `query`), TTLs lowered by `spent` seconds;
    /// `None` if the question does not line up or the response exceeds `limit`.
    pub fn render(&self, req: &Request, query: &[u8], spent: u32, limit: usize) -> Option<Vec<u8>> {
        let head = Echo {
            id: req.head.id,
            rd: req.head.rd,
            cd: req.head.cd,
            edns: req.head.edns.is_some(),
        };
        let mut out = vec![0; self.size(head.edns)];
        let n = self.render_into(head, query.get(12..)?, spent, limit, &mut out)?;
        out.truncate(n);
        Some(out)
    }

    /// The response's length, with or without an OPT record.
    pub fn size(&self, opt: bool) -> usize {
        self.bytes.len() + if opt { 11 } else { 0 }
    }

    /// [`Template::render`] into `out` (no allocation): `question` is the client's packet
    /// from its question on (offset 12). Returns the length written; `None` if the question
    /// does not line up, or the response exceeds `limit` or `out`.
    pub fn render_into(
        &self,
        head: Echo,
        question: &[u8],
        spent: u32,
        limit: usize,
        out: &mut [u8],
    ) -> Option<usize> {
        let q_end = 12 + self.question_len;
        let theirs = question.get(..self.question_len)?;
        if !theirs.eq_ignore_ascii_case(&self.bytes[12..q_end]) {
            return None;
        }
        let len = self.size(head.edns);
        if len > limit {
            return None;
        }
        let out = out.get_mut(..len)?;
        let n = self.bytes.len();
        out[..n].copy_from_slice(&self.bytes);
        out[..2].copy_from_slice(&head.id.to_be_bytes());
        out[2] = 0x80 | u8::from(head.rd);
        out[3] = 0x80 | if head.cd { 0x10 } else { 0 } | (self.bytes[3] & 0x0f);
        out[12..q_end].copy_from_slice(theirs);
        for &at in &self.ttl_offsets {
            let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(spent).to_be_bytes());
        }
        if head.edns {
            // root name, type OPT, our payload size, extended rcode/version/flags 0, no options
            out[n] = 0;
            out[n + 1..n + 3].copy_from_slice(&41u16.to_be_bytes());
            out[n + 3..n + 5].copy_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
            out[n + 5..n + 11].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
            out[11] = 1; // ARCOUNT: the template has no additional records
        }
        Some(len)
    }
}

/// What a rendered response echoes from its query.
#[derive(Debug, Clone, Copy)]
pub struct Echo {
    /// The query ID.
    pub id: u16,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// Whether the query had an OPT record (the response gets one).
    pub edns: bool,
}

/// The question length and the offsets of every record's TTL in a response we encoded.
fn layout(msg: &[u8]) -> Option<(usize, Vec<usize>)> {
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    if msg.len() < 12 || count(4) != 1 || count(10) != 0 {
        return None;
    }
    let records = count(6) + count(8);
    let q_name_end = skip_name(msg, 12)?;
    let mut pos = q_name_end + 4;
    let question_len = pos - 12;
    let mut ttls = Vec::with_capacity(records);
    for _ in 0..records {
        let p = skip_name(msg, pos)?;
        let rdlen = usize::from(u16::from_be_bytes([*msg.get(p + 8)?, *msg.get(p + 9)?]));
        ttls.push(p + 4);
        pos = p + 10 + rdlen;
    }
    (pos == msg.len()).then_some((question_len, ttls))
}

/// The offset just past the name at `pos` (labels, ending in a root label or a pointer).
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l < 64 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{RData, Record};

    fn answer() -> Answer {
        let alias = Name::from_ascii("www.example.test.").unwrap();
        let target = Name::from_ascii("cdn.example.test.").unwrap();
        Answer {
            rcode: ResponseCode::NoError,
            records: vec![
                Record::from_rdata(alias, 300, RData::CNAME(CNAME(target.clone()))),
                Record::from_rdata(target, 60, RData::A(A::new(192, 0, 2, 7))),
            ],
            authority: vec![],
            ttl: 60,
        }
    }

    fn query(name: &str, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    /// [`answer`] and its template for `www.example.test. A`.
    fn template() -> (Answer, Template) {
        let a = answer();
        let t = Template::build(
            &Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
            &a,
        )
        .unwrap();
        (a, t)
    }

    #[test]
    fn renders_what_the_general_path_would_with_aged_ttls_and_the_clients_case() {
        let (a, t) = template();
        for edns in [false, true] {
            let q = query("WwW.Example.TEST.", edns);
            let req = wire::parse(&q).unwrap();
            let fast = t.render(&req, &q, 10, 4096).unwrap();
            let mut aged = a.clone();
            for r in &mut aged.records {
                r.set_ttl(r.ttl() - 10);
            }
            let slow = wire::encode(&req.head, aged.rcode, &aged.records, &[], 4096);
            let (f, s) = (
                Message::from_vec(&fast).unwrap(),
                Message::from_vec(&slow).unwrap(),
            );
            assert_eq!(f.header(), s.header());
            assert_eq!(f.queries()[0].name().to_ascii(), "WwW.Example.TEST.");
            assert_eq!(f.answers(), s.answers());
            assert_eq!(f.answers()[1].ttl(), 50);
            assert_eq!(f.extensions().is_some(), edns);
            // Names in the answer may point at the client's question (its case): same names.
            assert!(fast.len() <= slow.len());
        }
    }

    #[test]
    fn declines_what_it_cannot_do_exactly() {
        let (_, t) = template();
        let q = query("other.example.test.", false);
        assert!(
            t.render(&wire::parse(&q).unwrap(), &q, 0, 4096).is_none(),
            "another name"
        );
        let q = query("www.example.test.", false);
        assert!(
            t.render(&wire::parse(&q).unwrap(), &q, 0, 40).is_none(),
            "too large: truncation is the general path's"
        );
    }
}
