//! The gateway context: the state every frontend shares, below all of them.
//!
//! A [`Gateway`] owns the config, the current policy behind an atomic pointer (`arc-swap`),
//! the upstream resolver, the metrics and the decision log. A reload compiles a new policy off
//! the serving path and swaps it in, or keeps the old one if the new rules fail. Frontends read
//! the policy once per request ([`Gateway::policy`]), so in-flight requests finish on the policy
//! they started with, and report what they did through [`Gateway::record`] and friends. Every
//! bound listener is announced here ([`Gateway::announce`]), which is how `serve` hands the
//! bound addresses to its caller. Frontends import this module, never `serve`.
//!
//! The gateway also holds the simulated dates ([`Dates`]): the gateway-wide `date` and each
//! `[[clients]]` group's own, movable at run time (admin `POST /date`) and kept across
//! reloads, since they live here and not in the compiled policy. A frontend asks
//! [`Gateway::client`] once per flow or query for everything the policy needs of its client:
//! jurisdiction, ISP profile and simulated moment.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::config::Config;
use crate::decision_log::{now_rfc3339, DecisionLog, Event};
use crate::metrics::{DecisionKey, Metrics};
use crate::policy::{At, Decision, IspId, JurisdictionId, Policy};
use crate::rules::{Day, Technique};

/// State shared by every frontend.
#[derive(Debug)]
pub struct Gateway {
    /// The config the gateway was started with.
    pub config: Config,
    /// The upstream resolver (`[dns] upstream`, or the system resolver).
    pub upstream: crate::resolve::Upstream,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The decision log, if `[log]` is configured.
    pub log: Option<DecisionLog>,
    policy: ArcSwap<Policy>,
    /// The simulated dates, gateway-wide and per client group.
    pub dates: Dates,
    /// Every listener bound so far, in bind order (startup only; never on a request path).
    bound: Mutex<Vec<(&'static str, SocketAddr)>>,
}

impl Gateway {
    /// A gateway serving `policy` under `config`.
    pub fn new(config: Config, policy: Policy) -> Result<Arc<Gateway>, StartError> {
        let servers = config
            .dns
            .as_ref()
            .map(|d| d.upstream.clone())
            .unwrap_or_default();
        let upstream = crate::resolve::Upstream::new(&servers)
            .map_err(StartError::Other)?
            .with_overrides(config.hosts.clone());
        let metrics = Arc::new(Metrics::default());
        let log = match &config.log {
            Some(l) => Some(
                DecisionLog::open(
                    &config.resolve_path(&l.path),
                    l.max_bytes,
                    l.keep,
                    l.queue,
                    Arc::clone(&metrics),
                )
                .map_err(|e| StartError::Other(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Arc::new(Gateway {
            upstream,
            metrics,
            log,
            dates: Dates::new(&config),
            config,
            policy: ArcSwap::from_pointee(policy),
            bound: Mutex::new(Vec::new()),
        }))
    }

    /// Counts and logs one decision of a frontend. `enacted` is the technique the frontend
    /// applied (`None` when it let the request through, even if the rule blocks at another
    /// layer); `detail` fills in a frontend's own fields of the logged event (called only when
    /// the decision log is on; `|_| {}` for none).
    pub fn record(
        &self,
        layer: &'static str,
        client: SocketAddr,
        target: &str,
        decision: &Decision,
        enacted: Option<Technique>,
        detail: impl FnOnce(&mut Event),
    ) {
        // The decision may come from the policy before a reload: look its indices up with
        // checks (a decision in flight across a reload may be counted under the new names).
        let policy = self.policy();
        let jurisdiction = policy
            .jurisdiction_checked(decision.jurisdiction())
            .map_or("", |j| j.code.as_str());
        let rule = decision
            .rule()
            .and_then(|r| policy.rule_checked(r))
            .map(|r| r.id.as_str());
        let verdict = if enacted.is_some() { "block" } else { "allow" };
        let technique = enacted.map(Technique::as_str);
        self.metrics.decision(
            DecisionKey {
                generation: policy.generation(),
                jurisdiction: decision.jurisdiction().0,
                rule: decision.rule().map_or(u32::MAX, |r| r.0),
                layer,
                verdict,
                technique: technique.unwrap_or(""),
            },
            || (jurisdiction, rule.unwrap_or("")),
        );
        if let Some(log) = &self.log {
            let mut event = Event {
                time: now_rfc3339(),
                client: client.to_string(),
                jurisdiction: Some(jurisdiction.to_string()),
                layer,
                target: target.to_string(),
                verdict,
                rule: rule.map(str::to_string),
                technique,
                detector: None,
                date: self.date_for(client.ip()),
                ..Event::default()
            };
            detail(&mut event);
            log.record(event);
        }
    }

    /// Counts and logs a request from a client outside every configured network.
    pub fn record_refused(&self, layer: &'static str, client: SocketAddr, target: &str) {
        Metrics::inc(&self.metrics.refused_clients);
        tracing::debug!(client.addr = %client, layer, "client not in any configured network: refused");
        if let Some(log) = &self.log {
            log.record(Event {
                time: now_rfc3339(),
                client: client.to_string(),
                jurisdiction: None,
                layer,
                target: target.to_string(),
                verdict: "refused",
                rule: None,
                technique: None,
                detector: None,
                date: self.simulated_date(),
                ..Event::default()
            });
        }
    }

    /// Counts and logs a detector verdict on a relayed flow and the action taken
    /// (`observe`, `allow`, or a `[[vpn]]` technique such as `drop`).
    pub fn record_verdict(
        &self,
        layer: &'static str,
        client: SocketAddr,
        target: &str,
        detector: &str,
        action: &'static str,
        rule: Option<&str>,
    ) {
        self.metrics.verdict(detector, action);
        if let Some(log) = &self.log {
            let policy = self.policy();
            let jurisdiction = policy
                .jurisdiction_for(client.ip())
                .map(|j| policy.jurisdiction(j).code.clone());
            log.record(Event {
                time: now_rfc3339(),
                client: client.to_string(),
                jurisdiction,
                layer,
                target: target.to_string(),
                verdict: if action == "observe" || action == "allow" {
                    "allow"
                } else {
                    "block"
                },
                rule: rule.map(str::to_string),
                technique: None,
                detector: Some(detector.to_string()),
                date: self.date_for(client.ip()),
                ..Event::default()
            });
        }
    }

    /// Records a bound listener and logs it in the stable form operators read:
    /// `listening listener=dns/udp addr=127.0.0.1:5353`.
    pub fn announce(&self, listener: &'static str, addr: SocketAddr) {
        tracing::info!(listener, %addr, "listening");
        if let Ok(mut b) = self.bound.lock() {
            b.push((listener, addr));
        }
    }

    /// Every listener bound so far: `(name, address)` in bind order.
    pub fn bound(&self) -> Vec<(&'static str, SocketAddr)> {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// The current policy (a cheap, lock-free snapshot).
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// The gateway-wide simulated date as `YYYY-MM-DD`, if one is set (a client group with
    /// its own date is shown by [`Gateway::date_for`]).
    pub fn simulated_date(&self) -> Option<String> {
        match self.dates.at(None) {
            At::Day(d) => Some(d.to_string()),
            At::Instant(_) => None,
        }
    }

    /// The simulated date of `client`'s group as `YYYY-MM-DD`, if one is set.
    pub fn date_for(&self, client: IpAddr) -> Option<String> {
        match self.at_for(client) {
            At::Day(d) => Some(d.to_string()),
            At::Instant(_) => None,
        }
    }

    /// The gateway-wide simulated moment for decisions made now (a client group with its own
    /// date decides at that one: see [`Gateway::client`]).
    pub fn at(&self) -> At {
        self.dates.at(None)
    }

    /// Everything the policy needs of `client` under `policy`: its group, jurisdiction, ISP
    /// profile and simulated moment; `None` for a client in no configured network. No lock,
    /// no allocation.
    #[inline]
    pub fn client(&self, policy: &Policy, client: IpAddr) -> Option<Client> {
        let group = policy.group_index_for(client)?;
        Client::in_group(policy, group, self.dates.at(Some(group)))
    }

    /// The simulated moment for `client`'s group (the gateway's for an unmapped client).
    #[inline]
    pub fn at_for(&self, client: IpAddr) -> At {
        self.dates.at(self.policy().group_index_for(client))
    }

    /// Moves the simulated date to `day`: of the group named `clients`, or of the whole
    /// gateway (every group) when `None`. Logged; the error names an unknown group.
    pub fn set_date(&self, day: Day, clients: Option<&str>) -> Result<(), String> {
        let shown = |a: At| match a {
            At::Day(d) => d.to_string(),
            At::Instant(_) => "clock".to_string(),
        };
        match clients {
            Some(name) => {
                let Some(g) = self
                    .dates
                    .names
                    .iter()
                    .position(|n| n.as_deref() == Some(name))
                else {
                    let have: Vec<&str> = self
                        .dates
                        .names
                        .iter()
                        .flatten()
                        .map(String::as_str)
                        .collect();
                    return Err(format!(
                        "no client group is named `{name}` (named groups: {})",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ));
                };
                let from = self.dates.at(Some(g));
                self.dates.groups[g].store(i64::from(day.0), Ordering::Relaxed);
                tracing::info!(clients = name, from = %shown(from), to = %day, "simulated date moved");
            }
            None => {
                let from = self.dates.at(None);
                self.dates.global.store(i64::from(day.0), Ordering::Relaxed);
                for g in &self.dates.groups {
                    g.store(UNSET, Ordering::Relaxed);
                }
                tracing::info!(clients = "*", from = %shown(from), to = %day, "simulated date moved");
            }
        }
        Ok(())
    }

    /// The Prometheus text of `/metrics`: the counters plus the simulated-date gauges.
    pub fn render_metrics(&self) -> String {
        let mut out = self.metrics.render();
        out.push_str(&self.dates.render());
        out
    }

    /// Recompiles the rules and swaps the new policy in; on error the old one keeps serving
    /// and every problem is logged (`path:line:column: message`).
    pub fn reload(&self) -> Result<(), String> {
        let t = std::time::Instant::now();
        match self.config.compile_policy() {
            Ok(new) => {
                self.policy.store(Arc::new(new));
                Metrics::inc(&self.metrics.reloads_ok);
                tracing::info!(
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "policy reloaded"
                );
                Ok(())
            }
            Err(e) => {
                Metrics::inc(&self.metrics.reloads_failed);
                for line in e.lines() {
                    tracing::error!(problem = %line, "reload failed; the old policy keeps serving");
                }
                Err(e)
            }
        }
    }
}

/// What the policy needs of one client, looked up once per flow or query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The index of its `[[clients]]` group (config order).
    pub group: usize,
    /// Its jurisdiction.
    pub jurisdiction: JurisdictionId,
    /// Its group's ISP profile.
    pub isp: Option<IspId>,
    /// The simulated moment its group decides at.
    pub at: At,
}

impl Client {
    /// A client of group `group` (config order) of `policy`, deciding at `at`; `None` for an
    /// index the policy does not have. No lock, no allocation.
    #[inline]
    pub fn in_group(policy: &Policy, group: usize, at: At) -> Option<Client> {
        let info = policy.groups().get(group)?;
        Some(Client {
            group,
            jurisdiction: info.jurisdiction,
            isp: info.isp,
            at,
        })
    }
}

/// The clock's local minute of the day in a zone `utc_offset` seconds east of UTC, when `at`
/// is a simulated day: a simulated date keeps the real time of day, for `hours` conditions
/// (an instant carries its own time of day: `None`).
pub fn clock_minute(at: At, utc_offset: i32) -> Option<u16> {
    minute_at(at, crate::config::unix_now(), utc_offset)
}

/// [`clock_minute`] with the wall clock given (`unix_secs`): the local minute of the day in
/// a zone `utc_offset` seconds east of UTC when `at` is a simulated day, else `None`. Pure.
#[inline]
pub fn minute_at(at: At, unix_secs: i64, utc_offset: i32) -> Option<u16> {
    match at {
        At::Instant(_) => None,
        At::Day(_) => Some(((unix_secs + i64::from(utc_offset)).rem_euclid(86_400) / 60) as u16),
    }
}

/// No date set: a group follows the gateway, the gateway follows the clock.
const UNSET: i64 = i64::MIN;

/// The simulated dates as day numbers in atomics: read on every decision without a lock,
/// moved by `POST /date`, untouched by reloads.
#[derive(Debug)]
pub struct Dates {
    /// The gateway-wide day, or [`UNSET`] (the clock).
    global: AtomicI64,
    /// Per `[[clients]]` group, in config order: its own day, or [`UNSET`] (the gateway's).
    groups: Vec<AtomicI64>,
    /// The groups' names (`None` for unnamed groups).
    names: Vec<Option<String>>,
    /// The groups' metric labels: the name, else the first network.
    labels: Vec<String>,
}

impl Dates {
    /// The dates of `config`: its `date` and each group's own `date`.
    pub fn new(config: &Config) -> Dates {
        let groups = config.client_groups();
        let day = |d: Option<Day>| d.map_or(UNSET, |d| i64::from(d.0));
        Dates {
            global: AtomicI64::new(day(config.date())),
            groups: groups.iter().map(|g| AtomicI64::new(day(g.date))).collect(),
            labels: groups
                .iter()
                .map(|g| {
                    g.name.clone().unwrap_or_else(|| {
                        g.nets.first().map_or_else(String::new, ToString::to_string)
                    })
                })
                .collect(),
            names: groups.into_iter().map(|g| g.name).collect(),
        }
    }

    /// The moment of group `group` (its own date, else the gateway's), or of the gateway.
    #[inline]
    pub fn at(&self, group: Option<usize>) -> At {
        let own = group
            .and_then(|g| self.groups.get(g))
            .map_or(UNSET, |d| d.load(Ordering::Relaxed));
        let d = if own != UNSET {
            own
        } else {
            self.global.load(Ordering::Relaxed)
        };
        if d == UNSET {
            crate::config::at_now(None)
        } else {
            At::Day(Day(d as i32))
        }
    }

    /// Each client group's moment (config order) into `out`, which is cleared first (no
    /// allocation once `out` has room for every group), and the gateway's own moment, which
    /// groups without a date of their own share: what the in-path engine decides at.
    pub fn moments(&self, out: &mut Vec<At>) -> At {
        let global = self.at(None);
        out.clear();
        out.extend(self.groups.iter().map(|d| match d.load(Ordering::Relaxed) {
            UNSET => global,
            own => At::Day(Day(own as i32)),
        }));
        global
    }

    /// `blocklab_simulated_date{clients="*"}` (the gateway's) and one line per client group
    /// (labelled by name, else first network): the date as a `YYYYMMDD` number (today's UTC
    /// date when following the clock).
    fn render(&self) -> String {
        let ymd = |a: At| {
            let d = match a {
                At::Day(d) => d,
                At::Instant(t) => Day::at_instant(t, 0),
            };
            let (y, m, dd) = d.ymd();
            i64::from(y) * 10_000 + i64::from(m) * 100 + i64::from(dd)
        };
        let mut out = String::from(
            "# HELP blocklab_simulated_date The simulated date decisions are made at, as YYYYMMDD (clients=\"*\": the gateway's; else a client group's).\n# TYPE blocklab_simulated_date gauge\n",
        );
        out.push_str(&format!(
            "blocklab_simulated_date{{clients=\"*\"}} {}\n",
            ymd(self.at(None))
        ));
        for (i, label) in self.labels.iter().enumerate() {
            let label = label.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!(
                "blocklab_simulated_date{{clients=\"{label}\"}} {}\n",
                ymd(self.at(Some(i)))
            ));
        }
        out
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something else (config, upstream setup).
    #[error("{0}")]
    Other(String),
}
