//! The compiled policy: "client X, target Y, date T -> allow / block how".
//!
//! [`Policy::compile`] turns a [`RuleSet`] and the client-network map into an immutable
//! structure; [`Policy::decide`] answers from it. The lookup path is pure and synchronous: no
//! I/O, no lock, no allocation (names are lower-cased into a stack buffer; matchers return
//! borrowed slices). Per jurisdiction there is one matcher for suffix/exact names
//! ([`domain`]), one for substrings (Aho-Corasick), one for CIDRs ([`cidr`]), and URL prefixes
//! by host. Precedence (DESIGN.md): an active allow rule beats every block; among active blocks
//! the most specific match wins (longest suffix, longest prefix, longest substring); ties go to
//! the rule listed first. Dates are compared as local day numbers of the jurisdiction.

mod cidr;
mod domain;
pub mod explain;
mod substring;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::rules::{
    Day, Entry, ImportFormat, Jurisdiction, Rule, RuleSet, Techniques, VpnRule, MAX_NAME_LEN,
};
use cidr::{CidrTable, Spans};
use domain::{finish, hash_step, refs, DomainMatcher, NamesBuilder, FNV_OFFSET};
use substring::SubstringMatcher;

/// The simulated moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A civil date: rules active on that local day in every jurisdiction.
    Day(Day),
    /// A unix time (seconds), converted to each jurisdiction's local day.
    Instant(i64),
}

impl At {
    #[inline]
    fn local_day(self, utc_offset: i32) -> i32 {
        match self {
            At::Day(d) => d.0,
            At::Instant(t) => Day::at_instant(t, utc_offset).0,
        }
    }
}

/// What is being reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A host name (DNS qname, SNI, Host header). ASCII; matched case-insensitively.
    Domain(&'a str),
    /// An address.
    Ip(IpAddr),
    /// A URL's host and path (path starting with `/`), when the path is visible.
    Url {
        /// Host name or address literal.
        host: &'a str,
        /// Path and query.
        path: &'a str,
    },
}

impl<'a> Target<'a> {
    /// Reads a CLI-style target: an IP address, a URL (`http(s)://...`) or a domain name.
    pub fn parse(s: &'a str) -> Target<'a> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Target::Ip(ip);
        }
        if let Some(host) = crate::rules::url_host(s) {
            let after_scheme = s.split_once("://").map_or(s, |x| x.1);
            let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
            return Target::Url { host, path };
        }
        Target::Domain(s)
    }
}

/// An index into the policy's jurisdictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JurisdictionId(pub u16);

/// An index into the policy's rules (see [`Policy::rule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(pub u32);

/// A block: which rule, in which jurisdiction, enacted how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The client's jurisdiction.
    pub jurisdiction: JurisdictionId,
    /// The rule that decided.
    pub rule: RuleId,
    /// How the block is enacted (the frontend picks those of its layer).
    pub techniques: Techniques,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not blocked; `rule` is the allow rule that matched, if any.
    Allow {
        /// The client's jurisdiction.
        jurisdiction: JurisdictionId,
        /// The exception that allowed it, if any.
        rule: Option<RuleId>,
    },
    /// Blocked.
    Block(Block),
}

impl Decision {
    /// Whether this is a block.
    pub fn is_block(&self) -> bool {
        matches!(self, Decision::Block(_))
    }

    /// The techniques of a block (empty for allow).
    pub fn techniques(&self) -> Techniques {
        match self {
            Decision::Block(b) => b.techniques,
            Decision::Allow { .. } => Techniques::EMPTY,
        }
    }

    /// The rule that decided, if any.
    pub fn rule(&self) -> Option<RuleId> {
        match self {
            Decision::Block(b) => Some(b.rule),
            Decision::Allow { rule, .. } => *rule,
        }
    }

    /// The jurisdiction the decision was made in.
    pub fn jurisdiction(&self) -> JurisdictionId {
        match self {
            Decision::Block(b) => b.jurisdiction,
            Decision::Allow { jurisdiction, .. } => *jurisdiction,
        }
    }
}

/// The client address is in no configured network: serve it nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client {0} is not in any configured network")]
pub struct Unmapped(pub IpAddr);

/// What the policy knows of one rule, for explaining decisions.
#[derive(Debug, Clone)]
pub struct RuleInfo {
    /// The rule's id.
    pub id: String,
    /// Its jurisdiction.
    pub jurisdiction: JurisdictionId,
    /// How it blocks.
    pub techniques: Techniques,
    /// Whether it is an exception.
    pub allow: bool,
    /// Rate for `throttle`.
    pub throttle_kbps: Option<u32>,
    /// Legal basis.
    pub basis: Option<String>,
    /// Source of the facts.
    pub source: Option<String>,
    /// Start day (the rule's own; an imported entry may start later).
    pub since: Option<Day>,
    /// End day.
    pub until: Option<Day>,
}

/// A client network mapped to a jurisdiction code (from the gateway config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNet {
    /// The network.
    pub net: IpNet,
    /// The jurisdiction code.
    pub jurisdiction: String,
}

/// Why a policy could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A client network names a jurisdiction no rules file defines.
    #[error("client network {net} is mapped to jurisdiction `{code}`, which no rules file defines (have: {have})")]
    UnknownJurisdiction {
        /// The network.
        net: IpNet,
        /// The code.
        code: String,
        /// The defined codes.
        have: String,
    },
    /// More rules than the compact references can address.
    #[error("too many rules ({0}); at most 2^30 compiled rules are supported")]
    TooManyRules(usize),
}

/// Flag on a reference: the name must match exactly (from `exact`).
const EXACT: u32 = 1 << 30;
/// Flag on a reference: only strict subdomains match (from `*.name`).
const SUBS_ONLY: u32 = 1 << 31;
const INDEX_MASK: u32 = EXACT - 1;

/// One compiled rule: the window and action of a rule (or of a dated imported entry).
#[derive(Debug, Clone, Copy)]
struct Compiled {
    since: i32,
    until: i32,
    allow: bool,
    techniques: Techniques,
    info: u32,
    order: u32,
}

impl Compiled {
    #[inline]
    fn active(&self, day: i32) -> bool {
        self.since <= day && day < self.until
    }
}

#[derive(Debug)]
struct CompiledJurisdiction {
    info: Jurisdiction,
    domains: DomainMatcher,
    root: Vec<u32>,
    substrings: SubstringMatcher,
    /// Local days `[from, to)` outside which no substring rule is active: the scan is skipped.
    substring_days: (i32, i32),
    cidrs: CidrTable,
    /// Interned CIDR chains: `(prefix len, ref)`, innermost first; indexed by `chain_spans`.
    chains: Vec<(u8, u32)>,
    chain_spans: Vec<(u32, u32)>,
    /// host -> [(path prefix, ref)]
    urls: HashMap<String, Vec<(String, u32)>>,
    vpn: Vec<VpnRule>,
    rules: usize,
    entries: usize,
}

/// Sizes and costs of a compiled policy, for `blocklab rules stats`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Per jurisdiction: (code, rules, entries, distinct names, CIDR intervals, heap bytes).
    pub jurisdictions: Vec<JurisdictionStats>,
}

/// Sizes of one jurisdiction's compiled matchers.
#[derive(Debug, Clone, Default)]
pub struct JurisdictionStats {
    /// Code.
    pub code: String,
    /// `[[rule]]` tables.
    pub rules: usize,
    /// `[[vpn]]` tables.
    pub vpn_rules: usize,
    /// Domain, CIDR, substring and URL entries, imports included.
    pub entries: usize,
    /// Distinct names in the domain matcher.
    pub names: usize,
    /// Disjoint CIDR intervals.
    pub cidr_intervals: usize,
    /// Heap bytes of the compiled matchers.
    pub heap_bytes: usize,
}

/// The compiled, immutable policy. Cheap to share (`Arc`), safe to read from any thread.
#[derive(Debug)]
pub struct Policy {
    jurisdictions: Vec<CompiledJurisdiction>,
    compiled: Vec<Compiled>,
    infos: Vec<RuleInfo>,
    clients: CidrTable,
    client_nets: Vec<ClientNet>,
    generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A shareable policy handle.
pub type SharedPolicy = Arc<Policy>;

impl Policy {
    /// Compiles `rules` with the client networks `clients`.
    pub fn compile(rules: &RuleSet, clients: &[ClientNet]) -> Result<Policy, CompileError> {
        let mut compiled: Vec<Compiled> = Vec::new();
        let mut infos: Vec<RuleInfo> = Vec::new();
        let mut jurisdictions = Vec::with_capacity(rules.files.len());
        for (jidx, file) in rules.files.iter().enumerate() {
            let jid = JurisdictionId(jidx as u16);
            let mut b = Builder::default();
            for rule in &file.rules {
                let info = infos.len() as u32;
                infos.push(RuleInfo {
                    id: rule.id.clone(),
                    jurisdiction: jid,
                    techniques: rule.techniques,
                    allow: rule.allow,
                    throttle_kbps: rule.throttle_kbps,
                    basis: rule.basis.clone(),
                    source: rule.source.clone(),
                    since: rule.since,
                    until: rule.until,
                });
                b.add_rule(rule, info, &mut compiled);
            }
            if compiled.len() > INDEX_MASK as usize {
                return Err(CompileError::TooManyRules(compiled.len()));
            }
            jurisdictions.push(b.finish(
                file.jurisdiction.clone(),
                file.vpn.clone(),
                file.rules.len(),
                &compiled,
            ));
        }
        let mut client_nets = Vec::with_capacity(clients.len());
        let mut pairs = Vec::with_capacity(clients.len());
        for c in clients {
            let Some(j) = rules
                .files
                .iter()
                .position(|f| f.jurisdiction.code == c.jurisdiction)
            else {
                return Err(CompileError::UnknownJurisdiction {
                    net: c.net,
                    code: c.jurisdiction.clone(),
                    have: rules
                        .files
                        .iter()
                        .map(|f| f.jurisdiction.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            pairs.push((c.net.trunc(), j as u32));
            client_nets.push(c.clone());
        }
        // The innermost network decides; among equal networks the first listed.
        let clients = CidrTable::build(pairs.into_iter().collect(), |chain| {
            let max = chain.iter().map(|c| c.0).max().unwrap_or(0);
            chain.iter().find(|c| c.0 == max).map_or(0, |c| c.1)
        });
        Ok(Policy {
            jurisdictions,
            compiled,
            infos,
            clients,
            client_nets,
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The jurisdiction of `client` (longest-prefix match over the configured networks).
    #[inline]
    pub fn jurisdiction_for(&self, client: IpAddr) -> Option<JurisdictionId> {
        self.clients.get(client).map(|j| JurisdictionId(j as u16))
    }

    /// The jurisdiction with code `code`.
    pub fn jurisdiction_by_code(&self, code: &str) -> Option<JurisdictionId> {
        self.jurisdictions
            .iter()
            .position(|j| j.info.code == code)
            .map(|i| JurisdictionId(i as u16))
    }

    /// The header of jurisdiction `id` (code, blockpages, offset, reassembly).
    pub fn jurisdiction(&self, id: JurisdictionId) -> &Jurisdiction {
        &self.jurisdictions[usize::from(id.0)].info
    }

    /// Every jurisdiction, in rules-file order.
    pub fn jurisdictions(&self) -> impl Iterator<Item = (JurisdictionId, &Jurisdiction)> {
        self.jurisdictions
            .iter()
            .enumerate()
            .map(|(i, j)| (JurisdictionId(i as u16), &j.info))
    }

    /// A number unique to this compiled policy (rule indices are only meaningful within one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The client networks the policy was compiled with.
    pub fn client_nets(&self) -> &[ClientNet] {
        &self.client_nets
    }

    /// What the policy knows of rule `id`, if `id` is one of this policy's (a decision made
    /// with an older policy may name a rule this one does not have).
    pub fn rule_checked(&self, id: RuleId) -> Option<&RuleInfo> {
        self.infos.get(id.0 as usize)
    }

    /// The header of jurisdiction `id`, if `id` is one of this policy's.
    pub fn jurisdiction_checked(&self, id: JurisdictionId) -> Option<&Jurisdiction> {
        self.jurisdictions.get(usize::from(id.0)).map(|j| &j.info)
    }

    /// What the policy knows of rule `id`.
    pub fn rule(&self, id: RuleId) -> &RuleInfo {
        &self.infos[id.0 as usize]
    }

    /// The decision for `client` reaching `target` at `at`; `Err` for an unmapped client.
    #[inline]
    pub fn decide(&self, client: IpAddr, target: Target<'_>, at: At) -> Result<Decision, Unmapped> {
        let j = self.jurisdiction_for(client).ok_or(Unmapped(client))?;
        Ok(self.decide_in(j, target, at))
    }

    /// The decision for `target` at `at` in jurisdiction `j`.
    pub fn decide_in(&self, j: JurisdictionId, target: Target<'_>, at: At) -> Decision {
        let cj = &self.jurisdictions[usize::from(j.0)];
        let day = at.local_day(cj.info.utc_offset);
        let mut best = Best::default();
        let allowed = match target {
            Target::Domain(name) => self.match_name(cj, name.as_bytes(), day, &mut best),
            Target::Ip(ip) => self.match_ip(cj, ip, day, &mut best),
            Target::Url { host, path } => {
                let a = self.match_url(cj, host, path, day, &mut best);
                a.or_else(|| match host.parse::<IpAddr>() {
                    Ok(ip) => self.match_ip(cj, ip, day, &mut best),
                    Err(_) => self.match_name(cj, host.as_bytes(), day, &mut best),
                })
            }
        };
        if let Some(rule) = allowed {
            return Decision::Allow {
                jurisdiction: j,
                rule: Some(RuleId(self.compiled[rule as usize].info)),
            };
        }
        match best.rule {
            Some(r) => {
                let c = &self.compiled[r as usize];
                Decision::Block(Block {
                    jurisdiction: j,
                    rule: RuleId(c.info),
                    techniques: c.techniques,
                })
            }
            None => Decision::Allow {
                jurisdiction: j,
                rule: None,
            },
        }
    }

    /// The active `[[vpn]]` rule of jurisdiction `j` for a flow a detector named `protocol`.
    pub fn vpn_rule(&self, j: JurisdictionId, protocol: &str, at: At) -> Option<&VpnRule> {
        let cj = &self.jurisdictions[usize::from(j.0)];
        let day = at.local_day(cj.info.utc_offset);
        cj.vpn.iter().find(|v| {
            v.since.is_none_or(|s| s.0 <= day)
                && v.until.is_none_or(|u| day < u.0)
                && v.protocols.iter().any(|p| p == protocol)
        })
    }

    /// Sizes of the compiled matchers.
    pub fn stats(&self) -> Stats {
        Stats {
            jurisdictions: self
                .jurisdictions
                .iter()
                .map(|j| JurisdictionStats {
                    code: j.info.code.clone(),
                    rules: j.rules,
                    vpn_rules: j.vpn.len(),
                    entries: j.entries,
                    names: j.domains.len(),
                    cidr_intervals: j.cidrs.len(),
                    heap_bytes: j.domains.heap_bytes()
                        + j.cidrs.heap_bytes()
                        + j.chains.capacity() * 8
                        + j.chain_spans.capacity() * 8
                        + j.root.capacity() * 4
                        + j.substrings.heap_bytes()
                        + j.urls
                            .iter()
                            .map(|(k, v)| {
                                k.capacity() + v.iter().map(|x| x.0.capacity() + 28).sum::<usize>()
                            })
                            .sum::<usize>(),
                })
                .collect(),
        }
    }

    /// Considers `r` matched with `specificity`; returns `Some(r)` if it is an active allow.
    #[inline]
    fn consider(&self, r: u32, specificity: u32, day: i32, best: &mut Best) -> Option<u32> {
        let c = &self.compiled[r as usize];
        if !c.active(day) {
            return None;
        }
        if c.allow {
            return Some(r);
        }
        let better = match best.rule {
            None => true,
            Some(_) => {
                specificity > best.specificity
                    || (specificity == best.specificity && c.order < best.order)
            }
        };
        if better {
            *best = Best {
                rule: Some(r),
                specificity,
                order: c.order,
            };
        }
        None
    }

    fn match_name(
        &self,
        cj: &CompiledJurisdiction,
        raw: &[u8],
        day: i32,
        best: &mut Best,
    ) -> Option<u32> {
        let raw = raw.strip_suffix(b".").unwrap_or(raw);
        if raw.is_empty() || raw.len() > MAX_NAME_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let name = &mut buf[..raw.len()];
        for (d, s) in name.iter_mut().zip(raw) {
            *d = s.to_ascii_lowercase();
        }
        let name = &*name;
        let mut allowed = None;
        // Right to left: at each dot the hash of the suffix after it is complete. Suffixes
        // with a label count no stored name has, or that the Bloom filter rejects, are not
        // looked up.
        let d = &cj.domains;
        let mut h = FNV_OFFSET;
        let mut labels = 1;
        let mut i = name.len();
        while i > 0 {
            i -= 1;
            let b = name[i];
            if b == b'.' {
                let hs = finish(h);
                if d.has_label_count(labels) && d.may_contain(hs) {
                    let suffix = &name[i + 1..];
                    if let Some(list) = d.get(suffix, hs) {
                        for r in refs(list) {
                            if r & EXACT != 0 {
                                continue;
                            }
                            allowed = allowed.or(self.consider(
                                r & INDEX_MASK,
                                suffix.len() as u32,
                                day,
                                best,
                            ));
                        }
                    }
                }
                labels += 1;
            }
            h = hash_step(h, b);
        }
        let hs = finish(h);
        if d.has_label_count(labels) && d.may_contain(hs) {
            if let Some(list) = d.get(name, hs) {
                for r in refs(list) {
                    if r & SUBS_ONLY != 0 {
                        continue;
                    }
                    allowed =
                        allowed.or(self.consider(r & INDEX_MASK, name.len() as u32, day, best));
                }
            }
        }
        for &r in &cj.root {
            allowed = allowed.or(self.consider(r, 0, day, best));
        }
        if !cj.substrings.is_empty() && cj.substring_days.0 <= day && day < cj.substring_days.1 {
            cj.substrings.for_each_match(name, |spec, list| {
                for &r in list {
                    allowed = allowed.or(self.consider(r, spec, day, best));
                }
            });
        }
        allowed
    }

    fn match_ip(
        &self,
        cj: &CompiledJurisdiction,
        ip: IpAddr,
        day: i32,
        best: &mut Best,
    ) -> Option<u32> {
        let list = cj.cidrs.get(ip)?;
        let mut allowed = None;
        // Chains are stored innermost first; specificity is the prefix length.
        let (start, len) = cj.chain_spans[list as usize];
        for &(plen, r) in &cj.chains[start as usize..(start + len) as usize] {
            allowed = allowed.or(self.consider(r, u32::from(plen), day, best));
        }
        allowed
    }

    fn match_url(
        &self,
        cj: &CompiledJurisdiction,
        host: &str,
        path: &str,
        day: i32,
        best: &mut Best,
    ) -> Option<u32> {
        if cj.urls.is_empty() {
            return None;
        }
        let list = cj.urls.get(host)?;
        let mut allowed = None;
        for (prefix, r) in list {
            if path.starts_with(prefix.as_str()) {
                // URLs are more specific than any name: specificity above the longest name.
                let spec = (MAX_NAME_LEN + prefix.len()) as u32;
                allowed = allowed.or(self.consider(*r, spec, day, best));
            }
        }
        allowed
    }
}

#[derive(Debug, Default)]
struct Best {
    rule: Option<u32>,
    specificity: u32,
    order: u32,
}

/// Collects one jurisdiction's entries, then builds its matchers.
#[derive(Default)]
struct Builder {
    names: NamesBuilder,
    root: Vec<u32>,
    substrings: Vec<(String, u32)>,
    nets: Spans,
    urls: Vec<(String, String, u32)>,
    entries: usize,
}

impl Builder {
    fn add_rule(&mut self, rule: &Rule, info: u32, compiled: &mut Vec<Compiled>) {
        let base = Compiled {
            since: rule.since.map_or(i32::MIN, |d| d.0),
            until: rule.until.map_or(i32::MAX, |d| d.0),
            allow: rule.allow,
            techniques: rule.techniques,
            info,
            order: info,
        };
        let base_idx = compiled.len() as u32;
        compiled.push(base);
        for d in &rule.domains {
            if d == "." {
                self.root.push(base_idx);
            } else {
                self.names.push(d.as_bytes(), base_idx);
            }
        }
        for d in &rule.exact {
            self.names.push(d.as_bytes(), base_idx | EXACT);
        }
        for s in &rule.substrings {
            self.substrings.push((s.clone(), base_idx));
        }
        for n in &rule.ips {
            self.nets.push(*n, base_idx);
        }
        for u in &rule.urls {
            self.add_url(u, base_idx);
        }
        self.entries += rule.domains.len()
            + rule.exact.len()
            + rule.substrings.len()
            + rule.ips.len()
            + rule.urls.len();
        let Some(import) = &rule.import else {
            return;
        };
        match import.format {
            ImportFormat::Domains | ImportFormat::Hosts => {
                self.names.arena.reserve(import.len_bytes());
                self.names.items.reserve(import.line_count());
            }
            ImportFormat::Cidrs => self.nets.reserve(import.line_count()),
            ImportFormat::RknCsv | ImportFormat::OoniCsv => {}
        }
        // Entries with their own start date (RKN decision dates) get a compiled variant of the
        // rule starting at the later of the two dates.
        let mut variants: HashMap<i32, u32> = HashMap::new();
        let mut variant = |since: Option<Day>| -> u32 {
            match since {
                Some(d) if d.0 > base.since => *variants.entry(d.0).or_insert_with(|| {
                    compiled.push(Compiled { since: d.0, ..base });
                    (compiled.len() - 1) as u32
                }),
                _ => base_idx,
            }
        };
        import.for_each(|e| {
            self.entries += 1;
            match e {
                Entry::Domain {
                    name,
                    subdomains_only,
                    since,
                } => {
                    let r = variant(since) | if subdomains_only { SUBS_ONLY } else { 0 };
                    self.names.push(name.as_bytes(), r);
                }
                Entry::Ip { net, since } => self.nets.push(net, variant(since)),
                Entry::Url { url, since } => {
                    let r = variant(since);
                    self.add_url(url, r);
                }
            }
        });
    }

    fn add_url(&mut self, url: &str, r: u32) {
        let Some(host) = crate::rules::url_host(url) else {
            return;
        };
        let host = crate::rules::normalize_domain(host)
            .map_or_else(|_| host.to_ascii_lowercase(), |h| h.into_owned());
        let after = url.split_once("://").map_or(url, |x| x.1);
        let path = after.find('/').map_or("/", |i| &after[i..]);
        self.urls.push((host, path.to_string(), r));
    }

    fn finish(
        self,
        info: Jurisdiction,
        vpn: Vec<VpnRule>,
        rules: usize,
        compiled: &[Compiled],
    ) -> CompiledJurisdiction {
        let order = |r: u32| compiled[(r & INDEX_MASK) as usize].order;
        let domains = self.names.build(order);
        let mut pats: Vec<String> = Vec::new();
        let mut sub_refs: Vec<Vec<u32>> = Vec::new();
        for (s, r) in self.substrings {
            match pats.iter().position(|p| *p == s) {
                Some(i) => sub_refs[i].push(r),
                None => {
                    pats.push(s);
                    sub_refs.push(vec![r]);
                }
            }
        }
        for list in &mut sub_refs {
            list.sort_by_key(|r| order(*r));
        }
        let substring_days = sub_refs
            .iter()
            .flatten()
            .fold((i32::MAX, i32::MIN), |(lo, hi), r| {
                let c = &compiled[(*r & INDEX_MASK) as usize];
                (lo.min(c.since), hi.max(c.until))
            });
        let substrings = SubstringMatcher::new(pats, sub_refs);
        let mut chains: Vec<(u8, u32)> = Vec::new();
        let mut chain_spans: Vec<(u32, u32)> = Vec::new();
        let mut interned: HashMap<Vec<(u8, u32)>, u32> = HashMap::new();
        let mut scratch: Vec<(u8, u32)> = Vec::new();
        let cidrs = CidrTable::build(self.nets, |chain| {
            scratch.clear();
            scratch.extend_from_slice(chain);
            scratch.sort_by(|a, b| b.0.cmp(&a.0).then(order(a.1).cmp(&order(b.1))));
            scratch.dedup();
            if let Some(v) = interned.get(&scratch) {
                return *v;
            }
            let id = chain_spans.len() as u32;
            chain_spans.push((chains.len() as u32, scratch.len() as u32));
            chains.extend_from_slice(&scratch);
            interned.insert(scratch.clone(), id);
            id
        });
        let mut urls: HashMap<String, Vec<(String, u32)>> = HashMap::new();
        for (host, path, r) in self.urls {
            urls.entry(host).or_default().push((path, r));
        }
        for list in urls.values_mut() {
            list.sort_by_key(|x| order(x.1));
        }
        chains.shrink_to_fit();
        CompiledJurisdiction {
            info,
            domains,
            root: self.root,
            substrings,
            substring_days,
            cidrs,
            chains,
            chain_spans,
            urls,
            vpn,
            rules,
            entries: self.entries,
        }
    }
}
