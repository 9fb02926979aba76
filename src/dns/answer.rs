//! From one query's bytes to its response: the censor's decision for DNS.
//!
//! [`Frontend::answer_now`] does everything that needs no I/O, synchronously, so the
//! listeners can answer blocked and cached names without spawning a task: parse the packet,
//! map the client to its jurisdiction (none: REFUSED, counted — never an open resolver), ask
//! the policy about the question name (as a query to port 53 over its transport, from the
//! client group's ISP profile, at the group's simulated date), and either enact the rule's DNS technique or look in
//! the cache. A name blocked only at other layers (e.g. `tls-reset`) resolves normally, as it
//! did for the real censor. What the cache lacks becomes a [`Pending`] query that
//! [`Frontend::answer_later`] sends upstream (at most [`MAX_PENDING`] at once; beyond that,
//! SERVFAIL). Every answer relayed, cached or fresh, is screened:
//! a CNAME target or an A/AAAA address that the policy blocks with a DNS technique blocks the
//! whole answer with that rule's technique. Each query runs in a `dns` tracing span
//! (`client.addr`, `client.jurisdiction`, `dns.qname`, `dns.qtype`) and its decision is one
//! event with `decision`, `rule`, `technique` and `via` (name, cname or address). A cache hit
//! that passes screening is answered from its pre-encoded [`super::template::Template`] when it
//! fits. With `[dns] ede` set, blocks carry an RFC 8914 Extended DNS Error naming the rule.
//! [`Frontend::answer_fast`] is the same decision for plain UDP queries on the hot path: read by
//! [`super::quick`], answered into the caller's buffer (blocks and cache hits), handing
//! anything unusual to the general path; a test checks both give the same bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::Guard;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{field, Instrument, Span};

use super::cache::{Cache, Entry, Screened};
use super::forward::{self, Forwarder};
use super::quick::{self, Quick, Rcode};
use super::template::Echo;
use super::wire::{self, Reject, Request, MAX_TCP_MESSAGE};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::policy::{At, Block, Conn, Decision, JurisdictionId, Policy, Target};
use crate::resolve::Answer;
use crate::rules::{Layer, Port, Proto, Technique};

/// TTL of the records of a `dns-blockpage` answer.
pub const BLOCKPAGE_TTL: u32 = 300;
/// Queries waiting for the upstream at once; more are answered SERVFAIL at once, so a flood
/// of uncached names cannot pile up tasks and memory.
pub const MAX_PENDING: usize = 4096;

/// The DNS transport a query came over, UDP or TCP (it bounds the response size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    /// UDP: the client's EDNS payload size, or 512 bytes; larger answers are truncated.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

impl DnsTransport {
    /// `udp` or `tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
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
    Upstream(Box<Pending>),
}

/// What the hot path ([`Frontend::answer_fast`]) did with a query.
#[derive(Debug)]
pub enum Fast {
    /// A response of this many bytes is in the caller's buffer.
    Wrote(usize),
    /// As the general path would: send these bytes, nothing, or ask the upstream.
    Step(Step),
    /// Not a query for the hot path: take the general one,
    /// [`Frontend::answer_now_admitted`] with this `admitted` (the query was already
    /// counted and let through the rate limiter).
    General {
        /// Whether the query was counted and admitted by the rate limiter already.
        admitted: bool,
    },
}

/// An allowed query the cache could not answer.
#[derive(Debug)]
pub struct Pending {
    req: Request,
    client: SocketAddr,
    decision: Decision,
    key: String,
    policy: Arc<Policy>,
    jurisdiction: JurisdictionId,
    at: At,
    conn: Conn<'static>,
    limit: usize,
    span: Span,
    /// The question section as sent upstream (lower-case name).
    question: Vec<u8>,
    /// The client's packet (the template fast path copies its question).
    query: Vec<u8>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

/// The DNS frontend's shared state: the gateway (policy, upstream, metrics) and the cache.
#[derive(Debug)]
pub struct Frontend {
    gw: Arc<Gateway>,
    cache: Cache,
    forward: Forwarder,
    pending: Arc<Semaphore>,
    limiter: Option<crate::limits::RateLimiter>,
    /// The EDE info-code put on blocks (`[dns] ede`), if any.
    ede: Option<u16>,
}

impl Frontend {
    /// A frontend for `gw`, caching up to `cache_size` answers.
    pub fn new(gw: Arc<Gateway>, cache_size: usize) -> Frontend {
        let limiter = gw.config.dns.as_ref().and_then(|d| {
            crate::limits::RateLimiter::new(
                d.rate_limit_qps,
                d.rate_limit_burst,
                d.rate_limit_clients,
            )
        });
        let servers = gw.upstream.servers().to_vec();
        let ede = gw
            .config
            .dns
            .as_ref()
            .and_then(|d| d.ede)
            .map(crate::config::Ede::info_code);
        let sockets = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(4);
        Frontend {
            forward: Forwarder::new(&servers, sockets),
            gw,
            cache: Cache::new(cache_size),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            limiter,
            ede,
        }
    }

    /// The answer cache (filled by the forwarder; benchmarks and tests fill it directly).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The gateway's metrics (queries, malformed packets, cache, upstream).
    pub fn metrics(&self) -> &Metrics {
        &self.gw.metrics
    }

    /// Answers `buf` from `client`, asking the upstream if needed; `None` = send nothing.
    pub async fn answer(
        &self,
        client: SocketAddr,
        buf: &[u8],
        transport: DnsTransport,
    ) -> Option<Vec<u8>> {
        match self.answer_now(client, buf, transport) {
            Step::Reply(b) => Some(b),
            Step::Silent => None,
            Step::Upstream(p) => self.answer_later(p).await,
        }
    }

    /// The UDP hot path: answers a plain query (see [`quick`]) without allocating, writing
    /// the response into `out`: blocked names (except with EDE) and cache hits that fit
    /// their template. A miss becomes a [`Pending`] query as on the general path; anything
    /// else is left to the general path ([`Fast::General`]). With debug tracing on, every
    /// query takes the general path, which records the `dns` span's fields.
    pub fn answer_fast(&self, client: SocketAddr, buf: &[u8], out: &mut [u8]) -> Fast {
        if tracing::enabled!(tracing::Level::DEBUG) {
            return Fast::General { admitted: false };
        }
        let Some(q) = quick::decode(buf) else {
            return Fast::General { admitted: false };
        };
        let started = Instant::now();
        Metrics::inc(&self.gw.metrics.dns_queries);
        let limit = q.udp_limit();
        if let Some(l) = &self.limiter {
            if !l.allow(client.ip(), started) {
                Metrics::inc(&self.gw.metrics.rate_limited);
                return match quick::write_reply(&q, buf, Rcode::Refused, &[], 0, limit, out) {
                    Some(n) => Fast::Wrote(n),
                    None => Fast::Step(Step::Silent),
                };
            }
        }
        let key = q.name();
        let policy = self.gw.policy();
        let Some(c) = self.gw.client(&policy, client.ip()) else {
            return Fast::General { admitted: true };
        };
        let (jid, at) = (c.jurisdiction, c.at);
        let jur = policy.jurisdiction(jid);
        let conn = Conn {
            port: Some(Port {
                proto: Proto::Udp,
                port: 53,
            }),
            isp: c.isp,
            local_minute: crate::gateway::clock_minute(at, jur.utc_offset),
            ..Conn::NONE
        };
        let decision = policy.decide_conn_in(jid, Target::Domain(key), &conn, at);
        let ctx = Ctx {
            policy: &policy,
            jid,
            at,
            conn,
            client,
            key,
            decision: &decision,
            started,
        };
        if let Decision::Block(b) = decision {
            if let Some(t) = b.techniques.first_at(Layer::Dns) {
                return self.enact_fast(&ctx, b, t, &q, buf, limit, "name", out);
            }
        }
        let qtype = RecordType::from(q.qtype);
        if let Some(hit) = self.cache.get(key, qtype, started) {
            Metrics::inc(&self.gw.metrics.cache_hits);
            if let Some((block, technique, via)) = screen(&ctx, &hit.targets) {
                return self.enact_fast(&ctx, block, technique, &q, buf, limit, via, out);
            }
            let echo = Echo {
                id: q.id,
                rd: q.rd,
                cd: q.cd,
                edns: q.edns.is_some(),
            };
            let spent = hit.spent(started);
            let question = &buf[12..];
            if let Some(n) = hit
                .template
                .as_ref()
                .and_then(|t| t.render_into(echo, question, spent, limit, out))
            {
                let records = &hit.answer.records;
                self.log(&ctx, qtype, &decision, None, || addresses(records));
                return Fast::Wrote(n);
            }
            // No template, or too large for the client: the general encoder (truncation).
            return match wire::parse(buf) {
                Ok(req) => Fast::Step(self.serve_entry(&ctx, &req, buf, &hit, started, limit)),
                Err(_) => Fast::Step(Step::Silent),
            };
        }
        Metrics::inc(&self.gw.metrics.cache_misses);
        let Ok(req) = wire::parse(buf) else {
            // Never: whatever the quick decoder reads, the full parser reads alike (tested).
            return Fast::Step(Step::Silent);
        };
        let miss = Miss {
            client,
            jid,
            at,
            conn,
            limit,
            started,
        };
        let key = key.to_string();
        Fast::Step(self.upstream(miss, req, key, decision, policy, buf, Span::none()))
    }

    /// [`Frontend::enact`] on the hot path: writes the block into `out` unless it carries an
    /// EDE option (or does not fit), which the general encoder writes.
    #[allow(clippy::too_many_arguments)]
    fn enact_fast(
        &self,
        ctx: &Ctx<'_>,
        block: Block,
        technique: Technique,
        q: &Quick,
        buf: &[u8],
        limit: usize,
        via: &'static str,
        out: &mut [u8],
    ) -> Fast {
        let decision = Decision::Block(block);
        let qtype = RecordType::from(q.qtype);
        let rcode = match technique {
            Technique::DnsNxdomain => Rcode::NxDomain,
            Technique::DnsRefused => Rcode::Refused,
            Technique::DnsDrop => {
                self.log(ctx, qtype, &decision, Some(technique), no_answers);
                return Fast::Step(Step::Silent);
            }
            Technique::DnsBlockpage => Rcode::NoError,
            _ => Rcode::ServFail,
        };
        let addrs: &[IpAddr] = if technique == Technique::DnsBlockpage {
            ctx.policy.dns_blockpage(block.jurisdiction, ctx.conn.isp)
        } else {
            &[]
        };
        // EDE options are the general encoder's.
        let ede = self.ede.is_some() && q.edns.is_some();
        if let Some(n) = (!ede)
            .then(|| quick::write_reply(q, buf, rcode, addrs, BLOCKPAGE_TTL, limit, out))
            .flatten()
        {
            let answers = || {
                addrs
                    .iter()
                    .filter(|ip| match q.qtype {
                        1 => ip.is_ipv4(),
                        28 => ip.is_ipv6(),
                        _ => false,
                    })
                    .map(IpAddr::to_string)
                    .collect()
            };
            self.log(ctx, qtype, &decision, Some(technique), answers);
            return Fast::Wrote(n);
        }
        match wire::parse(buf) {
            Ok(req) => Fast::Step(self.enact(ctx, block, technique, &req, limit, via)),
            Err(_) => Fast::Step(Step::Silent),
        }
    }

    /// The part of answering that needs no I/O.
    pub fn answer_now(&self, client: SocketAddr, buf: &[u8], transport: DnsTransport) -> Step {
        self.answer_now_admitted(client, buf, transport, false)
    }

    /// [`Frontend::answer_now`] for a query the hot path already counted and let through the
    /// rate limiter (`admitted`), or not.
    pub fn answer_now_admitted(
        &self,
        client: SocketAddr,
        buf: &[u8],
        transport: DnsTransport,
        admitted: bool,
    ) -> Step {
        let started = Instant::now();
        if !admitted {
            Metrics::inc(&self.gw.metrics.dns_queries);
        }
        let span = tracing::debug_span!(
            "dns",
            client.addr = %client,
            transport = transport.as_str(),
            client.jurisdiction = field::Empty,
            dns.qname = field::Empty,
            dns.qtype = field::Empty,
        );
        let entered = span.enter();
        let req = match wire::parse(buf) {
            Ok(r) => r,
            Err(rej) => {
                if rej.is_malformed() {
                    Metrics::inc(&self.gw.metrics.malformed);
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
        if let Some(l) = self.limiter.as_ref().filter(|_| !admitted) {
            if !l.allow(client.ip(), std::time::Instant::now()) {
                Metrics::inc(&self.gw.metrics.rate_limited);
                tracing::debug!(decision = "rate-limited", "client over its query rate");
                return Step::Reply(wire::encode(
                    &req.head,
                    ResponseCode::Refused,
                    &[],
                    &[],
                    limit,
                ));
            }
        }
        let mut key = req.name.to_ascii();
        key.make_ascii_lowercase();
        span.record("dns.qname", key.as_str());
        span.record("dns.qtype", field::display(req.qtype));

        let policy = self.gw.policy();
        let Some(c) = self.gw.client(&policy, client.ip()) else {
            self.gw.record_refused("dns", client, &key);
            tracing::debug!(decision = "refused", "client in no configured network");
            let refused = ResponseCode::Refused;
            return Step::Reply(wire::encode(&req.head, refused, &[], &[], limit));
        };
        let (jid, at) = (c.jurisdiction, c.at);
        let jur = policy.jurisdiction(jid);
        span.record("client.jurisdiction", jur.code.as_str());
        // The query as the censor sees it: to port 53 over its transport, from the client
        // group's ISP, at its simulated moment.
        let conn = Conn {
            port: Some(Port {
                proto: match transport {
                    DnsTransport::Udp => Proto::Udp,
                    DnsTransport::Tcp => Proto::Tcp,
                },
                port: 53,
            }),
            isp: c.isp,
            local_minute: crate::gateway::clock_minute(at, jur.utc_offset),
            ..Conn::NONE
        };
        let decision = policy.decide_conn_in(jid, Target::Domain(&key), &conn, at);
        let ctx = Ctx {
            policy: &policy,
            jid,
            at,
            conn,
            client,
            key: &key,
            decision: &decision,
            started,
        };
        match decision {
            Decision::Block(b) => match b.techniques.first_at(Layer::Dns) {
                Some(t) => return self.enact(&ctx, b, t, &req, limit, "name"),
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

        let now = started;
        if let Some(hit) = self.cache.get(&key, req.qtype, now) {
            Metrics::inc(&self.gw.metrics.cache_hits);
            return self.serve_entry(&ctx, &req, buf, &hit, now, limit);
        }
        Metrics::inc(&self.gw.metrics.cache_misses);
        drop(entered);
        let miss = Miss {
            client,
            jid,
            at,
            conn,
            limit,
            started,
        };
        self.upstream(miss, req, key, decision, policy, buf, span)
    }

    /// A cache miss: a [`Pending`] query for the upstream, or SERVFAIL at once when
    /// [`MAX_PENDING`] queries already wait.
    #[allow(clippy::too_many_arguments)] // the parts of one query, moved into the Pending
    fn upstream(
        &self,
        m: Miss,
        req: Request,
        key: String,
        decision: Decision,
        policy: Guard<Arc<Policy>>,
        buf: &[u8],
        span: Span,
    ) -> Step {
        let (Ok(permit), Some(question)) = (
            Arc::clone(&self.pending).try_acquire_owned(),
            forward::question_of(buf),
        ) else {
            let _entered = span.enter();
            let ctx = Ctx {
                policy: &policy,
                jid: m.jid,
                at: m.at,
                conn: m.conn,
                client: m.client,
                key: &key,
                decision: &decision,
                started: m.started,
            };
            Metrics::inc(&self.gw.metrics.upstream_errors);
            self.log(&ctx, req.qtype, &decision, None, no_answers);
            tracing::debug!(
                max = MAX_PENDING,
                "too many queries upstream; answering SERVFAIL"
            );
            let fail = ResponseCode::ServFail;
            return Step::Reply(wire::encode(&req.head, fail, &[], &[], m.limit));
        };
        Step::Upstream(Box::new(Pending {
            req,
            client: m.client,
            decision,
            key,
            policy: Guard::into_inner(policy),
            jurisdiction: m.jid,
            at: m.at,
            conn: m.conn,
            limit: m.limit,
            span,
            question,
            query: buf.to_vec(),
            started: m.started,
            _permit: permit,
        }))
    }

    /// Asks the upstream for a [`Pending`] query (or waits for an identical one already in
    /// flight), caches the answer and screens it.
    pub async fn answer_later(&self, p: Box<Pending>) -> Option<Vec<u8>> {
        let span = p.span.clone();
        async move {
            let started = Instant::now();
            let (outcome, coalesced) = self
                .forward
                .fetch(&self.cache, &p.key, &p.req.name, p.req.qtype, &p.question)
                .await;
            if coalesced {
                Metrics::inc(&self.gw.metrics.dns_coalesced);
            } else {
                self.gw.metrics.upstream_latency.observe(started.elapsed());
            }
            let ctx = Ctx {
                policy: &p.policy,
                jid: p.jurisdiction,
                at: p.at,
                conn: p.conn,
                client: p.client,
                key: &p.key,
                decision: &p.decision,
                started: p.started,
            };
            let step = match outcome {
                Ok(entry) => {
                    self.serve_entry(&ctx, &p.req, &p.query, &entry, Instant::now(), p.limit)
                }
                Err(e) => {
                    Metrics::inc(&self.gw.metrics.upstream_errors);
                    self.log(&ctx, p.req.qtype, &p.decision, None, no_answers);
                    tracing::debug!(error = %e, "upstream failed; answering SERVFAIL");
                    let fail = ResponseCode::ServFail;
                    Step::Reply(wire::encode(&p.req.head, fail, &[], &[], p.limit))
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

    /// Answers from a cache entry (a hit, or the upstream's fresh answer), unless a CNAME
    /// target or an address in it is blocked: from its pre-encoded template when it fits
    /// (`query` is the client's packet), else encoded with the TTLs aged.
    fn serve_entry(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        query: &[u8],
        entry: &Entry,
        now: Instant,
        limit: usize,
    ) -> Step {
        if let Some((block, technique, via)) = screen(ctx, &entry.targets) {
            return self.enact(ctx, block, technique, req, limit, via);
        }
        let spent = entry.spent(now);
        let fast = entry
            .template
            .as_ref()
            .and_then(|t| t.render(req, query, spent, limit));
        match fast {
            Some(bytes) => {
                self.log(ctx, req.qtype, ctx.decision, None, || {
                    addresses(&entry.answer.records)
                });
                Step::Reply(bytes)
            }
            None => self.pass(ctx, req, &entry.aged(now), limit),
        }
    }

    /// Relays an answer that passed screening.
    fn pass(&self, ctx: &Ctx<'_>, req: &Request, answer: &Answer, limit: usize) -> Step {
        self.log(ctx, req.qtype, ctx.decision, None, || {
            addresses(&answer.records)
        });
        let (records, authority) = (&answer.records, &answer.authority);
        Step::Reply(wire::encode(
            &req.head,
            answer.rcode,
            records,
            authority,
            limit,
        ))
    }

    /// Answers as the censor would under `block`, with its DNS technique `technique`.
    fn enact(
        &self,
        ctx: &Ctx<'_>,
        block: Block,
        technique: Technique,
        req: &Request,
        limit: usize,
        via: &'static str,
    ) -> Step {
        let decision = Decision::Block(block);
        tracing::debug!(
            decision = "block",
            rule = ctx.policy.rule(block.rule).id.as_str(),
            technique = technique.as_str(),
            via,
            "blocked"
        );
        let rcode = match technique {
            Technique::DnsNxdomain => ResponseCode::NXDomain,
            Technique::DnsRefused => ResponseCode::Refused,
            Technique::DnsDrop => {
                self.log(ctx, req.qtype, &decision, Some(technique), no_answers);
                return Step::Silent;
            }
            Technique::DnsBlockpage => ResponseCode::NoError,
            // DnsServfail, and (never chosen by `first_at(Layer::Dns)`) any other technique.
            _ => ResponseCode::ServFail,
        };
        let records = if technique == Technique::DnsBlockpage {
            let addrs = ctx.policy.dns_blockpage(block.jurisdiction, ctx.conn.isp);
            blockpage_records(req, addrs)
        } else {
            Vec::new()
        };
        self.log(ctx, req.qtype, &decision, Some(technique), || {
            addresses(&records)
        });
        let text;
        let ede = match self.ede {
            Some(code) if req.head.edns.is_some() => {
                text = format!("blocklab rule {}", ctx.policy.rule(block.rule).id);
                Some((code, text.as_str()))
            }
            _ => None,
        };
        Step::Reply(wire::encode_with_ede(
            &req.head,
            rcode,
            &records,
            &[],
            limit,
            ede,
        ))
    }

    /// Counts and logs one answer: the decision, with the question type, the addresses
    /// answered (asked of `answers` only when the decision log is on) and the time taken
    /// (the decision log's DNS fields).
    fn log(
        &self,
        ctx: &Ctx<'_>,
        qtype: RecordType,
        decision: &Decision,
        enacted: Option<Technique>,
        answers: impl FnOnce() -> Vec<String>,
    ) {
        self.gw
            .record("dns", ctx.client, ctx.key, decision, enacted, |e| {
                e.qtype = Some(qtype.to_string());
                e.answers = Some(answers());
                e.latency_ms = Some(ctx.started.elapsed().as_secs_f64() * 1000.0);
            });
    }
}

/// The A and AAAA addresses of `records`, as text (the decision log's `answers`).
fn addresses(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// No addresses answered.
fn no_answers() -> Vec<String> {
    Vec::new()
}

/// A cache miss's parts that the [`Pending`] query keeps.
struct Miss {
    client: SocketAddr,
    jid: JurisdictionId,
    at: At,
    conn: Conn<'static>,
    limit: usize,
    started: Instant,
}

/// What answering one query needs to know beyond the packet.
struct Ctx<'a> {
    policy: &'a Policy,
    jid: JurisdictionId,
    at: At,
    /// The query's port, ISP and time of day.
    conn: Conn<'static>,
    client: SocketAddr,
    /// The question name, lower-case.
    key: &'a str,
    /// The decision on the question name (recorded when the answer passes screening).
    decision: &'a Decision,
    /// When the query arrived.
    started: Instant,
}

fn limit_for(transport: DnsTransport, udp_limit: usize) -> usize {
    match transport {
        DnsTransport::Udp => udp_limit,
        DnsTransport::Tcp => MAX_TCP_MESSAGE,
    }
}

/// The first CNAME target or address of an answer (its [`Screened`] targets) blocked with a
/// DNS technique.
fn screen(ctx: &Ctx<'_>, targets: &[Screened]) -> Option<(Block, Technique, &'static str)> {
    let decide = |t: Target<'_>| ctx.policy.decide_conn_in(ctx.jid, t, &ctx.conn, ctx.at);
    targets.iter().find_map(|t| {
        let (decision, via) = match t {
            Screened::Name(n) => (decide(Target::Domain(n)), "cname"),
            Screened::Ip(ip) => (decide(Target::Ip(*ip)), "address"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    use std::sync::atomic::Ordering;

    /// A frontend on the shipped rules at 2022-03-10, only 127.0.0.2 mapped (to `ru`), and an
    /// upstream that nothing here may need (port 9, discard).
    fn frontend() -> Frontend {
        let text = "date = \"2022-03-10\"\n[[clients]]\nnetworks = [\"127.0.0.2/32\"]\njurisdiction = \"ru\"\n[dns]\nlisten = []\nupstream = [\"127.0.0.1:9\"]\n";
        let config = Config::from_str("t.toml", text).unwrap();
        let policy = config.compile_policy().unwrap();
        Frontend::new(Gateway::new(config, policy).unwrap(), 100)
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(77).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn unmapped_clients_are_refused_and_counted() {
        let f = frontend();
        let stranger: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let bytes = f
            .answer(
                stranger,
                &query("example.org.", RecordType::A),
                DnsTransport::Udp,
            )
            .await;
        let m = Message::from_vec(&bytes.unwrap()).unwrap();
        assert_eq!((m.id(), m.response_code()), (77, ResponseCode::Refused));
        assert!(m.answers().is_empty());
        assert_eq!(count(&f.metrics().refused_clients), 1);
        assert_eq!(
            count(&f.metrics().cache_misses),
            0,
            "nothing was sent upstream"
        );
    }

    #[tokio::test]
    async fn a_full_upstream_queue_answers_servfail_at_once() {
        let f = frontend();
        let _all = Arc::clone(&f.pending)
            .try_acquire_many_owned(MAX_PENDING as u32)
            .unwrap();
        let client: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let q = query("allowed.example.", RecordType::A);
        let Step::Reply(bytes) = f.answer_now(client, &q, DnsTransport::Udp) else {
            panic!("must not wait for the upstream");
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert_eq!(count(&f.metrics().upstream_errors), 1);
    }

    #[tokio::test]
    async fn blocked_names_are_answered_without_the_upstream_and_malformed_counted() {
        let f = frontend();
        let client: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let bytes = f
            .answer(
                client,
                &query("www.LinkedIn.com.", RecordType::A),
                DnsTransport::Tcp,
            )
            .await;
        let m = Message::from_vec(&bytes.unwrap()).unwrap();
        assert_eq!(m.answers().len(), 1);
        assert_eq!(m.answers()[0].data().to_string(), "95.167.13.50");
        assert_eq!(f.answer(client, &[0u8; 5], DnsTransport::Udp).await, None);
        assert_eq!(count(&f.metrics().malformed), 1);
        assert_eq!(count(&f.metrics().dns_queries), 2);
        assert!(
            f.metrics().render().contains("ru-linkedin"),
            "the decision is counted by rule"
        );
    }

    /// The hot path answers exactly as the general path would: blocked names (blockpage,
    /// with and without EDNS, A and other types), cache hits (aged TTLs, the client's case),
    /// unmapped clients and unusual packets (left to the general path).
    #[tokio::test]
    async fn the_hot_path_answers_as_the_general_path() {
        use crate::dns::template::Template;
        use hickory_proto::op::Edns;
        let f = frontend();
        let client: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let name = Name::from_ascii("cached.example.").unwrap();
        let answer = Answer {
            rcode: ResponseCode::NoError,
            records: vec![Record::from_rdata(
                name.clone(),
                600,
                RData::A(A::new(192, 0, 2, 9)),
            )],
            authority: vec![],
            ttl: 600,
        };
        let template = Template::build(&name, RecordType::A, &answer);
        assert!(template.is_some());
        let entry = Entry::new(answer, template, Instant::now());
        f.cache
            .insert("cached.example.", RecordType::A, Arc::new(entry));
        let with_edns = |mut q: Vec<u8>| {
            let mut m = Message::from_vec(&q).unwrap();
            m.set_edns(Edns::new());
            q = m.to_vec().unwrap();
            q
        };
        let cases = [
            query("www.LinkedIn.com.", RecordType::A),
            with_edns(query("www.linkedin.com.", RecordType::A)),
            query("www.linkedin.com.", RecordType::MX),
            query("CACHED.example.", RecordType::A),
            with_edns(query("cached.example.", RecordType::A)),
        ];
        for q in &cases {
            let mut out = [0u8; 4096];
            let Fast::Wrote(n) = f.answer_fast(client, q, &mut out) else {
                panic!("the hot path declined {q:?}");
            };
            let Step::Reply(general) = f.answer_now(client, q, DnsTransport::Udp) else {
                panic!("the general path did not reply");
            };
            assert_eq!(&out[..n], &general[..]);
        }
        assert_eq!(count(&f.metrics().dns_queries), 2 * cases.len() as u64);
        assert_eq!(count(&f.metrics().cache_hits), 4);
        let stranger: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut out = [0u8; 4096];
        assert!(matches!(
            f.answer_fast(stranger, &cases[0], &mut out),
            Fast::General { admitted: true }
        ));
        assert!(matches!(
            f.answer_fast(client, &[1, 2, 3], &mut out),
            Fast::General { admitted: false }
        ));
    }
}
