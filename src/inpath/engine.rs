//! The in-path engine: one packet in, a verdict and injected packets out. Pure: no I/O, no
//! clock (the caller passes the time), no logging; live TUN mode and `blocklab replay` drive
//! the same [`Engine`].
//!
//! Per flow (found from either direction in the bounded [`FlowTable`]) the engine decides in
//! three steps, as an in-path censor does: on the first packet, the client's jurisdiction,
//! a residual block still running for (client, server, port), and the server address
//! (`ip-drop` drops the SYN, `ip-reset` answers it with a RST); then, from the first data,
//! the name (TLS ClientHello SNI, HTTP Host, QUIC Initial SNI) read from the reassembled
//! stream or only from the first data segment (`reassemble = false`); and, on every flow,
//! the VPN detectors (`detect::Classifier`) with the jurisdiction's `[[vpn]]` rules.
//!
//! Actions: `tls-reset`/`ip-reset` inject a RST toward each end with the sequence number that
//! end expects (the client's RST carries the client's own acknowledgement number, so RFC 5961
//! stacks accept it) and drop the trigger; `tls-drop` drops the trigger and everything after
//! it toward the server; `http-blockpage` answers the client with the page (302 or 451) in a
//! FIN segment and resets the server; `throttle` is a policer (a token bucket per direction:
//! packets over rate and burst are dropped, never delayed); `quic-drop` drops QUIC v1
//! Initials of at least 1001 bytes; `freeze` stops the flow silently after N server bytes;
//! `residual_secs` keeps (client, server, port) blocked after a block. Once a flow is decided
//! its buffers are freed and each further packet costs a table lookup and a match: no
//! allocation, no lock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::deps::{client_hello, http_head, quic, verdict, Hello, Known, Verdict};
use super::flow::{FlowKey, FlowTable, Proto, Side};
use super::packet::{
    craft_tcp, IpPacket, TcpSegment, TcpSpec, UdpDatagram, ACK, FIN, PROTO_TCP, PROTO_UDP, PSH,
    RST, SYN,
};
use super::reassembly::{Defrag, DefragLimits, Defragged, Stream};
use crate::detect::{self, Detector};
use crate::gateway::{minute_at, Client};
use crate::policy::{At, Conn, Decision, IspId, JurisdictionId, Policy, RuleId, Target};
use crate::rules::{Port, Technique, VpnTechnique};

/// How the engine treats `[[vpn]]` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VpnMode {
    /// Name detected VPN flows in the events; never change them.
    #[default]
    Observe,
    /// Apply the client jurisdiction's `[[vpn]]` rules.
    Enforce,
}

/// When the engine decides: a default simulated moment, each client group's own, and the
/// wall clock (for `hours` conditions on a simulated day). Borrowed per packet, so the live
/// driver can move a group's date (admin `POST /date`) without a lock.
#[derive(Debug, Clone, Copy)]
pub struct Moments<'a> {
    /// The moment of clients whose group has no entry in `groups` and no date of its own,
    /// and of every client when the engine forces a jurisdiction (replay `--at`, the
    /// gateway-wide date).
    pub at: At,
    /// Per client group, by the policy's group index (config order): the moment it decides
    /// at (live: the gateway's dates). A group past the end decides at its own `date` from
    /// the config, else at `at`.
    pub groups: &'a [At],
    /// Wall-clock unix time in seconds (live: now; replay: the packet's timestamp); `None`
    /// leaves the time of day unknown on a simulated day (`hours` rules then never apply).
    pub unix_secs: Option<i64>,
}

impl Moments<'static> {
    /// Every client at `at`, each group at its configured date if it has one; time of day
    /// unknown on a simulated day.
    pub const fn at(at: At) -> Moments<'static> {
        Moments {
            at,
            groups: &[],
            unix_secs: None,
        }
    }
}

impl Moments<'_> {
    /// The moment of group `group` of `policy`.
    #[inline]
    fn of_group(&self, policy: &Policy, group: usize) -> At {
        match self.groups.get(group) {
            Some(at) => *at,
            None => policy
                .groups()
                .get(group)
                .and_then(|g| g.date)
                .map_or(self.at, At::Day),
        }
    }
}

/// Engine limits and switches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Flows tracked at most (oldest evicted, counted).
    pub max_flows: usize,
    /// Bytes kept per direction for the sniffers.
    pub stream_limit: usize,
    /// Reassembly bytes held in total; past it new data is not buffered (counted).
    pub total_reassembly: usize,
    /// Detector input held in total (each packet counted with its overhead); past it a flow's
    /// new input is not kept and the flow goes undetected (counted). Apart from the
    /// reassembly budget, so flows waiting for their detectors never keep names from being
    /// read.
    pub total_detect: usize,
    /// `[[vpn]]` rules: observe or enforce.
    pub vpn: VpnMode,
    /// Every client is in this jurisdiction (replay `--jurisdiction`); else the client's
    /// address picks it and unmapped clients pass untouched.
    pub jurisdiction: Option<JurisdictionId>,
    /// Only addresses in these networks are clients (live `[inpath] clients`); empty = any.
    pub clients: Vec<ipnet::IpNet>,
    /// Idle time after which a flow is forgotten.
    pub idle_ns: u64,
    /// The gateway URL named in a local 451 page's `Link` header.
    pub gateway_url: String,
    /// Flow-table room reserved up front (at most `max_flows`): live, the whole table, so
    /// the packet path never grows it; replay, a little, grown as a capture needs.
    pub reserve_flows: usize,
    /// Overrides of the rule keys `freeze_after_bytes` and `residual_secs`, by rule id
    /// (these keys come to the rules format on another branch; until then a lab sets them here).
    pub extras: HashMap<String, Extras>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 1 << 20,
            stream_limit: 16 * 1024,
            total_reassembly: 64 << 20,
            total_detect: 64 << 20,
            vpn: VpnMode::Observe,
            jurisdiction: None,
            clients: Vec::new(),
            idle_ns: 300_000_000_000,
            gateway_url: "http://blocklab.invalid/".into(),
            reserve_flows: 1 << 20,
            extras: HashMap::new(),
        }
    }
}

/// Per-rule in-path parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// `freeze`: server-to-client payload bytes after which the flow silently stops.
    pub freeze_after_bytes: Option<u64>,
    /// After a block, (client, server, port) stays dropped this long.
    pub residual_secs: Option<u32>,
}

/// What happens to the packet handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forward it unchanged.
    Forward,
    /// Drop it.
    Drop,
    /// Held (an IP fragment waiting for the rest); released packets come in `release`.
    Held,
}

/// A flow's outcome, reported once when the engine acts (and for passing flows at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEvent {
    /// The flow.
    pub key: FlowKey,
    /// The client's jurisdiction.
    pub jurisdiction: Option<JurisdictionId>,
    /// What the engine did: `pass`, `drop`, `reset`, `blockpage`, `throttle`, `freeze`,
    /// `quic-drop`, `cut-after`, `observe`.
    pub action: &'static str,
    /// The technique enacted (`tls-reset`, `ip-drop`, ...; `vpn-<technique>` for VPN rules).
    pub technique: Option<&'static str>,
    /// The rule (policy rule id or `[[vpn]]` rule id).
    pub rule: Option<String>,
    /// The rule as a policy index, when it is a policy rule.
    pub rule_id: Option<RuleId>,
    /// What was looked up: the SNI, Host or server address.
    pub target: String,
    /// Packets of the flow seen when the engine acted (1 = the first).
    pub after_packet: u64,
    /// The detector that named the flow.
    pub detector: Option<&'static str>,
}

/// The engine's answer for one packet. Reused across packets (cleared, capacity kept).
#[derive(Debug, Default)]
pub struct Output {
    /// The input packet's fate.
    pub fate: Option<Fate>,
    /// Packets to send besides: released fragments (in their direction) and injected ones.
    pub inject: Vec<(Side, Vec<u8>)>,
    /// Flow outcomes decided on this packet.
    pub events: Vec<FlowEvent>,
}

impl Output {
    /// Empties the output for the next packet.
    pub fn clear(&mut self) {
        self.fate = None;
        self.inject.clear();
        self.events.clear();
    }

    /// The input packet's fate (`Forward` when none was set).
    pub fn fate(&self) -> Fate {
        self.fate.unwrap_or(Fate::Forward)
    }
}

/// Counters (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed in.
    pub packets: u64,
    /// Bytes handed in.
    pub bytes: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets injected (RSTs, blockpages).
    pub injected: u64,
    /// Flows created.
    pub flows: u64,
    /// Flows evicted from a full table.
    pub evicted: u64,
    /// Segments or fragments not buffered because a reassembly bound was hit.
    pub reassembly_overflow: u64,
    /// Flows left undetected because the detector budget was spent.
    pub detect_overflow: u64,
    /// Packets that are not IP/TCP/UDP or are malformed (forwarded untouched).
    pub unparsed: u64,
    /// Packets dropped by a policer.
    pub policed: u64,
    /// Flows of clients outside every configured network (passed untouched).
    pub unmapped: u64,
    /// Actions by technique: resets, drops, blockpages, throttles, freezes, quic drops,
    /// residual drops, VPN actions.
    pub resets: u64,
    /// See `resets`.
    pub drops: u64,
    /// See `resets`.
    pub blockpages: u64,
    /// See `resets`.
    pub throttles: u64,
    /// See `resets`.
    pub freezes: u64,
    /// See `resets`.
    pub quic_drops: u64,
    /// See `resets`.
    pub residual_drops: u64,
    /// See `resets`.
    pub vpn_actions: u64,
    /// Offload super-packets (GSO) of passing flows forwarded whole.
    pub gso_whole: u64,
    /// Offload super-packets split into segments for the engine (flows being decided or
    /// acted on).
    pub gso_split: u64,
}

/// Seconds of the rate a policer lets through at once.
pub const BURST_SECS: f64 = 1.5;

/// A token bucket per direction: packets over rate and burst are dropped.
#[derive(Debug, Clone, Copy)]
pub struct Policer {
    rate: f64,
    burst: f64,
    tokens: [f64; 2],
    last_ns: [u64; 2],
}

impl Policer {
    /// A policer at `kbps` kbit/s each way. The burst is 1.5 s of the rate (at least 3000
    /// bytes, two full-size packets), Cisco's default normal burst ("1.5 * committed rate",
    /// Cisco 10000 Series ISG/ANCP configuration guide, `police` command); the TSPU's own
    /// burst is not published, so this is a modelling choice.
    pub fn new(kbps: u32, now_ns: u64) -> Policer {
        let rate = f64::from(kbps) * 125.0;
        let burst = (rate * BURST_SECS).max(3000.0);
        Policer {
            rate,
            burst,
            tokens: [burst; 2],
            last_ns: [now_ns; 2],
        }
    }

    /// Whether a packet of `len` bytes in direction `side` conforms (and takes its tokens).
    pub fn admit(&mut self, side: Side, len: usize, now_ns: u64) -> bool {
        let i = usize::from(side == Side::ToClient);
        let dt = now_ns.saturating_sub(self.last_ns[i]) as f64 / 1e9;
        self.last_ns[i] = now_ns.max(self.last_ns[i]);
        self.tokens[i] = (self.tokens[i] + dt * self.rate).min(self.burst);
        if self.tokens[i] >= len as f64 {
            self.tokens[i] -= len as f64;
            true
        } else {
            false
        }
    }
}

/// What a decided flow gets from now on.
#[derive(Debug, Clone)]
enum Action {
    /// Everything passes.
    Pass,
    /// Nothing more passes, both ways.
    Drop,
    /// Nothing more passes toward the server.
    DropToServer,
    /// Both ways policed (boxed: rare, and five times the size of the other actions).
    Police(Box<Policer>),
    /// Server bytes counted; past the bound everything is dropped.
    Freeze { after: u64, seen: u64 },
    /// Big QUIC v1 Initials dropped.
    QuicDrop,
    /// This many more packets pass, then drop.
    CutAfter(u64),
}

/// Detector input kept until the detectors decide.
#[derive(Debug)]
struct DetectState {
    packets: Vec<(detect::Dir, Vec<u8>)>,
    /// What it holds, as counted in the engine's buffer budget.
    held: usize,
    /// The detectors still undecided (`detect::Classifier::pending`): one that has said "not
    /// this protocol" is not asked again on the flow's next packets.
    pending: u64,
}

/// Payload bytes of each packet kept for the detectors.
const DETECT_KEEP: usize = 2048;

/// The heap a detector packet costs besides its payload (its entry, the allocation), and a
/// flow's detector state; counted in the buffer budget so the budget bounds the memory.
const DETECT_OVERHEAD: usize = 64;

/// One tracked flow (88 bytes; what is only needed while a flow is being decided, or by rare
/// actions, is boxed and allocated when first needed).
#[derive(Debug)]
struct FlowState {
    j: Option<JurisdictionId>,
    /// The client group's ISP profile.
    isp: Option<IspId>,
    /// Still reading the name from the first data.
    naming: bool,
    /// The detectors are still deciding (their input, once there is some, in `detect`).
    detecting: bool,
    /// The flow's outcome was reported.
    reported: bool,
    /// The client's initial sequence number (its SYN): the client stream starts after it.
    isn: Option<u32>,
    /// Packets of the flow seen so far (saturating).
    packets: u32,
    /// The simulated moment of the client's group when the flow opened.
    at: At,
    action: Action,
    /// The client-to-server stream, from its first data until the name is read.
    c2s: Option<Box<Stream>>,
    quic: Option<Box<(quic::CryptoStream, u8)>>,
    detect: Option<Box<DetectState>>,
}

impl FlowState {
    /// The detectors have decided (or will never run): their input is freed; returns the
    /// bytes it held (for the buffer budget).
    #[must_use]
    fn stop_detecting(&mut self) -> usize {
        self.detecting = false;
        self.detect.take().map_or(0, |d| d.held)
    }

    /// Reassembly bytes this flow holds.
    fn held(&self) -> usize {
        self.c2s.as_ref().map_or(0, |s| s.held())
    }

    /// Detector input bytes this flow holds (as counted in the detector budget).
    fn detect_held(&self) -> usize {
        self.detect.as_ref().map_or(0, |d| d.held)
    }
}

/// The residual table key: client address, server address, server port, transport.
type ResidualKey = (IpAddr, IpAddr, u16, Proto);

/// The in-path engine.
#[derive(Debug)]
pub struct Engine {
    flows: FlowTable<FlowState>,
    ctx: Ctx,
    /// The generation of the policy the tracked flows were opened under.
    generation: u64,
}

#[derive(Debug)]
struct Ctx {
    cfg: EngineConfig,
    defrag: Defrag,
    residual: HashMap<ResidualKey, u64>,
    detectors: Vec<Box<dyn Detector>>,
    stats: Stats,
    /// Reassembly bytes held (the `total_reassembly` budget).
    held: usize,
    /// Detector input held (the `total_detect` budget).
    detect_held: usize,
}

/// Rebuilt fragments are not re-fragmented; this caps how much a fragment storm holds.
const MAX_RESIDUAL: usize = 65_536;

impl Engine {
    /// An engine with these limits and the standard detectors.
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine::with_detectors(
            cfg,
            detect::standard(detect::endpoints::Endpoints::default()),
        )
    }

    /// An engine with the given detectors.
    pub fn with_detectors(cfg: EngineConfig, detectors: Vec<Box<dyn Detector>>) -> Engine {
        Engine {
            generation: 0,
            flows: FlowTable::with_reserve(cfg.max_flows, cfg.reserve_flows),
            ctx: Ctx {
                cfg,
                defrag: Defrag::new(DefragLimits::default()),
                residual: HashMap::new(),
                detectors,
                stats: Stats::default(),
                held: 0,
                detect_held: 0,
            },
        }
    }

    /// Forgets every flow, fragment, residual block and counter, as a new engine with the
    /// same configuration and detectors would start, but keeping the memory (replay runs each
    /// capture from a reset engine instead of a new one).
    pub fn reset(&mut self) {
        self.flows.clear();
        let c = &mut self.ctx;
        c.defrag = Defrag::new(DefragLimits::default());
        c.residual.clear();
        c.stats = Stats::default();
        c.held = 0;
        c.detect_held = 0;
        self.generation = 0;
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.ctx.stats;
        s.evicted = self.flows.evicted;
        s.reassembly_overflow += self.ctx.defrag.overflow;
        s
    }

    /// Flows tracked now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Reassembly bytes held now (all flows).
    pub fn held_bytes(&self) -> usize {
        self.ctx.held
    }

    /// Detector input held now (all flows), as counted in the detector budget.
    pub fn detect_bytes(&self) -> usize {
        self.ctx.detect_held
    }

    /// Handles one IP packet (no link header) seen at `now_ns` (a monotonic clock: policers,
    /// idle times and residual blocks), deciding new flows at their group's moment in `when`.
    pub fn process(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        pkt: &[u8],
        out: &mut Output,
    ) {
        out.clear();
        if policy.generation() != self.generation {
            self.repolicy(policy, when);
        }
        self.ctx.stats.packets += 1;
        self.ctx.stats.bytes += pkt.len() as u64;
        let Ok(ip) = IpPacket::parse(pkt) else {
            self.ctx.stats.unparsed += 1;
            out.fate = Some(Fate::Forward);
            return;
        };
        if ip.fragment.is_some() {
            self.fragment(policy, when, now_ns, &ip, out);
            return;
        }
        let fate = self.packet(policy, when, now_ns, &ip, out);
        if fate == Fate::Drop {
            self.ctx.stats.dropped += 1;
        }
        out.fate = Some(fate);
    }

    /// Whether `pkt`, a TCP or UDP super-packet the kernel cuts into `mss`-byte segments
    /// (GSO), belongs to a decided flow that passes everything: then it is counted (as its
    /// segments) and the caller forwards it whole; else the caller splits it and hands each
    /// segment to [`Engine::process`] (and counts the split with [`Engine::count_split`]).
    /// The fast path of offload mode: one lookup per super-packet, no allocation.
    pub fn forwards_whole(&mut self, pkt: &[u8], mss: u16, now_ns: u64) -> bool {
        let Ok(ip) = IpPacket::parse(pkt) else {
            return false;
        };
        if ip.fragment.is_some() || mss == 0 {
            return false;
        }
        let (proto, sport, dport, payload) = match ip.proto {
            PROTO_TCP => match TcpSegment::parse(ip.payload()) {
                Ok(t) => (Proto::Tcp, t.sport, t.dport, t.payload),
                Err(_) => return false,
            },
            PROTO_UDP => match UdpDatagram::parse(ip.payload()) {
                Ok(u) => (Proto::Udp, u.sport, u.dport, u.payload),
                Err(_) => return false,
            },
            _ => return false,
        };
        let src = SocketAddr::new(ip.src, sport);
        let dst = SocketAddr::new(ip.dst, dport);
        let Some((_, _, flow)) = self.flows.lookup(src, dst, proto, now_ns) else {
            return false;
        };
        let passing = flow.j.is_none()
            || (matches!(flow.action, Action::Pass) && !flow.naming && !flow.detecting);
        if !passing {
            return false;
        }
        let segments = payload.len().div_ceil(usize::from(mss)).max(1) as u64;
        let headers = (ip.bytes().len() - payload.len()) as u64;
        flow.packets = flow.packets.saturating_add(segments as u32);
        let s = &mut self.ctx.stats;
        s.packets += segments;
        s.bytes += ip.bytes().len() as u64 + (segments - 1) * headers;
        s.gso_whole += 1;
        true
    }

    /// Counts a super-packet split into segments (see [`Engine::forwards_whole`]).
    pub fn count_split(&mut self) {
        self.ctx.stats.gso_split += 1;
    }

    fn fragment(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        ip: &IpPacket<'_>,
        out: &mut Output,
    ) {
        let reassemble = self.reassembles(policy, ip);
        if !reassemble {
            // First-packet censor: only the first fragment (with the ports) is inspected.
            let first = ip.fragment.is_some_and(|f| f.offset == 0);
            let fate = if first {
                self.packet(policy, when, now_ns, ip, out)
            } else {
                Fate::Forward
            };
            out.fate = Some(fate);
            return;
        }
        match self.ctx.defrag.push(ip, now_ns) {
            Defragged::Held => out.fate = Some(Fate::Held),
            Defragged::Dropped => {
                self.ctx.stats.dropped += 1;
                out.fate = Some(Fate::Drop);
            }
            Defragged::Complete { packet, fragments } => {
                let fate = match IpPacket::parse(&packet) {
                    Ok(whole) => self.packet(policy, when, now_ns, &whole, out),
                    Err(_) => Fate::Drop,
                };
                if fate == Fate::Forward {
                    // The fragments go on as they came (this one included).
                    let side = Side::ToServer;
                    out.inject.extend(fragments.into_iter().map(|f| (side, f)));
                } else {
                    self.ctx.stats.dropped += fragments.len() as u64;
                }
                out.fate = Some(Fate::Held);
            }
        }
    }

    /// The `reassemble` switch for the jurisdiction of either end of `ip`.
    fn reassembles(&self, policy: &Policy, ip: &IpPacket<'_>) -> bool {
        let j = self
            .ctx
            .cfg
            .jurisdiction
            .or_else(|| policy.jurisdiction_for(ip.src))
            .or_else(|| policy.jurisdiction_for(ip.dst));
        j.is_some_and(|j| policy.jurisdiction(j).reassemble)
    }

    fn packet(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        ip: &IpPacket<'_>,
        out: &mut Output,
    ) -> Fate {
        let (proto, sport, dport, tcp, payload) = match ip.proto {
            PROTO_TCP => match TcpSegment::parse(ip.payload()) {
                Ok(t) => (Proto::Tcp, t.sport, t.dport, Some(t), t.payload),
                Err(_) => {
                    self.ctx.stats.unparsed += 1;
                    return Fate::Forward;
                }
            },
            PROTO_UDP => match UdpDatagram::parse(ip.payload()) {
                Ok(u) => (Proto::Udp, u.sport, u.dport, None, u.payload),
                Err(_) => {
                    self.ctx.stats.unparsed += 1;
                    return Fate::Forward;
                }
            },
            _ => return Fate::Forward,
        };
        let src = SocketAddr::new(ip.src, sport);
        let dst = SocketAddr::new(ip.dst, dport);
        let ctx = &mut self.ctx;
        let (key, side, flow) = match self.flows.lookup(src, dst, proto, now_ns) {
            Some(found) => found,
            None => {
                if tcp.is_some_and(|t| t.has(RST)) {
                    return Fate::Forward; // a RST never opens a flow
                }
                let key = ctx.orient(policy, src, dst, proto, tcp.as_ref());
                let side = if key.client == src {
                    Side::ToServer
                } else {
                    Side::ToClient
                };
                let state = ctx.open(policy, when, now_ns, key, tcp.as_ref(), side, out);
                ctx.stats.flows += 1;
                if let Some((_, gone)) = self.flows.insert(key, state, now_ns) {
                    ctx.free(&gone);
                }
                let Some(flow) = self.flows.get_mut(&key) else {
                    return Fate::Forward;
                };
                (key, side, flow)
            }
        };
        flow.packets = flow.packets.saturating_add(1);
        if flow.j.is_none() {
            return Fate::Forward;
        }
        // Decided flows: the fast path.
        let fate = ctx.enact(flow, side, ip.bytes().len(), payload, now_ns, &key, out);
        if fate == Fate::Drop || (!flow.naming && !flow.detecting) {
            return fate;
        }
        let fate = match tcp {
            Some(t) => ctx.tcp(policy, when, now_ns, &key, side, flow, &t, out),
            None => ctx.udp(
                policy,
                when,
                now_ns,
                &key,
                side,
                flow,
                payload,
                ip.bytes(),
                out,
            ),
        };
        if fate == Fate::Forward && flow.detecting && !payload.is_empty() {
            return ctx.detect(policy, now_ns, &key, side, flow, payload, tcp.as_ref(), out);
        }
        fate
    }

    /// A reloaded policy: flows still being decided take their client's jurisdiction and ISP
    /// from it (the old indices may name nothing in the new one); decided flows keep their
    /// action. Once per reload, not per packet.
    #[cold]
    fn repolicy(&mut self, policy: &Policy, when: &Moments<'_>) {
        self.generation = policy.generation();
        let ctx = &self.ctx;
        let (mut held, mut detect_held) = (0, 0);
        self.flows.for_each_mut(|key, flow| {
            if flow.j.is_some() && (flow.naming || flow.detecting) {
                match ctx.who(policy, when, key.client.ip()) {
                    Some(c) => (flow.j, flow.isp) = (Some(c.jurisdiction), c.isp),
                    None => {
                        flow.naming = false;
                        detect_held += flow.stop_detecting();
                        held += flow.c2s.take().map_or(0, |s| s.held());
                    }
                }
            }
        });
        self.ctx.held = self.ctx.held.saturating_sub(held);
        self.ctx.detect_held = self.ctx.detect_held.saturating_sub(detect_held);
    }

    /// Reports every tracked flow not yet reported (as `pass`) and forgets them all.
    pub fn finish(&mut self, out: &mut Vec<FlowEvent>) {
        for (key, flow) in self.flows.drain() {
            self.ctx.free(&flow);
            if !flow.reported && flow.j.is_some() {
                out.push(FlowEvent {
                    key,
                    jurisdiction: flow.j,
                    action: "pass",
                    technique: None,
                    rule: None,
                    rule_id: None,
                    target: key.server.ip().to_string(),
                    after_packet: u64::from(flow.packets),
                    detector: None,
                });
            }
        }
    }

    /// Forgets flows idle longer than the configured idle time; returns how many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let gone = self.flows.expire(now_ns, self.ctx.cfg.idle_ns);
        for (_, f) in &gone {
            self.ctx.free(f);
        }
        self.ctx.residual.retain(|_, until| *until > now_ns);
        gone.len()
    }
}

impl Ctx {
    /// Which end is the client: the SYN's sender, else the end in a client network, else the
    /// sender unless it uses a well-known port and the receiver does not.
    fn orient(
        &self,
        policy: &Policy,
        src: SocketAddr,
        dst: SocketAddr,
        proto: Proto,
        tcp: Option<&TcpSegment<'_>>,
    ) -> FlowKey {
        let (fwd, rev) = FlowKey::both_ways(src, dst, proto);
        if let Some(t) = tcp {
            if t.has(SYN) {
                return if t.has(ACK) { rev } else { fwd };
            }
        }
        let is_client = |a: &SocketAddr| self.is_client(policy, a.ip());
        match (is_client(&src), is_client(&dst)) {
            (true, false) => return fwd,
            (false, true) => return rev,
            _ => {}
        }
        if src.port() < 1024 && dst.port() >= 1024 {
            rev
        } else {
            fwd
        }
    }

    fn is_client(&self, policy: &Policy, ip: IpAddr) -> bool {
        let in_nets =
            self.cfg.clients.is_empty() || self.cfg.clients.iter().any(|n| n.contains(&ip));
        in_nets && (self.cfg.jurisdiction.is_some() || policy.jurisdiction_for(ip).is_some())
    }

    /// A new flow: jurisdiction, residual block, server-address verdict.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        key: FlowKey,
        tcp: Option<&TcpSegment<'_>>,
        side: Side,
        out: &mut Output,
    ) -> FlowState {
        let who = self.who(policy, when, key.client.ip());
        let mut st = FlowState {
            j: who.map(|c| c.jurisdiction),
            isp: who.and_then(|c| c.isp),
            at: who.map_or(when.at, |c| c.at),
            action: Action::Pass,
            naming: true,
            detecting: true,
            reported: false,
            isn: None,
            packets: 0,
            c2s: None,
            quic: None,
            detect: None,
        };
        let Some(j) = st.j else {
            self.stats.unmapped += 1;
            st.naming = false;
            let _ = st.stop_detecting(); // holds nothing yet
            return st;
        };
        let rkey = (
            key.client.ip(),
            key.server.ip(),
            key.server.port(),
            key.proto,
        );
        if self
            .residual
            .get(&rkey)
            .is_some_and(|until| *until > now_ns)
        {
            self.stats.residual_drops += 1;
            st.action = Action::Drop;
            st.naming = false;
            let _ = st.stop_detecting(); // holds nothing yet
            st.reported = true;
            out.events.push(FlowEvent {
                key,
                jurisdiction: Some(j),
                action: "drop",
                technique: Some("residual"),
                rule: None,
                rule_id: None,
                target: key.server.ip().to_string(),
                after_packet: 1,
                detector: None,
            });
            return st;
        }
        let known = known_of(&key);
        let conn = flow_conn(policy, j, &st, &known, when);
        let at = st.at;
        let v = verdict::for_ip(policy, j, key.server.ip(), &conn, at);
        // What was looked up, for the event (made only when there is one).
        let target = || key.server.ip().to_string();
        let freeze = match v.rule() {
            Some(rule) => self
                .extras(policy, rule)
                .freeze_after_bytes
                .map(|after| (rule, after)),
            None => self.freeze_rule(policy, j, Target::Ip(key.server.ip()), &conn, at),
        };
        if let Some((rule, after)) = freeze {
            self.freeze(policy, &key, j, &mut st, v, rule, after, target(), out);
            return st;
        }
        match v {
            Verdict::Pass => {}
            Verdict::Freeze { after_bytes, rule } => {
                let after = u64::from(after_bytes);
                self.freeze(policy, &key, j, &mut st, v, rule, after, target(), out);
            }
            Verdict::Throttle { kbps, rule } => {
                st.action = Action::Police(Box::new(Policer::new(kbps, now_ns)));
                self.stats.throttles += 1;
                self.report(&mut st, policy, key, j, "throttle", v, rule, target(), out);
            }
            Verdict::Reset { rule, .. }
            | Verdict::Drop { rule, .. }
            | Verdict::Blockpage { rule } => {
                st.action = Action::Drop;
                st.naming = false;
                let _ = st.stop_detecting(); // holds nothing yet
                let reset = matches!(v, Verdict::Reset { .. });
                if reset {
                    self.stats.resets += 1;
                    if let Some(t) = tcp.filter(|t| side == Side::ToServer && t.has(SYN)) {
                        // Answer the SYN as a closed port would: RST+ACK of the SYN.
                        let spec = rst(&key, Side::ToClient, 0, Some(t.seq.wrapping_add(1)));
                        self.inject(Side::ToClient, &spec, out);
                    }
                } else {
                    self.stats.drops += 1;
                }
                let action = if reset { "reset" } else { "drop" };
                self.report(&mut st, policy, key, j, action, v, rule, target(), out);
                self.residual_after(policy, rule, key, now_ns);
            }
        }
        st
    }

    /// The client at `client`: its jurisdiction, ISP profile and moment (the forced
    /// jurisdiction's, at the default moment, when the engine has one); `None` outside the
    /// `[inpath] clients` networks or every configured network.
    fn who(&self, policy: &Policy, when: &Moments<'_>, client: IpAddr) -> Option<Client> {
        let in_nets =
            self.cfg.clients.is_empty() || self.cfg.clients.iter().any(|n| n.contains(&client));
        if !in_nets {
            return None;
        }
        if let Some(j) = self.cfg.jurisdiction {
            return Some(Client {
                group: usize::MAX,
                jurisdiction: j,
                isp: None,
                at: when.at,
            });
        }
        let group = policy.group_index_for(client)?;
        Client::in_group(policy, group, when.of_group(policy, group))
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        st: &mut FlowState,
        policy: &Policy,
        key: FlowKey,
        j: JurisdictionId,
        action: &'static str,
        v: Verdict,
        rule: RuleId,
        target: String,
        out: &mut Output,
    ) {
        st.reported = true;
        out.events.push(FlowEvent {
            key,
            jurisdiction: Some(j),
            action,
            technique: v.technique().map(Technique::as_str),
            rule: policy.rule_checked(rule).map(|r| r.id.clone()),
            rule_id: Some(rule),
            target,
            after_packet: u64::from(st.packets.max(1)),
            detector: None,
        });
    }

    /// The in-path parameters of a policy rule: its own `freeze_after_bytes` (when it names
    /// `freeze`) and `residual_secs`, each overridden by `[inpath.rules.ID]`.
    fn extras(&self, policy: &Policy, rule: RuleId) -> Extras {
        let Some(info) = policy.rule_checked(rule) else {
            return Extras::default();
        };
        let own = Extras {
            freeze_after_bytes: info
                .techniques
                .contains(Technique::Freeze)
                .then_some(info.freeze_after_bytes)
                .flatten()
                .map(u64::from),
            residual_secs: info.residual_secs,
        };
        match self.cfg.extras.get(&info.id) {
            Some(o) => Extras {
                freeze_after_bytes: o.freeze_after_bytes.or(own.freeze_after_bytes),
                residual_secs: o.residual_secs.or(own.residual_secs),
            },
            None => own,
        }
    }

    /// A `freeze` rule for `target` (the verdict helpers pick only the techniques the proxy
    /// frontends enact, so `freeze` is looked up here).
    fn freeze_rule(
        &self,
        policy: &Policy,
        j: JurisdictionId,
        target: Target<'_>,
        conn: &Conn<'_>,
        at: At,
    ) -> Option<(RuleId, u64)> {
        let Decision::Block(b) = policy.decide_conn_in(j, target, conn, at) else {
            return None;
        };
        if !b.techniques.contains(Technique::Freeze) {
            return None;
        }
        self.extras(policy, b.rule)
            .freeze_after_bytes
            .map(|n| (b.rule, n))
    }

    fn residual_after(&mut self, policy: &Policy, rule: RuleId, key: FlowKey, now_ns: u64) {
        if let Some(secs) = self.extras(policy, rule).residual_secs {
            if self.residual.len() >= MAX_RESIDUAL {
                self.residual.retain(|_, until| *until > now_ns);
            }
            if self.residual.len() < MAX_RESIDUAL {
                let rkey = (
                    key.client.ip(),
                    key.server.ip(),
                    key.server.port(),
                    key.proto,
                );
                self.residual
                    .insert(rkey, now_ns.saturating_add(u64::from(secs) * 1_000_000_000));
            }
        }
    }

    /// Applies a decided flow's action to one packet.
    #[allow(clippy::too_many_arguments)]
    fn enact(
        &mut self,
        flow: &mut FlowState,
        side: Side,
        len: usize,
        payload: &[u8],
        now_ns: u64,
        key: &FlowKey,
        out: &mut Output,
    ) -> Fate {
        let _ = (key, out);
        match &mut flow.action {
            Action::Pass => Fate::Forward,
            Action::Drop => Fate::Drop,
            Action::DropToServer => {
                if side == Side::ToServer {
                    Fate::Drop
                } else {
                    Fate::Forward
                }
            }
            Action::Police(p) => {
                if p.admit(side, len, now_ns) {
                    Fate::Forward
                } else {
                    self.stats.policed += 1;
                    Fate::Drop
                }
            }
            Action::Freeze { after, seen } => {
                if *seen >= *after {
                    return Fate::Drop;
                }
                if side == Side::ToClient {
                    *seen += payload.len() as u64;
                    if *seen > *after {
                        *seen = *after;
                        return Fate::Drop;
                    }
                }
                Fate::Forward
            }
            Action::QuicDrop => Fate::Forward, // decided per datagram in `udp`
            Action::CutAfter(n) => {
                if *n == 0 {
                    Fate::Drop
                } else {
                    *n -= 1;
                    Fate::Forward
                }
            }
        }
    }

    /// The flow's client stream, made at its first data (starting after the SYN's `isn`,
    /// when the SYN was seen).
    fn stream<'f>(
        &mut self,
        slot: &'f mut Option<Box<Stream>>,
        isn: Option<u32>,
        j: JurisdictionId,
        policy: &Policy,
    ) -> &'f mut Stream {
        let limit = self.cfg.stream_limit;
        slot.get_or_insert_with(|| {
            let mut s = Stream::new(policy.jurisdiction(j).reassemble, limit);
            if let Some(isn) = isn {
                s.syn(isn);
            }
            Box::new(s)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        key: &FlowKey,
        side: Side,
        flow: &mut FlowState,
        t: &TcpSegment<'_>,
        out: &mut Output,
    ) -> Fate {
        let Some(j) = flow.j else {
            return Fate::Forward;
        };
        if !flow.naming {
            return Fate::Forward;
        }
        if t.has(RST) || (t.has(FIN) && t.payload.is_empty()) {
            flow.naming = false;
            self.release(flow);
            return Fate::Forward;
        }
        if side == Side::ToClient {
            return Fate::Forward; // the censor reads the client's first data only
        }
        if t.has(SYN) {
            flow.isn.get_or_insert(t.seq);
            return Fate::Forward;
        }
        if t.payload.is_empty() {
            return Fate::Forward;
        }
        // Account the reassembly budget before buffering.
        if self.held + t.payload.len() > self.cfg.total_reassembly {
            self.stats.reassembly_overflow += 1;
            flow.naming = false;
            self.release(flow);
            return Fate::Forward;
        }
        let s = self.stream(&mut flow.c2s, flow.isn, j, policy);
        let before = s.held();
        let grew = s.push(t.seq, t.payload);
        let after = s.held();
        let overflow = s.overflow;
        self.held = self.held + after - before.min(after);
        if overflow {
            self.stats.reassembly_overflow += 1;
        }
        if !grew {
            if flow.c2s.as_ref().is_some_and(|s| s.closed()) {
                flow.naming = false;
                self.release(flow);
            }
            return Fate::Forward;
        }
        let Some(s) = flow.c2s.as_deref() else {
            return Fate::Forward;
        };
        let data = s.data();
        let closed = s.closed();
        enum Named {
            Tls(Option<Hello>),
            Http(Option<(String, String)>),
            NotYet,
            Neither,
        }
        let named = if client_hello::looks_like_tls(data) {
            match client_hello::parse(data) {
                Ok(h) => Named::Tls(h.as_ref().map(Hello::of)),
                Err(_) => Named::NotYet,
            }
        } else if http_head::looks_like_http(data) {
            match http_head::parse(data) {
                Ok(h) => Named::Http(h.map(|h| (h.host, h.path))),
                Err(_) => Named::NotYet,
            }
        } else if data.len() < 8 {
            Named::NotYet
        } else {
            Named::Neither
        };
        // What the censor saw of the connection: port and address, and the ClientHello's ECH
        // and JA4; the name (SNI or Host, empty when the hello names none) and the path.
        let mut known = known_of(key);
        let (name, path) = match named {
            Named::NotYet if !closed => return Fate::Forward,
            Named::NotYet | Named::Neither | Named::Tls(None) | Named::Http(None) => {
                flow.naming = false;
                self.release(flow);
                return Fate::Forward;
            }
            Named::Tls(Some(hello)) => {
                known.saw(&hello);
                (hello.sni.map_or_else(String::new, |s| s.0), None)
            }
            Named::Http(Some((host, path))) => {
                let host_only = http_head::split_host_port(&host).map_or(host, |(h, _)| h);
                (host_only, Some(path))
            }
        };
        flow.naming = false;
        self.release(flow);
        // The frontends' pipeline on a known address: the name's verdict, the `ip-*` of a
        // rule matching the name, then the address's (an allow on name or address wins).
        let (at, ip) = (flow.at, key.server.ip());
        let conn = flow_conn(policy, j, flow, &known, when);
        let first = match &path {
            Some(path) => verdict::for_http(policy, j, &name, path, &conn, at),
            None if name.is_empty() => Verdict::Pass,
            None => verdict::for_name(policy, j, &name, &conn, at),
        };
        let v = verdict::with_name_ips(policy, j, first, &name, &conn, at);
        let by_ip = if path.is_some() {
            verdict::IP
        } else {
            verdict::IP_AT_HELLO
        };
        let v = verdict::with_dest_using(policy, j, v, &name, ip, &conn, at, by_ip);
        if v == Verdict::Pass && !name.is_empty() {
            if let Some((rule, after)) =
                self.freeze_rule(policy, j, Target::Domain(&name), &conn, at)
            {
                return self.freeze(policy, key, j, flow, v, rule, after, name, out);
            }
        }
        let url = path.map(|p| format!("http://{name}{p}"));
        let target = if name.is_empty() {
            ip.to_string()
        } else {
            name
        };
        self.decide_tcp(policy, now_ns, key, j, flow, t, v, target, url, out)
    }

    /// Enacts a name verdict on the segment `t` (client to server) that completed the name.
    #[allow(clippy::too_many_arguments)]
    fn decide_tcp(
        &mut self,
        policy: &Policy,
        now_ns: u64,
        key: &FlowKey,
        j: JurisdictionId,
        flow: &mut FlowState,
        t: &TcpSegment<'_>,
        v: Verdict,
        target: String,
        url: Option<String>,
        out: &mut Output,
    ) -> Fate {
        let Some(rule) = v.rule() else {
            return Fate::Forward;
        };
        if let Some(after) = self.extras(policy, rule).freeze_after_bytes {
            return self.freeze(policy, key, j, flow, v, rule, after, target, out);
        }
        let fate = match v {
            Verdict::Pass => return Fate::Forward,
            Verdict::Freeze { after_bytes, rule } => {
                let after = u64::from(after_bytes);
                return self.freeze(policy, key, j, flow, v, rule, after, target, out);
            }
            Verdict::Throttle { kbps, .. } => {
                if matches!(flow.action, Action::Police(_)) {
                    return Fate::Forward; // policed since its first packet (by address)
                }
                flow.action = Action::Police(Box::new(Policer::new(kbps, now_ns)));
                self.stats.throttles += 1;
                self.report(flow, policy, *key, j, "throttle", v, rule, target, out);
                return Fate::Forward;
            }
            Verdict::Reset { .. } => {
                self.stats.resets += 1;
                self.resets(key, t, out);
                flow.action = Action::Drop;
                self.report(flow, policy, *key, j, "reset", v, rule, target, out);
                Fate::Drop
            }
            Verdict::Drop { .. } => {
                self.stats.drops += 1;
                flow.action = Action::DropToServer;
                self.report(flow, policy, *key, j, "drop", v, rule, target, out);
                Fate::Drop
            }
            Verdict::Blockpage { rule } => {
                self.stats.blockpages += 1;
                let url = url.unwrap_or_else(|| format!("http://{target}/"));
                let page = super::deps::blockpage::page(
                    policy,
                    j,
                    flow.isp,
                    rule,
                    &url,
                    &self.cfg.gateway_url,
                );
                let body = page.to_bytes();
                let seg_end = t.seq.wrapping_add(t.seq_len());
                let spec = TcpSpec {
                    src: key.server,
                    dst: key.client,
                    seq: t.ack,
                    ack: seg_end,
                    flags: PSH | ACK | FIN,
                    window: 64240,
                    ttl: 64,
                    payload: &body,
                };
                self.inject(Side::ToClient, &spec, out);
                self.reset_server(key, t.seq, out);
                flow.action = Action::Drop;
                self.report(flow, policy, *key, j, "blockpage", v, rule, target, out);
                Fate::Drop
            }
        };
        self.residual_after(policy, rule, *key, now_ns);
        fate
    }

    /// `freeze`: the flow passes until `after` server-to-client bytes, then stops silently.
    #[allow(clippy::too_many_arguments)]
    fn freeze(
        &mut self,
        policy: &Policy,
        key: &FlowKey,
        j: JurisdictionId,
        flow: &mut FlowState,
        v: Verdict,
        rule: RuleId,
        after: u64,
        target: String,
        out: &mut Output,
    ) -> Fate {
        self.stats.freezes += 1;
        flow.action = Action::Freeze { after, seen: 0 };
        flow.naming = false;
        self.report(flow, policy, *key, j, "freeze", v, rule, target, out);
        if let Some(e) = out.events.last_mut() {
            e.technique = Some("freeze");
        }
        Fate::Forward
    }

    /// A RST toward each end: the client's carries the client's own ACK as its sequence
    /// number (what the client expects next), the server's the trigger's sequence number.
    fn resets(&mut self, key: &FlowKey, t: &TcpSegment<'_>, out: &mut Output) {
        let seg_end = t.seq.wrapping_add(t.seq_len());
        self.inject(
            Side::ToClient,
            &rst(key, Side::ToClient, t.ack, Some(seg_end)),
            out,
        );
        // The server has everything before the trigger (forwarded earlier), not the trigger.
        self.reset_server(key, t.seq, out);
    }

    fn reset_server(&mut self, key: &FlowKey, seq: u32, out: &mut Output) {
        self.inject(Side::ToServer, &rst(key, Side::ToServer, seq, None), out);
    }

    /// Crafts `spec` and queues it toward `toward`, counting it as injected.
    fn inject(&mut self, toward: Side, spec: &TcpSpec<'_>, out: &mut Output) {
        let mut p = Vec::with_capacity(60 + spec.payload.len());
        if craft_tcp(&mut p, spec).is_ok() {
            self.stats.injected += 1;
            out.inject.push((toward, p));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn udp(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        key: &FlowKey,
        side: Side,
        flow: &mut FlowState,
        payload: &[u8],
        whole: &[u8],
        out: &mut Output,
    ) -> Fate {
        let _ = whole;
        let Some(j) = flow.j else {
            return Fate::Forward;
        };
        if matches!(flow.action, Action::QuicDrop) {
            return if side == Side::ToServer && quic::is_big_v1_initial(payload) {
                self.stats.quic_drops += 1;
                Fate::Drop
            } else {
                Fate::Forward
            };
        }
        if !flow.naming {
            return Fate::Forward;
        }
        // A DTLS ClientHello counts from either side: in WebRTC the DTLS client is the SDP
        // answerer (Snowflake's proxies send it toward the censored user).
        if client_hello::looks_like_dtls(payload) {
            return self.dtls(policy, when, now_ns, key, j, flow, payload, out);
        }
        if side != Side::ToServer {
            return Fate::Forward;
        }
        if quic::long_header_version(payload).is_none() {
            // WebRTC checks connectivity with STUN on the same ports before its DTLS
            // handshake: the hello is looked for among the first packets.
            let webrtc = crate::detect::known::before_dtls(payload);
            if !(webrtc && (flow.packets as usize) < crate::detect::ja4::DTLS_SEARCH) {
                flow.naming = false;
            }
            return Fate::Forward;
        }
        let reassemble = policy.jurisdiction(j).reassemble;
        let hello = match quic::InitialInfo::parse(payload) {
            Ok(info) => {
                let st = flow.quic.get_or_insert_with(Box::default);
                st.1 = st.1.saturating_add(1);
                st.0.add(info.crypto);
                match st.0.client_hello() {
                    Ok(h) => h.as_ref().map(Hello::of),
                    Err(_) if reassemble && st.1 < 8 => return Fate::Forward,
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        flow.naming = false;
        flow.quic = None;
        let mut known = known_of(key);
        if let Some(h) = &hello {
            known.saw(h);
        }
        let sni = hello
            .as_ref()
            .and_then(|h| h.sni.as_ref())
            .map(|s| s.as_str());
        let conn = flow_conn(policy, j, flow, &known, when);
        let ip = key.server.ip();
        let Some(rule) = verdict::for_quic(policy, j, sni, ip, &conn, flow.at) else {
            return Fate::Forward;
        };
        flow.action = Action::QuicDrop;
        let target = sni.map_or_else(|| ip.to_string(), str::to_string);
        flow.reported = true;
        out.events.push(FlowEvent {
            key: *key,
            jurisdiction: Some(j),
            action: "quic-drop",
            technique: Some(Technique::QuicDrop.as_str()),
            rule: policy.rule_checked(rule).map(|r| r.id.clone()),
            rule_id: Some(rule),
            target,
            after_packet: u64::from(flow.packets),
            detector: None,
        });
        self.residual_after(policy, rule, *key, now_ns);
        if quic::is_big_v1_initial(payload) {
            self.stats.quic_drops += 1;
            Fate::Drop
        } else {
            Fate::Forward
        }
    }

    /// A UDP flow's first datagram (after any STUN ones, from either side) starting like a
    /// DTLS handshake record: its
    /// ClientHello (SNI, ECH, JA4) decides as a TLS one does (the name's verdict, the name's
    /// `ip-*`, then the address's, with `ja4` and `ech` conditions on what the hello shows).
    /// On UDP a reset, drop or blockpage drops the hello and everything after it, both ways;
    /// `throttle` polices, `freeze` freezes. A hello fragmented over several datagrams is
    /// read from the first only (not reassembled).
    #[allow(clippy::too_many_arguments)]
    fn dtls(
        &mut self,
        policy: &Policy,
        when: &Moments<'_>,
        now_ns: u64,
        key: &FlowKey,
        j: JurisdictionId,
        flow: &mut FlowState,
        payload: &[u8],
        out: &mut Output,
    ) -> Fate {
        flow.naming = false;
        let Ok(Some(h)) = client_hello::parse_dtls(payload) else {
            return Fate::Forward;
        };
        let hello = Hello::of(&h);
        let mut known = known_of(key);
        known.saw(&hello);
        let name = hello.sni.map_or_else(String::new, |s| s.0);
        let (at, ip) = (flow.at, key.server.ip());
        let conn = flow_conn(policy, j, flow, &known, when);
        let first = if name.is_empty() {
            Verdict::Pass
        } else {
            verdict::for_name(policy, j, &name, &conn, at)
        };
        let v = verdict::with_name_ips(policy, j, first, &name, &conn, at);
        let v = verdict::with_dest_using(policy, j, v, &name, ip, &conn, at, verdict::IP_AT_HELLO);
        let target = if name.is_empty() {
            ip.to_string()
        } else {
            name
        };
        let freeze = match v.rule() {
            Some(rule) => self
                .extras(policy, rule)
                .freeze_after_bytes
                .map(|after| (rule, after)),
            None if target != ip.to_string() => {
                self.freeze_rule(policy, j, Target::Domain(&target), &conn, at)
            }
            None => None,
        };
        if let Some((rule, after)) = freeze {
            return self.freeze(policy, key, j, flow, v, rule, after, target, out);
        }
        match v {
            Verdict::Pass => Fate::Forward,
            Verdict::Freeze { after_bytes, rule } => {
                let after = u64::from(after_bytes);
                self.freeze(policy, key, j, flow, v, rule, after, target, out)
            }
            Verdict::Throttle { kbps, rule } => {
                if !matches!(flow.action, Action::Police(_)) {
                    flow.action = Action::Police(Box::new(Policer::new(kbps, now_ns)));
                    self.stats.throttles += 1;
                    self.report(flow, policy, *key, j, "throttle", v, rule, target, out);
                }
                Fate::Forward
            }
            Verdict::Reset { rule, .. }
            | Verdict::Drop { rule, .. }
            | Verdict::Blockpage { rule } => {
                self.stats.drops += 1;
                flow.action = Action::Drop;
                self.report(flow, policy, *key, j, "drop", v, rule, target, out);
                self.residual_after(policy, rule, *key, now_ns);
                Fate::Drop
            }
        }
    }

    /// Feeds a payload to the detectors; acts on a `[[vpn]]` rule when one applies.
    #[allow(clippy::too_many_arguments)]
    fn detect(
        &mut self,
        policy: &Policy,
        now_ns: u64,
        key: &FlowKey,
        side: Side,
        flow: &mut FlowState,
        payload: &[u8],
        tcp: Option<&TcpSegment<'_>>,
        out: &mut Output,
    ) -> Fate {
        let _ = now_ns;
        let Some(j) = flow.j else {
            return Fate::Forward;
        };
        if !flow.detecting {
            return Fate::Forward;
        }
        // The detectors' input counts in their budget: past it, a flow is not detected.
        let keep = payload.len().min(DETECT_KEEP);
        let cost = keep + DETECT_OVERHEAD * (1 + usize::from(flow.detect.is_none()));
        if self.detect_held + cost > self.cfg.total_detect {
            self.stats.detect_overflow += 1;
            let freed = flow.stop_detecting();
            self.detect_held = self.detect_held.saturating_sub(freed);
            return Fate::Forward;
        }
        self.detect_held += cost;
        let state = flow.detect.get_or_insert_with(|| {
            Box::new(DetectState {
                packets: Vec::new(),
                held: 0,
                pending: u64::MAX,
            })
        });
        state.held += cost;
        let dir = match side {
            Side::ToServer => detect::Dir::ToServer,
            Side::ToClient => detect::Dir::ToClient,
        };
        state.packets.push((dir, payload[..keep].to_vec()));
        let packets = detect::Packet::all(&state.packets);
        let f = detect::Flow {
            transport: match key.proto {
                Proto::Tcp => detect::Transport::Tcp,
                Proto::Udp => detect::Transport::Udp,
            },
            client: key.client,
            server: key.server,
            packets: &packets,
        };
        let mut c = detect::Classifier::resume(&self.detectors, state.pending);
        let pending = c.update(&f);
        let found = c.verdict();
        drop(packets);
        state.pending = c.pending();
        if found.is_none() && pending && state.packets.len() < detect::MAX_PACKETS {
            return Fate::Forward;
        }
        let freed = flow.stop_detecting();
        self.detect_held = self.detect_held.saturating_sub(freed);
        let Some(found) = found else {
            return Fate::Forward;
        };
        let rule = policy.vpn_rule(j, found.protocol, flow.at);
        let enforce = self.cfg.vpn == VpnMode::Enforce;
        let (action, technique, fate) = match (enforce, rule) {
            (true, Some(r)) => {
                self.stats.vpn_actions += 1;
                match r.technique {
                    VpnTechnique::Drop => {
                        flow.action = Action::Drop;
                        ("drop", "vpn-drop", Fate::Forward)
                    }
                    VpnTechnique::Reset => {
                        flow.action = Action::Drop;
                        if let Some(t) = tcp.filter(|_| side == Side::ToServer) {
                            self.resets(key, t, out);
                        }
                        ("reset", "vpn-reset", Fate::Forward)
                    }
                    VpnTechnique::Throttle => {
                        let kbps = r.throttle_kbps.unwrap_or(0);
                        flow.action = Action::Police(Box::new(Policer::new(kbps, now_ns)));
                        ("throttle", "vpn-throttle", Fate::Forward)
                    }
                    VpnTechnique::CutAfter => {
                        flow.action = Action::CutAfter(u64::from(r.cut_after.unwrap_or(0)));
                        ("cut-after", "vpn-cut-after", Fate::Forward)
                    }
                }
            }
            _ => ("observe", "observe", Fate::Forward),
        };
        flow.reported = true;
        out.events.push(FlowEvent {
            key: *key,
            jurisdiction: Some(j),
            action,
            technique: Some(technique),
            rule: rule.map(|r| r.id.clone()),
            rule_id: None,
            target: key.server.to_string(),
            after_packet: u64::from(flow.packets),
            detector: Some(found.protocol),
        });
        fate
    }

    /// Frees a flow's sniffer buffers.
    fn release(&mut self, flow: &mut FlowState) {
        if let Some(st) = flow.c2s.take() {
            self.held = self.held.saturating_sub(st.held());
        }
    }

    /// Returns a forgotten flow's buffers to the budgets.
    fn free(&mut self, flow: &FlowState) {
        self.held = self.held.saturating_sub(flow.held());
        self.detect_held = self.detect_held.saturating_sub(flow.detect_held());
    }
}

/// A bare RST on `key`'s flow toward `toward` (RST+ACK when `ack` is given).
fn rst(key: &FlowKey, toward: Side, seq: u32, ack: Option<u32>) -> TcpSpec<'static> {
    let (src, dst) = match toward {
        Side::ToClient => (key.server, key.client),
        Side::ToServer => (key.client, key.server),
    };
    TcpSpec {
        src,
        dst,
        seq,
        ack: ack.unwrap_or(0),
        flags: if ack.is_some() { RST | ACK } else { RST },
        window: 0,
        ttl: 64,
        payload: &[],
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

/// What the engine knows of a flow's connection before its first data: the server's
/// protocol, port and address.
fn known_of(key: &FlowKey) -> Known {
    Known {
        port: Some(Port {
            proto: key.proto,
            port: key.server.port(),
        }),
        dst: Some(key.server.ip()),
        ..Known::default()
    }
}

/// The connection as the policy takes it: what the engine saw (`known`), the flow's ISP
/// profile, and the local minute of the wall clock in `when` on a simulated day.
fn flow_conn<'k>(
    policy: &Policy,
    j: JurisdictionId,
    flow: &FlowState,
    known: &'k Known,
    when: &Moments<'_>,
) -> Conn<'k> {
    let off = policy.jurisdiction(j).utc_offset;
    let minute = when.unix_secs.and_then(|t| minute_at(flow.at, t, off));
    known.conn(flow.isp, minute)
}
