//! The plan of a lab: every namespace, link, address, route, nftables rule and file that
//! `blocklab lab up` will make, computed from the config before anything is touched. Pure: no
//! I/O, so the whole topology is unit-tested without root.
//!
//! Addressing: the gateway namespace and the internet namespace share the `[lab] internet`
//! link (gateway `.1`, internet `.2`). Each `[[clients]]` group gets its own namespace on a veth
//! to the gateway; its first IPv4 network gives the addresses (gateway `.1`, client `.2`). Every
//! veth is created directly inside the lab's namespaces (never in the host's), and the nftables
//! table (`proxy`) and the in-path TUN's policy routing ([`Plan::inpath_steps`], `inpath`) live
//! in the gateway namespace, so deleting the namespaces removes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net};
use toml::Spanned;

use crate::config::{ClientsSection, Config, InpathSection, LabMode, LabSection};

/// The lab name used when `--name` is absent.
pub const DEFAULT_NAME: &str = "blocklab";
/// The `[lab] internet` link used when the config names none.
pub const DEFAULT_INTERNET: &str = "10.77.0.0/24";
/// Port of the gateway's transparent TLS/HTTP listener (and QUIC relay) behind the redirect.
pub const TLS_PORT: u16 = 15443;
/// The date of the default lab: the March 2022 blocks (facebook.com, twitter.com and
/// instagram.com in `ru` from 2022-03-04/14, RT and Sputnik in `eu` from 2022-03-02) in force.
pub const DEFAULT_DATE: &str = "2022-03-15";
/// The in-path engine's TUN device in the gateway namespace (`mode = "inpath"`).
pub const TUN_DEV: &str = "inpath0";
/// The routing table that sends the clients' traffic into [`TUN_DEV`].
pub const TUN_TABLE: &str = "100";
/// Preference of the first policy-routing rule into [`TUN_TABLE`] (one per link, counting up).
pub const TUN_RULE_PREF: u32 = 100;
/// Longest lab name (namespace names stay readable; interface names never carry it).
const MAX_NAME: usize = 24;
/// Group names that would collide with the lab's own namespaces or `lab exec` targets.
const RESERVED: &[&str] = &["gw", "net", "internet", "gateway"];

/// One client group: a namespace on a veth to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The `[[clients]] name`.
    pub name: String,
    /// Its namespace, `LAB-GROUP`.
    pub ns: String,
    /// The veth end in the gateway namespace (`c0`, `c1`, ...).
    pub gw_if: String,
    /// The gateway's address on this group's link (the group's resolver, except in `off`).
    pub gw: Ipv4Addr,
    /// The client's address.
    pub client: Ipv4Addr,
    /// Prefix length of the group's link.
    pub prefix: u8,
    /// Every network of the group (the first IPv4 one is its link).
    pub networks: Vec<IpNet>,
    /// The group's jurisdiction.
    pub jurisdiction: String,
    /// The simulated date its clients see (its own `date`, else the config's), if set.
    pub date: Option<String>,
    /// Its ISP profile, if the config names one.
    pub isp: Option<String>,
}

/// Everything a lab is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The lab's name (prefix of every namespace).
    pub name: String,
    /// What sits on the path.
    pub mode: LabMode,
    /// The gateway namespace, `LAB-gw`.
    pub gw_ns: String,
    /// The internet namespace, `LAB-net`.
    pub net_ns: String,
    /// The gateway-internet link.
    pub internet: Ipv4Net,
    /// The gateway's address on it.
    pub gw_internet: Ipv4Addr,
    /// The internet namespace's address on it (the authoritative DNS; the default answer).
    pub net_addr: Ipv4Addr,
    /// Whether the internet namespace runs the catch-all origins and DNS.
    pub origins: bool,
    /// The client groups.
    pub groups: Vec<Group>,
    /// `[hosts]`: names and the addresses the lab's DNS gives them.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// One thing `lab up` does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ip netns add NAME` (recorded before it is made).
    Netns(String),
    /// `ip -n NS ARGS...`.
    Ip {
        /// The namespace.
        ns: String,
        /// Arguments after `ip -n NS`.
        args: Vec<String>,
    },
    /// An nftables script loaded in a namespace (`nft -f -`).
    Nft {
        /// The namespace.
        ns: String,
        /// The ruleset.
        script: String,
    },
    /// A sysctl set in a namespace (a `/proc/sys` path and value).
    Sysctl {
        /// The namespace.
        ns: String,
        /// Path below `/proc/sys`, e.g. `net/ipv4/ip_forward`.
        key: String,
        /// The value written.
        value: String,
    },
    /// `ip -n NS rule add pref PREF ARGS...` (recorded before it is made; removed by its
    /// preference).
    Rule {
        /// The namespace.
        ns: String,
        /// The rule's preference (unique in the namespace).
        pref: u32,
        /// Arguments after `rule add pref PREF`.
        args: Vec<String>,
    },
    /// A file written (recorded before it is made, with its directory).
    File {
        /// The file.
        path: PathBuf,
        /// Its contents.
        contents: String,
    },
}

/// A problem with the lab part of a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct PlanError(pub Vec<String>);

/// Locates a config span as `path:line:column` (re-reading the config file), or names the
/// config when the span is synthetic.
fn locate(cfg: &Config, span: std::ops::Range<usize>) -> String {
    let Some(path) = &cfg.path else {
        return "the default lab config".to_string();
    };
    let shown = path.display();
    if span.is_empty() && span.start == 0 {
        return shown.to_string();
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{shown}:{line}:{col}")
        }
        Err(_) => shown.to_string(),
    }
}

/// Whether `s` is a usable lab or group name: lower-case letters, digits, `-` (and `_` for
/// groups), starting with a letter or digit.
fn valid_name(s: &str, max: usize, underscore: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (underscore && c == '_')
        })
}

/// Checks a lab name (`--name`).
pub fn check_name(name: &str) -> Result<(), PlanError> {
    if valid_name(name, MAX_NAME, false) {
        Ok(())
    } else {
        Err(PlanError(vec![format!(
            "lab name `{name}`: use 1 to {MAX_NAME} lower-case letters, digits and `-`, starting with a letter or digit"
        )]))
    }
}

/// The config of `sudo blocklab lab up` with no `--config`: the shipped rules, groups `ru`
/// (10.7.1.0/24) and `eu` (10.7.2.0/24) at [`DEFAULT_DATE`], `proxy` mode, origins on.
pub fn default_config() -> Config {
    let s = |v: &str| Spanned::new(0..0, v.to_string());
    let group = |name: &str, net: &str| ClientsSection {
        networks: vec![s(net)],
        jurisdiction: s(name),
        name: Some(s(name)),
        isp: None,
        date: None,
    };
    Config {
        date: Some(s(DEFAULT_DATE)),
        clients: vec![group("ru", "10.7.1.0/24"), group("eu", "10.7.2.0/24")],
        lab: Some(LabSection {
            mode: LabMode::Proxy,
            internet: None,
            origins: true,
        }),
        ..Config::default()
    }
}

impl Plan {
    /// The plan for lab `name` from `cfg` (its `[lab]` table, `[[clients]]` groups and
    /// `[hosts]`); every problem is reported, located in the config file.
    pub fn new(name: &str, cfg: &Config) -> Result<Plan, PlanError> {
        let mut errors = Vec::new();
        if let Err(PlanError(e)) = check_name(name) {
            errors.extend(e);
        }
        let lab = cfg.lab.clone().unwrap_or(LabSection {
            mode: LabMode::Proxy,
            internet: None,
            origins: true,
        });
        let internet_text = lab
            .internet
            .as_ref()
            .map_or(DEFAULT_INTERNET.to_string(), |s| s.get_ref().clone());
        let internet = match internet_text.parse::<IpNet>() {
            Ok(IpNet::V4(n)) if n.prefix_len() <= 30 => n.trunc(),
            _ => {
                let at = lab
                    .internet
                    .as_ref()
                    .map_or_else(|| locate(cfg, 0..0), |s| locate(cfg, s.span()));
                errors.push(format!(
                    "{at}: [lab] internet = `{internet_text}`: needs an IPv4 network of /30 or larger"
                ));
                DEFAULT_INTERNET.parse().expect("literal network")
            }
        };
        let mut hosts_iter = internet.hosts();
        let gw_internet = hosts_iter.next().unwrap_or(internet.network());
        let net_addr = hosts_iter.next().unwrap_or(internet.network());

        let mut groups = Vec::new();
        let mut seen = BTreeSet::new();
        if cfg.clients.is_empty() {
            errors.push(format!(
                "{}: a lab needs at least one [[clients]] group with a `name`",
                locate(cfg, 0..0)
            ));
        }
        for (i, c) in cfg.clients.iter().enumerate() {
            let Some(gname) = &c.name else {
                errors.push(format!(
                    "{}: [[clients]] in a lab needs `name = \"...\"` (its namespace is {name}-NAME)",
                    locate(cfg, c.jurisdiction.span())
                ));
                continue;
            };
            let at = locate(cfg, gname.span());
            let g = gname.get_ref().clone();
            if !valid_name(&g, 15, true) || RESERVED.contains(&g.as_str()) {
                errors.push(format!(
                    "{at}: group name `{g}`: use 1 to 15 lower-case letters, digits, `-`, `_` (not {})",
                    RESERVED.join(", ")
                ));
                continue;
            }
            if !seen.insert(g.clone()) {
                errors.push(format!("{at}: group name `{g}` is used twice"));
                continue;
            }
            let networks: Vec<IpNet> = c
                .networks
                .iter()
                .filter_map(|n| parse_net(n.get_ref()))
                .collect();
            let link = networks.iter().find_map(|n| match n {
                IpNet::V4(v4) if v4.prefix_len() <= 30 => Some(*v4),
                _ => None,
            });
            let Some(link) = link else {
                errors.push(format!(
                    "{at}: group `{g}` needs an IPv4 network of /30 or larger in `networks` (its link to the gateway)"
                ));
                continue;
            };
            if networks.iter().any(|n| overlaps(n, &IpNet::V4(internet))) {
                errors.push(format!(
                    "{at}: group `{g}`: its networks overlap [lab] internet = {internet}"
                ));
                continue;
            }
            let mut h = link.hosts();
            let gw = h.next().unwrap_or(link.network());
            let client = h.next().unwrap_or(link.network());
            groups.push(Group {
                ns: format!("{name}-{g}"),
                name: g,
                gw_if: format!("c{i}"),
                gw,
                client,
                prefix: link.prefix_len(),
                networks,
                jurisdiction: c.jurisdiction.get_ref().clone(),
                date: c
                    .date
                    .as_ref()
                    .or(cfg.date.as_ref())
                    .map(|d| d.get_ref().clone()),
                isp: c.isp.as_ref().map(|i| i.get_ref().clone()),
            });
        }
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                if a.networks
                    .iter()
                    .any(|x| b.networks.iter().any(|y| overlaps(x, y)))
                {
                    errors.push(format!(
                        "{}: groups `{}` and `{}` have overlapping networks",
                        locate(cfg, 0..0),
                        a.name,
                        b.name
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(PlanError(errors));
        }
        Ok(Plan {
            name: name.to_string(),
            mode: lab.mode,
            gw_ns: format!("{name}-gw"),
            net_ns: format!("{name}-net"),
            internet,
            gw_internet,
            net_addr,
            origins: lab.origins,
            groups,
            hosts: cfg.hosts.clone(),
        })
    }

    /// Every namespace of the lab, gateway and internet first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.gw_ns.clone(), self.net_ns.clone()];
        v.extend(self.groups.iter().map(|g| g.ns.clone()));
        v
    }

    /// The namespace `lab exec` runs in for `target`: a group name, `internet` or `gateway`.
    pub fn namespace_of(&self, target: &str) -> Option<&str> {
        match target {
            "internet" => Some(&self.net_ns),
            "gateway" => Some(&self.gw_ns),
            _ => self
                .groups
                .iter()
                .find(|g| g.name == target)
                .map(|g| g.ns.as_str()),
        }
    }

    /// The resolver a group's clients use: the gateway's DNS frontend (their ISP resolver)
    /// in `proxy` and `inpath` mode, the internet's authoritative DNS in `off`.
    pub fn resolver_of(&self, g: &Group) -> Ipv4Addr {
        match self.mode {
            LabMode::Proxy | LabMode::Inpath => g.gw,
            LabMode::Off => self.net_addr,
        }
    }

    /// The authoritative DNS address in the internet namespace.
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((self.net_addr, 53))
    }

    /// What `lab up` does, in order.
    pub fn steps(&self) -> Vec<Step> {
        let ip = |ns: &str, args: &[&str]| Step::Ip {
            ns: ns.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let (gw, net) = (self.gw_ns.as_str(), self.net_ns.as_str());
        let mut v: Vec<Step> = self.namespaces().into_iter().map(Step::Netns).collect();
        for ns in self.namespaces() {
            v.push(ip(&ns, &["link", "set", "lo", "up"]));
        }
        let inet = self.internet.prefix_len();
        v.push(ip(
            gw,
            &[
                "link", "add", "net0", "type", "veth", "peer", "name", "gw0", "netns", net,
            ],
        ));
        v.push(ip(
            gw,
            &[
                "addr",
                "add",
                &format!("{}/{inet}", self.gw_internet),
                "dev",
                "net0",
            ],
        ));
        v.push(ip(
            net,
            &[
                "addr",
                "add",
                &format!("{}/{inet}", self.net_addr),
                "dev",
                "gw0",
            ],
        ));
        v.push(ip(gw, &["link", "set", "net0", "up"]));
        v.push(ip(net, &["link", "set", "gw0", "up"]));
        for g in &self.groups {
            v.push(ip(
                gw,
                &[
                    "link", "add", &g.gw_if, "type", "veth", "peer", "name", "eth0", "netns", &g.ns,
                ],
            ));
            v.push(ip(
                gw,
                &[
                    "addr",
                    "add",
                    &format!("{}/{}", g.gw, g.prefix),
                    "dev",
                    &g.gw_if,
                ],
            ));
            v.push(ip(
                &g.ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/{}", g.client, g.prefix),
                    "dev",
                    "eth0",
                ],
            ));
            v.push(ip(gw, &["link", "set", &g.gw_if, "up"]));
            v.push(ip(&g.ns, &["link", "set", "eth0", "up"]));
            v.push(ip(
                &g.ns,
                &["route", "add", "default", "via", &g.gw.to_string()],
            ));
            for n in self.v4_networks(g).skip(1) {
                v.push(ip(
                    gw,
                    &["route", "add", &n.to_string(), "via", &g.client.to_string()],
                ));
            }
        }
        v.push(ip(
            gw,
            &["route", "add", "default", "via", &self.net_addr.to_string()],
        ));
        for g in &self.groups {
            for n in self.v4_networks(g) {
                v.push(ip(
                    net,
                    &[
                        "route",
                        "add",
                        &n.to_string(),
                        "via",
                        &self.gw_internet.to_string(),
                    ],
                ));
            }
        }
        if self.origins {
            // AnyIP: every IPv4 address is local in the internet namespace, except the
            // clients' networks and the link itself (thrown back to the main table). A rule
            // of our own keeps the kernel from merging the local and main tables, where a
            // throw would end the lookup instead of moving on to `main`.
            v.push(ip(net, &["rule", "add", "pref", "1000", "lookup", "main"]));
            for g in &self.groups {
                for n in self.v4_networks(g) {
                    v.push(ip(
                        net,
                        &["route", "add", "throw", &n.to_string(), "table", "local"],
                    ));
                }
            }
            v.push(ip(
                net,
                &[
                    "route",
                    "add",
                    "throw",
                    &self.internet.to_string(),
                    "table",
                    "local",
                ],
            ));
            v.push(ip(
                net,
                &[
                    "route",
                    "add",
                    "local",
                    "0.0.0.0/0",
                    "dev",
                    "lo",
                    "table",
                    "local",
                ],
            ));
        }
        v.push(Step::Sysctl {
            ns: self.gw_ns.clone(),
            key: "net/ipv4/ip_forward".into(),
            value: "1".into(),
        });
        if self.mode == LabMode::Inpath {
            // What the engine writes back enters from the TUN with the clients' (or the
            // origins') source addresses: no reverse-path filter may drop it. `default` is
            // what the TUN device, made later, starts with.
            for conf in ["all", "default"] {
                v.push(Step::Sysctl {
                    ns: self.gw_ns.clone(),
                    key: format!("net/ipv4/conf/{conf}/rp_filter"),
                    value: "0".into(),
                });
            }
        }
        if self.mode == LabMode::Proxy {
            v.push(Step::Nft {
                ns: self.gw_ns.clone(),
                script: self.nft_script(),
            });
        }
        for g in &self.groups {
            v.push(Step::File {
                path: resolv_conf(&g.ns),
                contents: format!(
                    "# blocklab lab {}: group {}\nnameserver {}\n",
                    self.name,
                    g.name,
                    self.resolver_of(g)
                ),
            });
        }
        for ns in [&self.gw_ns, &self.net_ns] {
            v.push(Step::File {
                path: resolv_conf(ns),
                contents: format!(
                    "# blocklab lab {}\nnameserver {}\n",
                    self.name, self.net_addr
                ),
            });
        }
        v
    }

    /// The policy routing of `mode = "inpath"`, once [`TUN_DEV`] is open in the gateway
    /// namespace: what arrives from every group's link and from the internet link is looked up
    /// in [`TUN_TABLE`], whose one route is the TUN; what the engine writes back enters from
    /// the TUN and is routed by the main table. Traffic to the gateway's own addresses (the DNS
    /// frontend) stays local: the `local` table is looked up first.
    pub fn inpath_steps(&self) -> Vec<Step> {
        let links = self.groups.iter().map(|g| g.gw_if.as_str()).chain(["net0"]);
        let mut v: Vec<Step> = links
            .zip(TUN_RULE_PREF..)
            .map(|(dev, pref)| Step::Rule {
                ns: self.gw_ns.clone(),
                pref,
                args: ["iif", dev, "lookup", TUN_TABLE]
                    .map(str::to_string)
                    .to_vec(),
            })
            .collect();
        v.push(Step::Ip {
            ns: self.gw_ns.clone(),
            args: [
                "route", "add", "default", "dev", TUN_DEV, "table", TUN_TABLE,
            ]
            .map(str::to_string)
            .to_vec(),
        });
        v
    }

    fn v4_networks<'a>(&self, g: &'a Group) -> impl Iterator<Item = Ipv4Net> + 'a {
        g.networks.iter().filter_map(|n| match n {
            IpNet::V4(v4) => Some(*v4),
            IpNet::V6(_) => None,
        })
    }

    /// The gateway's nftables ruleset in `proxy` mode: the clients' TCP/80, TCP/443 and
    /// UDP/443 go to the transparent listener and QUIC relay, and their DNS (to any server)
    /// to the DNS frontend, as an ISP intercepting DNS would.
    pub fn nft_script(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "table ip blocklab_lab {{");
        let _ = writeln!(s, "  chain pre {{");
        let _ = writeln!(
            s,
            "    type nat hook prerouting priority dstnat; policy accept;"
        );
        let _ = writeln!(
            s,
            "    iifname \"c*\" tcp dport {{ 80, 443 }} redirect to :{TLS_PORT}"
        );
        let _ = writeln!(
            s,
            "    iifname \"c*\" udp dport 443 redirect to :{TLS_PORT}"
        );
        let _ = writeln!(s, "    iifname \"c*\" udp dport 53 redirect to :53");
        let _ = writeln!(s, "    iifname \"c*\" tcp dport 53 redirect to :53");
        let _ = writeln!(s, "  }}\n}}");
        s
    }

    /// The config of the gateway: the user's config with the DNS frontend on every group's
    /// gateway address (upstream: the internet's DNS); in `proxy` mode also the transparent
    /// listener and QUIC relay on [`TLS_PORT`]. `[inpath]` is left out: in `inpath` mode the
    /// lab opens the engine's device itself ([`Plan::inpath_section`]).
    pub fn gateway_config(&self, user: &Config) -> Result<Config, String> {
        let mut cfg = user.clone();
        let listen: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("\"{}:53\"", g.gw))
            .collect();
        let dns = format!(
            "listen = [{}]\nupstream = [\"{}\"]\n",
            listen.join(", "),
            self.dns_addr()
        );
        cfg.dns = Some(toml::from_str(&dns).map_err(|e| e.to_string())?);
        cfg.inpath = None;
        if self.mode != LabMode::Proxy {
            return Ok(cfg);
        }
        let tls = format!(
            "listen = [\"0.0.0.0:{TLS_PORT}\"]\nquic_listen = [\"0.0.0.0:{TLS_PORT}\"]\nhold_secs = 30\n"
        );
        cfg.tls = Some(toml::from_str(&tls).map_err(|e| e.to_string())?);
        Ok(cfg)
    }

    /// The engine's section in `inpath` mode: the user's `[inpath]` (its `vpn`, `max_flows`,
    /// `mtu` and per-rule overrides), or the defaults, on [`TUN_DEV`] with every group's
    /// networks as the clients.
    pub fn inpath_section(&self, user: &Config) -> Result<InpathSection, String> {
        let mut s = match &user.inpath {
            Some(s) => s.clone(),
            None => toml::from_str("").map_err(|e| e.to_string())?,
        };
        s.device = TUN_DEV.to_string();
        s.clients = self
            .groups
            .iter()
            .flat_map(|g| &g.networks)
            .map(|n| Spanned::new(0..0, n.to_string()))
            .collect();
        Ok(s)
    }
}

/// The per-namespace resolv.conf `ip netns exec` mounts over /etc/resolv.conf.
pub fn resolv_conf(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns).join("resolv.conf")
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lab_has_ru_and_eu() {
        let p = Plan::new("blocklab", &default_config()).unwrap();
        assert_eq!(
            p.namespaces(),
            ["blocklab-gw", "blocklab-net", "blocklab-ru", "blocklab-eu"]
        );
        let ru = &p.groups[0];
        assert_eq!(
            (ru.gw.to_string(), ru.client.to_string()),
            ("10.7.1.1".into(), "10.7.1.2".into())
        );
        assert_eq!(p.net_addr.to_string(), "10.77.0.2");
        assert_eq!(p.namespace_of("internet"), Some("blocklab-net"));
        assert_eq!(p.namespace_of("eu"), Some("blocklab-eu"));
        assert_eq!(p.namespace_of("xx"), None);
        let steps = p.steps();
        // Veths are made inside the lab's namespaces, never in the host's.
        assert!(steps
            .iter()
            .all(|s| !matches!(s, Step::Ip { ns, .. } if !ns.starts_with("blocklab-"))));
        assert!(steps.iter().any(
            |s| matches!(s, Step::Nft { script, .. } if script.contains("redirect to :15443"))
        ));
        // A group's own date and ISP beat the config's.
        let text =
            "date = \"2022-03-15\"\n[[clients]]\nname = \"r21\"\nnetworks = [\"10.7.1.0/24\"]\n\
                    jurisdiction = \"ru\"\ndate = \"2021-06-01\"\nisp = \"mobile\"\n";
        let g = &Plan::new("x", &Config::from_str("lab.toml", text).unwrap())
            .unwrap()
            .groups[0];
        assert_eq!(
            (g.date.as_deref(), g.isp.as_deref()),
            (Some("2021-06-01"), Some("mobile"))
        );
        let gw = p.gateway_config(&default_config()).unwrap();
        assert_eq!(gw.dns.unwrap().listen.len(), 2);
    }

    #[test]
    fn inpath_routes_every_link_through_the_tun_and_keeps_the_dns_frontend() {
        let text = "[lab]\nmode = \"inpath\"\n[[clients]]\nname = \"ru\"\nnetworks = [\"10.7.1.0/24\", \"10.8.0.0/16\"]\n\
                    jurisdiction = \"ru\"\n[[clients]]\nname = \"eu\"\nnetworks = [\"10.7.2.0/24\"]\njurisdiction = \"eu\"\n\
                    [inpath]\ndevice = \"other0\"\nvpn = \"enforce\"\n";
        let user = Config::from_str("lab.toml", text).unwrap();
        let p = Plan::new("x", &user).unwrap();
        let steps = p.steps();
        assert!(!steps.iter().any(|s| matches!(s, Step::Nft { .. })));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::Sysctl { ns, key, value }
            if ns == "x-gw" && key == "net/ipv4/conf/default/rp_filter" && value == "0")));
        assert_eq!(p.resolver_of(&p.groups[1]).to_string(), "10.7.2.1");
        let rules: Vec<(u32, String)> = p
            .inpath_steps()
            .into_iter()
            .filter_map(|s| match s {
                Step::Rule { ns, pref, args } if ns == "x-gw" => Some((pref, args.join(" "))),
                _ => None,
            })
            .collect();
        assert_eq!(
            rules,
            [
                (100, "iif c0 lookup 100".to_string()),
                (101, "iif c1 lookup 100".to_string()),
                (102, "iif net0 lookup 100".to_string())
            ]
        );
        assert!(
            matches!(p.inpath_steps().last(), Some(Step::Ip { args, .. })
            if args.join(" ") == "route add default dev inpath0 table 100")
        );
        // The gateway: the DNS frontend only; the engine gets the user's [inpath] on the lab's
        // device, with every group network as a client.
        let gw = p.gateway_config(&user).unwrap();
        assert!(gw.tls.is_none() && gw.inpath.is_none());
        assert_eq!(gw.dns.unwrap().listen.len(), 2);
        let s = p.inpath_section(&user).unwrap();
        assert_eq!(s.device, TUN_DEV);
        assert_eq!(s.vpn, crate::config::RelayMode::Enforce);
        let nets: Vec<String> = s.client_nets().iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.7.1.0/24", "10.8.0.0/16", "10.7.2.0/24"]);
    }

    #[test]
    fn bad_groups_are_all_reported() {
        let text = "[lab]\ninternet = \"10.7.0.0/16\"\n[[clients]]\nnetworks = [\"10.7.1.0/24\"]\njurisdiction = \"ru\"\n\
                    [[clients]]\nnetworks = [\"10.8.1.0/24\"]\njurisdiction = \"ru\"\nname = \"gateway\"\n\
                    [[clients]]\nnetworks = [\"fd00::/64\"]\njurisdiction = \"ru\"\nname = \"v6\"\n";
        let cfg = Config::from_str("lab.toml", text).unwrap();
        let err = Plan::new("x", &cfg).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        assert!(err.0[0].contains("needs `name"), "{err}");
        assert!(err.0[1].contains("`gateway`"), "{err}");
        assert!(err.0[2].contains("IPv4 network"), "{err}");
        // Unknown keys and modes in [lab] are rejected with their line.
        for bad in [
            "[lab]\njunk = 1\n",
            "[lab]\nmode = \"bridge\"\n",
            "[lab]\ninternet = \"x\"\n",
        ] {
            let err = Config::from_str("lab.toml", bad).unwrap_err();
            assert_eq!(err.diagnostics[0].line, 2, "{err}");
        }
        assert!(check_name("Has Space").is_err());
        assert!(check_name("lab-1").is_ok());
    }
}
