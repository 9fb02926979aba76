//! The gateway config, `blocklab.toml` (README, "Gateway config").
//!
//! Loaded as `load(path) -> from_str -> validate`: serde with `deny_unknown_fields` everywhere,
//! then checks that need the whole file (dates, networks, jurisdictions). Errors are
//! `path:line:column: message`. [`Config::embedded_default`] is what `blocklab serve` runs with
//! no config: the shipped rules, DNS on 127.0.0.1:5353, the HTTP proxy on 127.0.0.1:8080 and
//! admin/metrics on 127.0.0.1:9153 (loopback only), loopback clients mapped to `ru`.
//! [`Config::override_with`] applies `serve --date` / `--jurisdiction`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{At, ClientGroup, ClientNet, Policy};
use crate::rules::{Day, Diagnostic, IpNet, RuleSet, RulesError};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Simulated date (`YYYY-MM-DD`); absent = today, following the clock.
    pub date: Option<Spanned<String>>,
    /// Directory of jurisdiction rules files, relative to the config file; absent = the
    /// shipped rules, embedded in the binary.
    pub rules: Option<PathBuf>,
    /// Client networks and their jurisdictions; unmapped clients are refused.
    #[serde(default)]
    pub clients: Vec<ClientsSection>,
    /// The DNS frontend.
    pub dns: Option<DnsSection>,
    /// The forward HTTP proxy.
    pub http: Option<HttpSection>,
    /// The transparent TLS/HTTP listener.
    pub tls: Option<TlsSection>,
    /// UDP/TCP relays inspected by the detectors.
    #[serde(default)]
    pub relay: Vec<RelaySection>,
    /// The admin listener (metrics, health, reload).
    pub admin: Option<AdminSection>,
    /// `[hosts]`: fixed addresses for names, consulted before the upstream resolver by the
    /// proxies (`"facebook.com" = ["127.0.0.1"]`), so a lab can point names at its own servers.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// The decision log.
    pub log: Option<LogSection>,
    /// Automatic reloads.
    pub reload: Option<ReloadSection>,
    /// The in-path packet engine on a TUN device.
    pub inpath: Option<InpathSection>,
    /// `[lab]`: the network `blocklab lab up` builds around the gateway.
    pub lab: Option<LabSection>,
    /// Where the config was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[[clients]]`: networks mapped to one jurisdiction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsSection {
    /// CIDRs (or single addresses).
    pub networks: Vec<Spanned<String>>,
    /// Jurisdiction code, as in a rules file's `[jurisdiction] code`.
    pub jurisdiction: Spanned<String>,
    /// The group's name (`blocklab check --client-group`, the lab's namespaces).
    pub name: Option<Spanned<String>>,
    /// One of the jurisdiction's `[[isp]]` profile ids: how this group's ISP blocks.
    pub isp: Option<Spanned<String>>,
    /// A simulated date for this group only (`YYYY-MM-DD`), beating the top-level `date`.
    pub date: Option<Spanned<String>>,
}

/// `[lab]`: the network `blocklab lab up` builds (see [`crate::lab`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSection {
    /// What sits on the path in the gateway namespace (default `proxy`).
    #[serde(default)]
    pub mode: LabMode,
    /// The link between the gateway and the internet namespace (default `10.77.0.0/24`).
    pub internet: Option<Spanned<String>>,
    /// Catch-all origins and an authoritative DNS in the internet namespace (default true).
    #[serde(default = "default_true")]
    pub origins: bool,
}

fn default_true() -> bool {
    true
}

/// `[lab] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabMode {
    /// The in-path packet engine.
    Inpath,
    /// The L7 listeners (DNS frontend, transparent TLS/HTTP) behind an nftables redirect.
    #[default]
    Proxy,
    /// Plain routing: the baseline.
    Off,
}

/// `[dns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Addresses to answer on, over UDP and TCP each.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Upstream resolvers; absent or empty = the system resolver.
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// Maximum number of upstream answers kept in the TTL cache (default 100000; 0 = no cache).
    #[serde(default = "default_dns_cache_size")]
    pub cache_size: usize,
    /// UDP sockets per listen address, sharing the port with `SO_REUSEPORT` (default: one per
    /// CPU core).
    pub udp_sockets: Option<usize>,
    /// Queries a second each client address may send (token bucket refill; default 500;
    /// 0 = no limit). Excess queries get REFUSED and are counted.
    #[serde(default = "default_rate_limit_qps")]
    pub rate_limit_qps: u32,
    /// Queries a client may send at once before the rate applies (default 1000).
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Client addresses the rate limiter tracks at most (default 65536).
    #[serde(default = "default_rate_limit_clients")]
    pub rate_limit_clients: usize,
    /// Concurrent DNS-over-TCP connections per listen address (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// RFC 8914 Extended DNS Error on DNS blocks: `"censored"` (code 16, a block required by
    /// an outside authority, as a national censor's is) or `"blocked"` (code 15, the
    /// operator's own policy); absent = none, as most real censors send none. Only clients
    /// that sent EDNS get it.
    pub ede: Option<Ede>,
}

/// The Extended DNS Error a block carries (`[dns] ede`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ede {
    /// INFO-CODE 15, "Blocked".
    Blocked,
    /// INFO-CODE 16, "Censored".
    Censored,
}

impl Ede {
    /// The RFC 8914 INFO-CODE.
    pub const fn info_code(self) -> u16 {
        match self {
            Ede::Blocked => 15,
            Ede::Censored => 16,
        }
    }
}

fn default_dns_cache_size() -> usize {
    100_000
}

fn default_rate_limit_qps() -> u32 {
    500
}

fn default_rate_limit_burst() -> u32 {
    1000
}

fn default_rate_limit_clients() -> usize {
    65_536
}

fn default_max_connections() -> usize {
    1024
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Addresses of the forward proxy (plain HTTP + CONNECT).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Seconds a dropped connection (`tls-drop`, `ip-drop`) is held open before the gateway
    /// closes it (the client normally gives up first).
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// Seconds an idle client connection (waiting for its next request) is kept open.
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// Concurrent client connections per listen address (default 1024); more are accepted
    /// and closed at once, and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_hold_secs() -> u64 {
    120
}

fn default_idle_secs() -> u64 {
    60
}

fn default_tls_port() -> u16 {
    443
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Addresses of the transparent listener.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Seconds a dropped connection (`tls-drop`, `ip-drop`) is held open before closing.
    #[serde(default = "default_hold_secs")]
    pub hold_secs: u64,
    /// Port to reach a TLS origin on when a connection was not redirected (no original
    /// destination, e.g. `curl --connect-to`): the origin is then the SNI's address.
    #[serde(default = "default_tls_port")]
    pub direct_tls_port: u16,
    /// UDP addresses of the QUIC relay (the lab router redirects UDP/443 here); QUIC v1
    /// Initials to names or addresses blocked with `quic-drop` are dropped.
    #[serde(default)]
    pub quic_listen: Vec<SocketAddr>,
    /// Fixed upstream of the QUIC relay; absent = the SNI's address on `direct_quic_port`.
    pub quic_forward: Option<SocketAddr>,
    /// Port of the SNI's address the QUIC relay forwards to when `quic_forward` is absent.
    #[serde(default = "default_tls_port")]
    pub direct_quic_port: u16,
    /// TLS interception with a lab CA (off when absent): see [`InterceptSection`].
    pub intercept: Option<InterceptSection>,
    /// Concurrent client connections per listen address (default 1024); more are accepted
    /// and closed at once, and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `[tls] intercept = { ca_cert, ca_key }`: terminate TLS on the transparent listener with
/// certificates minted for each SNI by this CA, so URL rules and the 451 page apply to HTTPS.
/// Only for clients that trust the lab CA; never on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptSection {
    /// The lab CA certificate (PEM), relative to the config file.
    pub ca_cert: PathBuf,
    /// The lab CA private key (PEM, PKCS#8), relative to the config file.
    pub ca_key: PathBuf,
    /// CA certificates (PEM) that origins are verified against; absent = the Mozilla roots.
    pub upstream_ca: Option<PathBuf>,
}

/// Transport of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayProtocol {
    /// UDP datagrams, one flow per client address.
    Udp,
    /// TCP connections.
    Tcp,
}

/// What the detectors may do to relayed flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Log verdicts only; never change traffic.
    #[default]
    Observe,
    /// Apply the jurisdiction's `[[vpn]]` rules.
    Enforce,
}

/// `[[relay]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// Address to accept flows on.
    pub listen: SocketAddr,
    /// Address to forward them to.
    pub forward: SocketAddr,
    /// `udp` or `tcp`.
    pub protocol: RelayProtocol,
    /// `observe` (default) or `enforce`.
    #[serde(default)]
    pub mode: RelayMode,
    /// Detectors to run (names from `[[vpn]] protocols`); absent = all of them.
    pub detectors: Option<Vec<String>>,
    /// Known VPN server networks (a `cidrs` list, relative to the config file) for the
    /// `endpoints` detector; absent = that detector matches nothing.
    pub endpoints: Option<PathBuf>,
    /// Concurrent TCP flows (default 1024); more are accepted and closed at once, and counted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a TCP flow may pass no byte either way before both sides are closed
    /// (default 300).
    #[serde(default = "default_relay_idle_secs")]
    pub idle_secs: u64,
}

fn default_relay_idle_secs() -> u64 {
    300
}

/// `[inpath]`: the packet-level censor on a TUN device (policy routing sends the client
/// networks' traffic through it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InpathSection {
    /// The TUN device (created if missing; default `blocklab0`).
    #[serde(default = "default_inpath_device")]
    pub device: String,
    /// Client networks: flows opened from these are censored; absent = every address the
    /// `[[clients]]` map knows.
    #[serde(default)]
    pub clients: Vec<Spanned<String>>,
    /// `[[vpn]]` rules: `observe` (log only, the default) or `enforce`.
    #[serde(default)]
    pub vpn: RelayMode,
    /// Flows tracked at most (default 1048576; the oldest is evicted, counted).
    #[serde(default = "default_inpath_max_flows")]
    pub max_flows: usize,
    /// Device MTU (default 1500).
    #[serde(default = "default_inpath_mtu")]
    pub mtu: u16,
    /// GSO/GRO offloads on the device (IFF_VNET_HDR, TSO and checksum offload, as
    /// wireguard-go does): the kernel hands over TCP super-packets of up to 64 KiB; those of
    /// passing flows go back whole, the others are cut into segments for the engine (default
    /// true; false reads and writes one MTU-sized packet at a time).
    #[serde(default = "default_true")]
    pub offload: bool,
    /// In-path parameters of rules by rule id, `[inpath.rules.ID] freeze_after_bytes = N,
    /// residual_secs = N` (until the rules format carries these keys itself).
    #[serde(default)]
    pub rules: BTreeMap<String, InpathRule>,
}

/// `[inpath.rules.ID]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InpathRule {
    /// `freeze`: server-to-client bytes after which the flow silently stops.
    pub freeze_after_bytes: Option<u64>,
    /// After a block, the same client/server/port stays dropped this long.
    pub residual_secs: Option<u32>,
}

fn default_inpath_device() -> String {
    "blocklab0".into()
}

fn default_inpath_max_flows() -> usize {
    1 << 20
}

fn default_inpath_mtu() -> u16 {
    1500
}

impl InpathSection {
    /// The client networks (invalid entries are rejected by validation).
    pub fn client_nets(&self) -> Vec<IpNet> {
        self.clients
            .iter()
            .filter_map(|n| parse_net(n.get_ref()))
            .collect()
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin HTTP listener (loopback by default).
    pub listen: SocketAddr,
    /// Bearer token required on every request; mandatory for a non-loopback address.
    pub token: Option<String>,
}

/// `[reload]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSection {
    /// Poll the rules directory every second and reload when a file changes (default false).
    #[serde(default)]
    pub watch: bool,
}

/// `[log]`: the JSON-lines decision log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// File to append decisions to (relative to the config file); rotated by size.
    pub path: PathBuf,
    /// Rotate when the file would exceed this many bytes (default 100 MiB).
    #[serde(default = "default_log_max_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` .. `path.N`; default 5).
    #[serde(default = "default_log_keep")]
    pub keep: u32,
    /// Events queued for the writer before new ones are dropped and counted (default 65536).
    #[serde(default = "default_log_queue")]
    pub queue: usize,
}

fn default_log_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_log_keep() -> u32 {
    5
}
fn default_log_queue() -> usize {
    65_536
}

/// A config that could not be loaded: every problem, located.
pub type ConfigError = RulesError;

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            RulesError::single(Diagnostic::file(&shown, format!("cannot read: {e}")))
        })?;
        let mut cfg = Config::from_str(&shown, &text)?;
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates config text; `shown` names it in errors.
    pub fn from_str(shown: &str, text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let off = e.span().map_or(0, |s| s.start);
            RulesError::single(Diagnostic::at(
                shown,
                text,
                off,
                e.message().trim().to_string(),
            ))
        })?;
        cfg.validate(shown, text)?;
        Ok(cfg)
    }

    fn validate(&self, shown: &str, text: &str) -> Result<(), ConfigError> {
        let mut errors = RulesError::default();
        let mut err = |off: usize, msg: String| errors.push(Diagnostic::at(shown, text, off, msg));
        if let Some(d) = &self.date {
            if let Err(e) = d.get_ref().parse::<Day>() {
                err(d.span().start, format!("`date`: {e}"));
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for c in &self.clients {
            if let Some(d) = &c.date {
                if let Err(e) = d.get_ref().parse::<Day>() {
                    err(d.span().start, format!("`date`: {e}"));
                }
            }
            if let Some(n) = &c.name {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().len() <= 32
                    && n.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    err(
                        n.span().start,
                        format!(
                            "`name`: `{}` must be 1-32 letters, digits, `-` or `_`",
                            n.get_ref()
                        ),
                    );
                } else if names.contains(&n.get_ref().as_str()) {
                    err(
                        n.span().start,
                        format!("`name`: two [[clients]] groups are named `{}`", n.get_ref()),
                    );
                } else {
                    names.push(n.get_ref());
                }
            }
            for n in &c.networks {
                if parse_net(n.get_ref()).is_none() {
                    err(
                        n.span().start,
                        format!("`networks`: `{}` is not a CIDR or IP address", n.get_ref()),
                    );
                }
            }
        }
        if let Some(i) = &self.inpath {
            for n in &i.clients {
                if parse_net(n.get_ref()).is_none() {
                    err(
                        n.span().start,
                        format!(
                            "[inpath] `clients`: `{}` is not a CIDR or IP address",
                            n.get_ref()
                        ),
                    );
                }
            }
            if i.device.is_empty() || i.device.len() > 15 {
                err(
                    0,
                    format!(
                        "[inpath] device = {:?}: a Linux interface name has 1 to 15 characters",
                        i.device
                    ),
                );
            }
        }
        if let Some(net) = self.lab.as_ref().and_then(|l| l.internet.as_ref()) {
            if parse_net(net.get_ref()).is_none() {
                err(
                    net.span().start,
                    format!("`internet`: `{}` is not a CIDR", net.get_ref()),
                );
            }
        }
        if let Some(a) = &self.admin {
            if !a.listen.ip().is_loopback() && a.token.is_none() {
                err(0, format!("[admin] listen = {} is not loopback: set `token` to expose the admin endpoints", a.listen));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// What `blocklab serve` runs with no config: shipped rules, DNS on 127.0.0.1:5353, the
    /// HTTP proxy on 127.0.0.1:8080, admin on 127.0.0.1:9153 (loopback only), loopback
    /// clients (127.0.0.0/8, ::1) mapped to `ru`, system resolver upstream, today's date.
    pub fn embedded_default() -> Config {
        Config {
            clients: vec![ClientsSection {
                networks: vec![
                    Spanned::new(0..0, "127.0.0.0/8".into()),
                    Spanned::new(0..0, "::1/128".into()),
                ],
                jurisdiction: Spanned::new(0..0, "ru".into()),
                name: None,
                isp: None,
                date: None,
            }],
            dns: Some(DnsSection {
                listen: vec!["127.0.0.1:5353".parse().expect("literal address")],
                upstream: Vec::new(),
                cache_size: default_dns_cache_size(),
                udp_sockets: None,
                rate_limit_qps: default_rate_limit_qps(),
                rate_limit_burst: default_rate_limit_burst(),
                rate_limit_clients: default_rate_limit_clients(),
                max_connections: default_max_connections(),
                ede: None,
            }),
            http: Some(HttpSection {
                listen: vec!["127.0.0.1:8080".parse().expect("literal address")],
                hold_secs: default_hold_secs(),
                idle_secs: default_idle_secs(),
                max_connections: default_max_connections(),
            }),
            admin: Some(AdminSection {
                listen: "127.0.0.1:9153".parse().expect("literal address"),
                token: None,
            }),
            ..Config::default()
        }
    }

    /// Applies `serve --date` and `--jurisdiction`: `date` replaces the simulated date
    /// (checked: `YYYY-MM-DD`) and every group's own date; `jurisdiction` maps every client
    /// group to that code (with
    /// no `[[clients]]`, loopback is mapped to it). Whether the code exists is checked when
    /// the policy is compiled.
    pub fn override_with(
        &mut self,
        date: Option<&str>,
        jurisdiction: Option<&str>,
    ) -> Result<(), String> {
        if let Some(d) = date {
            d.parse::<Day>().map_err(|e| format!("--date {d}: {e}"))?;
            self.date = Some(Spanned::new(0..0, d.to_string()));
            // The flag is the date: it beats per-group dates too.
            for c in &mut self.clients {
                c.date = None;
            }
        }
        if let Some(j) = jurisdiction {
            if j.is_empty() {
                return Err("--jurisdiction: empty code".into());
            }
            if self.clients.is_empty() {
                self.clients.push(ClientsSection {
                    networks: vec![
                        Spanned::new(0..0, "127.0.0.0/8".into()),
                        Spanned::new(0..0, "::1/128".into()),
                    ],
                    jurisdiction: Spanned::new(0..0, j.to_string()),
                    name: None,
                    isp: None,
                    date: None,
                });
            }
            for c in &mut self.clients {
                c.jurisdiction = Spanned::new(0..0, j.to_string());
            }
        }
        Ok(())
    }

    /// The one-line summary `serve` logs at startup: the date, client networks ->
    /// jurisdictions.
    pub fn summary(&self) -> (String, String) {
        let date = match self.date() {
            Some(d) => format!("{d} (simulated)"),
            None => {
                let today = match at_now(None) {
                    At::Instant(secs) => Day(i32::try_from(secs.div_euclid(86_400)).unwrap_or(0)),
                    At::Day(d) => d,
                };
                format!("{today} (today, following the clock)")
            }
        };
        let clients = if self.clients.is_empty() {
            "none (every client is refused)".to_string()
        } else {
            self.clients
                .iter()
                .map(|c| {
                    let nets: Vec<&str> = c.networks.iter().map(|n| n.get_ref().as_str()).collect();
                    let mut g = format!("{} -> {}", nets.join(" "), c.jurisdiction.get_ref());
                    if let Some(d) = &c.date {
                        g.push_str(&format!(" (date {})", d.get_ref()));
                    }
                    g
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        (date, clients)
    }

    /// The simulated date, if set.
    pub fn date(&self) -> Option<Day> {
        self.date.as_ref().and_then(|d| d.get_ref().parse().ok())
    }

    /// The moment decisions are made at now: the simulated date, or the clock.
    pub fn at(&self) -> At {
        at_now(self.date())
    }

    /// The client networks, as the policy wants them.
    pub fn client_nets(&self) -> Vec<ClientNet> {
        self.clients
            .iter()
            .flat_map(|c| {
                c.networks
                    .iter()
                    .filter_map(|n| parse_net(n.get_ref()))
                    .map(|net| ClientNet {
                        net,
                        jurisdiction: c.jurisdiction.get_ref().clone(),
                    })
            })
            .collect()
    }

    /// The client groups (networks with jurisdiction, name, ISP and own date), as the
    /// policy wants them.
    pub fn client_groups(&self) -> Vec<ClientGroup> {
        self.clients
            .iter()
            .map(|c| ClientGroup {
                nets: c
                    .networks
                    .iter()
                    .filter_map(|n| parse_net(n.get_ref()))
                    .collect(),
                jurisdiction: c.jurisdiction.get_ref().clone(),
                name: c.name.as_ref().map(|n| n.get_ref().clone()),
                isp: c.isp.as_ref().map(|n| n.get_ref().clone()),
                date: c.date.as_ref().and_then(|d| d.get_ref().parse().ok()),
            })
            .collect()
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        base.join(p)
    }

    /// The rules directory, resolved against the config file's directory.
    pub fn rules_dir(&self) -> Option<PathBuf> {
        let dir = self.rules.as_ref()?;
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        Some(base.join(dir))
    }

    /// Loads the rules (directory or embedded).
    pub fn load_rules(&self) -> Result<RuleSet, RulesError> {
        match self.rules_dir() {
            Some(dir) => RuleSet::load_dir(&dir),
            None => RuleSet::embedded(),
        }
    }

    /// Loads the rules and compiles the policy with this config's client networks.
    pub fn compile_policy(&self) -> Result<Policy, String> {
        let rules = self.load_rules().map_err(|e| e.to_string())?;
        Policy::compile_groups(&rules, &self.client_groups()).map_err(|e| e.to_string())
    }
}

/// `date` as [`At::Day`], or the clock as [`At::Instant`].
pub fn at_now(date: Option<Day>) -> At {
    match date {
        Some(d) => At::Day(d),
        None => At::Instant(unix_now()),
    }
}

/// The wall clock in unix seconds (0 before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_example_parses() {
        let text = r#"
date = "2022-03-10"
rules = "rules"
[[clients]]
networks = ["127.0.0.0/8", "10.7.0.0/16"]
jurisdiction = "ru"
[dns]
listen = ["127.0.0.1:5353"]
upstream = ["127.0.0.1:5300"]
[http]
listen = ["127.0.0.1:8080"]
[tls]
listen = ["127.0.0.1:8443"]
[[relay]]
listen = "127.0.0.1:51820"
forward = "127.0.0.1:51821"
protocol = "udp"
[admin]
listen = "127.0.0.1:9153"
[hosts]
"facebook.com" = ["127.0.0.1", "::1"]
"#;
        let c = Config::from_str("t.toml", text).unwrap();
        assert_eq!(c.date(), Some("2022-03-10".parse().unwrap()));
        assert_eq!(c.client_nets().len(), 2);
        assert_eq!(c.relay[0].protocol, RelayProtocol::Udp);
        assert_eq!(c.hosts["facebook.com"].len(), 2);
        assert_eq!(c.http.as_ref().unwrap().hold_secs, 120);
        assert_eq!(c.tls.as_ref().unwrap().direct_tls_port, 443);
    }

    #[test]
    fn junk_keys_are_rejected_with_line_numbers() {
        let err = Config::from_str(
            "t.toml",
            "date = \"2022-03-10\"\n[dns]\nlisten = []\nlisen = 1\n",
        )
        .unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!((d.line, d.path.as_str()), (4, "t.toml"), "{err}");
        assert!(d.message.contains("unknown field `lisen`"), "{err}");
    }

    #[test]
    fn hosts_need_addresses() {
        let err =
            Config::from_str("t.toml", "[hosts]\n\"a.example\" = [\"not-an-ip\"]\n").unwrap_err();
        assert_eq!(err.diagnostics[0].line, 2, "{err}");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = "date = \"2022-02-30\"\n[[clients]]\nnetworks = [\"10.0.0.0/33\", \"x\"]\njurisdiction = \"ru\"\n";
        let err = Config::from_str("t.toml", text).unwrap_err();
        assert_eq!(err.len(), 3, "{err}");
        assert_eq!(err.diagnostics[1].line, 3);
    }

    #[test]
    fn public_admin_needs_a_token() {
        let err = Config::from_str("t.toml", "[admin]\nlisten = \"0.0.0.0:9153\"\n").unwrap_err();
        assert!(err.to_string().contains("token"));
        assert!(Config::from_str(
            "t.toml",
            "[admin]\nlisten = \"0.0.0.0:9153\"\ntoken = \"s\"\n"
        )
        .is_ok());
    }
}
