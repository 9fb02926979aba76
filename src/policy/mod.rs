//! The compiled policy: "client X, target Y, date T -> allow / block how".
//!
//! [`Policy::compile`] turns a [`RuleSet`] and the client-network map into an immutable
//! structure; [`Policy::decide`] answers from it. The lookup path is pure and synchronous: no
//! I/O, no lock, no allocation (names are lower-cased into a stack buffer; matchers return
//! borrowed slices). Per jurisdiction there is one matcher for suffix/exact names
//! ([`domain`]), one for substrings (Aho-Corasick), one for CIDRs ([`cidr`]), and URL prefixes
//! by host. Precedence (README, "Rules"): an active allow rule beats every block; among active blocks
//! the most specific match wins (longest suffix, longest prefix, longest substring); ties go to
//! the rule listed first. Dates are compared as local day numbers of the jurisdiction.
//!
//! Rules may carry conditions (`ports`, `ech`, `ja4`, `hours`, `isp`): such a rule applies
//! only to a connection known to satisfy all of them ([`Conn`], [`Policy::decide_conn`]). A
//! rule without conditions costs one branch more than before. A connection that names both its
//! SNI and its destination address is decided on both: an allow matching either wins.
//! Client networks form groups ([`ClientGroup`]) that may carry their own simulated date and
//! ISP profile, so one gateway can serve `ru` in 2021 and `ru` in 2025 side by side.

mod cidr;
mod domain;
pub mod explain;
mod substring;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::rules::{
    Day, Entry, ImportFormat, IspProfile, Jurisdiction, Port, PortRange, Rule, RuleSet, Techniques,
    VpnRule, Window, MAX_NAME_LEN,
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

    /// The local minute of the day, known only for an instant.
    #[inline]
    fn local_minute(self, utc_offset: i32) -> Option<u16> {
        match self {
            At::Day(_) => None,
            At::Instant(t) => Some(((t + i64::from(utc_offset)).rem_euclid(86_400) / 60) as u16),
        }
    }
}

/// An index into a jurisdiction's `[[isp]]` profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IspId(pub u8);

/// What a frontend knows of a connection, for rules with conditions. Fill what you know and
/// leave the rest at its default: a condition holds only when the connection is known to
/// satisfy it (an unknown port matches no `ports`, an unknown ISP no `isp`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn<'a> {
    /// Server protocol and port (`tcp/443`).
    pub port: Option<Port>,
    /// Whether the ClientHello carries an ECH extension (`encrypted_client_hello`).
    pub ech: bool,
    /// The ClientHello's JA4 fingerprint (lowercase), if computed.
    pub ja4: Option<&'a str>,
    /// Local time of day in minutes (0..1440) in the jurisdiction's `utc_offset`; absent =
    /// taken from an [`At::Instant`], unknown for an [`At::Day`].
    pub local_minute: Option<u16>,
    /// The client's ISP profile; absent = its client group's (see [`ClientGroup::isp`]).
    pub isp: Option<IspId>,
    /// The destination address when the target is a name (SNI): an allow rule matching the
    /// address also wins, and address blocks apply when no name rule blocks.
    pub dst: Option<IpAddr>,
}

impl Conn<'_> {
    /// A connection nothing is known of.
    pub const NONE: Conn<'static> = Conn {
        port: None,
        ech: false,
        ja4: None,
        local_minute: None,
        isp: None,
        dst: None,
    };
}

/// The compiled conditions of one rule.
#[derive(Debug, Clone, Default)]
struct Cond {
    ports: Vec<PortRange>,
    ech: Option<bool>,
    ja4: Vec<String>,
    hours: Vec<Window>,
    /// Bit `i` = ISP profile `i`; 0 = any client.
    isps: u64,
}

impl Cond {
    #[inline]
    fn holds(&self, q: &Query<'_>) -> bool {
        if !self.ports.is_empty() {
            let Some(p) = q.conn.port else { return false };
            if !self.ports.iter().any(|r| r.contains(p.proto, p.port)) {
                return false;
            }
        }
        if let Some(want) = self.ech {
            if q.conn.ech != want {
                return false;
            }
        }
        if !self.ja4.is_empty() {
            let Some(fp) = q.conn.ja4 else { return false };
            if !self.ja4.iter().any(|x| x.eq_ignore_ascii_case(fp)) {
                return false;
            }
        }
        if !self.hours.is_empty() {
            let Some(m) = q.minute else { return false };
            if !self.hours.iter().any(|w| w.contains(m)) {
                return false;
            }
        }
        isps_hold(self.isps, q.isp)
    }
}

/// One decision's inputs, resolved once.
struct Query<'a> {
    day: i32,
    minute: Option<u16>,
    isp: Option<IspId>,
    conn: &'a Conn<'a>,
}

/// A group of client networks (one `[[clients]]` of the gateway config): its jurisdiction
/// and, optionally, its own name, ISP profile and simulated date.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientGroup {
    /// The networks.
    pub nets: Vec<IpNet>,
    /// The jurisdiction code.
    pub jurisdiction: String,
    /// The group's name (`--client-group`, lab namespaces).
    pub name: Option<String>,
    /// The id of one of the jurisdiction's `[[isp]]` profiles.
    pub isp: Option<String>,
    /// A simulated date for this group only (beats the gateway's).
    pub date: Option<Day>,
}

/// A compiled client group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name, if it has one.
    pub name: Option<String>,
    /// Its jurisdiction.
    pub jurisdiction: JurisdictionId,
    /// Its ISP profile.
    pub isp: Option<IspId>,
    /// Its own simulated date.
    pub date: Option<Day>,
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
    /// Server->client bytes before a `freeze`.
    pub freeze_after_bytes: Option<u32>,
    /// In-path: seconds a block outlives its trigger.
    pub residual_secs: Option<u32>,
    /// The rule's conditions in rules-file syntax (`ports = tcp/443`, `ech = true`, ...).
    pub conditions: Vec<String>,
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
    /// A client group names an ISP profile its jurisdiction does not define.
    #[error("client group {group} names ISP profile `{isp}`, which jurisdiction `{code}` does not define (have: {have})")]
    UnknownIsp {
        /// The group (its name, or its first network).
        group: String,
        /// The ISP id.
        isp: String,
        /// The jurisdiction.
        code: String,
        /// The defined ISP ids.
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
    /// Index into `Policy::conds`, or `NO_COND`.
    cond: u32,
}

const NO_COND: u32 = u32::MAX;

/// A rule on every name (`.`), with what rules most such rules out without a lookup.
#[derive(Debug, Clone, Copy)]
struct RootRule {
    rule: u32,
    since: i32,
    until: i32,
    /// The rule's ISP condition (bit `i` = profile `i`; 0 = any client).
    isps: u64,
}

impl RootRule {
    /// Whether the rule's ISP condition can hold for a client of `isp`.
    #[inline]
    fn isp_may_hold(&self, isp: Option<IspId>) -> bool {
        isps_hold(self.isps, isp)
    }
}

/// Whether an ISP condition `mask` (bit `i` = profile `i`; 0 = any client) holds for a client
/// of `isp`.
#[inline]
fn isps_hold(mask: u64, isp: Option<IspId>) -> bool {
    mask == 0 || isp.is_some_and(|i| mask & (1u64 << i.0) != 0)
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
    root: Vec<RootRule>,
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
    conds: Vec<Cond>,
    infos: Vec<RuleInfo>,
    /// Client address -> index into `groups`.
    clients: CidrTable,
    groups: Vec<GroupInfo>,
    client_nets: Vec<ClientNet>,
    generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A shareable policy handle.
pub type SharedPolicy = Arc<Policy>;

impl Policy {
    /// Compiles `rules` with the client networks `clients`.
    pub fn compile(rules: &RuleSet, clients: &[ClientNet]) -> Result<Policy, CompileError> {
        let groups: Vec<ClientGroup> = clients
            .iter()
            .map(|c| ClientGroup {
                nets: vec![c.net],
                jurisdiction: c.jurisdiction.clone(),
                ..ClientGroup::default()
            })
            .collect();
        Self::compile_groups(rules, &groups)
    }

    /// Compiles `rules` with client groups (networks plus per-group name, ISP and date).
    pub fn compile_groups(rules: &RuleSet, groups: &[ClientGroup]) -> Result<Policy, CompileError> {
        let mut compiled: Vec<Compiled> = Vec::new();
        let mut conds: Vec<Cond> = Vec::new();
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
                    freeze_after_bytes: rule.freeze_after_bytes,
                    residual_secs: rule.residual_secs,
                    conditions: describe_conditions(rule),
                });
                let (cond, isps) = if rule.has_conditions() {
                    let c = compile_cond(rule, &file.jurisdiction.isps);
                    let isps = c.isps;
                    conds.push(c);
                    ((conds.len() - 1) as u32, isps)
                } else {
                    (NO_COND, 0)
                };
                b.add_rule(rule, info, cond, isps, &mut compiled);
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
        let mut client_nets = Vec::new();
        let mut pairs = Vec::new();
        let mut infos_g = Vec::with_capacity(groups.len());
        for (gi, g) in groups.iter().enumerate() {
            let Some(j) = rules
                .files
                .iter()
                .position(|f| f.jurisdiction.code == g.jurisdiction)
            else {
                return Err(CompileError::UnknownJurisdiction {
                    net: g.nets.first().copied().unwrap_or_default(),
                    code: g.jurisdiction.clone(),
                    have: rules.codes(),
                });
            };
            let isps = &rules.files[j].jurisdiction.isps;
            let isp = match &g.isp {
                None => None,
                Some(id) => match isps.iter().position(|p| &p.id == id) {
                    Some(i) => Some(IspId(i as u8)),
                    None => {
                        return Err(CompileError::UnknownIsp {
                            group: g.name.clone().unwrap_or_else(|| {
                                g.nets.first().map_or_else(String::new, |n| n.to_string())
                            }),
                            isp: id.clone(),
                            code: g.jurisdiction.clone(),
                            have: isps
                                .iter()
                                .map(|p| p.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                },
            };
            infos_g.push(GroupInfo {
                name: g.name.clone(),
                jurisdiction: JurisdictionId(j as u16),
                isp,
                date: g.date,
            });
            for net in &g.nets {
                pairs.push((net.trunc(), gi as u32));
                client_nets.push(ClientNet {
                    net: *net,
                    jurisdiction: g.jurisdiction.clone(),
                });
            }
        }
        // The innermost network decides; among equal networks the first listed.
        let clients = CidrTable::build(pairs.into_iter().collect(), |chain| {
            let max = chain.iter().map(|c| c.0).max().unwrap_or(0);
            chain.iter().find(|c| c.0 == max).map_or(0, |c| c.1)
        });
        Ok(Policy {
            jurisdictions,
            compiled,
            conds,
            infos,
            clients,
            groups: infos_g,
            client_nets,
            generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The jurisdiction of `client` (longest-prefix match over the configured networks).
    #[inline]
    pub fn jurisdiction_for(&self, client: IpAddr) -> Option<JurisdictionId> {
        self.group_for(client).map(|g| g.jurisdiction)
    }

    /// The client group of `client` (longest-prefix match over the configured networks).
    #[inline]
    pub fn group_for(&self, client: IpAddr) -> Option<&GroupInfo> {
        self.clients
            .get(client)
            .and_then(|g| self.groups.get(g as usize))
    }

    /// The index (config order) of the client group of `client`.
    #[inline]
    pub fn group_index_for(&self, client: IpAddr) -> Option<usize> {
        self.clients
            .get(client)
            .map(|g| g as usize)
            .filter(|g| *g < self.groups.len())
    }

    /// The client group named `name`.
    pub fn group_by_name(&self, name: &str) -> Option<&GroupInfo> {
        self.groups.iter().find(|g| g.name.as_deref() == Some(name))
    }

    /// Every client group, in config order.
    pub fn groups(&self) -> &[GroupInfo] {
        &self.groups
    }

    /// The moment to decide at for `client`: its group's own date if it has one, else `at`.
    #[inline]
    pub fn at_for(&self, client: IpAddr, at: At) -> At {
        match self.group_for(client).and_then(|g| g.date) {
            Some(d) => At::Day(d),
            None => at,
        }
    }

    /// The `[[isp]]` profile `id` of jurisdiction `j`.
    pub fn isp_by_id(&self, j: JurisdictionId, id: &str) -> Option<IspId> {
        self.jurisdiction(j)
            .isps
            .iter()
            .position(|p| p.id == id)
            .map(|i| IspId(i as u8))
    }

    /// The `[[isp]]` profile `isp` of jurisdiction `j`.
    pub fn isp(&self, j: JurisdictionId, isp: IspId) -> Option<&IspProfile> {
        self.jurisdiction(j).isps.get(usize::from(isp.0))
    }

    /// The `dns-blockpage` addresses for a client of ISP `isp` (the ISP's, else the
    /// jurisdiction's).
    pub fn dns_blockpage(&self, j: JurisdictionId, isp: Option<IspId>) -> &[IpAddr] {
        let info = self.jurisdiction(j);
        match isp.and_then(|i| info.isps.get(usize::from(i.0))) {
            Some(p) if !p.dns_blockpage.is_empty() => &p.dns_blockpage,
            _ => &info.dns_blockpage,
        }
    }

    /// The `http-blockpage` redirect for a client of ISP `isp` (the ISP's, else the
    /// jurisdiction's; `None` = the local 451 page).
    pub fn http_blockpage(&self, j: JurisdictionId, isp: Option<IspId>) -> Option<&str> {
        let info = self.jurisdiction(j);
        match isp.and_then(|i| info.isps.get(usize::from(i.0))) {
            Some(p) if p.http_blockpage.is_some() => p.http_blockpage.as_deref(),
            _ => info.http_blockpage.as_deref(),
        }
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
    /// The client's group supplies its own date and ISP profile, if it has them.
    #[inline]
    pub fn decide(&self, client: IpAddr, target: Target<'_>, at: At) -> Result<Decision, Unmapped> {
        self.decide_conn(client, target, &Conn::NONE, at)
    }

    /// The decision for `client` reaching `target` over connection `conn` at `at` (the
    /// client's group supplies its date, and its ISP unless `conn` names one).
    #[inline]
    pub fn decide_conn(
        &self,
        client: IpAddr,
        target: Target<'_>,
        conn: &Conn<'_>,
        at: At,
    ) -> Result<Decision, Unmapped> {
        let g = self.group_for(client).ok_or(Unmapped(client))?;
        let isp = conn.isp.or(g.isp);
        // The group's own date, else `at` in local time. `at` is read field by field: moving
        // it whole (16 bytes) just after the caller wrote it stalls on store forwarding, which
        // cost about 5 ns a decision.
        let (day, minute) = match g.date {
            Some(d) => (d.0, conn.local_minute),
            None => self.local(g.jurisdiction, at, conn),
        };
        Ok(self.decide_query(g.jurisdiction, target, conn, isp, day, minute))
    }

    /// The decision for `target` at `at` in jurisdiction `j`.
    #[inline]
    pub fn decide_in(&self, j: JurisdictionId, target: Target<'_>, at: At) -> Decision {
        let (day, minute) = self.local(j, at, &Conn::NONE);
        self.decide_query(j, target, &Conn::NONE, None, day, minute)
    }

    /// The decision for `target` over connection `conn` at `at` in jurisdiction `j`.
    #[inline]
    pub fn decide_conn_in(
        &self,
        j: JurisdictionId,
        target: Target<'_>,
        conn: &Conn<'_>,
        at: At,
    ) -> Decision {
        let (day, minute) = self.local(j, at, conn);
        self.decide_query(j, target, conn, conn.isp, day, minute)
    }

    /// `at` as jurisdiction `j`'s local day and, if known, minute of the day (`conn`'s own
    /// minute first).
    #[inline]
    fn local(&self, j: JurisdictionId, at: At, conn: &Conn<'_>) -> (i32, Option<u16>) {
        let off = self.jurisdictions[usize::from(j.0)].info.utc_offset;
        (
            at.local_day(off),
            conn.local_minute.or_else(|| at.local_minute(off)),
        )
    }

    /// The decision for `target` over `conn` in jurisdiction `j`, for a client of `isp`, on
    /// local day `day` at local minute `minute`.
    #[inline]
    fn decide_query(
        &self,
        j: JurisdictionId,
        target: Target<'_>,
        conn: &Conn<'_>,
        isp: Option<IspId>,
        day: i32,
        minute: Option<u16>,
    ) -> Decision {
        let cj = &self.jurisdictions[usize::from(j.0)];
        let q = Query {
            day,
            minute,
            isp,
            conn,
        };
        let mut best = Best::default();
        let mut allowed = match target {
            Target::Domain(name) => self.match_name(cj, name.as_bytes(), &q, &mut best),
            Target::Ip(ip) => self.match_ip(cj, ip, &q, &mut best),
            Target::Url { host, path } => {
                let a = self.match_url(cj, host, path, &q, &mut best);
                a.or_else(|| match host.parse::<IpAddr>() {
                    Ok(ip) => self.match_ip(cj, ip, &q, &mut best),
                    Err(_) => self.match_name(cj, host.as_bytes(), &q, &mut best),
                })
            }
        };
        // A name with its destination address: an allow on either wins; address blocks
        // apply only when no name rule blocks.
        if let (Some(dst), None, false) = (conn.dst, allowed, matches!(target, Target::Ip(_))) {
            let mut by_ip = Best::default();
            allowed = self.match_ip(cj, dst, &q, &mut by_ip);
            if best.rule.is_none() {
                best = by_ip;
            }
        }
        if let Some(rule) = allowed {
            return Decision::Allow {
                jurisdiction: j,
                rule: Some(RuleId(self.compiled[rule as usize].info)),
            };
        }
        match best.rule {
            Some(r) => {
                let c = &self.compiled[r as usize];
                let mut techniques = c.techniques;
                if let Some(p) = isp.and_then(|i| cj.info.isps.get(usize::from(i.0))) {
                    for &(from, to) in &p.overrides {
                        if c.techniques.contains(from) {
                            techniques = techniques.without(from).with(to);
                        }
                    }
                }
                Decision::Block(Block {
                    jurisdiction: j,
                    rule: RuleId(c.info),
                    techniques,
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
                        + j.root.capacity() * std::mem::size_of::<RootRule>()
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
    #[inline(always)]
    fn consider(&self, r: u32, specificity: u32, q: &Query<'_>, best: &mut Best) -> Option<u32> {
        let c = &self.compiled[r as usize];
        if !c.active(q.day) {
            return None;
        }
        if c.cond != NO_COND && !self.conds[c.cond as usize].holds(q) {
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
        q: &Query<'_>,
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
                                q,
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
                    allowed = allowed.or(self.consider(r & INDEX_MASK, name.len() as u32, q, best));
                }
            }
        }
        // Rules on every name (`.`) are asked of every query: their dates and ISP condition
        // are checked here, inline, so that an inactive one or one for another ISP profile
        // (the 2025 mobile allowlist for a home client) costs no lookup.
        for rr in &cj.root {
            if rr.since <= q.day && q.day < rr.until && rr.isp_may_hold(q.isp) {
                allowed = allowed.or(self.consider(rr.rule, 0, q, best));
            }
        }
        if !cj.substrings.is_empty() && cj.substring_days.0 <= q.day && q.day < cj.substring_days.1
        {
            cj.substrings.for_each_match(name, |spec, list| {
                for &r in list {
                    allowed = allowed.or(self.consider(r, spec, q, best));
                }
            });
        }
        allowed
    }

    fn match_ip(
        &self,
        cj: &CompiledJurisdiction,
        ip: IpAddr,
        q: &Query<'_>,
        best: &mut Best,
    ) -> Option<u32> {
        let list = cj.cidrs.get(ip)?;
        let mut allowed = None;
        // Chains are stored innermost first; specificity is the prefix length.
        let (start, len) = cj.chain_spans[list as usize];
        for &(plen, r) in &cj.chains[start as usize..(start + len) as usize] {
            allowed = allowed.or(self.consider(r, u32::from(plen), q, best));
        }
        allowed
    }

    fn match_url(
        &self,
        cj: &CompiledJurisdiction,
        host: &str,
        path: &str,
        q: &Query<'_>,
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
                allowed = allowed.or(self.consider(*r, spec, q, best));
            }
        }
        allowed
    }
}

/// The compiled conditions of `rule` (ISP ids resolved against `isps`; the parser has
/// checked that every one exists).
fn compile_cond(rule: &Rule, isps: &[IspProfile]) -> Cond {
    let mut mask = 0u64;
    for id in &rule.isp {
        if let Some(i) = isps.iter().position(|p| &p.id == id) {
            mask |= 1u64 << i;
        }
    }
    Cond {
        ports: rule.ports.clone(),
        ech: rule.ech,
        ja4: rule.ja4.clone(),
        hours: rule.hours.clone(),
        isps: mask,
    }
}

/// The conditions of `rule` as `key = values` lines, for explanations.
fn describe_conditions(rule: &Rule) -> Vec<String> {
    let join = |v: Vec<String>| v.join(", ");
    let mut out = Vec::new();
    if !rule.ports.is_empty() {
        out.push(format!(
            "ports = {}",
            join(rule.ports.iter().map(ToString::to_string).collect())
        ));
    }
    if let Some(e) = rule.ech {
        out.push(format!("ech = {e}"));
    }
    if !rule.ja4.is_empty() {
        out.push(format!("ja4 = {}", rule.ja4.join(", ")));
    }
    if !rule.hours.is_empty() {
        out.push(format!(
            "hours = {}",
            join(rule.hours.iter().map(ToString::to_string).collect())
        ));
    }
    if !rule.isp.is_empty() {
        out.push(format!("isp = {}", rule.isp.join(", ")));
    }
    out
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
    root: Vec<RootRule>,
    substrings: Vec<(String, u32)>,
    nets: Spans,
    urls: Vec<(String, String, u32)>,
    entries: usize,
}

impl Builder {
    fn add_rule(
        &mut self,
        rule: &Rule,
        info: u32,
        cond: u32,
        isps: u64,
        compiled: &mut Vec<Compiled>,
    ) {
        let base = Compiled {
            since: rule.since.map_or(i32::MIN, |d| d.0),
            until: rule.until.map_or(i32::MAX, |d| d.0),
            allow: rule.allow,
            techniques: rule.techniques,
            info,
            order: info,
            cond,
        };
        let base_idx = compiled.len() as u32;
        compiled.push(base);
        for d in &rule.domains {
            if d == "." {
                self.root.push(RootRule {
                    rule: base_idx,
                    since: base.since,
                    until: base.until,
                    isps,
                });
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
