//! `blocklab serve`: builds the shared gateway state and starts every configured frontend.
//!
//! The [`Gateway`] owns the config and the current policy behind an atomic pointer
//! (`arc-swap`): a reload compiles a new policy off the serving path and swaps it in, or keeps
//! the old one if the new rules fail. Frontends read the policy once per request
//! ([`Gateway::policy`]), so in-flight requests finish on the policy they started with. Each
//! frontend's `start` binds its listeners (logging one `listening` line per bound address,
//! port 0 allowed) and spawns its tasks; a bind failure stops the gateway before it serves.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::decision_log::{now_rfc3339, DecisionLog, Event};
use crate::metrics::Metrics;
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
        let policy = self.policy();
        let jurisdiction = &policy.jurisdiction(decision.jurisdiction()).code;
        let rule = decision.rule().map(|r| policy.rule(r).id.as_str());
        let verdict = if enacted.is_some() { "block" } else { "allow" };
        let technique = enacted.map(Technique::as_str);
        self.metrics.decision(
            jurisdiction,
            layer,
            verdict,
            technique.unwrap_or(""),
            rule.unwrap_or(""),
        );
        if let Some(log) = &self.log {
            log.record(Event {
                time: now_rfc3339(),
                client: client.to_string(),
                jurisdiction: Some(jurisdiction.clone()),
                layer,
                target: target.to_string(),
                verdict,
                rule: rule.map(str::to_string),
                technique,
                detector: None,
            });
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
            });
        }
    }

    /// The current policy (a cheap, lock-free snapshot).
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
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

/// Logs a bound listener in the stable form tests and operators read:
/// `listening listener=dns/udp addr=127.0.0.1:5353`.
pub fn announce(listener: &str, addr: SocketAddr) {
    tracing::info!(listener, %addr, "listening");
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

/// Starts every frontend the config names; returns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    tasks.extend(crate::dns::start(gw).await?);
    tasks.extend(crate::http::start(gw).await?);
    tasks.extend(crate::tls::start(gw).await?);
    tasks.extend(crate::relay::start(gw).await?);
    let serving = tasks.len();
    tasks.extend(crate::admin::start(gw).await?);
    if serving == 0 {
        return Err(StartError::Other(
            "nothing to serve: the config names no [dns], [http], [tls] or [[relay]] listener"
                .into(),
        ));
    }
    Ok(tasks)
}

/// Runs the gateway until SIGINT or SIGTERM; SIGHUP reloads the rules.
pub async fn run(config: Config) -> Result<(), StartError> {
    let policy = config.compile_policy().map_err(StartError::Other)?;
    let gw = Gateway::new(config, policy)?;
    // Signal handlers first: a SIGTERM right after the `listening` lines must shut down
    // cleanly, not kill the process.
    let signals = Signals::install();
    let tasks = start(&gw).await?;
    signals.wait(&gw).await;
    tracing::info!("shutting down");
    for t in tasks {
        t.abort();
    }
    if let Some(log) = &gw.log {
        // Everything accepted is written before exit.
        log.close();
    }
    Ok(())
}

/// SIGINT/SIGTERM (shut down) and SIGHUP (reload), installed before the listeners start.
struct Signals {
    #[cfg(unix)]
    streams: Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(t), Ok(i), Ok(h)) => Some((t, i, h)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for a shutdown signal, reloading on each SIGHUP.
    async fn wait(self, gw: &Arc<Gateway>) {
        #[cfg(unix)]
        if let Some((mut term, mut int, mut hup)) = self.streams {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => {
                        let gw = Arc::clone(gw);
                        // Errors are logged by reload itself.
                        if let Err(e) = tokio::task::spawn_blocking(move || gw.reload()).await {
                            tracing::error!(error = %e, "reload task failed");
                        }
                    }
                }
            }
        }
        let _ = gw;
        let _ = tokio::signal::ctrl_c().await;
    }
}
