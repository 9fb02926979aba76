//! The gateway context: the state every frontend shares, below all of them.
//!
//! A [`Gateway`] owns the config, the current policy behind an atomic pointer (`arc-swap`),
//! the upstream resolver, the metrics and the decision log. A reload compiles a new policy off
//! the serving path and swaps it in, or keeps the old one if the new rules fail. Frontends read
//! the policy once per request ([`Gateway::policy`]), so in-flight requests finish on the policy
//! they started with, and report what they did through [`Gateway::record`] and friends. Every
//! bound listener is announced here ([`Gateway::announce`]), which is how `serve` hands the
//! bound addresses to its caller. Frontends import this module, never `serve`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::config::Config;
use crate::decision_log::{now_rfc3339, DecisionLog, Event};
use crate::metrics::{DecisionKey, Metrics};
use crate::policy::{At, Decision, Policy};
use crate::rules::Technique;

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
            config,
            upstream,
            metrics,
            log,
            policy: ArcSwap::from_pointee(policy),
            bound: Mutex::new(Vec::new()),
        }))
    }

    /// Counts and logs one decision of a frontend. `enacted` is the technique the frontend
    /// applied (`None` when it let the request through, even if the rule blocks at another
    /// layer).
    pub fn record(
        &self,
        layer: &'static str,
        client: SocketAddr,
        target: &str,
        decision: &Decision,
        enacted: Option<Technique>,
    ) {
        self.record_with(layer, client, target, decision, enacted, |_| {});
    }

    /// [`Gateway::record`], with `detail` filling in a frontend's own fields of the logged
    /// event (called only when the decision log is on).
    pub fn record_with(
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
                date: self.simulated_date(),
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
                date: self.simulated_date(),
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

    /// The simulated date as `YYYY-MM-DD`, if the config sets one.
    pub fn simulated_date(&self) -> Option<String> {
        self.config.date().map(|d| d.to_string())
    }

    /// The simulated moment for decisions made now.
    pub fn at(&self) -> At {
        self.config.at()
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
