//! The DNS wire format at the frontend's edge: reading a query, writing a response.
//!
//! [`parse`] turns a datagram (or a TCP frame) into a [`Request`] or says how to reject it:
//! drop it silently (too short to carry an ID, or not a query at all — answering responses
//! would let two servers loop), or answer with an error rcode (FORMERR for undecodable or
//! ill-formed queries, NOTIMP for other opcodes, BADVERS for EDNS versions other than 0,
//! REFUSED for classes other than IN and zone transfers). Decoding uses `hickory-proto`, which
//! rejects bad label lengths, forward or looping compression pointers and wrong counts.
//! [`encode`] writes a response that echoes the ID, flags and question, carries an OPT record
//! when the query had one, and is truncated (TC, no records) when it exceeds the size limit.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

/// Largest UDP payload the gateway sends, whatever the client advertises (and what it
/// advertises itself in its OPT record).
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// Largest response without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// Largest message over TCP (2-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = 65_535;

/// What a response must echo from its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The query ID.
    pub id: u16,
    /// The opcode.
    pub op_code: OpCode,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// The question, when it could be read.
    pub question: Option<Query>,
    /// The client's advertised UDP payload size, when it sent an OPT record.
    pub edns: Option<u16>,
}

impl Head {
    /// The largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(p) => usize::from(p.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)),
            None => usize::from(CLASSIC_UDP_PAYLOAD),
        }
    }
}

/// A well-formed standard query with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the response echoes.
    pub head: Head,
    /// The question name.
    pub name: Name,
    /// The question type.
    pub qtype: RecordType,
}

/// Why a packet is not a query the gateway answers normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Nothing to answer: too short for a header, or a response rather than a query.
    #[error("dropped: {0}")]
    Drop(&'static str),
    /// Answer with `rcode` only; `malformed` if the packet broke the protocol (counted).
    #[error("answered {rcode}: {why}")]
    Reply {
        /// What the error response echoes.
        head: Head,
        /// The error rcode.
        rcode: ResponseCode,
        /// Whether the packet was malformed (rather than merely unsupported).
        malformed: bool,
        /// Why, for the logs.
        why: &'static str,
    },
}

impl Reject {
    /// Whether the packet broke the protocol (short, undecodable, wrong counts).
    pub fn is_malformed(&self) -> bool {
        match self {
            Reject::Drop(_) => true,
            Reject::Reply { malformed, .. } => *malformed,
        }
    }
}

/// Reads a query; never panics, whatever the bytes.
pub fn parse(buf: &[u8]) -> Result<Request, Reject> {
    if buf.len() < 12 {
        return Err(Reject::Drop("shorter than a DNS header"));
    }
    if buf[2] & 0x80 != 0 {
        return Err(Reject::Drop("a response, not a query"));
    }
    let mut head = Head {
        id: u16::from_be_bytes([buf[0], buf[1]]),
        op_code: OpCode::from_u8((buf[2] >> 3) & 0x0f),
        rd: buf[2] & 0x01 != 0,
        cd: buf[3] & 0x10 != 0,
        question: None,
        edns: None,
    };
    let reply = |head: Head, rcode, malformed, why| Reject::Reply {
        head,
        rcode,
        malformed,
        why,
    };
    let Ok(msg) = Message::from_vec(buf) else {
        return Err(reply(
            head,
            ResponseCode::FormErr,
            true,
            "undecodable query",
        ));
    };
    head.question = msg.queries().first().cloned();
    if let Some(e) = msg.extensions() {
        head.edns = Some(e.max_payload());
        if e.version() != 0 {
            return Err(reply(
                head,
                ResponseCode::BADVERS,
                false,
                "unsupported EDNS version",
            ));
        }
    }
    if head.op_code != OpCode::Query {
        return Err(reply(
            head,
            ResponseCode::NotImp,
            false,
            "opcode other than QUERY",
        ));
    }
    if msg.queries().len() != 1 {
        head.question = None;
        return Err(reply(
            head,
            ResponseCode::FormErr,
            true,
            "not exactly one question",
        ));
    }
    if !msg.answers().is_empty() || !msg.name_servers().is_empty() {
        return Err(reply(
            head,
            ResponseCode::FormErr,
            true,
            "records in a query's answer or authority section",
        ));
    }
    let q = &msg.queries()[0];
    let (name, qtype) = (q.name().clone(), q.query_type());
    if q.query_class() != DNSClass::IN {
        return Err(reply(
            head,
            ResponseCode::Refused,
            false,
            "class other than IN",
        ));
    }
    match qtype {
        RecordType::OPT => Err(reply(
            head,
            ResponseCode::FormErr,
            true,
            "OPT as the question type",
        )),
        RecordType::AXFR | RecordType::IXFR => {
            Err(reply(head, ResponseCode::Refused, false, "zone transfer"))
        }
        _ => Ok(Request { head, name, qtype }),
    }
}

/// Writes a response; truncated (TC set, no records) if longer than `limit` bytes.
pub fn encode(
    head: &Head,
    rcode: ResponseCode,
    answers: &[Record],
    authority: &[Record],
    limit: usize,
) -> Vec<u8> {
    encode_with_ede(head, rcode, answers, authority, limit, None)
}

/// [`encode`], with an RFC 8914 Extended DNS Error option (`(info_code, extra_text)`) in
/// the OPT record when the query had one (a client without EDNS gets none).
pub fn encode_with_ede(
    head: &Head,
    rcode: ResponseCode,
    answers: &[Record],
    authority: &[Record],
    limit: usize,
    ede: Option<(u16, &str)>,
) -> Vec<u8> {
    let full = build(head, rcode, answers, authority, false, ede);
    match full.to_vec() {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(_) => build(head, rcode, &[], &[], true, ede)
            .to_vec()
            .unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a response; answering SERVFAIL");
            build(head, ResponseCode::ServFail, &[], &[], false, None)
                .to_vec()
                .unwrap_or_default()
        }
    }
}

/// The EDE option code (RFC 8914, section 2).
pub const EDE_OPTION: u16 = 15;

fn build(
    head: &Head,
    rcode: ResponseCode,
    answers: &[Record],
    authority: &[Record],
    truncated: bool,
    ede: Option<(u16, &str)>,
) -> Message {
    let mut m = Message::new();
    m.set_id(head.id)
        .set_message_type(MessageType::Response)
        .set_op_code(head.op_code)
        .set_recursion_desired(head.rd)
        .set_recursion_available(true)
        .set_checking_disabled(head.cd)
        .set_truncated(truncated)
        .set_response_code(rcode);
    if let Some(q) = &head.question {
        m.add_query(q.clone());
    }
    m.add_answers(answers.iter().cloned());
    m.add_name_servers(authority.iter().cloned());
    if head.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP_PAYLOAD).set_version(0);
        if let Some((code, text)) = ede {
            // INFO-CODE (2 bytes), then EXTRA-TEXT (UTF-8, not NUL-terminated).
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            e.options_mut()
                .insert(EdnsOption::Unknown(EDE_OPTION, data));
        }
        m.set_edns(e);
    }
    m
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::RData;
    use proptest::prelude::*;

    /// A recursive query for `name`/`qtype` (ID 0xbeef), with EDNS payload size `edns`.
    pub(crate) fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0xbeef).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_a_plain_query() {
        let r = parse(&query("Example.ORG.", RecordType::AAAA, None)).unwrap();
        assert_eq!(
            (r.head.id, r.qtype, r.head.rd, r.head.edns),
            (0xbeef, RecordType::AAAA, true, None)
        );
        assert_eq!(r.name.to_ascii(), "Example.ORG.");
        assert_eq!(r.head.udp_limit(), 512);
    }

    #[test]
    fn edns_payload_is_honoured_within_bounds() {
        let r = parse(&query("a.test.", RecordType::A, Some(1400))).unwrap();
        assert_eq!(r.head.udp_limit(), 1400);
        let r = parse(&query("a.test.", RecordType::A, Some(100))).unwrap();
        assert_eq!(r.head.udp_limit(), 512);
        let r = parse(&query("a.test.", RecordType::A, Some(65000))).unwrap();
        assert_eq!(r.head.udp_limit(), usize::from(MAX_UDP_PAYLOAD));
    }

    #[test]
    fn short_packets_and_responses_are_dropped() {
        assert_eq!(
            parse(&[0; 11]),
            Err(Reject::Drop("shorter than a DNS header"))
        );
        let mut resp = query("a.test.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse(&resp), Err(Reject::Drop(_))));
    }

    #[test]
    fn compression_loop_is_formerr_with_the_id() {
        // Header (1 question), then a name that is a pointer to itself (offset 12).
        let pkt = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        let Err(Reject::Reply {
            head,
            rcode,
            malformed,
            ..
        }) = parse(&pkt)
        else {
            panic!("a compression loop must be rejected");
        };
        assert_eq!(
            (head.id, rcode, malformed),
            (0x1234, ResponseCode::FormErr, true)
        );
    }

    #[test]
    fn bad_label_length_and_wrong_counts_are_formerr() {
        // A label claiming 63 bytes with only 3 present.
        let pkt = [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', b'b', b'c'];
        assert!(matches!(
            parse(&pkt),
            Err(Reject::Reply {
                rcode: ResponseCode::FormErr,
                ..
            })
        ));
        // Claims two questions, carries one.
        let mut two = query("a.test.", RecordType::A, None);
        two[5] = 2;
        assert!(matches!(
            parse(&two),
            Err(Reject::Reply {
                rcode: ResponseCode::FormErr,
                ..
            })
        ));
        // No question at all.
        let none = [0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            parse(&none),
            Err(Reject::Reply {
                rcode: ResponseCode::FormErr,
                ..
            })
        ));
    }

    #[test]
    fn other_opcodes_classes_and_edns_versions() {
        let mut notify = query("a.test.", RecordType::SOA, None);
        notify[2] = (4 << 3) | 1;
        assert!(matches!(
            parse(&notify),
            Err(Reject::Reply {
                rcode: ResponseCode::NotImp,
                ..
            })
        ));
        let mut m = Message::from_vec(&query("a.test.", RecordType::A, Some(1232))).unwrap();
        m.extensions_mut().as_mut().unwrap().set_version(1);
        let Err(Reject::Reply { rcode, head, .. }) = parse(&m.to_vec().unwrap()) else {
            panic!()
        };
        assert_eq!(rcode, ResponseCode::BADVERS);
        let bytes = encode(&head, rcode, &[], &[], 512);
        let back = Message::from_vec(&bytes).unwrap();
        // BADVERS is 16 (shared with BADSIG): 4 bits in the header, the rest in the OPT record.
        assert_eq!(u16::from(back.response_code()), 16);
        assert_eq!(bytes[3] & 0x0f, 0);
        assert!(matches!(
            parse(&query("a.test.", RecordType::AXFR, None)),
            Err(Reject::Reply {
                rcode: ResponseCode::Refused,
                ..
            })
        ));
    }

    #[test]
    fn response_echoes_id_question_and_opt_and_truncates() {
        let req = parse(&query("big.test.", RecordType::TXT, Some(1232))).unwrap();
        let txt = Record::from_rdata(
            req.name.clone(),
            60,
            RData::TXT(TXT::new(vec!["x".repeat(200); 10])),
        );
        let bytes = encode(
            &req.head,
            ResponseCode::NoError,
            std::slice::from_ref(&txt),
            &[],
            req.head.udp_limit(),
        );
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            (m.id(), m.message_type(), m.truncated()),
            (0xbeef, MessageType::Response, true)
        );
        assert_eq!(
            m.queries(),
            std::slice::from_ref(req.head.question.as_ref().unwrap())
        );
        assert!(m.answers().is_empty());
        assert_eq!(
            m.extensions().as_ref().map(|e| e.max_payload()),
            Some(MAX_UDP_PAYLOAD)
        );
        let bytes = encode(
            &req.head,
            ResponseCode::NoError,
            &[txt],
            &[],
            MAX_TCP_MESSAGE,
        );
        let m = Message::from_vec(&bytes).unwrap();
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Random bytes never panic the parser, and whatever is answered echoes the ID.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            match parse(&bytes) {
                Ok(r) => prop_assert_eq!(r.head.id, u16::from_be_bytes([bytes[0], bytes[1]])),
                Err(Reject::Reply { head, rcode, .. }) => {
                    let out = encode(&head, rcode, &[], &[], 512);
                    prop_assert_eq!(&out[..2], &bytes[..2]);
                }
                Err(Reject::Drop(_)) => prop_assert!(bytes.len() < 12 || bytes[2] & 0x80 != 0),
            }
        }

        /// Mutations of a valid query (the interesting neighbourhood) never panic either.
        #[test]
        fn mutated_queries_never_panic(
            flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8),
            cut in 0usize..64,
        ) {
            let mut q = query("www.example.test.", RecordType::A, Some(1232));
            for (i, b) in flips {
                let n = q.len();
                q[i % n] = b;
            }
            q.truncate(q.len().saturating_sub(cut % 8));
            let _ = parse(&q);
        }
    }
}
