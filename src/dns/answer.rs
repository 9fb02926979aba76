//! From one query's bytes to its response: the censor's decision for DNS.
//!
//! [`Frontend::answer_now`] does everything that needs no I/O, synchronously, so the
//! listeners can answer blocked and cached names without spawning a task: parse the packet,
//! map the client to its jurisdiction (none: REFUSED, counted — never an open resolver), ask
//! the policy about the question name, and either enact the rule's DNS technique or look in
//! the cache. A name blocked only at other layers (e.g. `tls-reset`) resolves normally, as it
//! did for the real censor. What the cache lacks becomes a [`Pending`] query that
//! [`Frontend::answer_later`] sends upstream. Every answer relayed, cached or fresh, is screened:
//! a CNAME target or an A/AAAA address that the policy blocks with a DNS technique blocks the
//! whole answer with that rule's technique. Each query runs in a `dns` tracing span
//! (`client.addr`, `client.jurisdiction`, `dns.qname`, `dns.qtype`) and its decision is one
//! event with `decision`, `rule`, `technique` and `via` (name, cname or address).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::Guard;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tracing::{field, Instrument, Span};

use super::cache::Cache;
use super::stats::Stats;
use super::wire::{self, Reject, Request, MAX_TCP_MESSAGE};
use crate::policy::{At, Block, Decision, JurisdictionId, Policy, Target};
use crate::resolve::Answer;
use crate::rules::{Layer, Technique};
use crate::serve::Gateway;

/// TTL of the records of a `dns-blockpage` answer.
pub const BLOCKPAGE_TTL: u32 = 300;

/// The transport a query came over (it bounds the response size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the client's EDNS payload size, or 512 bytes; larger answers are truncated.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

impl Transport {
    /// `udp` or `tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What to do with a query after the synchronous part.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Send nothing (`dns-drop`, or a packet not worth answering).
    Silent,
    /// Ask the upstream first.
    Upstream(Pending),
}

/// An allowed query the cache could not answer.
#[derive(Debug)]
pub struct Pending {
    req: Request,
    key: String,
    policy: Arc<Policy>,
    jurisdiction: JurisdictionId,
    at: At,
    limit: usize,
    span: Span,
}

/// The DNS frontend's shared state: the gateway, the answer cache and the counters.
#[derive(Debug)]
pub struct Frontend {
    gw: Arc<Gateway>,
    cache: Cache,
    /// What the frontend has done so far.
    pub stats: Stats,
}

impl Frontend {
    /// A frontend for `gw`, caching up to `cache_size` answers.
    pub fn new(gw: Arc<Gateway>, cache_size: usize) -> Frontend {
        Frontend {
            gw,
            cache: Cache::new(cache_size),
            stats: Stats::default(),
        }
    }

    /// Answers `buf` from `client`, asking the upstream if needed; `None` = send nothing.
    pub async fn answer(
        &self,
        client: SocketAddr,
        buf: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        match self.answer_now(client, buf, transport) {
            Step::Reply(b) => Some(b),
            Step::Silent => None,
            Step::Upstream(p) => self.answer_later(p).await,
        }
    }

    /// The part of answering that needs no I/O.
    pub fn answer_now(&self, client: SocketAddr, buf: &[u8], transport: Transport) -> Step {
        Stats::bump(&self.stats.queries);
        let span = tracing::debug_span!(
            "dns",
            client.addr = %client,
            transport = transport.as_str(),
            client.jurisdiction = field::Empty,
            dns.qname = field::Empty,
            dns.qtype = field::Empty,
        );
        let _entered = span.enter();
        let req = match wire::parse(buf) {
            Ok(r) => r,
            Err(rej) => {
                if rej.is_malformed() {
                    Stats::bump(&self.stats.malformed);
                }
                tracing::debug!(reason = %rej, len = buf.len(), "rejected packet");
                return match rej {
                    Reject::Drop(_) => Step::Silent,
                    Reject::Reply { head, rcode, .. } => {
                        let limit = limit_for(transport, head.udp_limit());
                        Step::Reply(wire::encode(&head, rcode, &[], &[], limit))
                    }
                };
            }
        };
        let limit = limit_for(transport, req.head.udp_limit());
        let mut key = req.name.to_ascii();
        key.make_ascii_lowercase();
        span.record("dns.qname", key.as_str());
        span.record("dns.qtype", field::display(req.qtype));

        let policy = self.gw.policy();
        let Some(jid) = policy.jurisdiction_for(client.ip()) else {
            Stats::bump(&self.stats.refused_clients);
            tracing::debug!(decision = "refused", "client in no configured network");
            return Step::Reply(wire::encode(
                &req.head,
                ResponseCode::Refused,
                &[],
                &[],
                limit,
            ));
        };
        span.record(
            "client.jurisdiction",
            policy.jurisdiction(jid).code.as_str(),
        );
        let at = self.gw.at();
        match policy.decide_in(jid, Target::Domain(&key), at) {
            Decision::Block(b) => match b.techniques.first_at(Layer::Dns) {
                Some(t) => return self.enact(&policy, b, t, &req, limit, "name"),
                None => tracing::debug!(
                    decision = "pass",
                    rule = policy.rule(b.rule).id.as_str(),
                    techniques = %b.techniques,
                    "blocked at other layers only; resolving normally"
                ),
            },
            Decision::Allow { rule, .. } => tracing::debug!(
                decision = "allow",
                rule = rule.map(|r| policy.rule(r).id.as_str()),
                "name allowed"
            ),
        }

        let now = Instant::now();
        if let Some(hit) = self.cache.get(&key, req.qtype, now) {
            Stats::bump(&self.stats.cache_hits);
            return self.relay(&policy, jid, at, &req, &hit.aged(now), limit);
        }
        Stats::bump(&self.stats.cache_misses);
        drop(_entered);
        Step::Upstream(Pending {
            req,
            key,
            policy: Guard::into_inner(policy),
            jurisdiction: jid,
            at,
            limit,
            span,
        })
    }

    /// Asks the upstream for a [`Pending`] query, caches the answer and screens it.
    pub async fn answer_later(&self, p: Pending) -> Option<Vec<u8>> {
        let span = p.span.clone();
        async move {
            let step = match self.gw.upstream.query(&p.req.name, p.req.qtype).await {
                Ok(answer) => {
                    let step =
                        self.relay(&p.policy, p.jurisdiction, p.at, &p.req, &answer, p.limit);
                    self.cache
                        .insert(p.key, p.req.qtype, answer, Instant::now());
                    step
                }
                Err(e) => {
                    Stats::bump(&self.stats.upstream_errors);
                    tracing::debug!(error = %e, "upstream failed; answering SERVFAIL");
                    Step::Reply(wire::encode(
                        &p.req.head,
                        ResponseCode::ServFail,
                        &[],
                        &[],
                        p.limit,
                    ))
                }
            };
            match step {
                Step::Reply(b) => Some(b),
                Step::Silent | Step::Upstream(_) => None,
            }
        }
        .instrument(span)
        .await
    }

    /// Relays an upstream answer, unless a CNAME target or an address in it is blocked.
    fn relay(
        &self,
        policy: &Policy,
        jid: JurisdictionId,
        at: At,
        req: &Request,
        answer: &Answer,
        limit: usize,
    ) -> Step {
        if let Some((block, technique, via)) = screen(policy, jid, at, &answer.records) {
            return self.enact(policy, block, technique, req, limit, via);
        }
        Step::Reply(wire::encode(
            &req.head,
            answer.rcode,
            &answer.records,
            &answer.authority,
            limit,
        ))
    }

    /// Answers as the censor would under `block`, with its DNS technique `technique`.
    fn enact(
        &self,
        policy: &Policy,
        block: Block,
        technique: Technique,
        req: &Request,
        limit: usize,
        via: &'static str,
    ) -> Step {
        Stats::bump(&self.stats.blocked);
        tracing::debug!(
            decision = "block",
            rule = policy.rule(block.rule).id.as_str(),
            technique = technique.as_str(),
            via,
            "blocked"
        );
        let rcode = match technique {
            Technique::DnsNxdomain => ResponseCode::NXDomain,
            Technique::DnsRefused => ResponseCode::Refused,
            Technique::DnsDrop => {
                Stats::bump(&self.stats.dropped);
                return Step::Silent;
            }
            Technique::DnsBlockpage => {
                let addrs = &policy.jurisdiction(block.jurisdiction).dns_blockpage;
                let records = blockpage_records(req, addrs);
                return Step::Reply(wire::encode(
                    &req.head,
                    ResponseCode::NoError,
                    &records,
                    &[],
                    limit,
                ));
            }
            // DnsServfail, and (never chosen by `first_at(Layer::Dns)`) any other technique.
            _ => ResponseCode::ServFail,
        };
        Step::Reply(wire::encode(&req.head, rcode, &[], &[], limit))
    }
}

fn limit_for(transport: Transport, udp_limit: usize) -> usize {
    match transport {
        Transport::Udp => udp_limit,
        Transport::Tcp => MAX_TCP_MESSAGE,
    }
}

/// The first CNAME target or address of `records` blocked with a DNS technique.
fn screen(
    policy: &Policy,
    jid: JurisdictionId,
    at: At,
    records: &[Record],
) -> Option<(Block, Technique, &'static str)> {
    records.iter().find_map(|r| {
        let (decision, via) = match r.data() {
            RData::CNAME(c) => (
                policy.decide_in(jid, Target::Domain(&c.0.to_ascii()), at),
                "cname",
            ),
            RData::A(a) => (
                policy.decide_in(jid, Target::Ip(IpAddr::V4(a.0)), at),
                "address",
            ),
            RData::AAAA(a) => (
                policy.decide_in(jid, Target::Ip(IpAddr::V6(a.0)), at),
                "address",
            ),
            _ => return None,
        };
        match decision {
            Decision::Block(b) => b.techniques.first_at(Layer::Dns).map(|t| (b, t, via)),
            Decision::Allow { .. } => None,
        }
    })
}

/// The A (or AAAA) records of a blockpage answer; none for other types (an empty NOERROR).
fn blockpage_records(req: &Request, addrs: &[IpAddr]) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|ip| match (ip, req.qtype) {
            (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(req.name.clone(), BLOCKPAGE_TTL, rdata))
        .collect()
}
