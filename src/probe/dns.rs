//! The DNS step: A and AAAA queries for the URL's host sent over UDP to one chosen resolver
//! (the one under test, or the control resolver), with the response code kept so that a
//! censor's NXDOMAIN, REFUSED, SERVFAIL or silence is told apart (OONI's `df-002-dnst`).
//!
//! Messages are built and parsed with `hickory-proto`; the exchange itself is a plain UDP
//! socket with one retransmission inside the step's timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use super::facts::{DnsFacts, DnsQuery};
use super::failure;

/// Resolves `host` with `resolver` (A and AAAA in parallel).
pub async fn lookup(
    resolver: SocketAddr,
    host: &str,
    timeout: Duration,
    start: Instant,
) -> DnsFacts {
    let (a, aaaa) = tokio::join!(
        query(resolver, host, RecordType::A, timeout, start),
        query(resolver, host, RecordType::AAAA, timeout, start)
    );
    combine(Some(resolver), vec![a, aaaa])
}

/// Merges the A and AAAA results into the lookup's outcome (OONI's `getaddrinfo`-like view):
/// success when any address came back; otherwise the A query's failure, or `dns_no_answer`.
pub fn combine(resolver: Option<SocketAddr>, queries: Vec<DnsQuery>) -> DnsFacts {
    let addrs: Vec<IpAddr> = queries
        .iter()
        .flat_map(|q| q.answers.iter().map(|(a, _)| *a))
        .collect();
    let mut cnames: Vec<String> = queries.iter().flat_map(|q| q.cnames.clone()).collect();
    cnames.dedup();
    let failure = if addrs.is_empty() {
        Some(
            queries
                .iter()
                .find_map(|q| q.failure.clone())
                .unwrap_or_else(|| failure::DNS_NO_ANSWER.to_string()),
        )
    } else {
        None
    };
    DnsFacts {
        resolver,
        failure,
        addrs,
        cnames,
        queries,
    }
}

async fn query(
    resolver: SocketAddr,
    host: &str,
    rtype: RecordType,
    timeout: Duration,
    start: Instant,
) -> DnsQuery {
    let query_type = if rtype == RecordType::A { "A" } else { "AAAA" };
    let result = tokio::time::timeout(timeout, exchange(resolver, host, rtype, timeout)).await;
    let (failure, answers) = match &result {
        Err(_) => (Some(failure::TIMEOUT.to_string()), Vec::new()),
        Ok(Err(f)) => (Some(f.clone()), Vec::new()),
        Ok(Ok(msg)) => parse_answer(msg, rtype),
    };
    let cnames = match &result {
        Ok(Ok(msg)) => msg
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::CNAME(c) => Some(c.0.to_ascii()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    DnsQuery {
        query_type,
        failure,
        answers,
        cnames,
        t: start.elapsed().as_secs_f64(),
    }
}

/// The failure and addresses of a response message.
pub fn parse_answer(msg: &Message, rtype: RecordType) -> (Option<String>, Vec<(IpAddr, u32)>) {
    match msg.response_code() {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return (Some(failure::DNS_NXDOMAIN.into()), Vec::new()),
        ResponseCode::Refused => return (Some(failure::DNS_REFUSED.into()), Vec::new()),
        _ => return (Some(failure::DNS_SERVER_MISBEHAVING.into()), Vec::new()),
    }
    let answers: Vec<(IpAddr, u32)> = msg
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) if rtype == RecordType::A => Some((IpAddr::V4(a.0), r.ttl())),
            RData::AAAA(a) if rtype == RecordType::AAAA => Some((IpAddr::V6(a.0), r.ttl())),
            _ => None,
        })
        .collect();
    (None, answers)
}

fn build(host: &str, rtype: RecordType, id: u16) -> Result<Vec<u8>, String> {
    let fqdn = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    let name = Name::from_ascii(&fqdn).map_err(|e| format!("unknown_failure: bad name: {e}"))?;
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, rtype));
    m.to_vec()
        .map_err(|e| format!("unknown_failure: cannot encode query: {e}"))
}

async fn exchange(
    resolver: SocketAddr,
    host: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    let id = query_id(host, rtype);
    let wire = build(host, rtype, id)?;
    let local: SocketAddr = if resolver.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| failure::from_io(&e))?;
    sock.connect(resolver)
        .await
        .map_err(|e| failure::from_io(&e))?;
    let mut buf = vec![0u8; 4096];
    // Two transmissions within the step's timeout.
    for _ in 0..2 {
        sock.send(&wire).await.map_err(|e| failure::from_io(&e))?;
        let deadline = tokio::time::sleep(timeout / 2);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = sock.recv(&mut buf) => {
                    let n = r.map_err(|e| failure::from_io(&e))?;
                    let Ok(msg) = Message::from_vec(&buf[..n]) else { continue };
                    if msg.id() == id && msg.message_type() == MessageType::Response {
                        return Ok(msg);
                    }
                }
            }
        }
    }
    Err(failure::TIMEOUT.into())
}

/// A query id that differs between queries (no cryptographic need in a lab probe).
fn query_id(host: &str, rtype: RecordType) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(host.as_bytes());
    h.write_u16(u16::from(rtype));
    (h.finish() & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcodes_map_to_ooni_failures() {
        let mut m = Message::new();
        m.set_response_code(ResponseCode::NXDomain);
        assert_eq!(
            parse_answer(&m, RecordType::A).0.as_deref(),
            Some("dns_nxdomain_error")
        );
        m.set_response_code(ResponseCode::Refused);
        assert_eq!(
            parse_answer(&m, RecordType::A).0.as_deref(),
            Some("dns_refused_error")
        );
        m.set_response_code(ResponseCode::ServFail);
        assert_eq!(
            parse_answer(&m, RecordType::A).0.as_deref(),
            Some("dns_server_misbehaving")
        );
    }

    #[test]
    fn empty_answers_are_no_answer_and_nxdomain_wins() {
        let q = |f: Option<&str>| DnsQuery {
            query_type: "A",
            failure: f.map(String::from),
            answers: vec![],
            cnames: vec![],
            t: 0.0,
        };
        let d = combine(None, vec![q(None), q(None)]);
        assert_eq!(d.failure.as_deref(), Some("dns_no_answer"));
        let d = combine(
            None,
            vec![q(Some("dns_nxdomain_error")), q(Some("dns_nxdomain_error"))],
        );
        assert_eq!(d.failure.as_deref(), Some("dns_nxdomain_error"));
        let mut ok = q(None);
        ok.answers.push(("127.0.0.1".parse().unwrap(), 60));
        let d = combine(None, vec![ok, q(Some("dns_no_answer"))]);
        assert_eq!(d.failure, None);
        assert_eq!(d.addrs.len(), 1);
    }

    #[tokio::test]
    async fn silent_resolver_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let d = lookup(
            addr,
            "example.com",
            Duration::from_millis(300),
            Instant::now(),
        )
        .await;
        assert_eq!(d.failure.as_deref(), Some("generic_timeout_error"));
        drop(silent);
    }
}
